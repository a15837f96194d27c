"""The compiled kernels (sipbridge.media._kernels) against the Python reference: G.711
for every sample and every code, the 1:3 / 3:1 FIR on noise, saturation, a speech-like
signal and long chunk sequences, and a whole echo session's packets, bit for bit."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.media import g711, resample, speed
from sipbridge.media.codecs import open_codec
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.resample import MODEL_RATE, PHONE_RATE, Resampler
from sipbridge.media.rtp import build_rtp, parse_rtp
from sipbridge.media.session import MediaSession

kernels = speed.require("kernels")  # set-up builds it: its absence is a failure here

EVERY_SAMPLE = np.arange(65536, dtype=np.uint16).view(np.int16)
EVERY_CODE = bytes(range(256))
LAWS = [("ulaw", g711.ulaw_encode, g711.ulaw_decode), ("alaw", g711.alaw_encode,
                                                        g711.alaw_decode)]


def samples(data: bytes | bytearray) -> np.ndarray:
    return np.frombuffer(data, np.int16)


# ---- G.711 ---------------------------------------------------------------------------


@pytest.mark.parametrize(("law", "encode", "decode"), LAWS)
def test_every_sample_encodes_and_every_code_decodes_the_same(
    law: str, encode: Callable[[np.ndarray], bytes], decode: Callable[[bytes], np.ndarray]
) -> None:
    c_encode, c_decode = getattr(kernels, f"{law}_encode"), getattr(kernels, f"{law}_decode")
    assert c_encode(EVERY_SAMPLE) == encode(EVERY_SAMPLE)
    assert c_encode(EVERY_SAMPLE.astype("<i2").tobytes()) == encode(EVERY_SAMPLE)  # s16le
    assert c_encode(EVERY_SAMPLE.astype(">i2")) == encode(EVERY_SAMPLE)  # the other order
    assert c_encode(memoryview(b"\0" + EVERY_SAMPLE.tobytes())[1:]) == encode(EVERY_SAMPLE)
    assert np.array_equal(samples(c_decode(EVERY_CODE)), decode(EVERY_CODE))
    assert c_encode(b"") == b"" and c_decode(b"") == bytearray()


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_the_compiled_codec_gives_what_the_python_one_does(name: str) -> None:
    fmt = Codec(0 if name == "PCMU" else 8, name, 8000)
    python, compiled = open_codec(fmt), open_codec(fmt, compiled=True)
    assert compiled.encode(EVERY_SAMPLE) == python.encode(EVERY_SAMPLE)
    strided = EVERY_SAMPLE[::3]  # not contiguous: the codec copies it for the kernels
    assert compiled.encode(strided) == python.encode(strided)
    decoded = compiled.decode(EVERY_CODE)
    assert decoded is not None and decoded.dtype == np.int16 and decoded.flags.writeable
    assert np.array_equal(decoded, python.decode(EVERY_CODE))  # type: ignore[arg-type]
    assert compiled.decode(b"") is None


def test_what_is_not_int16_pcm_is_refused_as_by_the_python_codec() -> None:
    for c_encode, encode in ((kernels.ulaw_encode, g711.ulaw_encode),
                             (kernels.alaw_encode, g711.alaw_encode)):
        with pytest.raises(ValueError, match="even number of bytes"):
            c_encode(b"\x01\x02\x03")
        with pytest.raises(ValueError, match="even number of bytes"):
            encode(b"\x01\x02\x03")
        with pytest.raises(TypeError):
            c_encode(np.zeros(4, np.float32))
        with pytest.raises(TypeError):
            c_encode(np.zeros(4, np.int32))
        with pytest.raises(ValueError, match="1-D"):
            c_encode(np.zeros((2, 2), np.int16))
        with pytest.raises(TypeError):
            c_encode("text")
    with pytest.raises(TypeError):
        kernels.ulaw_decode(None)


def test_random_and_truncated_input_decodes_and_encodes_alike() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(0, 400))
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        for law, encode, decode in LAWS:
            assert np.array_equal(samples(getattr(kernels, f"{law}_decode")(data)), decode(data))
            even = data[: n - n % 2]
            assert getattr(kernels, f"{law}_encode")(even) == encode(even)


# ---- the 1:3 and 3:1 FIR -------------------------------------------------------------


def test_the_compiled_taps_are_the_python_ones() -> None:
    assert kernels.SHIFT == resample.SHIFT
    down, up = kernels.DOWN_TAPS, kernels.UP_TAPS
    assert down == tuple(resample.TAPS_DOWN[::-1].tolist())
    assert up == tuple(tuple(resample.TAPS_UP[p::3][::-1].tolist()) for p in range(3))
    # Unity gain per branch, and every sum inside int32 (the C sums in 32 bits).
    assert int(resample.TAPS_DOWN.sum()) == 1 << resample.SHIFT
    for p in range(3):
        assert int(resample.TAPS_UP[p::3].sum()) == 1 << resample.SHIFT
    for branch in (resample.TAPS_DOWN, *(resample.TAPS_UP[p::3] for p in range(3))):
        assert int(np.abs(branch).sum()) * 32768 + (1 << 14) < 2**31


def test_the_reference_computes_the_plain_convolution_a_phase_at_a_time() -> None:
    """resample's sums, branch by branch, are the filters' plain convolutions: the 1:3
    one over the zero-stuffed input, the 3:1 one's every third sum."""
    rng = np.random.default_rng(11)
    assert len(resample._up_sums(np.zeros(23, np.int64))) == 0
    assert len(resample._down_sums(np.zeros(71, np.int64))) == 0
    for n in (1, 2, 3, 23, 24, 160, 161, 480, 481, 1000):
        xh = rng.integers(-32768, 32768, 23 + n).astype(np.int64)
        stuffed = np.zeros(71 + 3 * n, np.int64)
        stuffed[2::3] = xh  # the history's places as if never cut, then x
        assert np.array_equal(resample._up_sums(xh),
                              np.convolve(stuffed, resample.TAPS_UP, "valid"))
        buf = rng.integers(-32768, 32768, 71 + 3 * n).astype(np.int64)
        assert np.array_equal(resample._down_sums(buf),
                              np.convolve(buf, resample.TAPS_DOWN, "valid")[2::3])


