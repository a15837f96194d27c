"""The media engine's two I/O paths on the same packets: the Python one (a reader per
socket, each read by its session) and the compiled one (one epoll set read in batches,
sends of a pass in one call) send the same packets and count the same drops. And pooled
endpoints: a reused one never hands a past call's packets to the next call, and one
reused before its call starts keeps what comes in meanwhile for it.

The engines run on a loop that is not running, with a hand-set clock: the test calls
what the loop would (a socket's reader, the epoll set's reader, a tick)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.media import speed
from sipbridge.media.dtmf import dtmf_payloads
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.media.g711 import ulaw_encode
from sipbridge.media.pacer import Tick
from sipbridge.media.ports import SO_TIMESTAMPNS, Endpoint
from sipbridge.media.rtp import build_rtp
from sipbridge.media.session import MediaSession
from sipbridge.media.stun import BINDING, REQUEST, build_stun

pytestmark = pytest.mark.skipif(speed.load("rtpio") is None,
                                reason="sipbridge.media._rtpio not built")

SSRC = 0x5151


class Rig:
    """An engine on a loop that is not running, its clock set by hand, and a caller's
    socket on loopback."""

    def __init__(self, compiled: bool, ports: tuple[int, int],
                 peer: socket.socket | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = 100.0
        self.loop.time = lambda: self.clock  # type: ignore[method-assign]
        self.engine = MediaEngine(MediaConfig(ports=ports, timeout=0, compiled=compiled),
                                  self.loop)
        self.compiled = compiled
        self.own_peer = peer is None
        if peer is None:
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
        self.peer = peer
        self.key = 0

    def audio(self) -> NegotiatedAudio:
        return NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "127.0.0.1",
                               self.peer.getsockname()[1], Direction.SENDRECV, 20)

    def allocate(self) -> tuple[str, Endpoint]:
        self.key += 1
        key = f"rtc_{self.key}"
        endpoint = self.engine.allocate(key, "127.0.0.1")
        # Arrival at the hand-set clock, on both paths alike (the kernel's stamps are
        # another clock): the same packets then meet the same deadlines.
        endpoint.rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 0)
        endpoint.timestamps = False
        return key, endpoint

    def start(self, key: str, seed: int = 5) -> MediaSession:
        random.seed(seed)  # the session's SSRC, first sequence number and timestamp
        return self.engine.start(key, self.audio())

    def send(self, data: bytes, endpoint: Endpoint) -> None:
        self.peer.sendto(data, ("127.0.0.1", endpoint.port))

    def read(self, endpoint: Endpoint) -> None:
        """What the loop does when the endpoint's RTP socket is readable."""
        time.sleep(0.002)  # loopback delivery
        for _ in range(100):  # as a level-triggered loop: while there is something
            if self.compiled:
                fd = self.engine._poller.fileno()
                if not select.select([fd], [], [], 0)[0]:
                    return
                self.engine._batch()
            else:
                watch = endpoint.watch
                fd = endpoint.rtp.fileno()
                if not (getattr(watch, "on", False) and select.select([fd], [], [], 0)[0]):
                    return
                self.engine._rtp_ready(watch)  # type: ignore[arg-type]
        pytest.fail("the socket stays readable")

    def tick(self, key: str, index: int, at: float) -> None:
        self.clock = at
        self.engine._on_tick(Tick(key, index, at, 0.0))
        self.engine._flush()  # the playout pass's end

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.peer.recv(2048))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.engine.close()
        self.loop.close()
        if self.own_peer:
            self.peer.close()


