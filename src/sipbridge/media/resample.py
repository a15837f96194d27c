"""Streaming sample-rate conversion between the phone side (8 kHz) and the model side
(24 kHz PCM16).

The call path converts by exactly 3 in 20 ms chunks, where latency counts twice (the
caller's words to the model, the model's words to the caller). soxr, fed 20 ms chunks,
holds back 50 to 130 ms of audio until later input pushes it out (measured with soxr
1.x: LQ 50 ms, MQ 78 ms, HQ 127 ms over 8->24->8 kHz). So the 1:3 and 3:1 paths are
a polyphase FIR of our own: a 72-tap Kaiser-windowed low-pass at 24 kHz, flat to 3 kHz,
-82 dB from 4.6 kHz, 1.5 ms of delay each way. soxr does every other ratio (WAV files
to play, speech engines at 16 or 22.05 kHz), where a whole signal is converted at once.
"""

from __future__ import annotations

import numpy as np
import soxr

PHONE_RATE = 8000
MODEL_RATE = 24000
TAPS = 72


def _lowpass(taps: int, cutoff: float, rate: float, beta: float = 7.0) -> np.ndarray:
    """A windowed-sinc low-pass with unity gain at DC."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff / rate * n) * np.kaiser(taps, beta)
    out: np.ndarray = (h / h.sum()).astype(np.float32)
    return out


_FILTER = _lowpass(TAPS, 3700.0, MODEL_RATE)
_FILTER_UP = (_FILTER * 3).astype(np.float32)  # zero-stuffing by 3 divides the gain by 3


class Resampler:
    """int16 mono in, int16 mono out, chunk by chunk, the filter state kept in between."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        if (in_rate, out_rate) == (PHONE_RATE, MODEL_RATE):
            self._mode = "up"
        elif (in_rate, out_rate) == (MODEL_RATE, PHONE_RATE):
            self._mode = "down"
        else:
            self._mode = "soxr"
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        self._buf = np.zeros(TAPS - 1, np.float32)
        self._carry = np.zeros(0, np.int16)  # 24 kHz samples short of a multiple of 3

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Convert one chunk. The 1:3 and 3:1 paths give exactly 3x or 1/3 of the input
        (3:1 carries up to 2 samples over to the next chunk)."""
        if self._mode == "up":
            return self._up(samples)
        if self._mode == "down":
            return self._down(samples)
        out: np.ndarray = self._stream.resample_chunk(samples)
        return out

    def _up(self, x: np.ndarray) -> np.ndarray:
        n = len(x) * 3
        buf = self._buf
        if len(buf) != TAPS - 1 + n:
            buf = np.concatenate((buf[len(buf) - (TAPS - 1) :], np.zeros(n, np.float32)))
        else:
            buf[: TAPS - 1] = buf[n:]
            buf[TAPS - 1 :] = 0
        buf[TAPS - 1 :: 3] = x
        self._buf = buf
        y = np.convolve(buf, _FILTER_UP, "valid")
        return _to_int16(y)

    def _down(self, x: np.ndarray) -> np.ndarray:
        if len(self._carry):
            x = np.concatenate((self._carry, x))
        usable = len(x) - len(x) % 3
        self._carry = x[usable:].copy()
        x = x[:usable]
        buf = self._buf
        if len(buf) != TAPS - 1 + usable:
            buf = np.concatenate((buf[len(buf) - (TAPS - 1) :], np.zeros(usable, np.float32)))
        else:
            buf[: TAPS - 1] = buf[usable:]
        buf[TAPS - 1 :] = x
        self._buf = buf
        y = np.convolve(buf, _FILTER, "valid")[2::3]
        return _to_int16(y)

    def flush(self) -> np.ndarray:
        """What a soxr stream still holds, at the end of a stream (the FIR holds nothing
        that is not already out, but its 1.5 ms tail)."""
        if self._mode == "soxr":
            out: np.ndarray = self._stream.resample_chunk(np.zeros(0, np.int16), last=True)
            return out
        return np.zeros(0, np.int16)


def _to_int16(y: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.clip(y, -32768, 32767).astype(np.int16)
    return out


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Convert a whole signal at once (files, tests)."""
    if in_rate == out_rate:
        return samples.astype(np.int16, copy=False)
    out: np.ndarray = soxr.resample(samples, in_rate, out_rate, quality="HQ")
    return out.astype(np.int16, copy=False)