def run(resampler: Resampler | object, chunks: list[np.ndarray]) -> list[np.ndarray]:
    if isinstance(resampler, Resampler):
        return [resampler.process(c) for c in chunks]
    return [samples(resampler.process(c)) for c in chunks]  # type: ignore[attr-defined]


def both(in_rate: int, out_rate: int, chunks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The Python reference's output and the compiled kernel's, chunk by chunk, checked
    equal chunk for chunk; the two whole outputs."""
    python = run(Resampler(in_rate, out_rate), chunks)
    compiled = run(Resampler(in_rate, out_rate, compiled=True), chunks)
    bare = run(kernels.Resampler(in_rate, out_rate), chunks)
    for k, (a, b, c) in enumerate(zip(python, compiled, bare, strict=True)):
        assert a.dtype == b.dtype == c.dtype == np.int16, k
        assert np.array_equal(a, b) and np.array_equal(a, c), (k, len(chunks[k]))
    return np.concatenate(python), np.concatenate(compiled)


def cut(x: np.ndarray, sizes: Iterator[int] | list[int]) -> list[np.ndarray]:
    chunks, at = [], 0
    for size in sizes:
        if at >= len(x):
            break
        chunks.append(x[at:at + size])
        at += size
    if at < len(x):
        chunks.append(x[at:])
    return chunks


def full_scale_noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-32768, 32768, n).astype(np.int16)


def speech_like(rate: int, seconds: float) -> np.ndarray:
    """Voiced sound with a gliding pitch and moving formants, bursts of noise, pauses."""
    rng = np.random.default_rng(3)
    t = np.arange(int(rate * seconds)) / rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k * (1 + np.sin(2 * np.pi * (0.7 + 0.3 * k) * t))
                 for k in range(1, 25))
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t) * 1.5, 0, 1)  # syllables and pauses
    hiss = rng.normal(0, 0.3, len(t)) * (np.sin(2 * np.pi * 0.9 * t) > 0.8)
    x = 9000 * envelope * voiced + 4000 * hiss
    out: np.ndarray = np.clip(x, -32768, 32767).astype(np.int16)
    return out


def test_full_scale_noise_up_and_down_saturating() -> None:
    x = full_scale_noise(8000, 1)
    up, _ = both(PHONE_RATE, MODEL_RATE, cut(x, [160] * 50))
    assert (up == 32767).sum() > 50 and (up == -32768).sum() > 50  # saturation is exercised
    y = full_scale_noise(24000, 2)
    down, _ = both(MODEL_RATE, PHONE_RATE, cut(y, [480] * 50))
    assert (down == 32767).any() and (down == -32768).any()
    # A square wave at full scale overshoots (Gibbs) and saturates both ways.
    square = np.where(np.arange(8000) % 40 < 20, 32767, -32768).astype(np.int16)
    up, _ = both(PHONE_RATE, MODEL_RATE, cut(square, [160] * 50))
    assert (up == 32767).sum() > 100 and (up == -32768).sum() > 100
    down, _ = both(MODEL_RATE, PHONE_RATE, cut(np.repeat(square, 3), [480] * 50))
    assert (down == 32767).sum() > 100 and (down == -32768).sum() > 100


def test_speech_like_signal_both_ways() -> None:
    x = speech_like(PHONE_RATE, 3.0)
    up, _ = both(PHONE_RATE, MODEL_RATE, cut(x, [160] * 150))
    assert np.abs(up).max() > 10000
    both(MODEL_RATE, PHONE_RATE, cut(speech_like(MODEL_RATE, 3.0), [480] * 150))


def test_any_chunk_lengths_carry_the_same_state() -> None:
    """Chunks of 0, 1, 2, ... samples, odd lengths and 20 ms ones mixed: the compiled
    state (history, and the 3:1 filter's carry) follows the reference's."""
    rng = np.random.default_rng(5)
    x = speech_like(PHONE_RATE, 2.0) // 2 + full_scale_noise(16000, 6) // 2
    sizes = [0, 1, 2, 3, 22, 23, 24, 25, 0, 160, 159, 161, 480, 1, 1, 1, 500, 47]
    sizes += [int(n) for n in rng.integers(0, 600, 400)]
    up_python, _ = both(PHONE_RATE, MODEL_RATE, cut(x, sizes))
    # The chunking changes nothing: the same as 20 ms chunks, and as one chunk.
    twenty, _ = both(PHONE_RATE, MODEL_RATE, cut(x, [160] * 100))
    assert np.array_equal(up_python, twenty)
    assert np.array_equal(samples(kernels.Resampler(PHONE_RATE, MODEL_RATE).process(x)), twenty)
    down_python, _ = both(MODEL_RATE, PHONE_RATE, cut(twenty, sizes))
    whole, _ = both(MODEL_RATE, PHONE_RATE, cut(twenty, [480] * 100))
    assert np.array_equal(down_python, whole) and len(whole) == len(x)


def test_8_to_24_to_8_chained_over_many_chunks() -> None:
    x = speech_like(PHONE_RATE, 4.0)
    python_up, python_down = Resampler(PHONE_RATE, MODEL_RATE), Resampler(MODEL_RATE, PHONE_RATE)
    c_up = Resampler(PHONE_RATE, MODEL_RATE, compiled=True)
    c_down = Resampler(MODEL_RATE, PHONE_RATE, compiled=True)
    for k in range(200):
        frame = x[k * 160:(k + 1) * 160]
        a = python_down.process(python_up.process(frame))
        b = c_down.process(c_up.process(frame))
        assert np.array_equal(a, b), k


@pytest.mark.parametrize("level", [-32768, -12345, -1, 0, 1, 7, 1000, 32767])
def test_a_constant_level_comes_back_as_itself(level: int) -> None:
    x = np.full(3200, level, np.int16)
    up, _ = both(PHONE_RATE, MODEL_RATE, cut(x, [160] * 20))
    down, _ = both(MODEL_RATE, PHONE_RATE, cut(up, [480] * 20))
    assert set(up[100:].tolist()) == {level} and set(down[40:].tolist()) == {level}


def test_the_kernel_resampler_refuses_other_rates_and_bad_buffers() -> None:
    with pytest.raises(ValueError, match="8000 <-> 24000"):
        kernels.Resampler(16000, 24000)
    r = kernels.Resampler(MODEL_RATE, PHONE_RATE)
    with pytest.raises(ValueError, match="even number of bytes"):
        r.process(b"\x00\x01\x02")
    with pytest.raises(TypeError):
        r.process(np.zeros(3, np.float64))
    # Bytes (s16le), unaligned or in either order, convert as the same samples do.
    x = full_scale_noise(961, 9)
    ref = kernels.Resampler(MODEL_RATE, PHONE_RATE).process(x)
    for form in (x.astype("<i2").tobytes(), x.astype(">i2"),
                 memoryview(b"\0" + x.tobytes())[1:]):
        assert kernels.Resampler(MODEL_RATE, PHONE_RATE).process(form) == ref
    assert Resampler(16000, 24000, compiled=True).process(x[:320]).shape == (480,)
    assert np.array_equal(Resampler(MODEL_RATE, PHONE_RATE, compiled=True).process(x[::2]),
                          Resampler(MODEL_RATE, PHONE_RATE).process(x[::2]))


def test_compiled_without_the_module_says_what_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "load", lambda name: None)
    with pytest.raises(speed.MediaPathError, match=r"_kernels is not built"):
        Resampler(PHONE_RATE, MODEL_RATE, compiled=True)
    Resampler(PHONE_RATE, MODEL_RATE)  # the Python path needs nothing


# ---- a whole echo session ------------------------------------------------------------


def echoed_payloads(compiled: bool, name: str, frames: list[bytes]) -> list[bytes]:
    """A MediaSession in echo mode on loopback, fed `frames` as RTP packets (one lost,
    two swapped, one undecodable) at 20 ms: the payloads it sends back."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2.0)
    port = peer.getsockname()[1]
    pt = 0 if name == "PCMU" else 8
    audio = NegotiatedAudio(Codec(pt, name, 8000), 101, "127.0.0.1", port,
                            Direction.SENDRECV, 20)
    loop = asyncio.new_event_loop()
    engine = MediaEngine(MediaConfig(compiled=compiled), loop)
    session = MediaSession("rtc_exact", PortPool(32000, 32999).allocate("127.0.0.1"), audio,
                           now=0.0, wall=lambda: 1.7e9, timeout=5.0,
                           jitter=JitterBuffer(initial_delay_ms=0), compiled=compiled)
    engine.echo(session)
    order = list(range(len(frames)))
    order[10], order[11] = order[11], order[10]
    del order[order.index(30)]
    got = []
    try:
        for k, i in enumerate(order):
            payload = frames[i] if i != 40 else b""  # an empty payload does not decode
            session.receive(build_rtp(pt, 1000 + i, 160 * i, 0x55, payload), ("127.0.0.1", port),
                            k * 0.02)
            session.tick(k * 0.02 + 0.001)
            got.append(parse_rtp(peer.recv(2048)).payload)
    finally:
        session.close()
        engine.close()
        loop.close()
        peer.close()
    return got


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_an_echo_session_sends_the_same_payloads_on_either_path(name: str) -> None:
    encode = g711.ulaw_encode if name == "PCMU" else g711.alaw_encode
    x = np.concatenate([speech_like(PHONE_RATE, 1.5), full_scale_noise(1600, 4)])
    frames = [encode(x[i:i + 160]) for i in range(0, len(x), 160)]
    python = echoed_payloads(False, name, frames)
    compiled = echoed_payloads(True, name, frames)
    assert len(python) == len(frames) - 1
    assert len({p for p in python}) > 50  # the audio came back, not silence
    assert compiled == python


@pytest.mark.parametrize("compiled", [False, True])
def test_the_engine_starts_calls_on_the_path_its_config_names(compiled: bool) -> None:
    loop = asyncio.new_event_loop()
    engine = MediaEngine(MediaConfig(ports=(33000, 33999), compiled=compiled), loop)
    try:
        engine.allocate("rtc_path", "127.0.0.1")
        audio = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "127.0.0.1", 9, Direction.SENDRECV,
                                20)
        session = engine.start("rtc_path", audio)
        assert session.compiled is compiled
        encode = session.codec._law.encode  # type: ignore[attr-defined]
        assert (encode is g711.ulaw_encode) is not compiled
    finally:
        engine.close()
        loop.close()
