"""The adaptive jitter buffer on a fake clock: streams are lists of (arrival, seq, ts).

`play` merges arrivals with playout ticks every 20 ms (a packet arriving at the
same instant as a tick is put first) and returns what each tick yielded.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.media import speed
from sipbridge.media.jitterbuffer import Frame, JitterBuffer, conceal

_compiled = speed.load("jitter")
# Each test runs on the Python reference and on the compiled buffer (sipbridge.media._jitter).
both = pytest.mark.parametrize("jb_class", [
    pytest.param(JitterBuffer, id="python"),
    pytest.param(_compiled.JitterBuffer if _compiled else None, id="compiled",
                 marks=pytest.mark.skipif(_compiled is None, reason="not built")),
])

F = 0.020
SPF = 160
Packet = tuple[float, int, int]  # arrival, sequence, timestamp


def stream(
    n: int,
    *,
    first: int = 0,
    seq0: int = 1000,
    ts0: int = 50_000,
    offset: float = 0.005,
    start: int = 0,
) -> list[Packet]:
    """Packets `first..first+n-1` sent every 20 ms, arriving `offset` after sending."""
    return [
        ((start + k) * F + offset, (seq0 + k) & 0xFFFF, (ts0 + k * SPF) & 0xFFFFFFFF)
        for k in range(first, first + n)
    ]


def play(
    jb: JitterBuffer,
    packets: list[Packet],
    ticks: int,
    *,
    phase: float = 0.011,
    first_tick: int = 0,
) -> list[Frame]:
    events = sorted(
        [(t, 0, seq, ts) for t, seq, ts in packets]
        + [((first_tick + k) * F + phase, 1, 0, 0) for k in range(ticks)]
    )
    out: list[Frame] = []
    for t, kind, seq, ts in events:
        if kind == 0:
            jb.put(seq, ts, seq.to_bytes(2, "big"), t)
        else:
            out.append(jb.get(t))
    return out


def seqs(frames: list[Frame]) -> list[int]:
    return [f.sequence for f in frames if f.sequence is not None]


def body(frames: list[Frame]) -> list[Frame]:
    """The ticks from the first played frame to the last (the stream's own span)."""
    played = [i for i, f in enumerate(frames) if f.sequence is not None]
    return frames[played[0] : played[-1] + 1]


@both
def test_in_order_stream_plays_every_frame(jb_class: type[JitterBuffer]) -> None:
    jb = jb_class(min_delay_ms=40, initial_delay_ms=40)
    frames = play(jb, stream(500), 510)
    assert seqs(frames) == [1000 + k for k in range(500)]
    assert jb.played == 500 and jb.late == 0 and jb.skipped == 0 and jb.stalled == 0
    assert not any(f.lost or f.buffering for f in body(frames))
    assert frames[0].buffering and frames[-1].lost  # filling at first, the stream ended at last


@both
def test_clean_loopback_settles_at_the_minimum(jb_class: type[JitterBuffer]) -> None:
    jb = jb_class()
    frames = play(jb, stream(1000), 1000)
    assert jb.delay_ms == 0 and jb.late == 0 and jb.stalled == 0
    assert jb.skipped <= 3  # the initial 40 ms given back, one frame a second
    assert not any(f.lost or f.buffering for f in body(frames))
    # each frame plays at the first tick after it arrives: nothing waits in the queue
    assert jb.depth == 0 and seqs(frames)[-1] == 1000 + 999


@pytest.mark.parametrize("group", [2, 3])
@both
def test_reordered_packets_play_in_order(jb_class: type[JitterBuffer], group: int) -> None:
    rng = random.Random(group)
    packets = []
    for base in range(0, 600, group):  # each group is held and released shuffled
        members = list(range(base, base + group))
        rng.shuffle(members)
        release = (base + group - 1) * F + 0.002
        packets += [(release + i * 1e-4, 1000 + k, 50_000 + k * SPF) for i, k in enumerate(members)]
    jb = jb_class(min_delay_ms=group * 20, initial_delay_ms=group * 20)
    frames = play(jb, packets, 610)
    assert seqs(frames) == [1000 + k for k in range(600)]
    assert jb.late == 0 and jb.skipped == 0 and jb.reordered > 100
    assert not any(f.lost or f.buffering for f in body(frames))


@both
def test_lost_packet_gives_one_lost_frame_then_continues(jb_class: type[JitterBuffer]) -> None:
    jb = jb_class()
    packets = [p for p in stream(1000) if p[1] != 1600]
    frames = body(play(jb, packets, 1000))
    assert sum(f.lost for f in frames) == 1
    at = next(i for i, f in enumerate(frames) if f.lost)
    assert frames[at - 1].sequence == 1599 and frames[at + 1].sequence == 1601
    assert not any(f.buffering for f in frames)


@both
def test_late_packet_is_counted_and_dropped(jb_class: type[JitterBuffer]) -> None:
    jb = jb_class()
    packets = [p if p[1] != 1300 else (p[0] + 0.1, p[1], p[2]) for p in stream(400)]
    frames = body(play(jb, packets, 400))
    assert jb.late == 1 and 1300 not in seqs(frames)
    assert sum(f.lost for f in frames) == 1
    assert jb.played + jb.skipped + jb.depth == 399
    assert 100 < jb.delay_ms <= 180  # a late packet raises the target at once,
    assert jb.stalled >= 5  # and the playout point moves back to meet it


@both
def test_duplicates_are_dropped(jb_class: type[JitterBuffer]) -> None:
    jb = jb_class()
    assert jb.put(1, 160, b"a", 0.0)
    assert not jb.put(1, 160, b"a", 0.001)
    frames = play(jb, stream(100, seq0=2, ts0=320, offset=0.0, start=1), 100)
    last = seqs(frames)[-1]
    assert not jb.put(last, last * SPF, b"x", 2.1)  # already played
    assert jb.duplicates == 2 and jb.late == 0 and seqs(frames)[:3] == [1, 2, 3]


@both
def test_burst_after_stall_grows_then_recovers(jb_class: type[JitterBuffer]) -> None:
    jb = jb_class()
    held = range(1500, 1510)  # a 200 ms stall, then these arrive at once with the next
    packets = [(510 * F + 0.005, s, ts) if s in held else (t, s, ts) for t, s, ts in stream(2500)]
    frames = play(jb, [p for p in packets if p[0] < 520 * F], 519)
    assert jb.late == 10 and jb.delay_ms == 180  # grown at once, up to max - frame
    # it ran dry during the stall, so it steps back and plays the burst instead of silence
    assert seqs(frames)[-10:] == [1499, *range(1501, 1510)] and jb.stalled == 0
    frames += play(jb, [p for p in packets if p[0] >= 520 * F], 1981, first_tick=519)
    missing = set(range(1000, 3500)) - set(seqs(frames))
    assert seqs(frames) == sorted(seqs(frames))
    assert 1500 in missing and len(missing) == 1 + jb.skipped + jb.depth
    assert sum(f.lost for f in body(frames)) == 10  # the stall itself
    assert jb.delay_ms == 0 and jb.depth <= 1  # back down, a frame a second
    assert jb.skipped <= 12


@both
def test_jitter_grows_the_target_then_shrinks_back(jb_class: type[JitterBuffer]) -> None:
    rng = random.Random(7)
    packets = [(t + rng.uniform(0, 0.030), s, ts) for t, s, ts in stream(3000, offset=0)]
    jb = jb_class()
    frames = play(jb, packets, 3000)
    assert jb.late / 3000 < 0.01
    assert 25 <= jb.delay_ms <= 45  # covers the 30 ms spread
    assert seqs(frames) == sorted(seqs(frames)) and jb.reordered > 0
    frames = play(jb, stream(3000, first=3000, offset=0.015), 3000, first_tick=3000)
    assert jb.delay_ms == 0 and jb.depth <= 1 and jb.late / 6000 < 0.01
    assert not any(f.lost or f.buffering for f in body(frames))


@both
def test_sequence_and_timestamp_wrap_around(jb_class: type[JitterBuffer]) -> None:
    jb = jb_class(initial_delay_ms=0)
    frames = play(jb, stream(200, seq0=65_500, ts0=2**32 - 100 * SPF), 201)
    assert seqs(frames) == [(65_500 + k) & 0xFFFF for k in range(200)]
    assert jb.late == 0 and jb.reordered == 0 and jb.overflow == 0
    assert not any(f.lost or f.buffering for f in body(frames))


@both
def test_restart_jump_reanchors_on_the_new_stream(jb_class: type[JitterBuffer]) -> None:
    jb = jb_class(initial_delay_ms=0)
    packets = stream(300) + stream(300, first=300, seq0=40_000 - 300, ts0=9_000_000)
    frames = play(jb, packets, 601)
    # the first packet of the new stream is on probation (RFC 3550 A.1) and dropped
    assert jb.restarts == 1 and jb.overflow == 1 and jb.late == 0
    assert seqs(frames) == list(range(1000, 1300)) + list(range(40_001, 40_300))


@both
def test_flood_of_random_packets_stays_bounded(jb_class: type[JitterBuffer]) -> None:
    rng = random.Random(1)
    jb = jb_class()
    play(jb, stream(50), 50)
    for i in range(10_000):
        near = rng.random() < 0.5  # half of them in or near the window
        ts = 50_000 + rng.randint(-80, 80) * SPF if near else rng.getrandbits(32)
        jb.put(rng.getrandbits(16), ts & 0xFFFFFFFF, b"f" * 160, 1.0 + i * 1e-4)
        assert jb.depth + jb.held["late"] <= 10  # max_delay_ms // frame_ms
        if i % 20 == 0:
            jb.get(1.0 + i * 1e-4)
    assert jb.received == 10_050 and jb.restarts == 0 and jb.overflow > 4000
    assert jb.held["minima"] <= 256 and jb.held["played"] <= 64


@both
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-30, 300), st.booleans()), max_size=300))
def test_any_arrival_order_plays_in_timestamp_order(
    jb_class: type[JitterBuffer], ops: list[tuple[int, bool]]
) -> None:
    jb = jb_class(max_delay_ms=100)
    played: list[tuple[int, int]] = []  # (restarts so far, slot)
    for k, (slot, tick) in enumerate(ops):
        jb.put(1000 + slot, (slot * SPF) & 0xFFFFFFFF, b"", k * 0.01)
        assert jb.depth + jb.held["late"] <= 5
        if tick and (frame := jb.get(k * 0.01)).sequence is not None:
            played.append((jb.restarts, frame.sequence - 1000))
    assert played == sorted(played)  # in timestamp order within each stream
    assert len(played) == jb.played <= jb.received


