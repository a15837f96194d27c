"""The call store and `sipbridge trace`: records survive a kill -9 of the gateway (the
call in progress is marked ended abnormally at the next start), and the trace of a
failed transfer names the failing step and its SIP status."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast
from urllib.parse import quote

import httpx
import pytest

from sipbridge.demo.baresip import terminate
from sipbridge.records import CallRecord
from tests.integration.appside import KEY, App, start_app
from tests.integration.callrecords import call_record, wait_first_call
from tests.integration.gateway import Gateway
from tests.integration.sipp import SCENARIOS, sipp_command
from tests.pgserver import PASSWORD

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sipbridge", *args], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture
def app(start_gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[App]:
    yield from start_app(start_gateway, tmp_path, transfer_fallback="none")


def test_the_trace_of_a_failed_transfer_names_the_failing_step(app: App) -> None:
    sipp = app.call("transfer_busy.xml", timeout=40, recv_timeout=20)
    call_id = app.incoming().data.call_id
    app.client.realtime.calls.accept(call_id, type="realtime")
    app.wait_for(call_id, lambda r: r["state"] == "active", "active")
    app.client.realtime.calls.refer(call_id, target_uri="tel:+61420351258")
    assert sipp.result(timeout=60).ok
    app.wait_for(call_id, lambda r: r["state"] == "ended", "ended")
    store = app.gateway.config["store"]
    time.sleep(0.3)  # committed within ~70 ms (the store sink holds 20, the writer lingers 50)
    trace = cli("trace", call_id, "--store", store)
    assert trace.returncode == 0, trace.stderr
    failed = [ln for ln in trace.stdout.splitlines() if "<== FAILED" in ln]
    assert failed and "transfer failed 486 (Busy Here)" in failed[0], trace.stdout
    lines = trace.stdout.splitlines()
    order = [next(i for i, ln in enumerate(lines) if marker in ln)
             for marker in ("INVITE sip:", "accept", "REFER sip:", "SIP/2.0 202",
                            "transfer failed")]
    assert order == sorted(order), trace.stdout  # SIP, API and transfer steps interleaved
    calls = cli("calls", "--store", store, "--transfer", "failed")
    assert call_id in calls.stdout and "failed 486" in calls.stdout, calls.stdout
    full = cli("trace", call_id, "--store", store, "--full")
    assert "Refer-To: <tel:+61420351258>" in full.stdout
    metrics = httpx.get(f"http://127.0.0.1:{app.gateway.http_port}/metrics",
                        headers={"Authorization": f"Bearer {KEY}"}).text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in metrics.splitlines() if line and not line.startswith("#")}
    assert values['sipbridge_transfers_total{status="failed"}'] == 1
    assert values['sipbridge_calls_total{reason="remote_bye"}'] == 1
    assert values["sipbridge_calls_active"] == 0
    assert values["sipbridge_call_setup_seconds_count"] == 1
    assert 0 < values["sipbridge_call_setup_seconds_sum"] < 5  # rang until accepted


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_killed_gateway_loses_no_reported_record(
    start_gateway: Callable[..., Gateway], tmp_path: Path, backend: str,
    request: pytest.FixtureRequest,
) -> None:
    store = str(tmp_path / "calls.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    gateway = start_gateway(auto_answer="silence", api_key=[KEY], store=store)
    text = (SCENARIOS / "uac_listen.xml").read_text()
    scenario = tmp_path / "listen.xml"
    scenario.write_text(text.replace("__RTP_PORT__", "40000").replace("__HOLD__", "4000"))
    # SIPp only keeps the call up (4 s) until the kill; it is stopped right after it
    # rather than left to retransmit its BYE to the dead gateway until it gives up.
    (tmp_path / "sipp").mkdir()
    sipp = subprocess.Popen(sipp_command(gateway.address, scenario, tmp_path / "sipp"),
                            cwd=tmp_path / "sipp", stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{gateway.http_port}/v1"
        call_id = wait_first_call(base, KEY, 10)
        time.sleep(0.3)  # committed within ~70 ms (the store sink holds 20, the writer lingers 50)
        assert sipp.poll() is None, "SIPp's call ended before the kill"
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait(5)
    finally:
        terminate(sipp, 3.0)
    again = start_gateway(auto_answer="silence", api_key=[KEY], store=store)
    record = call_record(f"http://127.0.0.1:{again.http_port}/v1", KEY, call_id)
    assert record["state"] == "ended"
    assert record["end_reason"] == "abnormal: gateway_restarted"
    sip = [e["line"] for e in record["timeline"] if e["kind"] == "sip"]
    assert sip[0].startswith("INVITE ") and "SIP/2.0 200 OK" in sip  # written before the kill
    assert record["timeline"][-1]["kind"] == "gateway"
    # the restarted gateway names the store, never with its password
    shown = store if backend == "sqlite" else store.replace(quote(PASSWORD, safe=""), "***")
    assert f"store {shown}: 1 calls left unfinished by the last run" in again.log()
    assert PASSWORD not in again.log() and quote(PASSWORD, safe="") not in again.log()


@pytest.mark.parametrize("store", ["{tmp}/missing/dir/calls.db",
                                   "postgresql://bob:hunter2@127.0.0.1:1/calls"])
def test_a_store_that_cannot_be_opened_stops_serve_with_one_line(tmp_path: Path,
                                                                 store: str) -> None:
    """No traceback and no password: which store, and why."""
    run = subprocess.run(
        [sys.executable, "-m", "sipbridge", "serve", "--sip", "127.0.0.1:0", "--http", "off"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SIPBRIDGE_STORE": store.format(tmp=tmp_path)})
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[0].startswith("sipbridge: cannot open the call store "), run.stderr
    assert "Traceback" not in run.stderr and "hunter2" not in run.stderr, run.stderr


def test_old_calls_are_purged_while_the_gateway_runs(tmp_path: Path) -> None:
    """store_retention_days holds for a gateway that runs for months, not only at start-up."""
    from sipbridge.config import load_config
    from sipbridge.gateway import Gateway as InProcess

    async def main() -> tuple[CallRecord | None, CallRecord | None]:
        gateway = InProcess(load_config(
            None, sip="127.0.0.1:0", http="off", store=str(tmp_path / "calls.db"),
            store_retention_days=1 / 86400, store_purge_interval=0.2))  # one second
        await gateway.start()
        try:
            store = gateway.store
            assert store is not None  # the gateway has started with a store configured
            now = time.time()
            for call_id, ended in (("rtc_old", now - 5), ("rtc_live", None)):
                # a bare record: purging reads no more than its end
                store.upsert_call(cast("CallRecord", {
                    "id": call_id, "state": "ended" if ended else "active",
                    "created_at": now - 10, "ended_at": ended}))
                store.add_event(call_id, now - 10, "sip", {"line": "INVITE sip:a@b SIP/2.0"})
            assert store.flush()
            assert store.get_call("rtc_old") is not None
            await asyncio.sleep(1.0)
            return store.get_call("rtc_old"), store.get_call("rtc_live")
        finally:
            await gateway.stop()

    old, live = asyncio.run(main())
    assert old is None  # ended 5 s ago, kept for 1 s
    assert live is not None and live["timeline"]  # a call in progress is never purged
