"""The compiled jitter buffer against the Python reference, call by call.

Both are driven with the same generated streams (loss, reordering, duplicates, jitter
bursts, stalls then bursts, clock-rate changes, wrap-around, restarts, floods, hostile
payload sizes); after every put, get, ready and set_clock_rate the results, the counters,
the delay and what each holds must be the same.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.media import jitterbuffer, speed

compiled = speed.load("jitter")
CJitterBuffer: Any = compiled.JitterBuffer if compiled is not None else None
pytestmark = pytest.mark.skipif(compiled is None, reason="sipbridge.media._jitter not built")

# ("put", seq, ts, size, now) | ("get", now) | ("ready", now) | ("clock", rate)
Op = tuple[Any, ...]
SPF = 160
STATE = ("received", "late", "duplicates", "reordered", "overflow", "played", "concealed",
         "restarts", "skipped", "stalled", "delay_ms", "depth", "held", "clock_rate")
RATES = (8000, 16000, 48000, 44100, 11025)  # 11025 has no whole samples in 20 ms: refused
SIZES = (0, 1, 160, 1500)


def state(jb: Any) -> tuple[Any, ...]:
    return tuple(getattr(jb, name) for name in STATE)


def call(jb: Any, op: Op) -> object:
    try:
        if op[0] == "put":
            _, seq, ts, size, now = op
            return jb.put(seq, ts, bytes([seq & 0xFF]) * size, now)
        if op[0] == "get":
            return jb.get(op[1])
        if op[0] == "ready":
            return jb.ready(op[1])
        return jb.set_clock_rate(op[1])
    except ValueError as exc:
        return ("ValueError", str(exc))


def replay(config: dict[str, int], ops: list[Op]) -> tuple[Any, Any]:
    """Runs `ops` on both buffers, asserting the same outcome after each."""
    py = jitterbuffer.JitterBuffer(**config)
    c = CJitterBuffer(**config)
    assert state(c) == state(py)
    for i, op in enumerate(ops):
        want, got = call(py, op), call(c, op)
        assert got == want, (i, op)
        assert state(c) == state(py), (i, op)
    return py, c


class Sender:
    """One sender's counters and clock; each method adds one kind of trouble's events."""

    def __init__(self, rng: random.Random, frame: float) -> None:
        self.rng, self.frame = rng, frame
        self.seq, self.ts = rng.getrandbits(16), rng.getrandbits(32)
        if rng.random() < 0.3:  # near the wrap of both counters
            self.seq, self.ts = 0xFFFF - rng.randint(0, 50), 2**32 - rng.randint(1, 50) * SPF
        self.delay, self.sent = rng.uniform(0, 0.05), 0.0
        self.events: list[tuple[float, int, Op]] = []

    def advance(self, step: int = SPF) -> None:
        self.seq, self.ts = (self.seq + 1) & 0xFFFF, (self.ts + step) & 0xFFFFFFFF
        self.sent += self.frame

    def put(self, at: float, size: int, seq: int | None = None, ts: int | None = None) -> None:
        op = ("put", self.seq if seq is None else seq, self.ts if ts is None else ts, size, at)
        self.events.append((at, 0, op))

    def steady(self, n: int) -> None:
        """A run with loss, duplicates and jitter of some size (and a rare odd timestamp)."""
        rng = self.rng
        loss, dup = rng.choice((0, 0.02, 0.2)), rng.choice((0, 0.02, 0.1))
        spread = rng.choice((0.0, 0.005, 0.03, 0.12))
        for _ in range(n):
            at = self.sent + self.delay + rng.uniform(0, spread)
            if rng.random() >= loss:
                self.put(at, rng.choice(SIZES))
            if rng.random() < dup:
                self.put(at + rng.uniform(0, 0.1), 1)
            self.advance(SPF if rng.random() < 0.98 else rng.choice((0, 7 * SPF, 2**31)))

    def stall(self, n: int) -> None:
        """Nothing for n frames, then all of them at once."""
        burst = self.sent + self.delay + n * self.frame
        for _ in range(n):
            self.put(burst, 160)
            self.advance()

    def flood(self, n: int) -> None:
        for _ in range(n):
            at = self.sent + self.rng.uniform(0, self.frame)
            self.put(at, self.rng.choice(SIZES), self.rng.getrandbits(16), self.rng.getrandbits(32))

    def shuffled(self, n: int) -> None:
        """The next few packets, released together in a shuffled order."""
        group = []
        for _ in range(min(n, 6)):
            group.append((self.seq, self.ts))
            self.advance()
        self.rng.shuffle(group)
        for j, (seq, ts) in enumerate(group):
            self.put(self.sent + self.delay + j * 1e-4, 160, seq, ts)

    def other(self, kind: float) -> None:
        """A new stream, a timestamp jump, a re-negotiated codec or a new path delay."""
        rng = self.rng
        if kind < 0.08:
            self.seq, self.ts = rng.getrandbits(16), rng.getrandbits(32)
        elif kind < 0.14:
            self.ts = (self.ts + rng.randint(-60, 60) * SPF + rng.randint(-80, 80)) & 0xFFFFFFFF
        elif kind < 0.2:
            self.events.append((self.sent, 0, ("clock", rng.choice(RATES))))
        else:
            self.delay = rng.uniform(0, 0.3)

    def ticks(self) -> None:
        """The playout ticks (some with a `ready` first), stopping now and then."""
        t, stop, end = self.rng.uniform(0, self.frame), 0, self.sent + 0.5
        while t < end:
            if stop > 0:  # ticks stopped (a busy loop, a suspended process)
                stop -= 1
            else:
                if self.rng.random() < 0.5:
                    self.events.append((t, 1, ("ready", t)))
                self.events.append((t, 2, ("get", t)))
                if self.rng.random() < 0.003:
                    stop = self.rng.randint(1, 40)
            t += self.frame


def scenario(rng: random.Random, *, frame: float = 0.020, length: int = 600) -> list[Op]:
    """A stream with every kind of trouble, as timed events (arrivals and ticks merged)."""
    sender = Sender(rng, frame)
    k = 0
    while k < length:
        kind, n = rng.random(), rng.randint(1, 80)
        if kind < 0.5:
            sender.steady(n)
        elif kind < 0.62:
            sender.stall(n)
        elif kind < 0.7:
            sender.flood(n)
        elif kind < 0.76:
            sender.shuffled(n)
        else:
            sender.other(kind - 0.76)
        k += n
    sender.ticks()
    sender.events.sort(key=lambda e: (e[0], e[1]))
    return [op for _, _, op in sender.events]


CONFIGS = [
    {},
    {"initial_delay_ms": 0},
    {"min_delay_ms": 40, "initial_delay_ms": 40},
    {"max_delay_ms": 100},
    {"max_delay_ms": 60, "initial_delay_ms": 100},
    {"frame_ms": 10, "max_delay_ms": 400, "min_delay_ms": 20},
    {"frame_ms": 30, "max_delay_ms": 300, "initial_delay_ms": 200},
    {"max_delay_ms": 2000, "initial_delay_ms": 500},
]


@pytest.mark.parametrize("seed", range(24))
def test_long_streams_with_every_trouble_match(seed: int) -> None:
    rng = random.Random(seed)
    config = CONFIGS[seed % len(CONFIGS)]
    frame = config.get("frame_ms", 20) / 1000
    replay(config, scenario(rng, frame=frame, length=1500))


def test_the_streams_reach_every_path() -> None:
    """The generated streams go through every branch the counters can show."""
    totals: dict[str, int] = {}
    for seed in range(24):
        config = CONFIGS[seed % len(CONFIGS)]
        py = jitterbuffer.JitterBuffer(**config)
        for op in scenario(random.Random(seed), frame=config.get("frame_ms", 20) / 1000,
                           length=1500):
            call(py, op)
        for name in STATE[:10]:
            totals[name] = totals.get(name, 0) + getattr(py, name)
    assert all(totals[name] > 0 for name in STATE[:10]), totals


ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
                  st.sampled_from(SIZES), st.floats(-10, 100)),
        st.tuples(st.just("put"), st.integers(990, 1030), st.integers(-20, 60).map(
            lambda k: (50_000 + k * 160) & 0xFFFFFFFF), st.just(1), st.floats(0, 3)),
        st.tuples(st.just("get"), st.floats(-10, 100)),
        st.tuples(st.just("ready"), st.floats(-10, 100)),
        st.tuples(st.just("clock"), st.sampled_from(RATES)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CONFIGS), ops_strategy)
def test_any_calls_match(config: dict[str, int], ops: list[Op]) -> None:
    """Random sequences, timestamps and times, in any order: floods, clock jumps back."""
    replay(config, ops)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(CONFIGS), st.integers(0, 2**32 - 1), st.integers(0, 60))
def test_generated_streams_match(config: dict[str, int], seed: int, length: int) -> None:
    frame = config.get("frame_ms", 20) / 1000
    replay(config, scenario(random.Random(seed), frame=frame, length=length * 10))


def test_frames_are_the_reference_frames() -> None:
    c = CJitterBuffer(initial_delay_ms=0)
    assert c.get(0.0) is jitterbuffer._BUFFERING
    payload = b"\x00" * 1500
    assert c.put(7, 1120, payload, 0.0)
    frame = c.get(0.001)
    assert type(frame) is jitterbuffer.Frame and frame.payload is payload
    assert frame == jitterbuffer.Frame(payload, 7)
    assert c.get(0.021) is jitterbuffer._LOST


def test_outside_its_domain_it_refuses_and_keeps_its_state() -> None:
    c = CJitterBuffer()
    c.put(1, 0, b"a", 0.0)
    before = state(c)
    for seq, ts, now in ((-1, 0, 0.0), (0x10000, 0, 0.0), (1, -1, 0.0), (1, 2**32, 0.0),
                         (2, 160, float("nan")), (2, 160, float("inf")), (2, 160, 1e300)):
        with pytest.raises(ValueError):
            c.put(seq, ts, b"b", now)
    with pytest.raises(ValueError):
        c.get(float("nan"))
    with pytest.raises(ValueError):
        c.ready(float("-inf"))
    with pytest.raises(TypeError):
        c.put(1, 0, b"a")
    with pytest.raises(ValueError):
        c.set_clock_rate(11025)
    assert state(c) == before


def test_config_errors_match() -> None:
    for bad in ({"frame_ms": 0}, {"clock_rate": 0}, {"clock_rate": 11025},
                {"min_delay_ms": 200}, {"min_delay_ms": -1}, {"max_delay_ms": 10}):
        with pytest.raises(ValueError) as want:
            jitterbuffer.JitterBuffer(**bad)
        with pytest.raises(ValueError) as got:
            CJitterBuffer(**bad)
        assert str(got.value) == str(want.value)


def test_payloads_are_released() -> None:
    """Every payload the buffer drops or hands back is let go (no reference kept)."""
    payload = b"p" * 1500 + b"unique"
    base = sys.getrefcount(payload)
    c = CJitterBuffer()
    rng = random.Random(3)
    for i in range(5000):
        c.put(rng.getrandbits(16) if i % 3 else i & 0xFFFF, (i * 160) & 0xFFFFFFFF, payload,
              i * 0.02 + rng.uniform(0, 0.2))
        c.get(i * 0.02)
    c.set_clock_rate(16000)  # flushes the queue
    assert sys.getrefcount(payload) == base
    for i in range(5):
        c.put(i, i * 320, payload, 0.0)
    del c
    assert sys.getrefcount(payload) == base


def test_memory_per_buffer() -> None:
    c = CJitterBuffer()  # the gateway's default: 200 ms in 20 ms frames
    assert sys.getsizeof(c) < 10_000
    assert sys.getsizeof(CJitterBuffer(max_delay_ms=500)) < 12_000
