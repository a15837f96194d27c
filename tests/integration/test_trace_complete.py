"""Every SIP message of a call is on its timeline, those after the end too: the 200 to the
caller's BYE, our BYE and each of its retransmissions when the ACK never came, and the answer
to it; in the API's record (GET /v1/realtime/calls/{id}), the store and `sipbridge trace`."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.gateway import Gateway
from tests.integration.sipp import SCENARIOS, SippResult

pytestmark = pytest.mark.integration

Sipp = Callable[..., SippResult]
T1 = 0.05  # short SIP timers: the ACK is given up on after 64*T1 = 3.2 s
BYE_CSEQ = re.compile(r"\r\nCSeq:\s*\d+\s+BYE\r\n", re.IGNORECASE)


def the_call(gateway: Gateway) -> dict[str, Any]:
    """The gateway's one call, once it has ended, with its timeline."""
    base = f"http://127.0.0.1:{gateway.http_port}/v1/realtime/calls"
    deadline = time.monotonic() + 10
    while True:
        calls = httpx.get(base).json()["data"]
        if calls and calls[0]["state"] == "ended":
            record: dict[str, Any] = httpx.get(f"{base}/{calls[0]['id']}").json()
            return record
        if time.monotonic() > deadline:
            pytest.fail(f"no ended call within 10 s: {calls}")
        time.sleep(0.05)


def sip(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(dir, start line, text) of each SIP message on the call's timeline, in order."""
    return [(e["dir"], e["line"], e["text"]) for e in record["timeline"] if e["kind"] == "sip"]


def stored_trace(gateway: Gateway, call_id: str, done: Callable[[str], bool]) -> str:
    """`sipbridge trace` of the call from the store, once `done` holds for it (10 s at most:
    the store's writer commits within milliseconds)."""
    deadline = time.monotonic() + 10
    while True:
        run = subprocess.run(
            [sys.executable, "-m", "sipbridge", "trace", call_id, "--store",
             str(gateway.config["store"]), "--full"],
            capture_output=True, text=True, timeout=60, check=False)
        if run.returncode == 0 and done(run.stdout):
            return run.stdout
        if time.monotonic() > deadline:
            pytest.fail(f"the store's trace is not complete within 10 s:\n{run.stdout}"
                        f"{run.stderr}")
        time.sleep(0.2)


def test_the_200_to_the_callers_bye_is_on_the_timeline(
    start_gateway: Callable[..., Gateway], sipp: Sipp,
) -> None:
    gateway = start_gateway(auto_answer="silence")
    result = sipp(gateway, "uac")
    assert result.ok, result.describe()
    record = the_call(gateway)
    assert record["end_reason"] == "remote_bye"
    messages = sip(record)
    bye = next(i for i, (d, line, _) in enumerate(messages)
               if d == "in" and line.startswith("BYE "))
    answers = [(d, line) for d, line, text in messages[bye + 1:] if BYE_CSEQ.search(text)]
    assert answers == [("out", "SIP/2.0 200 OK")], messages
    ended = next(i for i, e in enumerate(record["timeline"]) if e["kind"] == "call")
    assert record["timeline"][ended]["status"] == "ended"
    assert ended < len(record["timeline"]) - 1  # the 200 went out after the end
    trace = stored_trace(gateway, record["id"], lambda out: "SIP/2.0 200 OK" in out.split(
        "BYE sip:", 1)[-1])
    lines = trace.splitlines()
    bye_at = next(i for i, ln in enumerate(lines) if "BYE sip:" in ln and "<-" not in ln)
    assert any("SIP/2.0 200 OK" in ln and "<-" in ln for ln in lines[bye_at:]), trace


def test_every_bye_sent_after_an_ack_timeout_is_on_the_timeline(
    start_gateway: Callable[..., Gateway], sipp: Sipp, tmp_path: Path,
) -> None:
    gateway = start_gateway(auto_answer="silence", t1=T1)
    scenario = tmp_path / "uac_no_ack.xml"
    # Unanswered for 1 s: BYE at 0, then (Timer E) at 0.05, 0.15, 0.35 and 0.75 s.
    scenario.write_text((SCENARIOS / "uac_no_ack.xml").read_text().replace("__WAIT__", "1000"))
    result = sipp(gateway, scenario, timeout=30, recv_timeout=15)
    assert result.ok, result.describe()
    received = len(re.findall(r"^BYE sip:", result.messages, re.MULTILINE))
    assert received >= 4, result.describe()  # the first BYE and its retransmissions
    record = the_call(gateway)
    assert record["end_reason"] == "no_ack"
    messages = sip(record)
    sent = [line for d, line, _ in messages if d == "out" and line.startswith("BYE ")]
    assert len(sent) == received, messages  # every transmission, none twice
    answers = [line for d, line, text in messages if d == "in" and BYE_CSEQ.search(text)]
    assert answers and answers[0] == "SIP/2.0 200 OK", messages  # the answer to our BYE

    def rows(out: str, text: str) -> list[int]:
        """The ladder's rows (not the messages' text) that show `text`."""
        return [i for i, ln in enumerate(out.splitlines()) if text in ln and "|" not in ln]

    trace = stored_trace(gateway, record["id"],
                         lambda out: len(rows(out, "BYE sip:")) == received)
    lines = trace.splitlines()
    byes = rows(trace, "BYE sip:")
    assert all("<-" in lines[i] for i in byes), trace  # all of them ours
    assert any("->" in lines[i] for i in rows(trace, "SIP/2.0 200 OK") if i > byes[0]), trace


def test_a_new_call_with_an_ended_calls_call_id_has_its_own_invite(
    start_gateway: Callable[..., Gateway], sipp: Sipp,
) -> None:
    """The ended call is still found by its Call-ID (its transactions may still send): a
    new call that takes the same Call-ID (a caller reusing it) gets its own INVITE."""
    gateway = start_gateway(auto_answer="silence")
    for _ in range(2):
        result = sipp(gateway, "uac", extra=["-cid_str", "reused-call-id@127.0.0.1"])
        assert result.ok, result.describe()
    base = f"http://127.0.0.1:{gateway.http_port}/v1/realtime/calls"
    calls = httpx.get(base).json()["data"]
    assert len(calls) == 2 and {c["sip"]["call_id"] for c in calls} == {
        "reused-call-id@127.0.0.1"}
    for call in calls:
        record = httpx.get(f"{base}/{call['id']}").json()
        invites = [line for d, line, _ in sip(record) if d == "in" and line.startswith("INVITE")]
        assert len(invites) == 1 and sip(record)[0][1].startswith("INVITE "), sip(record)
