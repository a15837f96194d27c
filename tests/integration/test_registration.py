"""Registration to a provider with a real registrar: Kamailio (registrar, usrloc, auth)
checks the gateway's digest, keeps its binding, and routes a call from SIPp for the AOR to
the gateway's Contact; the gateway's shutdown removes the binding. Bad input: a registrar
that refuses (403, a wrong password) or answers nothing is retried with backoff, reported
as failing, and registered with once it comes back."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.gateway import Gateway
from tests.integration.kamailio import Kamailio, kamailio_binary
from tests.integration.probe import LOOPBACK, options_request
from tests.integration.sipp import run_sipp
from tests.polling import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(kamailio_binary() is None,
                       reason="kamailio is not installed (scripts/setup.sh installs it)"),
]

REALM = "example.com"
PASSWORD = "s3cret-pw"
USER = "100"
KEY = "test-key"


def registrar(tmp_path: Path, name: str, port: int = 0, tcp: bool = False) -> Kamailio:
    return Kamailio(tmp_path / name, "registrar", defines={"REALM": REALM,
                                                           "PASSWORD": PASSWORD},
                    port=port, tcp=tcp)


def registration(port: int, password: str = PASSWORD, **more: Any) -> dict[str, Any]:
    return {"name": "prov", "registrar": f"{LOOPBACK}:{port}", "aor": f"sip:{USER}@{REALM}",
            "username": USER, "password": password, "expires": 60, "contact_user": "agent",
            "retry_min": 0.5, "retry_max": 2.0, **more}


def registrations(gw: Gateway) -> list[dict[str, Any]]:
    r = httpx.get(f"http://{gw.host}:{gw.http_port}/v1/sipbridge/registrations",
                  headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def prov(gw: Gateway) -> dict[str, Any]:
    return registrations(gw)[0]


def wait_state(gw: Gateway, state: str, timeout: float) -> dict[str, Any]:
    return until(f"the registration {state}", lambda: prov(gw),
                 lambda r: r["state"] == state, timeout, interval=0.1)


def location_has(k: Kamailio, user: str) -> bool:
    """Whether Kamailio's location table binds `user` (its OPTIONS answer: 200 or 404)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(2)
        data = options_request(LOOPBACK, k.carrier_port, s.getsockname())
        s.sendto(data.replace(b"OPTIONS sip:", f"OPTIONS sip:{user}@".encode(), 1),
                 (LOOPBACK, k.carrier_port))
        line = s.recvfrom(65535)[0].split(b"\r\n", 1)[0].decode()
    assert line.startswith(("SIP/2.0 200", "SIP/2.0 404")), line
    return line.startswith("SIP/2.0 200")


