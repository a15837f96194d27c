"""The compiled read's fast path (Poller.receive): an ordinary RTP packet is taken in C
(counted, accounted in the compiled ReceptionStats, put in the jitter buffer) and the
session only pumps. The same streams through the Python path and the compiled one must
send the same echo, in the same order, and leave the same figures and reception state;
and the compiled run must really have taken packets in C (else it proves nothing).

The engines run on a loop that is not running, with a hand-set clock (test_rtpio_engine's
Rig): the test calls what the loop would."""

from __future__ import annotations

import random
import socket
import time
from typing import Any

import numpy as np
import pytest

from sipbridge.media import speed
from sipbridge.media.dtmf import dtmf_payloads
from sipbridge.media.g711 import ulaw_encode
from sipbridge.media.rtp import build_rtp
from sipbridge.media.session import MediaSession
from tests.unit.test_rtpio_engine import Rig

pytestmark = pytest.mark.skipif(speed.missing() != [], reason="compiled modules not built")


class Counting:
    """The engine's poller, counting the packets its receive took in C."""

    def __init__(self, poller: Any) -> None:
        self.poller = poller
        self.taken = 0

    def receive(self, now: float, offset: float) -> list[Any]:
        entries: list[Any] = self.poller.receive(now, offset)
        self.taken += sum(1 for e in entries if isinstance(e, int))
        return entries

    def __getattr__(self, name: str) -> Any:
        return getattr(self.poller, name)


def voice(frames: int, seed: int) -> list[bytes]:
    t = np.arange(160 * frames) / 8000
    pcm = 5000 * np.sin(2 * np.pi * (300 + 40 * seed) * t) + 800 * np.sin(2 * np.pi * 37 * t)
    audio = ulaw_encode(pcm.astype(np.int16))
    return [audio[160 * k:160 * (k + 1)] for k in range(frames)]


def steps(seed: int, frames: int = 120) -> list[list[bytes]]:
    """What a caller sends at each 20 ms step: voice, with reordering, duplicates, loss,
    bursts (two or three in one step), a late straggler, a marker, a DTMF digit, and an
    SSRC change (the peer restarting its stream) two thirds in."""
    rng = random.Random(seed)
    frames_ = voice(frames, seed)
    ssrc, seq0, ts0 = 0x1000 + seed, rng.randrange(65_536), rng.randrange(1 << 32)
    packets = []
    for k, payload in enumerate(frames_):
        if k == 2 * frames // 3:  # a restart: new SSRC, sequence and timestamp
            ssrc, seq0, ts0 = ssrc + 1, rng.randrange(65_536) - k, rng.randrange(1 << 32)
        marker = k in (0, 30) or k == 2 * frames // 3
        packets.append(build_rtp(0, (seq0 + k) & 0xFFFF, (ts0 + 160 * k) & 0xFFFFFFFF, ssrc,
                                 payload, marker))
    out: list[list[bytes]] = [[] for _ in range(frames + 4)]
    k = 0
    while k < frames:
        r = rng.random()
        if r < 0.05:
            k += 1  # lost
            continue
        if r < 0.10 and k + 1 < frames:  # swapped
            out[k] += [packets[k + 1], packets[k]]
            k += 2
            continue
        if r < 0.15 and k + 2 < frames:  # a burst after a stall
            out[k + 2] += packets[k:k + 3]
            k += 3
            continue
        out[k].append(packets[k])
        if r > 0.96:
            out[k].append(packets[k])  # duplicated
        if r > 0.93 and k > 5:
            out[k].append(packets[k - 5])  # a late straggler
        k += 1
    for i, (payload, marker, _) in enumerate(dtmf_payloads("7")):
        out[50 + i].append(build_rtp(101, 700 + i, 90_000, 0x1000 + seed, payload, marker))
    return out


