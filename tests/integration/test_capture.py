"""The wire tap of capture.py: its kernel-side filter takes exactly the packets to or from
the ports asked for, each once, and the tap fails loudly when it lost any."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.integration import capture as tap
from tests.integration.capture import Seen, TapLost, bpf_program, can_capture, capture, port_runs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not can_capture(), reason="capturing on lo needs root"),
]


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 that takes what the test sends (so no ICMP comes back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s


def send(port: int, payload: bytes, count: int = 1) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(payload, ("127.0.0.1", port))


def test_port_runs_and_the_filter_stay_short_for_a_range() -> None:
    assert port_runs([5, 3, 4, 9, 9, 11]) == [(3, 5), (9, 9), (11, 11)]
    assert port_runs(range(61000, 65536)) == [(61000, 65535)]
    # The whole filter for a port range: a few dozen instructions, the last two returns.
    program = bpf_program([(61000, 65535)])
    assert len(program) < 40
    assert program[-2:] == [(0x06, 0, 0, 0), (0x06, 0, 0, tap.SNAPLEN)]


def test_the_kernel_filter_alone_passes_the_ports_asked_for_once(
    receiver: socket.socket,
) -> None:
    port = receiver.getsockname()[1]
    sock = tap._tap([(port, port)])
    try:
        sock.settimeout(0.2)
        send(port, b"wanted", 3)
        send(port + 1 if port < 65535 else port - 1, b"not wanted", 3)
        frames = []
        while True:
            try:
                frames.append(sock.recv(tap.SNAPLEN))
            except TimeoutError:
                break
    finally:
        sock.close()
    parsed = [tap._parse(f) for f in frames]
    assert [(p.dest_port, p.payload) for p in parsed if p] == [(port, b"wanted")] * 3, parsed


def test_the_tap_sees_each_wanted_datagram_once_and_nothing_else(
    receiver: socket.socket,
) -> None:
    port = receiver.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        other_port = other.getsockname()[1]
        with capture([port]) as seen:
            send(port, b"wanted", 5)
            send(other_port, b"not wanted", 5)
    ours = [s for s in seen if s.payload == b"wanted"]
    assert len(ours) == 5, seen  # once each: lo's outgoing copy is not taken
    assert all(s.dest_port == port and s.transport == "udp" for s in ours)
    assert not [s for s in seen if s.payload == b"not wanted"], "the filter let a stranger in"
    # A range takes the port in it, and every port with None.
    with capture(range(port - 1, port + 2)) as in_range, capture() as everything:
        send(port, b"in range")
        send(other_port, b"elsewhere")
    assert [s.payload for s in in_range] == [b"in range"]
    payloads = {s.payload for s in everything}
    assert {b"in range", b"elsewhere"} <= payloads


def test_the_tap_reads_what_queued_up_before_the_block_ended(receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    with capture([port]) as seen:
        send(port, b"x" * 172, 2000)  # a burst, as RTP from many calls at once
    assert sum(s.payload == b"x" * 172 for s in seen) == 2000


def test_a_packet_the_kernel_dropped_for_the_tap_fails_the_block(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reader held back on its first packet and a small buffer: the kernel drops what
    does not fit, and the block fails with TapLost instead of a partial view."""
    port = receiver.getsockname()[1]
    release = threading.Event()
    parse = tap._parse

    def held(frame: bytes) -> Seen | None:
        release.wait(10)
        return parse(frame)

    monkeypatch.setattr(tap, "_parse", held)
    monkeypatch.setattr(tap, "RCVBUF", 1)  # the kernel's minimum: a few packets
    with pytest.raises(TapLost, match="lost"), capture([port]):
        send(port, b"y" * 1000, 200)
        release.set()