def status_command(gw: Gateway) -> str:
    done = subprocess.run([sys.executable, "-m", "sipbridge", "status", "--http",
                           f"{gw.host}:{gw.http_port}", "--api-key", KEY],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_kamailio_accepts_the_registration_and_routes_a_call_through_it(
        start_gateway: Callable[..., Gateway], tmp_path: Path, transport: str) -> None:
    with registrar(tmp_path, "kamailio", tcp=transport == "tcp") as k:
        gw = start_gateway(auto_answer="silence", api_key=[KEY],
                           registration=[registration(k.carrier_port, transport=transport)])
        state = wait_state(gw, "registered", 10)
        assert state["last_status"] == 200 and state["expires_at"] > time.time() + 30
        assert state["transport"] == transport and state["aor"] == f"sip:{USER}@{REALM}"
        assert location_has(k, USER)
        log = k.log()
        assert "TRACE challenge REGISTER" in log and "TRACE saved REGISTER" in log, log[-3000:]
        assert PASSWORD not in gw.log()
        unkeyed = httpx.get(f"http://{gw.host}:{gw.http_port}/v1/sipbridge/registrations",
                            timeout=5)
        assert unkeyed.status_code == 401, unkeyed.text
        shown = status_command(gw)
        assert "registration prov: sip:100@example.com" in shown and "registered until" in shown
        metrics = httpx.get(f"http://{gw.host}:{gw.http_port}/metrics",
                            headers={"Authorization": f"Bearer {KEY}"}, timeout=5).text
        assert 'sipbridge_registration_up{name="prov"} 1.0' in metrics

        # SIPp calls the AOR at the registrar; Kamailio finds the gateway's Contact.
        sipp = run_sipp(f"{LOOPBACK}:{k.carrier_port}", "uac", tmp_path / "sipp",
                        service=USER, timeout=20)
        assert sipp.ok and sipp.successful == 1, (sipp.describe(), k.trace_text())
        relayed = [h for h in k.trace() if h.kind == "out" and h.method == "INVITE"]
        contact = f"sip:agent@{gw.address};transport={transport}"
        assert relayed and contact in str(relayed[0].ruri), k.trace_text()

        assert gw.stop() == 0
        assert not location_has(k, USER), "the binding outlived the gateway's shutdown"
        assert "Expires: 0" in k.log() or "expires 0" in k.log(), k.log()[-3000:]
        # A second call for the AOR finds no binding: Kamailio answers it 404 itself.
        again = run_sipp(f"{LOOPBACK}:{k.carrier_port}", "uac", tmp_path / "sipp-after",
                         service=USER, timeout=10)
        assert not again.ok, again.describe()
        assert any(h.kind == "drop" and h.method == "INVITE" for h in k.trace()), \
            k.trace_text()


def test_a_refusing_registrar_is_retried_with_backoff(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    with registrar(tmp_path, "kamailio") as k:
        gw = start_gateway(api_key=[KEY],
                           registration=[registration(k.carrier_port, password="wrong")])
        state = wait_state(gw, "failing", 10)
        started = time.monotonic()
        time.sleep(4)
        state = prov(gw)
        elapsed = time.monotonic() - started
        assert state["state"] == "failing" and state["last_status"] == 403, state
        assert state["next_attempt_at"] is not None
        # retry_min 0.5 s doubling to retry_max 2 s: a handful in 4 s, not thousands.
        failures = state["failures"]
        assert 2 <= failures <= elapsed / 0.5 + 2, state
        registers = [h for h in k.trace() if h.kind == "in" and h.method == "REGISTER"]
        assert len(registers) <= 2 * failures + 2, len(registers)
        assert not location_has(k, USER)
        shown = status_command(gw)
        assert "failing: 403 Wrong Password" in shown and "next attempt at" in shown, shown
        lines = [ln for ln in gw.log().splitlines() if "registration prov" in ln]
        assert len(lines) <= 2, lines  # one line for the change, none per retry
        assert "wrong" not in gw.log()  # the password


def test_a_silent_registrar_times_out_and_is_registered_with_once_back(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    """A registrar whose port is bound but never answers: each attempt ends at Timer F
    (408), the next comes after a backoff; once Kamailio answers on that port, the
    registration comes up without a restart."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((LOOPBACK, 0))
    port = silent.getsockname()[1]
    # t1 0.025 s: Timer F (64 x T1) ends an unanswered attempt after 1.6 s.
    gw = start_gateway(api_key=[KEY], t1=0.025, registration=[registration(
        port, retry_min=0.25, retry_max=1.0)])
    received: list[bytes] = []
    silent.settimeout(0.2)
    watch_until = time.monotonic() + 4.5
    while time.monotonic() < watch_until:
        with contextlib.suppress(TimeoutError):
            received.append(silent.recv(65535))
    silent.close()
    state = prov(gw)
    assert state["state"] == "failing" and state["last_status"] == 408, state
    # Between two attempts (not while one is under way) it names the next one.
    until("a next attempt named", lambda: prov(gw),
          lambda r: r["next_attempt_at"] is not None and r["next_attempt_at"] > time.time(),
          6, interval=0.1)
    cseqs = {ln for data in received for ln in data.decode(errors="replace").split("\r\n")
             if ln.startswith("CSeq:")}
    # 4.5 s of 1.6 s attempts with backoff of 0.25 s doubling to 1 s between them: 2 or 3
    # attempts (each retransmitted by Timer E), not a tight loop.
    assert 2 <= len(cseqs) <= 3, (len(cseqs), len(received))
    assert len(received) <= 12 * len(cseqs), len(received)  # Timer E's retransmissions
    assert all(d.startswith(b"REGISTER sip:") for d in received)
    lines = [ln for ln in gw.log().splitlines() if "registration prov" in ln]
    assert len(lines) == 1 and "408" in lines[0], lines  # one line, not one per retry
    with registrar(tmp_path, "kamailio", port=port) as k:
        state = wait_state(gw, "registered", 10)
        assert state["failures"] >= 2 and location_has(k, USER)
        assert json.dumps(state)  # the API's shape is plain JSON
        # stopped while the registrar answers its un-REGISTER (not waiting 2 s for none)
        assert gw.stop() == 0, gw.log()[-3000:]


def test_a_registrar_gone_quiet_does_not_hold_up_shutdown(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    """Registered, then the registrar freezes (SIGSTOP): the un-REGISTER goes unanswered and
    the gateway still exits at once after its 2 s wait, cleanly."""
    with registrar(tmp_path, "kamailio") as k:
        gw = start_gateway(api_key=[KEY], registration=[registration(k.carrier_port)])
        wait_state(gw, "registered", 10)
        assert k.process is not None
        os.killpg(k.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            code = gw.stop()
            took = time.monotonic() - started
        finally:
            os.killpg(k.process.pid, signal.SIGCONT)
        assert code == 0, gw.log()[-3000:]
        assert took < 4.5, took
        assert "registration prov: sip:100@example.com unregistering" in gw.log()


def test_a_refused_tcp_connection_is_a_failure_retried_with_backoff(
        start_gateway: Callable[..., Gateway]) -> None:
    """Nothing listens at the registrar's TCP port: each attempt fails at once as 503 (the
    connection refused), and the retries keep to the backoff."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]  # closed again: connections to it are refused
    gw = start_gateway(api_key=[KEY], registration=[registration(port, transport="tcp")])
    state = wait_state(gw, "failing", 10)
    time.sleep(4)
    state = prov(gw)
    assert state["state"] == "failing" and state["last_status"] == 503, state
    assert "refused" in str(state["last_reason"]).lower(), state
    # 0.5 s doubling to 2 s: at most 5 attempts in the first 4.x s, never a tight loop.
    assert 2 <= state["failures"] <= 6, state
    lines = [ln for ln in gw.log().splitlines() if "registration prov" in ln]
    assert len(lines) == 1, lines
    unsent = [ln for ln in gw.log().splitlines() if "not sent to" in ln]
    assert 1 <= len(unsent) < state["failures"], unsent  # the transport's line is throttled