@pytest.fixture(params=[False, True], ids=["python", "compiled"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    r = Rig(request.param, (33600, 33699) if request.param else (33700, 33799))
    yield r
    r.close()


def script() -> list[list[bytes]]:
    """Twenty frames of a caller's audio, with hostile and odd datagrams among them:
    what each 20 ms step sends."""
    t = np.arange(160 * 20) / 8000
    voice = ulaw_encode((6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
    steps = [[build_rtp(0, 100 + k, 5000 + 160 * k, SSRC, voice[160 * k:160 * (k + 1)])]
             for k in range(20)]
    steps[3].append(b"\x40" + b"\x00" * 30)  # version 1
    steps[4].append(b"\x8f" + b"\x00" * 20)  # 15 CSRCs in 21 bytes
    steps[5].append(b"\xa0" + b"\x00" * 11 + b"\x00")  # padding 0
    steps[6].append(b"\x80\x00")  # short
    steps[7].append(build_rtp(8, 999, 0, SSRC, b"\xd5" * 160))  # not the codec's type
    steps[8].append(build_rtp(0, 998, 0, 0x7777, b"\xff" * 160))  # another source
    steps[9].append(b"\x00\x01\x00\x00")  # STUN-like but not STUN: dropped as RTP
    steps[10].append(build_stun(BINDING | REQUEST, b"T" * 12))  # a keep-alive: answered
    # The same audio frame with CSRCs, a header extension and padding.
    k = 11
    steps[k] = [bytes([0x80 | 0x20 | 0x10 | 2, 0]) + struct.pack("!HII", 100 + k,
                5000 + 160 * k, SSRC) + b"\x00" * 8 + b"\xbe\xde\x00\x01abcd"
                + voice[160 * k:160 * (k + 1)] + b"\x00\x00\x03"]
    for i, (payload, marker, _) in enumerate(dtmf_payloads("5")):  # a digit in the stream
        steps[13 + i].append(build_rtp(101, 500 + i, 40_000, SSRC, payload, marker))
    return steps


# Steps whose datagrams the loop has not read when the tick comes (the timer ran first).
UNREAD = (2, 12, 16)


def run(rig: Rig) -> tuple[list[bytes], dict[str, Any]]:
    key, endpoint = rig.allocate()
    session = rig.start(key)
    rig.engine.echo(session)
    start = rig.clock
    for k, datagrams in enumerate(script()):
        rig.clock = start + 0.020 * k
        for data in datagrams:
            rig.send(data, endpoint)
        if k in UNREAD:
            time.sleep(0.002)  # in the socket, read by the tick itself
        else:
            rig.read(endpoint)
        rig.tick(key, k, start + 0.020 * k + 0.010)
    sent = rig.received()
    rig.engine.stop(key)
    figures = dict(session.figures())
    figures["dtmf_digits"] = [d.digit for d in session.digits]
    return sent, figures


def test_both_paths_send_the_same_packets_and_count_the_same_drops() -> None:
    results = []
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))  # one caller for both: the STUN answer names its port
    peer.setblocking(False)
    try:
        for compiled, ports in ((False, (33800, 33899)), (True, (33900, 33999))):
            r = Rig(compiled, ports, peer)
            try:
                results.append(run(r))
            finally:
                r.close()
    finally:
        peer.close()
    (py_sent, py_figures), (c_sent, c_figures) = results
    assert len(py_sent) >= 20  # the echoes and the STUN answer
    assert c_sent == py_sent
    assert c_figures == py_figures
    assert py_figures["dropped"] == {"version": 1, "truncated": 1, "padding": 1, "short": 2,
                                     "payload_type": 1, "ssrc": 1}
    assert py_figures["stun_answered"] == 1 and py_figures["dtmf"] == "5"


def test_a_reused_endpoint_drops_the_last_calls_late_packets(rig: Rig) -> None:
    key, endpoint = rig.allocate()
    first = rig.start(key)
    rig.send(build_rtp(0, 1, 160, SSRC, b"\xff" * 160), endpoint)
    rig.read(endpoint)
    assert first.stats.packets_in == 1
    rig.engine.stop(key)
    assert rig.engine.pool.in_use == 0 and rig.engine.pool.idle == 1
    # Late packets of the first call: one comes while the endpoint idles and is read
    # (and dropped), others are still queued when the next call takes the endpoint.
    rig.send(build_rtp(0, 2, 320, SSRC, b"\xff" * 160), endpoint)
    rig.read(endpoint)
    for seq in (3, 4):
        rig.send(build_rtp(0, seq, 160 * seq, SSRC, b"\xff" * 160), endpoint)
    time.sleep(0.01)
    key2, again = rig.allocate()
    assert again is endpoint and rig.engine.pool.in_use == 1
    second = rig.start(key2)
    rig.read(again)
    assert second.stats.packets_in == 0 and second.jitter.received == 0
    rig.send(build_rtp(0, 50, 8000, 0x9999, b"\xff" * 160), again)
    rig.read(again)
    assert second.stats.packets_in == 1 and second.jitter.received == 1
    rig.engine.stop(key2)


def test_a_reused_endpoint_keeps_what_comes_before_its_call_starts(rig: Rig) -> None:
    key, endpoint = rig.allocate()
    rig.start(key)
    rig.engine.stop(key)
    key2, again = rig.allocate()
    assert again is endpoint
    rig.send(build_rtp(0, 7, 1120, SSRC, b"\xff" * 160), again)  # early media
    rig.read(again)  # the call has not started: kept for it (or left in the kernel)
    session = rig.start(key2)
    rig.read(again)
    assert session.stats.packets_in == 1 and session.jitter.received == 1
    rig.engine.stop(key2)


class CountingPoller:
    """The engine's epoll set, with each change to it counted."""

    def __init__(self, poller: Any) -> None:
        self.poller = poller
        self.changes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.poller, name)
        if name in ("add", "enable", "remove"):
            def counted(*args: Any) -> Any:
                self.changes.append(name)
                return attr(*args)
            return counted
        return attr


def test_a_reused_endpoint_started_at_once_changes_nothing_in_the_epoll_set() -> None:
    """An answer at once allocates the call's endpoint and starts its media in one turn:
    the pooled endpoint stays watched throughout, so no epoll_ctl call is made for it."""
    rig = Rig(True, (33500, 33599))
    try:
        key, endpoint = rig.allocate()
        rig.start(key)
        rig.engine.stop(key)  # back to the pool, watched while it idles
        counting = CountingPoller(rig.engine._poller)
        rig.engine._poller = counting
        for _ in range(3):
            key, again = rig.allocate()
            assert again is endpoint
            session = rig.start(key)
            rig.send(build_rtp(0, 9, 1440, SSRC, b"\xff" * 160), again)
            rig.read(again)
            assert session.stats.packets_in == 1
            rig.engine.stop(key)
        assert counting.changes == []
    finally:
        rig.close()


def test_a_full_pool_closes_what_it_cannot_keep(rig: Rig) -> None:
    rig.engine.pool.keep = 1
    a_key, a = rig.allocate()
    b_key, b = rig.allocate()
    rig.start(a_key)
    rig.start(b_key)
    rig.engine.stop(a_key)
    rig.engine.stop(b_key)  # the pool is full: closed, out of the loop's watch
    assert a.rtp.fileno() >= 0 and b.rtp.fileno() == -1 and b.rtcp.fileno() == -1
    c_key, c = rig.allocate()
    assert c is a
    session = rig.start(c_key)
    rig.send(build_rtp(0, 1, 160, SSRC, b"\xff" * 160), c)
    rig.read(c)
    assert session.stats.packets_in == 1


def test_an_icmp_error_on_the_socket_is_counted_alike_on_both_paths() -> None:
    """The caller's port is closed: the gateway's packets to it come back as ICMP port
    unreachable, which the next read takes off the socket, and counts. (Linux queues
    the error on a connected UDP socket only: this one is connected for the test.)"""
    figures = []
    for compiled, ports in ((False, (34100, 34199)), (True, (34200, 34299))):
        r = Rig(compiled, ports)
        try:
            closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            closed.bind(("127.0.0.1", 0))
            gone = closed.getsockname()[1]
            closed.close()  # nothing listens there any more
            key, endpoint = r.allocate()
            random.seed(5)
            audio = dataclasses.replace(r.audio(), remote_port=gone)
            session = r.engine.start(key, audio)
            endpoint.rtp.connect(("127.0.0.1", gone))
            r.tick(key, 0, r.clock + 0.010)  # a packet out, to the closed port
            assert session.stats.packets_out == 1
            r.read(endpoint)
            r.engine.stop(key)
            figures.append((dict(session.dropped), session.stats.packets_in))
        finally:
            r.close()
    assert figures[0] == ({"socket_error": 1}, 0)
    assert figures[1] == figures[0]
