"""Draining a gateway (SIGTERM): new calls and OPTIONS get 503 + Retry-After while the
call under way goes on to its end, then the process exits 0; past `drain_timeout` the
calls still up are ended; a second SIGTERM stops at once."""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.gateway import Gateway
from tests.integration.sipp import SippResult

pytestmark = pytest.mark.integration

SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def ask(gw: Gateway, method: str) -> str:
    """One out-of-dialog request over UDP; the response's head (fails without one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        local = s.getsockname()[1]
        tag = uuid.uuid4().hex[:8]
        body = SDP if method == "INVITE" else ""
        s.sendto((f"{method} sip:agent@{gw.address} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{tag};rport\r\n"
                  f"From: <sip:caller@127.0.0.1>;tag={tag}\r\nTo: <sip:agent@127.0.0.1>\r\n"
                  f"Call-ID: {tag}@127.0.0.1\r\nCSeq: 1 {method}\r\n"
                  f"Contact: <sip:caller@127.0.0.1:{local}>\r\nMax-Forwards: 70\r\n"
                  + ("Content-Type: application/sdp\r\n" if body else "")
                  + f"Content-Length: {len(body)}\r\n\r\n{body}").encode(),
                 (gw.host, gw.port))
        deadline = time.monotonic() + 2.0
        while True:
            try:
                data = s.recv(65535).decode(errors="replace")
            except TimeoutError:
                raise AssertionError(f"no answer to {method} within 2 s") from None
            head = data.split("\r\n\r\n", 1)[0]
            if not head.startswith("SIP/2.0 1") or time.monotonic() > deadline:
                return head


def call_in_background(sipp: Callable[..., SippResult], gw: Gateway, seconds: float,
                       give_up: float = 20.0) -> tuple[threading.Thread, dict[str, Any]]:
    """SIPp's uac: one call that stays up `seconds` before its BYE; in a thread. SIPp
    stops `give_up` s after the call's end at the latest (a BYE the gateway, gone, never
    answers is retransmitted for 32 s)."""
    got: dict[str, Any] = {}

    def run() -> None:
        got["result"] = sipp(gw, "uac", calls=1, extra=["-d", str(int(seconds * 1000))],
                             timeout=seconds + give_up)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, got


def wait_answered(gw: Gateway, calls: int = 1) -> None:
    deadline = time.monotonic() + 10
    while gw.metric("sipbridge_calls_active") < calls:
        assert time.monotonic() < deadline, f"no call up within 10 s:\n{gw.log()}"
        time.sleep(0.05)


def drained(start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult],
            drain_timeout: float, seconds: float, give_up: float = 20.0,
            ) -> tuple[Gateway, threading.Thread, dict[str, Any], float]:
    """A gateway with one call up for `seconds`, sent SIGTERM: the gateway, the call's
    thread and result, and when the signal went."""
    gw = start_gateway(auto_answer="echo", drain_timeout=drain_timeout)
    thread, got = call_in_background(sipp, gw, seconds, give_up)
    wait_answered(gw)
    gw.process.send_signal(signal.SIGTERM)
    return gw, thread, got, time.monotonic()


def test_sigterm_refuses_new_calls_and_waits_for_the_call_under_way(
        start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult]) -> None:
    gw, thread, got, signalled = drained(start_gateway, sipp, 30, 4.0)
    time.sleep(0.3)
    for method in ("OPTIONS", "INVITE"):
        head = ask(gw, method)
        assert head.startswith("SIP/2.0 503 Service Unavailable (draining)"), head
        assert "\r\nRetry-After: 30" in head, head
    assert gw.process.poll() is None  # still serving its call
    thread.join(40)
    result = got["result"]
    assert (result.successful, result.failed) == (1, 0), result.describe()
    gw.process.wait(10)
    took = time.monotonic() - signalled
    assert gw.process.returncode == 0, gw.log()
    assert took < 10, took  # at the call's end (~4 s), not at drain_timeout
    log = gw.log()
    assert "sipbridge: draining" in log and "draining: every call has ended" in log, log
    assert "refused_draining=2" in log, log


def test_past_drain_timeout_calls_are_ended_and_a_second_sigterm_stops_at_once(
        start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult]) -> None:
    gw, thread, _, signalled = drained(start_gateway, sipp, 1.0, 5.0, give_up=1.0)
    gw.process.wait(10)
    took = time.monotonic() - signalled
    assert gw.process.returncode == 0, gw.log()
    assert 0.9 < took < 4.0, took
    assert "draining: 1 calls still up after 1 s: ended" in gw.log(), gw.log()
    thread.join(40)

    again, thread, _, _ = drained(start_gateway, sipp, 60, 5.0, give_up=1.0)
    time.sleep(0.3)
    assert again.process.poll() is None
    again.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    again.process.wait(10)
    assert again.process.returncode == 0, again.log()
    assert time.monotonic() - started < 3.0
    thread.join(40)
