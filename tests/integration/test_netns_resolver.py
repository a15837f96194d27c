"""A caller's host names are never looked up: the gateway runs in a network namespace of
its own whose only name server records every query and never answers (netns.py), so a
lookup would both stall whatever waits for it and leave the name in the record; no query
can reach the host's resolver, which the namespace cannot reach at all.

The call names hosts everywhere a caller can: the SDP's c= line (a host name, or the
non-address 999.1.1.1), the Via sent-by, the Contact and a Record-Route. While it lasts,
OPTIONS are answered at once, the caller's BYE is answered, and the name server has heard
nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway import LOOP_STALL_MS, STALL_LINE, to_toml
from tests.integration.netns import Netns, probe_result
from tests.integration.sipp import read_sipp_stats, sipp_command

pytestmark = pytest.mark.integration

SIP_PORT = 5060  # the namespace is empty: any port is free in it
CALL_SECONDS = 3.0  # between the ACK and the BYE: 150 of the gateway's 20 ms ticks
MAX_LATENCY = 0.1  # s for an OPTIONS answer during the call (1 ms when idle on loopback)


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Netns]:
    why = Netns.available()
    if why is not None:
        pytest.skip(f"no network namespace here: {why}")
    ns = Netns(tmp_path)
    yield ns
    ns.close()


class NsGateway:
    """`sipbridge serve` inside the namespace."""

    def __init__(self, ns: Netns, tmp_path: Path, **config: Any) -> None:
        config.setdefault("sip", f"127.0.0.1:{SIP_PORT}")
        config.setdefault("http", "off")
        config.setdefault("store", str(tmp_path / "gateway.db"))
        self.config_path = tmp_path / "gateway.toml"
        self.config_path.write_text(to_toml(config))
        self.log_path = tmp_path / "gateway.log"
        # The loop is watched for stalls (given in the environment, which a gateway without
        # the watch ignores).
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPBRIDGE_")}
        env["SIPBRIDGE_SLOW_CALLBACK_MS"] = str(LOOP_STALL_MS)
        with self.log_path.open("wb") as log:
            self.process = ns.popen(
                [sys.executable, "-m", "sipbridge", "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                env=env,
            )
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"sipbridge exited with {self.process.returncode}:\n{self.log()}")
            answered = probe_result(ns.probe("127.0.0.1", SIP_PORT, 0.01), 10)
            if answered and answered[0] is not None:
                return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"sipbridge in the namespace did not answer OPTIONS within 10 s:"
                            f"\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _call(netns: Netns, tmp_path: Path, media_host: str,
          **config: Any) -> tuple[NsGateway, list[dict[str, Any]], str]:
    """The call, OPTIONS all along, the checks that it went well: what the name server
    heard, and the context for an assertion message."""
    gateway = NsGateway(netns, tmp_path, auto_answer="silence", **config)
    try:
        probes = netns.probe("127.0.0.1", SIP_PORT, CALL_SECONDS + 1.5)
        workdir = tmp_path / "sipp"
        workdir.mkdir()
        command = sipp_command(
            f"127.0.0.1:{SIP_PORT}", "uac_named_hosts.xml", workdir, timeout=20,
            # A BYE the gateway does not answer within 3 s fails the call.
            recv_timeout=3,
            extra=["-key", "media_host", media_host, "-d", str(int(CALL_SECONDS * 1000))],
        )
        with (workdir / "output.txt").open("wb") as out:
            sipp = netns.popen(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT)
            try:
                returncode = sipp.wait(40)
            except subprocess.TimeoutExpired:
                sipp.kill()
                returncode = sipp.wait()
        latencies = probe_result(probes, 40)
    finally:
        gateway.stop()
    queries = netns.queries()
    messages = (workdir / "messages.log").read_text(errors="replace") \
        if (workdir / "messages.log").exists() else ""
    context = (f"gateway log:\n{gateway.log()[-4000:]}\nsipp messages:\n{messages[-4000:]}\n"
               f"name server heard: {queries[:10]}")

    stats = read_sipp_stats(workdir / "stats.csv")
    assert returncode == 0 and stats.get("SuccessfulCall(C)") == "1", (
        f"the call (INVITE, 200, ACK, BYE answered within 3 s) failed: SIPp exit "
        f"{returncode}\n{context}")
    answered = [x for x in latencies if x is not None]
    assert len(answered) == len(latencies) >= 40, (
        f"{len(latencies) - len(answered)} of {len(latencies)} OPTIONS went unanswered "
        f"for 2 s during the call\n{context}")
    assert max(answered) < MAX_LATENCY, (
        f"OPTIONS answered in up to {max(answered) * 1000:.0f} ms during the call "
        f"(bound {MAX_LATENCY * 1000:.0f} ms)\n{context}")
    assert "Traceback" not in gateway.log(), context
    assert STALL_LINE not in gateway.log(), context
    return gateway, queries, context


@pytest.mark.parametrize("media_host", ["media.example.com", "999.1.1.1"])
def test_a_callers_host_names_are_never_looked_up(netns: Netns, tmp_path: Path,
                                                  media_host: str) -> None:
    _, queries, context = _call(netns, tmp_path, media_host)
    assert queries == [], f"the gateway looked up names the caller chose:\n{context}"


def test_a_media_name_looked_up_when_asked_never_stalls_the_loop(netns: Netns,
                                                                 tmp_path: Path) -> None:
    """media_resolve_names: the c= name is looked up through the SIP resolver, in the
    background and bounded (dns_timeout); the unanswered lookup delays nothing else, and
    the caller's other names are still not looked up."""
    _, queries, context = _call(netns, tmp_path, "media.example.com",
                                media_resolve_names=True, dns_timeout=1.0)
    names = {q["name"] for q in queries}
    assert names == {"media.example.com"}, context