def test_conceal_fades_out_then_silence() -> None:
    last = np.full(160, 10_000, dtype=np.int16)
    first = conceal(last, 1)
    assert first.dtype == np.int16 and first.shape == (160,)
    assert first[0] == 10_000 and abs(int(first[-1]) - 5_000) < 50
    assert abs(int(conceal(last, 2)[0]) - 5_000) < 1 and abs(int(conceal(last, 3)[-1])) < 50
    assert not conceal(last, 4).any() and not conceal(None, 1).any()
    assert conceal(None, 1).shape == (160,)
    with pytest.raises(ValueError):
        conceal(last, 0)


@both
def test_config_is_checked(jb_class: type[JitterBuffer]) -> None:
    with pytest.raises(ValueError):
        jb_class(min_delay_ms=200, max_delay_ms=200)
    with pytest.raises(ValueError):
        jb_class(frame_ms=0)
    assert jb_class(initial_delay_ms=500).delay_ms == 180


@both
def test_ready_says_whether_get_would_play_the_queued_frame(jb_class: type[JitterBuffer]) -> None:
    jb = jb_class(min_delay_ms=40, initial_delay_ms=40)
    assert not jb.ready(1.0)  # nothing yet
    jb.put(1, 0, b"a", 0.0)
    assert not jb.ready(0.039)  # queued, but the 40 ms minimum delay is not over
    assert jb.ready(0.040)
    assert jb.get(0.040).payload == b"a"
    assert not jb.ready(0.060)  # frame 2 has not come
    jb.put(3, 320, b"c", 0.041)
    assert not jb.ready(0.060)  # frame 3 is here, but 2 is next: the tick must conceal
    assert jb.get(0.060).lost
    assert jb.ready(0.080) and jb.get(0.080).payload == b"c"
