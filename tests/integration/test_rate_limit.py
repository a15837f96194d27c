"""A flood from one source address is blocked; callers from other addresses are not.

The gateway trusts no loopback address here (`allow` names another network), so every
source is rate-limited and callers authenticate by digest. sipsak's flood mode sends
OPTIONS from 127.0.0.1 as fast as it can: past its burst the source is blocked, its
messages dropped unanswered, the block logged once and counted in /metrics, while a
SIPp caller from 127.0.0.2 still completes a call.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
from collections.abc import Callable

import pytest

from tests.integration.gateway import Gateway
from tests.integration.sipp import SippResult
from tests.polling import until

pytestmark = pytest.mark.integration

AUTH = {"realm": "gw", "users": {"alice": "secret"}, "algorithms": ["MD5"]}  # auth_call.xml's
NOT_LOOPBACK = ["192.0.2.0/24"]
FLOOD = 3000  # OPTIONS sent by sipsak; loopback UDP drops some of them

needs_sipsak = pytest.mark.skipif(shutil.which("sipsak") is None,
                                  reason="sipsak is not installed (scripts/setup.sh does)")


def block_lines(gw: Gateway) -> list[str]:
    return [line for line in gw.log().splitlines() if " blocked for " in line]


def sipsak_flood(gw: Gateway) -> None:
    proc = subprocess.run(["sipsak", "-F", "-e", str(FLOOD), "-s", f"sip:gw@{gw.address}"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert "flood end reached" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@needs_sipsak
def test_a_udp_flood_is_blocked_and_a_caller_elsewhere_gets_through(
    start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult]
) -> None:
    gw = start_gateway(allow=NOT_LOOPBACK, auth=AUTH, auto_answer="silence")
    sipsak_flood(gw)
    until("the block in /metrics", lambda: gw.metric("sipbridge_rate_blocks_total"),
          lambda blocks: blocks == 1, 5.0)
    assert gw.metric("sipbridge_rate_blocked_sources") == 1
    # sipsak's OPTIONS that reached the gateway past the first burst of 60 (loopback
    # drops part of a flood this fast: about a third arrive).
    dropped = gw.metric("sipbridge_rate_dropped_messages_total")
    assert dropped >= 100, dropped
    lines = block_lines(gw)
    assert len(lines) == 1, lines
    assert "WARNING" in lines[0] and "source 127.0.0.1 blocked for 60s" in lines[0], lines
    assert "limit 20/s" in lines[0], lines
    # The flooder gets nothing back now, not even a refusal.
    assert gw.options(timeout=1.0) is None

    # A caller from another address, limited too but well within its rate, is served:
    # challenged, authenticated, answered, hung up.
    result = sipp(gw, "auth_call.xml", local_ip="127.0.0.2")
    assert result.ok, result.describe()
    assert gw.metric("sipbridge_rate_blocks_total") == 1
    assert gw.process.poll() is None


def test_a_tcp_flood_is_counted_per_message_and_blocked(
    start_gateway: Callable[..., Gateway]
) -> None:
    """300 OPTIONS in one TCP connection: about 60 (the burst) are answered (401:
    127.0.0.1 must authenticate), then the source is blocked: its connection is closed
    with the rest unread, and a new connection from it is closed at once."""
    gw = start_gateway(allow=NOT_LOOPBACK, auth=AUTH)
    with socket.create_connection((gw.host, gw.port), timeout=5) as sock:
        local = sock.getsockname()
        flood = b"".join(options(i, local) for i in range(300))
        with contextlib.suppress(ConnectionError):  # closed under the flood
            sock.sendall(flood)
        answers, closed = read_answers(sock, quiet=1.5)
        # The burst, less the start-up probes' OPTIONS from 127.0.0.1, plus what refilled
        # (20/s) while the flood was read.
        assert 55 <= len(answers) <= 65, len(answers)
        assert all(a.startswith("SIP/2.0 401") for a in answers), answers[:3]
        assert closed, "the blocked source's connection was left open"
    with socket.create_connection((gw.host, gw.port), timeout=5) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(options(999, sock.getsockname()))
        assert read_answers(sock, quiet=1.0) == ([], True)
    assert gw.metric("sipbridge_rate_blocks_total") == 1
    assert gw.metric("sipbridge_rate_dropped_messages_total") >= 1
    assert len(block_lines(gw)) == 1


@needs_sipsak
def test_an_exempt_source_may_flood(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(allow=NOT_LOOPBACK, auth=AUTH,
                       rate_limit={"exempt": ["127.0.0.1/32"]})
    sipsak_flood(gw)
    assert gw.options(timeout=2.0) is not None
    assert gw.metric("sipbridge_rate_blocks_total") == 0
    assert gw.metric("sipbridge_rate_dropped_messages_total") == 0
    assert block_lines(gw) == []


def options(n: int, local: tuple[str, int]) -> bytes:
    host, port = local
    return (f"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bK-flood-{n}\r\n"
            f"From: <sip:flood@{host}>;tag=f{n}\r\nTo: <sip:gw@127.0.0.1>\r\n"
            f"Call-ID: flood-{n}@{host}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def read_answers(sock: socket.socket, quiet: float) -> tuple[list[str], bool]:
    """The status lines of what comes back until `quiet` seconds pass with nothing, and
    whether the gateway closed the connection."""
    sock.settimeout(quiet)
    data = b""
    closed = False
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    return [m.decode() for m in re.findall(rb"(?m)^SIP/2\.0 [^\r\n]+", data)], closed
