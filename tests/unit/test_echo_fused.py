"""The echo's compiled shortcut (MediaSession._echo_frame): a session on the compiled
path sends the same packets, byte for byte, and reports the same figures as one on the
Python reference, for the same datagrams at the same times: a clean stream, loss,
reordering, jitter, duplicates, an SSRC change, a foreign source, a wrong payload type,
DTMF and STUN in between, and agent audio or digits queued mid-call (which turn the
shortcut off while they play)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.media import speed
from sipbridge.media.engine import MediaEngine
from sipbridge.media.g711 import PCMA, PCMU
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.rtp import build_rtp
from sipbridge.media.session import MediaSession
from sipbridge.media.stun import BINDING, REQUEST, build_stun

kernels, jitter, rtpio = speed.load("kernels"), speed.load("jitter"), speed.load("rtpio")
pytestmark = pytest.mark.skipif(None in (kernels, jitter, rtpio),
                                reason="the compiled media modules are not built")

PEER = ("127.0.0.1", 40000)
SSRC = 0x1234
# (time, datagram, source) or (time, action on the session)
Event = tuple[float, bytes | Callable[[MediaSession], None], tuple[str, int]]


@pytest.fixture
def pool() -> Iterator[PortPool]:
    pool = PortPool(35000, 35999)
    yield pool
    for endpoint in pool.take_idle():
        endpoint.close()


def audio(law: str) -> NegotiatedAudio:
    pt = 0 if law == "PCMU" else 8
    return NegotiatedAudio(Codec(pt, law, 8000), 101, PEER[0], PEER[1], Direction.SENDRECV, 20)


def voice(k: int, law: str) -> bytes:
    t = np.arange(160) + 160 * k
    pcm = (6000 * np.sin(t * (0.03 + k % 5 * 0.011)) + 400 * np.cos(t * 0.7)).astype(np.int16)
    return (PCMU if law == "PCMU" else PCMA).encode(pcm)


def rtp(k: int, law: str, *, seq0: int = 65000, ts0: int = 4_294_960_000, ssrc: int = SSRC,
        pt: int | None = None, payload: bytes | None = None) -> bytes:
    return build_rtp((0 if law == "PCMU" else 8) if pt is None else pt, (seq0 + k) & 0xFFFF,
                     (ts0 + 160 * k) & 0xFFFFFFFF, ssrc,
                     voice(k, law) if payload is None else payload)


def echoing(pool: PortPool, law: str, *, compiled: bool) -> tuple[MediaSession, list[int]]:
    """A session in echo, its RTP queued to `outgoing`; and a count, kept up to date, of
    the frames that took the shortcut."""
    buffer = (jitter.JitterBuffer if compiled and jitter is not None else JitterBuffer)(
        initial_delay_ms=0)
    s = MediaSession("rtc_fused", pool.allocate("127.0.0.1"), audio(law), now=0.0,
                     wall=lambda: 1.7e9, timeout=0, jitter=buffer, compiled=compiled)
    s.outgoing = []
    MediaEngine.echo(None, s)  # type: ignore[arg-type]  # uses nothing of the engine
    shortcut = [0]
    fused = s._echo_frame

    def counted(payload: bytes) -> bool:
        done = fused(payload)
        shortcut[0] += done
        return done

    s._echo_frame = counted  # type: ignore[method-assign]
    return s, shortcut


def run(pool: PortPool, law: str, events: list[Event], *, compiled: bool,
        until: float) -> tuple[list[tuple[bytes, tuple[str, int], int]], dict[str, Any], int]:
    """The packets a session in echo sends (in order), its figures, and how many frames
    took the shortcut; ticks driven as the engine does (phased to the first packet)."""
    s, shortcut = echoing(pool, law, compiled=compiled)
    s._ssrc, s._seq, s._ts = 0xCAFE0001, 65530, 4_294_967_000

    def phase(at: float) -> None:
        s.next_tick = at + 0.010

    s.on_phase = phase
    s.next_tick = 0.020
    out = s.outgoing
    assert out is not None
    pending = sorted(events, key=lambda e: e[0])
    i = 0
    while True:
        at = pending[i][0] if i < len(pending) else until
        if s.next_tick <= at and s.next_tick < until:
            now = s.next_tick
            s.tick(now)
            s.next_tick = now + 0.020
            s.pump()
            continue
        if i >= len(pending):
            break
        t, what, addr = pending[i]
        i += 1
        if callable(what):
            what(s)
            continue
        parsed = rtpio.parse(what) if compiled and rtpio is not None else None
        s.receive(what, addr, t, parsed)
        s.pump()
    figures = s.figures()
    s.close()
    s.endpoint.close()
    return [(data, addr, size) for _, _, data, addr, size in out], dict(figures), shortcut[0]


def stream(law: str, count: int, *, seed: int = 1, loss: float = 0.0, reorder: float = 0.0,
           jitter_s: float = 0.001, duplicates: float = 0.0) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = []
    for k in range(count):
        if rng.random() < loss:
            continue
        at = 0.5 + k * 0.020 + rng.uniform(0, jitter_s)
        if rng.random() < reorder:
            at += 0.025
        events.append((at, rtp(k, law), PEER))
        if rng.random() < duplicates:
            events.append((at + 0.003, rtp(k, law), PEER))
    return events


def dtmf(at: float, ts: int, seq: int, end: bool, duration: int) -> Event:
    payload = bytes((5, (0x80 if end else 0) | 10)) + duration.to_bytes(2, "big")
    return (at, build_rtp(101, seq & 0xFFFF, ts, SSRC, payload), PEER)


def cases(law: str) -> Iterator[tuple[str, list[Event]]]:
    yield "clean", stream(law, 300)
    yield "loss", stream(law, 300, loss=0.08, seed=2)
    yield "reorder", stream(law, 300, reorder=0.1, seed=3)
    yield "jitter", stream(law, 300, jitter_s=0.045, seed=4)
    yield "duplicates", stream(law, 300, duplicates=0.1, seed=5)
    new_source = [e for e in stream(law, 150)]
    new_source += [(0.5 + (150 + k) * 0.02, rtp(k, law, seq0=100, ts0=7, ssrc=0x9999), PEER)
                   for k in range(150)]
    yield "ssrc_change", new_source
    foreign = stream(law, 300, seed=6)
    foreign += [(0.51 + k * 0.1, rtp(k, law, seq0=0), ("127.0.0.1", 40100))
                for k in range(1, 60)]
    yield "foreign_source", foreign
    wrong = stream(law, 300, seed=7)
    wrong += [(0.512 + k * 0.1, rtp(k, law, pt=18), PEER) for k in range(1, 60)]
    yield "wrong_payload_type", wrong
    digits = stream(law, 300, seed=8)
    digits += [dtmf(0.5 + (100 + j) * 0.02 + 0.005, (4_294_960_000 + 160 * 100) & 0xFFFFFFFF,
                    65000 + 100 + j, j >= 4, 160 * (j + 1)) for j in range(7)]
    yield "dtmf_in_between", digits
    stun = stream(law, 300, seed=9)
    stun += [(0.505 + k * 0.5, build_stun(BINDING | REQUEST, k.to_bytes(12, "big")), PEER)
             for k in range(1, 10)]
    stun += [(0.507 + k * 0.5, b"\x01\x00garbage", PEER) for k in range(1, 5)]
    yield "stun", stun
    mid: list[Event] = stream(law, 400, loss=0.03, jitter_s=0.02, seed=10)
    mid.append((2.005, lambda s: s.play(np.full(2400, 3000, np.int16)), PEER))
    mid.append((3.505, lambda s: s.send_dtmf("12", duration_ms=60, gap_ms=40), PEER))
    mid.append((5.001, lambda s: s.play_phone(np.full(500, -200, np.int16)), PEER))
    mid.append((5.003, lambda s: s.clear_playout(), PEER))
    yield "play_and_digits_mid_call", mid
    malformed = stream(law, 300, seed=11)
    malformed += [(0.509 + k * 0.2, rtp(k, law, seq0=65000)[:7], PEER) for k in range(20)]
    malformed += [(0.503 + k * 0.2, rtp(300 + k, law, payload=b"\xff" * 80), PEER)
                  for k in range(20)]
    yield "malformed_and_odd_sizes", malformed
    other = "PCMA" if law == "PCMU" else "PCMU"
    reinvite = [e for e in stream(law, 150, seed=12)]
    reinvite.append((3.505, lambda s: s.update(audio(other)), PEER))
    reinvite += [(0.5 + (150 + k) * 0.02 + 0.001, rtp(150 + k, other), PEER)
                 for k in range(150)]
    yield "reinvite_to_the_other_law", reinvite


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_the_fused_echo_sends_what_the_reference_sends(pool: PortPool, law: str) -> None:
    for name, events in cases(law):
        want, want_figures, none = run(pool, law, events, compiled=False, until=9.0)
        got, got_figures, fused = run(pool, law, events, compiled=True, until=9.0)
        assert none == 0
        assert fused > 100, name  # the shortcut carried most frames
        assert len(got) == len(want) and got == want, name
        assert got_figures == want_figures, name
        assert want_figures["packets_out"] > 250, name


def test_the_shortcut_is_off_outside_plain_echo(pool: PortPool) -> None:
    """Recording, a bridge-like on_audio, or no echo at all: every frame the long way."""
    events = stream("PCMU", 100)

    def off(setup: Callable[[MediaSession], None]) -> int:
        s, calls = echoing(pool, "PCMU", compiled=True)
        s.next_tick = 0.51
        setup(s)
        for t, data, addr in events:
            assert isinstance(data, bytes)
            s.receive(data, addr, t)
            s.pump()
            if t > s.next_tick:
                s.tick(s.next_tick)
                s.next_tick += 0.02
        s.close()
        s.endpoint.close()
        return calls[0]

    assert off(lambda s: None) > 50
    assert off(lambda s: setattr(s, "on_audio", lambda pcm: None)) == 0
    assert off(lambda s: setattr(s, "follow_input", False)) == 0
    assert off(lambda s: setattr(s, "outgoing", None)) == 0


def test_echo_frame_refuses_what_it_cannot_do_and_changes_nothing() -> None:
    assert kernels is not None
    up, down = kernels.Resampler(8000, 24000), kernels.Resampler(24000, 8000)
    assert kernels.echo_frame(up, down, False, b"", 0, 1, 2, 3, False) is None
    assert kernels.echo_frame(up, down, False, b"\x00" * 481, 0, 1, 2, 3, False) is None
    down.process(np.zeros(4, np.int16))  # one sample carried
    assert kernels.echo_frame(up, down, False, b"\x00" * 160, 0, 1, 2, 3, False) is None
    with pytest.raises(ValueError):
        kernels.echo_frame(down, up, False, b"\x00" * 160, 0, 1, 2, 3, False)
    with pytest.raises(ValueError):
        kernels.echo_frame(up, down, False, b"\x00" * 160, 128, 1, 2, 3, False)
    with pytest.raises(TypeError):
        kernels.echo_frame(up, "down", False, b"\x00" * 160, 0, 1, 2, 3, False)
    # The same frame through fresh resamplers, the long way and the short.
    rng = np.random.default_rng(3)
    for law, alaw in ((PCMU, False), (PCMA, True)):
        up, down = kernels.Resampler(8000, 24000), kernels.Resampler(24000, 8000)
        up2, down2 = kernels.Resampler(8000, 24000), kernels.Resampler(24000, 8000)
        for n in [160, 80, 480, 1] + [int(x) for x in rng.integers(1, 481, 40)]:
            payload = rng.integers(0, 256, n, np.uint8).tobytes()
            samples, packet = kernels.echo_frame(up, down, alaw, payload, 96, 65535,
                                                 0xFFFFFFFF, 0xDEADBEEF, True)
            pcm = law.decode(payload)
            assert bytes(samples) == pcm.tobytes()
            back = np.frombuffer(down2.process(np.frombuffer(up2.process(pcm), np.int16)),
                                 np.int16)
            assert packet == build_rtp(96, 65535, 0xFFFFFFFF, 0xDEADBEEF, law.encode(back),
                                       True)
