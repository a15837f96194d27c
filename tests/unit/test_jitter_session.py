"""The compiled jitter buffer in a call: the engine picks it with `compiled`, and a
session hears the same audio with it as with the Python reference."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import numpy as np
import pytest

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.media import speed
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.media.g711 import ulaw_encode
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.rtp import build_rtp
from sipbridge.media.session import MediaSession

compiled = speed.load("jitter")
pytestmark = pytest.mark.skipif(compiled is None, reason="sipbridge.media._jitter not built")
AUDIO = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "127.0.0.1", 9, Direction.SENDRECV, 20)


@pytest.mark.parametrize("use_compiled", [False, True])
def test_the_engine_builds_the_compiled_buffer_when_asked(use_compiled: bool) -> None:
    loop = asyncio.new_event_loop()
    engine = MediaEngine(MediaConfig(ports=(34000, 34999), compiled=use_compiled,
                                     jitter_min_ms=20, jitter_max_ms=400), loop)
    try:
        engine.allocate("k", "127.0.0.1")
        session = engine.start("k", AUDIO)
        assert compiled is not None
        want = compiled.JitterBuffer if use_compiled else JitterBuffer
        assert type(session.jitter) is want
        assert session.jitter.delay_ms == 20 and session.jitter.clock_rate == 8000
        session.close()
    finally:
        engine.close()
        loop.close()


def heard(jitter: Any, packets: list[tuple[float, bytes]], ticks: int) -> list[bytes]:
    """What a session hands on, tick by tick (with `pump` running inputs ahead)."""
    pool = PortPool(34000, 34999)
    s = MediaSession("rtc_jitter", pool.allocate("127.0.0.1"), AUDIO, now=0.0,
                     wall=lambda: 1.7e9, timeout=0, jitter=jitter)
    out: list[bytes] = []
    s.on_audio = lambda pcm: out.append(pcm.tobytes())
    events = sorted([(t, 0, data) for t, data in packets]
                    + [(0.011 + k * 0.02, 1, b"") for k in range(ticks)])
    for t, kind, data in events:
        if kind == 0:
            s.receive(data, ("127.0.0.1", 40000), t)
            s.pump()
        else:
            s.next_tick = t + 0.02
            s.tick(t)
            out.append(b"tick")
    s.close()
    return out


def test_a_session_hears_the_same_audio_with_either_buffer() -> None:
    assert compiled is not None
    rng = random.Random(5)
    packets = []
    for k in range(1500):
        if rng.random() < 0.03:
            continue  # lost
        pcm = (3000 * np.sin(np.arange(160) * (0.05 + k % 7 * 0.01))).astype(np.int16)
        burst = 1.0 + 0.2 * (k // 300) if k % 300 in range(100, 110) else 0.0
        at = k * 0.02 + rng.uniform(0, 0.04) + burst
        packets.append((at, build_rtp(0, (60_000 + k) & 0xFFFF, k * 160, 0x1234, ulaw_encode(pcm))))
    py, c = JitterBuffer(initial_delay_ms=0), compiled.JitterBuffer(initial_delay_ms=0)
    want, got = heard(py, packets, 1600), heard(c, packets, 1600)
    assert len(want) > 3000 and got == want
    assert py.played > 1300 and py.late > 10 and py.concealed > 40 and py.stalled > 0
    assert (c.played, c.late, c.concealed, c.stalled) == (py.played, py.late, py.concealed,
                                                          py.stalled)