def run(rig: Rig, seeds: list[int]) -> tuple[list[bytes], list[dict[str, Any]], int]:
    """Echo calls, one per seed, their packets sent side by side; what came back, each
    call's figures and reception state, and how many packets were taken in C."""
    counting = None
    if rig.compiled:
        counting = Counting(rig.engine._poller)
        rig.engine._poller = counting
    calls = []
    for seed in seeds:
        key, endpoint = rig.allocate()
        session = rig.start(key, seed)
        rig.engine.echo(session)
        calls.append((key, endpoint, session, steps(seed)))
    start = rig.clock
    sent: list[bytes] = []
    for k in range(len(calls[0][3])):
        rig.clock = start + 0.020 * k
        for _, endpoint, _, script in calls:
            for data in script[k]:
                rig.send(data, endpoint)
        time.sleep(0.002)
        for _, endpoint, _, _ in calls[:1] if rig.compiled else calls:
            rig.read(endpoint)  # the compiled read takes every ready socket at once
        for i, (key, _, _, _) in enumerate(calls):
            rig.tick(key, k, start + 0.020 * k + 0.010 + 0.001 * i)
        sent += rig.received()  # as it comes: the socket's buffer holds a few hundred
    results = []
    for key, _, session, _ in calls:
        rig.engine.stop(key)
        results.append(state(session))
    return sent, results, counting.taken if counting is not None else 0


def state(session: MediaSession) -> dict[str, Any]:
    rx, inbound = session.rx, session.inbound
    figures: dict[str, Any] = dict(session.figures())
    figures["rx"] = (rx.received, rx.extended_max, rx.expected, rx.lost, rx.missing,
                     rx.fraction_lost, rx.jitter, rx.duplicates, rx.reordered,
                     rx.report_block(1))
    figures["inbound"] = (inbound.packets, inbound.tokens, inbound.token_at, inbound.foreign,
                          inbound.audio, inbound.last, inbound.latched, inbound.ssrc)
    figures["jitter"] = (session.jitter.received, session.jitter.late,
                         session.jitter.duplicates, session.jitter.reordered,
                         session.jitter.played, session.jitter.delay_ms)
    figures["last_rx"] = session.last_rx
    return figures


def both(seeds: list[int]) -> tuple[Any, Any]:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    results = []
    try:
        for compiled, ports in ((False, (34400, 34499)), (True, (34500, 34599))):
            r = Rig(compiled, ports, peer)
            try:
                results.append(run(r, seeds))
            finally:
                r.close()
    finally:
        peer.close()
    return results[0], results[1]


def test_one_call_echoes_and_counts_alike_on_both_paths() -> None:
    (py_sent, py_state, _), (c_sent, c_state, taken) = both([3])
    assert len(py_sent) > 90
    assert c_sent == py_sent
    assert c_state == py_state
    figures = py_state[0]
    assert figures["dtmf"] == "7" and figures["duplicates"] > 0 and figures["reordered"] > 0
    # The restart's first nine, then it is taken up (and the old stream's stragglers).
    assert figures["dropped"]["ssrc"] >= 9
    assert taken > 60  # most packets went through C ...
    assert taken < figures["packets_in"]  # ... and the unusual ones through the session


def test_several_calls_echo_in_the_same_order_on_both_paths() -> None:
    (py_sent, py_state, _), (c_sent, c_state, taken) = both([11, 12, 13])
    assert len(py_sent) > 270
    assert c_sent == py_sent
    assert c_state == py_state
    assert taken > 180


def test_nothing_is_taken_in_c_on_srtp_or_for_a_stopped_call() -> None:
    rig = Rig(True, (34600, 34699))
    try:
        counting = Counting(rig.engine._poller)
        rig.engine._poller = counting
        key, endpoint = rig.allocate()
        session = rig.start(key)
        frames = voice(6, 1)
        for k in range(3):
            rig.send(build_rtp(0, k, 160 * k, 0x42, frames[k]), endpoint)
            rig.read(endpoint)
        assert counting.taken == 2 and session.stats.packets_in == 3  # the first: Python
        session.inbound.pt = -1  # as the session sets it on SRTP
        rig.send(build_rtp(0, 3, 480, 0x42, frames[3]), endpoint)
        rig.read(endpoint)
        assert counting.taken == 2 and session.stats.packets_in == 4
        session.inbound.pt = 0
        rig.engine.stop(key)
        rig.send(build_rtp(0, 4, 640, 0x42, frames[4]), endpoint)
        rig.read(endpoint)
        assert counting.taken == 2 and session.stats.packets_in == 4
        assert session.rx.received == 3 and session.jitter.received == 4
    finally:
        rig.close()


def test_the_session_sets_what_c_may_take() -> None:
    rig = Rig(True, (34700, 34799))
    try:
        key, _ = rig.allocate()
        session = rig.start(key)
        rtpio = speed.require("rtpio")
        assert isinstance(session.inbound, rtpio.Inbound)
        assert isinstance(session.rx, rtpio.ReceptionStats)
        assert session.inbound.pt == 0 and session.inbound.clock_rate == 8000
        rig.engine.stop(key)
    finally:
        rig.close()
