"""Audio for the demo's phones and the tests that judge what they hear: mono int16 WAV
files, espeak-ng speech, and the normalised cross-correlation that says whether one
signal is a (delayed, scaled) copy of another."""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import soxr

Pcm: TypeAlias = npt.NDArray[np.int16]

PHONE_RATE = 8000

def read_wav(path: Path) -> tuple[Pcm, int]:
    """A 16-bit PCM WAV as (int16 samples, sample rate): mono, or of several channels
    the first (a stereo phone's copy of its mono audio).

    A data chunk whose size field is 0 or runs past the end of the file (a
    writer killed before it closed the file) is read to the end of the file."""
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    offset, fmt, pcm = 12, None, None
    while offset + 8 <= len(data):
        cid, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if cid == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", data, body)
        elif cid == b"data":
            end = len(data) if size == 0 or body + size > len(data) else body + size
            pcm = data[body:end]
            break
        offset = body + size + (size & 1)
    if fmt is None or pcm is None:
        raise ValueError(f"{path}: no fmt or data chunk")
    tag, channels, rate, _, _, bits = fmt
    if tag not in (1, 0xFFFE) or bits != 16 or channels < 1:
        raise ValueError(f"{path}: want 16-bit PCM, got tag {tag}, {channels} ch, {bits} bit")
    samples = np.frombuffer(pcm[: len(pcm) // (2 * channels) * 2 * channels], "<i2")
    return samples[::channels].astype(np.int16), int(rate)


def write_wav(path: Path, samples: npt.ArrayLike, rate: int, channels: int = 1) -> None:
    """Write mono int16 samples as a 16-bit PCM WAV (the same in each of `channels`)."""
    pcm = np.repeat(np.asarray(samples, dtype="<i2"), channels).tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(pcm), b"WAVE",
        b"fmt ", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16,
        b"data", len(pcm),
    )  # fmt: skip
    path.write_bytes(header + pcm)


def to_int16(samples: npt.ArrayLike) -> Pcm:
    """Float samples on the int16 scale, rounded and clipped."""
    x = np.round(np.asarray(samples, dtype=np.float64))
    return np.clip(x, -32768, 32767).astype(np.int16)


def make_speech_wav(
    path: Path,
    text: str,
    rate: int = PHONE_RATE,
    *,
    peak_dbfs: float = -6.0,
    voice: str = "en-us",
) -> Pcm:
    """Speak ``text`` with espeak-ng into ``path``: mono int16 at ``rate``,
    normalised to ``peak_dbfs``. Returns the samples.

    espeak-ng writes 22050 Hz; soxr resamples (its default quality keeps the
    band below 4 kHz intact). Raises FileNotFoundError without espeak-ng."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise FileNotFoundError("espeak-ng is not installed (Debian package espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(
            [espeak, "-v", voice, "-s", "160", "-w", str(raw), text],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        speech, espeak_rate = read_wav(raw)
    x = speech.astype(np.float64)
    if espeak_rate != rate:
        x = soxr.resample(x, espeak_rate, rate)
    peak = float(np.max(np.abs(x))) or 1.0
    out = to_int16(x * (32767 * 10 ** (peak_dbfs / 20) / peak))
    write_wav(path, out, rate)
    return out


# --- measures ----------------------------------------------------------------


def xcorr_delay(sent: npt.ArrayLike, received: npt.ArrayLike, rate: int) -> tuple[float, float]:
    """The peak of the normalised cross-correlation of ``received`` against
    ``sent``, and the delay (seconds) at which ``received`` best matches it.

    Both signals have their mean removed; the correlation at each lag is
    divided by sqrt(energy(sent) * energy(received)), so a delayed copy (at
    any gain, with any amount of silence around it) gives 1.0, an unrelated
    signal gives close to 0, and a copy with part of it missing or with noise
    added gives less than 1. The sign is kept: an inverted copy gives -1.0,
    and the peak is the lag of largest magnitude. A positive delay means
    ``received`` lags ``sent``. Computed with one FFT of the padded signals."""
    a = np.asarray(sent, dtype=np.float64)
    b = np.asarray(received, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return 0.0, 0.0
    a = a - a.mean()
    b = b - b.mean()
    norm = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    if norm == 0.0:
        return 0.0, 0.0
    n = a.size + b.size - 1
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    # corr[k] = sum_t b[t + k] a[t]; negative lags wrap to the end of the buffer.
    lags = np.concatenate([corr[size - (a.size - 1) :], corr[: b.size]]) / norm
    i = int(np.argmax(np.abs(lags)))
    return float(lags[i]), (i - (a.size - 1)) / rate


def heard_in(sent: npt.ArrayLike, received: npt.ArrayLike, rate: int,
             margin: float = 0.5) -> float:
    """How well ``sent`` is heard anywhere in a long ``received`` that holds other sounds
    too: the best `xcorr_delay` peak over windows of ``received`` as long as ``sent`` plus
    ``margin`` seconds, each half a second after the last."""
    a = np.asarray(sent)
    b = np.asarray(received)
    width = a.size + int(margin * rate)
    if b.size <= width:
        return xcorr_delay(a, b, rate)[0]
    step = rate // 2
    return max(xcorr_delay(a, b[start:start + width], rate)[0]
               for start in range(0, b.size - width + step, step))
