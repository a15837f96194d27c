"""Resampling, recording and the RTP port pool."""

from __future__ import annotations

import socket
import wave
from pathlib import Path

import numpy as np
import pytest

from sipbridge.media.ports import NoMediaPort, PortPool
from sipbridge.media.recorder import Recorder
from sipbridge.media.resample import MODEL_RATE, PHONE_RATE, Resampler, resample


def tone(freq: float, rate: int, seconds: float, amp: float = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant_freq(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def test_streaming_up_then_down_keeps_a_tone_its_length_and_adds_little_delay() -> None:
    up, down = Resampler(PHONE_RATE, MODEL_RATE), Resampler(MODEL_RATE, PHONE_RATE)
    x = tone(440, PHONE_RATE, 1.0)
    mid = [up.process(x[i:i + 160]) for i in range(0, len(x), 160)]
    assert all(len(m) == 480 for m in mid)  # exactly 3x per 20 ms chunk: nothing held back
    y = np.concatenate([down.process(m) for m in mid])
    assert len(y) == len(x)
    assert abs(dominant_freq(np.concatenate(mid)[4800:], MODEL_RATE) - 440) < 5
    assert abs(dominant_freq(y[800:], PHONE_RATE) - 440) < 5
    # Energy survives the round trip (no clicks or gaps at 20 ms chunk edges).
    ratio = np.sqrt(np.mean(y[800:7200].astype(float) ** 2)
                    / np.mean(x[800:7200].astype(float) ** 2))
    assert 0.95 < ratio < 1.05
    # The round trip delays by ~3 ms (two 72-tap filters), not tens of ms.
    lags = [int(np.argmax(np.correlate(y[2000:3000].astype(float),
                                        x[2000 - d:3000 - d].astype(float)))) for d in [0]]
    corr = [float(np.dot(y[2000:3000].astype(float), x[2000 - d:3000 - d].astype(float)))
            for d in range(60)]
    delay_ms = int(np.argmax(corr)) / 8
    assert lags == [0] and delay_ms <= 4.0


def test_fir_paths_match_a_direct_convolution() -> None:
    from sipbridge.media.resample import _FILTER, _FILTER_UP

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(1600) * 3000).astype(np.int16)
    up = Resampler(PHONE_RATE, MODEL_RATE)
    got = np.concatenate([up.process(x[i:i + 160]) for i in range(0, 1600, 160)])
    stuffed = np.zeros(4800)
    stuffed[::3] = x
    ref = np.convolve(stuffed, _FILTER_UP.astype(float))[:4800]
    assert np.abs(got - np.clip(ref, -32768, 32767)).max() <= 1.0
    down = Resampler(MODEL_RATE, PHONE_RATE)
    odd = [got[:479], got[479:1000], got[1000:]]  # chunks not a multiple of 3 carry over
    low = np.concatenate([down.process(c) for c in odd])
    ref_low = np.convolve(got.astype(float), _FILTER.astype(float))[:4800][2::3]
    assert len(low) == 1600 and np.abs(low - ref_low).max() <= 1.0


def test_downsampling_removes_what_8_khz_cannot_carry() -> None:
    x = tone(6000, MODEL_RATE, 0.5)  # above the 4 kHz Nyquist limit of the phone side
    y = resample(x, MODEL_RATE, PHONE_RATE)
    assert np.sqrt(np.mean(y[400:].astype(float) ** 2)) < 100  # filtered out, not aliased


def test_recorder_writes_stereo_with_caller_left_agent_right(tmp_path: Path) -> None:
    path = tmp_path / "calls" / "rtc_x.wav"
    rec = Recorder(path)
    caller, agent = tone(300, PHONE_RATE, 1.2), tone(1000, PHONE_RATE, 1.2)
    for i in range(0, len(caller), 160):
        rec.frame(caller[i:i + 160], agent[i:i + 160] if i < 4000 else None)
    rec.close()
    rec.close()  # idempotent
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    assert len(data) == len(caller)
    assert np.array_equal(data[:, 0], caller)
    assert np.array_equal(data[:4000, 1], agent[:4000])
    assert not data[4000:, 1].any()  # nothing played: silence on the agent channel


def test_port_pool_binds_even_rtp_and_odd_rtcp_and_skips_busy_ports() -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    base = probe.getsockname()[1] & ~1
    probe.close()
    try:
        blocker.bind(("127.0.0.1", base))
    except OSError:
        pytest.skip("could not prepare a busy port")
    pool = PortPool(base, base + 6)
    try:
        first = pool.allocate("127.0.0.1")
        assert first.port == base + 2 and first.port % 2 == 0  # base is busy: skipped
        assert first.rtcp.getsockname()[1] == first.port + 1
        second = pool.allocate("127.0.0.1")
        assert second.port == base + 4
        with pytest.raises(NoMediaPort):
            # base busy, base+2 and base+4 taken, base+7 is past the range
            pool.allocate("127.0.0.1")
        pool.release(first)
        assert pool.allocate("127.0.0.1").port == base + 2
    finally:
        blocker.close()


def test_out_of_file_descriptors_is_no_media_port_not_a_crash() -> None:
    """With the process's open-file limit reached, a new call's RTP socket cannot be
    opened: NoMediaPort (the call is refused 503), not an OSError out of the call setup."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import resource, socket
        from sipbridge.media.ports import NoMediaPort, PortPool
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        held = []
        try:
            while True:
                held.append(socket.socket())
        except OSError:
            pass
        try:
            PortPool(32000, 32100).allocate("127.0.0.1")
        except NoMediaPort as exc:
            print("refused:", exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "refused: cannot open an RTP socket: Too many open files" in result.stdout
