"""Resource limits: calls at once (in all, per source) refused 503 + Retry-After before any
call state; inbound TCP connections capped in all and per source, closed when their first
message does not come or when no whole message renews them; the open-file limit raised
at start and checked against the configured limits."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from sipbridge.sip.address import Address
from sipbridge.sip.transport import SipTransport
from tests.unit.callharness import OFFER, Harness, ack, invite

SDP = OFFER.format(direction="sendrecv")


def call(h: Harness, n: int, source: Address | None = None) -> list[int]:
    """Send call number n's INVITE; the statuses it got."""
    before = len(h.sent)
    text = invite(SDP, branch=f"b{n}").replace("Call-ID: call-1", f"Call-ID: call-{n}")
    if source is None:
        h.send(text)
    else:
        h.send(text, source)
    return [r.status for r in h.sent[before:]]


def test_calls_past_max_calls_get_503_with_retry_after_and_leave_nothing() -> None:
    h = Harness(max_calls=2)
    assert call(h, 1) == [200] and call(h, 2) == [200]
    assert call(h, 3) == [503]
    refused = h.sent[-1]
    assert refused.headers.get("Retry-After") == "5" and "call limit" in refused.reason
    assert len(h.manager.calls) == 2 and h.media.pool.in_use == 2  # no record, no port
    assert h.manager.refused_busy == 1
    # One call ends: the next one is answered.
    first = next(r for r in h.sent if r.status == 200 and r.call_id == "call-1")
    h.send(ack(first.to.tag or "").replace("ACK sip", "BYE sip").replace("1 ACK", "2 BYE"))
    assert len(h.manager.calls) == 1 and not h.manager.per_source.get("127.0.0.2")
    assert call(h, 4) == [200]


def test_calls_per_source_are_limited_apart() -> None:
    h = Harness(max_calls_per_source=1)
    assert call(h, 1) == [200]
    assert call(h, 2) == [503]
    assert call(h, 3, Address("udp", "127.0.0.2", 5062)) == [200]
    assert dict(h.manager.per_source) == {"127.0.0.1": 1, "127.0.0.2": 1}


OPTIONS = (b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK1"
           b"\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: o1\r\n"
           b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def closed(sock: socket.socket, within: float) -> bool:
    """Whether the gateway closed `sock` (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_tcp_connections_are_capped_and_must_send_whole_messages() -> None:
    received: list[bytes] = []

    async def run() -> dict[str, object]:
        transport = SipTransport(lambda data, source: received.append(data),
                                 max_connections=3, max_per_source=2,
                                 first_message_timeout=1.0, idle_timeout=3.0)
        await transport.start("127.0.0.1", 0)
        port = transport.port
        out: dict[str, object] = {}

        def connect(source: str = "127.0.0.1") -> socket.socket:
            sock = socket.socket()
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
            return sock

        try:
            a = connect()
            a.sendall(OPTIONS)  # a whole message at once; then only bytes (below)
            sent_at = time.monotonic()
            b = connect()
            await asyncio.sleep(0.1)
            c = connect()  # a third from the same source: over the per-source limit
            await asyncio.sleep(0.1)
            out["third_closed"] = await asyncio.to_thread(closed, c, 0.5)
            d = connect("127.0.0.2")  # another source fits
            await asyncio.sleep(0.1)
            e = connect("127.0.0.3")  # the fourth in all: over the total
            await asyncio.sleep(0.1)
            out["fourth_closed"] = await asyncio.to_thread(closed, e, 0.5)
            out["open"] = len(transport.connections)
            out["refused"] = transport.stats_refused
            # b and d send nothing: closed once their first second is up.
            out["silent_closed"] = [await asyncio.to_thread(closed, s, 1.5) for s in (b, d)]
            # a trickles bytes that never complete a message: they do not keep it open.
            for _ in range(8):
                a.sendall(b"O")
                await asyncio.sleep(0.1)
            out["trickler_open"] = not await asyncio.to_thread(closed, a, 0.01)
            out["trickler_closed"] = await asyncio.to_thread(closed, a, 3.0)
            out["trickler_lasted"] = time.monotonic() - sent_at
            for s in (a, b, c, d, e):
                s.close()
        finally:
            await transport.close()
        return out

    out = asyncio.run(run())
    assert out["third_closed"] and out["fourth_closed"]
    assert out["open"] == 3 and out["refused"] == 2
    assert out["silent_closed"] == [True, True]  # no first message within 1 s
    assert out["trickler_open"] and out["trickler_closed"]
    lasted = out["trickler_lasted"]
    # idle 3 s after its message, bytes or not
    assert isinstance(lasted, float) and 2.9 < lasted < 3.8
    assert received == [OPTIONS]


def _limit(soft: int, hard: int, **config: object) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(f"""
        import resource
        from sipbridge.config import load_config
        from sipbridge.gateway import raise_file_limit
        resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
        try:
            print("limit", raise_file_limit(load_config(None, **{config!r})))
        except ValueError as exc:
            print("refused", exc)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=True)


def test_the_open_file_limit_is_raised_and_checked() -> None:
    assert _limit(512, 8192).stdout.strip() == "limit 8192"  # soft raised to hard
    refused = _limit(1024, 1024).stdout.strip()  # the defaults need more than 1024
    assert _limit(4096, 4096).stdout.strip() == "limit 4096"  # and fit in 4096
    assert refused.startswith("refused the open-file limit is 1024, and the limits need 3968")
    assert "tcp_max_connections" in refused and "max_calls" in refused
    assert _limit(1024, 1024, tcp_max_connections=300, max_calls=100).stdout.strip() == \
        "limit 1024"


def test_loop_errors_are_logged_once_per_interval_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from sipbridge.gateway import LoopErrors

    errors = LoopErrors(interval=0.2)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(500):  # asyncio's report when accept() runs out of descriptors
                errors.handle(loop, {"message": "socket.accept() out of system resource",
                                     "exception": OSError(24, "Too many open files")})
            time.sleep(0.25)
            errors.handle(loop, {"message": "socket.accept() out of system resource",
                                 "exception": OSError(24, "Too many open files")})
            errors.handle(loop, {"message": "Exception in callback",
                                 "exception": ZeroDivisionError("a fault of ours")})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("socket.accept() out of system resource: [Errno 24] Too many open "
                        "files")
    assert lines[1].endswith("(499 more like it in the last 0.2 s)")
    assert len(lines) == 3 and caplog.records[0].exc_info is None
    assert "Exception in callback" in lines[2] and caplog.records[2].exc_info is not None


def test_agent_calls_past_the_agents_limit_get_503_agents_busy() -> None:
    h = Harness()
    h.manager.policy = dataclasses.replace(h.manager.policy, auto_answer="agent",
                                           max_agent_calls=1)
    assert call(h, 1) == [200]
    assert call(h, 2) == [503]
    refused = h.sent[-1]
    assert refused.reason == "Service Unavailable (agents busy)"
    assert refused.headers.get("Retry-After") == "5"
    assert len(h.manager.calls) == 1 and h.media.pool.in_use == 1
    # Only the agent's calls count against it.
    h.manager.policy = dataclasses.replace(h.manager.policy, auto_answer="echo")
    assert call(h, 3) == [200]
