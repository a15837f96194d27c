"""Streaming sample-rate conversion between the phone side (8 kHz) and the model side
(24 kHz PCM16).

The call path converts by exactly 3 in 20 ms chunks, where latency counts twice (the
caller's words to the model, the model's words to the caller). soxr, fed 20 ms chunks,
holds back 50 to 130 ms of audio until later input pushes it out (measured with soxr
1.x: LQ 50 ms, MQ 78 ms, HQ 127 ms over 8->24->8 kHz). So the 1:3 and 3:1 paths are
a polyphase FIR of our own: a 72-tap Kaiser-windowed low-pass at 24 kHz, flat to 3 kHz,
-82 dB from 4.6 kHz, 1.5 ms of delay each way. Wideband calls convert between the call's
rate and another of 8, 16, 24 and 48 kHz (G.722's 16 kHz to the model's 24 kHz is 2:3) by
the same kind of filter, any L:M (`_Rational`). soxr does every other ratio (WAV files
to play, speech engines at 22.05 kHz), where a whole signal is converted at once.
"""

from __future__ import annotations

from math import gcd

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
_HISTORY_UP = (TAPS - 1) // 3  # 8 kHz samples the 1:3 filter still needs from before
_HISTORY_DOWN = TAPS - 1  # 24 kHz samples the 3:1 filter still needs from before
CHUNK = 160  # 20 ms at 8 kHz: the chunk the call path converts, by one matrix product


def _up_any(history: np.ndarray, x: np.ndarray) -> np.ndarray:
    """1:3 for any chunk: zero-stuff (history, x) and filter; 3 * len(x) samples out."""
    buf = np.zeros(_HISTORY_DOWN + 3 * len(x), np.float32)
    buf[2:_HISTORY_DOWN:3] = history  # the history's zero-stuffed places, as if never cut
    buf[_HISTORY_DOWN::3] = x
    return np.convolve(buf, _FILTER_UP, "valid")


def _down_any(buf: np.ndarray) -> np.ndarray:
    """3:1 for any chunk: filter (tail, x) and keep every third sample."""
    return np.convolve(buf, _FILTER, "valid")[2::3]


# The same two filters for a 20 ms chunk, as matrices built from the functions above:
# one product instead of zero-stuffing a buffer and filtering three times the samples.
_UP_MATRIX = np.stack([
    _up_any(e[:_HISTORY_UP], e[_HISTORY_UP:])
    for e in np.eye(_HISTORY_UP + CHUNK, dtype=np.float32)
], axis=1)
_DOWN_MATRIX = np.stack([
    _down_any(e) for e in np.eye(_HISTORY_DOWN + 3 * CHUNK, dtype=np.float32)
], axis=1)


class Resampler:
    """int16 mono in, int16 mono out, chunk by chunk, the filter state kept in between."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        if in_rate == out_rate:
            self._mode = "same"
        elif (in_rate, out_rate) == (PHONE_RATE, MODEL_RATE):
            self._mode = "up"
            self._history = np.zeros(_HISTORY_UP, np.float32)
        elif (in_rate, out_rate) == (MODEL_RATE, PHONE_RATE):
            self._mode = "down"
            self._history = np.zeros(_HISTORY_DOWN, np.float32)
        elif in_rate in CALL_RATES and out_rate in CALL_RATES:
            self._mode = "rational"
            self._rational = _Rational(in_rate, out_rate)
        else:
            self._mode = "soxr"
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        self._carry = np.zeros(0, np.int16)  # 24 kHz samples short of a multiple of 3

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Convert one chunk. The 1:3 and 3:1 paths give exactly 3x or 1/3 of the input
        (3:1 carries up to 2 samples over to the next chunk)."""
        if self._mode == "up":
            return self._up(samples)
        if self._mode == "down":
            return self._down(samples)
        if self._mode == "same":
            return samples.astype(np.int16, copy=False)
        if self._mode == "rational":
            return self._rational.process(samples)
        out: np.ndarray = self._stream.resample_chunk(samples)
        return out

    def _up(self, x: np.ndarray) -> np.ndarray:
        if len(x) == CHUNK:
            xh = np.concatenate((self._history, x), dtype=np.float32)
            y = _UP_MATRIX @ xh
            self._history = xh[CHUNK:]
        else:
            y = _up_any(self._history, x)
            self._history = np.concatenate((self._history, x), dtype=np.float32)[len(x):]
        return _to_int16(y)

    def _down(self, x: np.ndarray) -> np.ndarray:
        if len(self._carry):
            x = np.concatenate((self._carry, x))
        usable = len(x) - len(x) % 3
        if usable != len(x):
            self._carry = x[usable:].copy()
            x = x[:usable]
        elif len(self._carry):
            self._carry = x[:0]
        buf = np.concatenate((self._history, x), dtype=np.float32)
        y = _DOWN_MATRIX @ buf if usable == 3 * CHUNK else _down_any(buf)
        self._history = buf[usable:]
        return _to_int16(y)

    def flush(self) -> np.ndarray:
        """What a soxr stream still holds, at the end of a stream (the FIR holds nothing
        that is not already out, but its 1.5 ms tail)."""
        if self._mode == "soxr":
            out: np.ndarray = self._stream.resample_chunk(np.zeros(0, np.int16), last=True)
            return out
        return np.zeros(0, np.int16)


CALL_RATES = (8000, 16000, 24000, 48000)  # the rates a call's audio runs at


class _Rational:
    """L:M by a polyphase-in-effect FIR: zero-stuff by L, low-pass, keep every M-th; the
    filter's history and the input short of a multiple of M carried between chunks."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        g = gcd(in_rate, out_rate)
        self.up, self.down = out_rate // g, in_rate // g
        taps = 24 * max(self.up, self.down)
        cutoff = 0.4625 * min(in_rate, out_rate)  # as the 1:3 filter: 3700 Hz of 8 kHz
        self._h = (_lowpass(taps, cutoff, in_rate * self.up) * self.up).astype(np.float32)
        self._history = np.zeros(taps - 1, np.float32)  # at the stuffed rate
        self._carry = np.zeros(0, np.int16)

    def process(self, x: np.ndarray) -> np.ndarray:
        if len(self._carry):
            x = np.concatenate((self._carry, x))
        usable = len(x) - len(x) % self.down
        self._carry = x[usable:].copy()
        stuffed = np.zeros(len(self._history) + usable * self.up, np.float32)
        stuffed[: len(self._history)] = self._history
        stuffed[len(self._history)::self.up] = x[:usable]
        y = np.convolve(stuffed, self._h, "valid")[:: self.down]
        if len(self._history):
            self._history = stuffed[len(stuffed) - len(self._history):]
        return _to_int16(y.astype(np.float32))


_LOW, _HIGH = np.float32(-32768), np.float32(32767)


def _to_int16(y: np.ndarray) -> np.ndarray:
    np.maximum(y, _LOW, out=y)
    np.minimum(y, _HIGH, out=y)
    out: np.ndarray = y.astype(np.int16)
    return out


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Convert a whole signal at once (files, tests)."""
    if in_rate == out_rate:
        return samples.astype(np.int16, copy=False)
    out: np.ndarray = soxr.resample(samples, in_rate, out_rate, quality="HQ")
    return out.astype(np.int16, copy=False)
