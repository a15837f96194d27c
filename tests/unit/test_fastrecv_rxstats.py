"""The compiled ReceptionStats (sipbridge.media._rtpio) against the Python reference
(sipbridge.media.rtp.ReceptionStats): the same packets in, the same verdicts and the
same figures out after every one of them, report blocks included, on streams that
exercise each branch of RFC 3550 A.1 and A.8 (probation, reordering, duplicates,
wrap-around, big jumps and restarts, late packets, wild arrival clocks)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sipbridge.media import speed
from sipbridge.media.rtp import ReceptionStats

rtpio = speed.load("rtpio")
pytestmark = pytest.mark.skipif(rtpio is None, reason="sipbridge.media._rtpio not built")

Packet = tuple[int, int, int]  # sequence, timestamp, arrival (timestamp units)


def figures(stats: Any) -> tuple[object, ...]:
    return (stats.received, stats.extended_max, stats.expected, stats.lost, stats.missing,
            stats.fraction_lost, stats.jitter, stats.duplicates, stats.reordered,
            stats.jitter_ms(8000), stats.jitter_ms(48000))


def compare(packets: list[Packet], report_every: int = 0) -> tuple[ReceptionStats, Any]:
    """Feed both; every verdict and, after each packet, every figure must agree."""
    assert rtpio is not None
    py, c = ReceptionStats(), rtpio.ReceptionStats()
    assert figures(c) == figures(py)
    for k, (seq, ts, arrival) in enumerate(packets):
        verdict = py.update(seq, ts, arrival)
        assert c.update(seq, ts, arrival) is verdict, (k, seq)
        assert figures(c) == figures(py), (k, seq)
        if report_every and k % report_every == report_every - 1:
            assert c.report_block(0x1234, 7, 9) == py.report_block(0x1234, 7, 9)
    assert c.report_block(99) == py.report_block(99)
    assert figures(c) == figures(py)
    return py, c


def stream(seqs: list[int], *, jitter: int = 0, seed: int = 1, base_ts: int = 1000,
           clock: int = 10**9) -> list[Packet]:
    """Packets 160 samples apart (timestamps follow the sequence numbers as sent),
    arriving with up to `jitter` units of delay."""
    rng = random.Random(seed)
    return [(seq & 0xFFFF, (base_ts + 160 * seq) & 0xFFFFFFFF,
             clock + 160 * seq + rng.randrange(jitter + 1)) for seq in seqs]


def test_in_order_with_jitter() -> None:
    py, _ = compare(stream(list(range(500, 2500)), jitter=400), report_every=250)
    assert py.received == 1999 and py.jitter > 10  # the stream was counted, with jitter


def test_sequence_wraps_around_and_timestamps_wrap_too() -> None:
    seqs = list(range(65_000, 65_536 + 3_000))
    py, _ = compare(stream(seqs, jitter=100, base_ts=0xFFFF0000), report_every=100)
    assert py.extended_max == 65_536 + 2_999


def test_reordered_duplicated_and_lost() -> None:
    rng = random.Random(7)
    seqs = list(range(65_400, 65_400 + 3_000))
    for i in range(0, len(seqs) - 5, 7):  # swaps near and far
        j = i + rng.randrange(1, 5)
        seqs[i], seqs[j] = seqs[j], seqs[i]
    seqs = [s for s in seqs if rng.random() > 0.05]  # losses
    for _ in range(200):  # duplicates, some much later
        at = rng.randrange(len(seqs))
        seqs.insert(min(len(seqs), at + rng.randrange(0, 90)), seqs[at])
    py, _ = compare(stream(seqs, jitter=800, seed=3), report_every=97)
    assert py.duplicates > 100 and py.reordered > 100 and py.missing > 50


def test_late_packets_beyond_the_window_and_big_jumps() -> None:
    seqs = list(range(100, 400))
    seqs += [150, 101, 399, 300 - 128, 300 - 129]  # late: some inside 128, some not
    seqs += [9_000, 12_000, 12_001, 12_002]  # a jump, then a restart's two in a row
    seqs += [12_002 - 50, 11_000, 20, 21, 22]  # late after the restart, another jump
    seqs += [60_000, 60_001, *range(60_002, 60_300)]
    seqs += [59_950, 59_949, 59_900]  # reordered, within MAX_MISORDER
    compare(stream(seqs, jitter=50, seed=5), report_every=40)


def test_probation_restarts_and_ssrc_change_like_streams() -> None:
    # A source that stutters during probation, then settles; then (as after an SSRC
    # change, a new object in the session) a second stream from another base.
    compare(stream([10, 20, 21, 23, 24, 25, 26, 26, 27, *range(28, 300)]))
    compare(stream(list(range(40_000, 40_300)), base_ts=123_456_789, seed=9))


def test_random_streams() -> None:
    for seed in range(40):
        rng = random.Random(seed)
        seq = rng.randrange(65_536)
        seqs = []
        for _ in range(rng.randrange(50, 600)):
            r = rng.random()
            if r < 0.80:
                seq += 1
            elif r < 0.88:
                seq -= rng.randrange(0, 200)
            elif r < 0.96:
                seq += rng.randrange(2, 200)
            elif r < 0.99:
                seq += rng.randrange(2_900, 40_000)
            seqs.append(seq)
        packets = [(s & 0xFFFF, rng.randrange(1 << 32), rng.randrange(-(1 << 40), 1 << 40))
                   if rng.random() < 0.1 else p
                   for s, p in zip(seqs, stream(seqs, jitter=rng.randrange(2_000), seed=seed,
                                                clock=rng.randrange(1 << 50)), strict=True)]
        compare(packets, report_every=rng.randrange(5, 60))


def test_figures_of_a_fresh_object_and_wide_fields() -> None:
    assert rtpio is not None
    c = rtpio.ReceptionStats()
    assert c.report_block(1) == ReceptionStats().report_block(1)
    # Fields outside 16/32 bits are taken as the reference takes them (masked).
    compare([(70_000, 1 << 33, -5), (70_001, (1 << 33) + 160, 200), (4_466, 7, 1 << 45)])
    with pytest.raises(TypeError):
        c.update(1, 2)
    with pytest.raises(OverflowError):
        c.update(1 << 70, 0, 0)
