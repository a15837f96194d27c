"""Streaming sample-rate conversion between the phone side (8 kHz) and the model side
(24 kHz PCM16).

The call path converts by exactly 3 in 20 ms chunks, where latency counts twice (the
caller's words to the model, the model's words to the caller). soxr, fed 20 ms chunks,
holds back 50 to 130 ms of audio until later input pushes it out (measured with soxr
1.x: LQ 50 ms, MQ 78 ms, HQ 127 ms over 8->24->8 kHz). So the 1:3 and 3:1 paths are
a polyphase FIR of our own: a 72-tap Kaiser-windowed low-pass at 24 kHz, within 0.02 dB
to 3 kHz, 72 dB down or more from 4.6 kHz (as its fixed-point taps make it, measured
either way), 1.5 ms of delay each way. Wideband calls convert between the call's rate
and another of 8, 16, 24 and 48 kHz (G.722's 16 kHz to the model's 24 kHz is 2:3) by
the same kind of filter, any L:M (`_Rational`). soxr does every other ratio (WAV files
to play, speech engines at 22.05 kHz), where a whole signal is converted at once.

The 1:3 and 3:1 filters run in fixed point, so that their output is defined to the bit
and compiled code (sipbridge.media._kernels) gives the same: Q15 integer taps, each
polyphase branch's taps summing to exactly 1 << 15 (a constant level comes back as
itself, through either filter and through both), products summed exactly in 64-bit
integers, then rounded as (sum + (1 << 14)) >> 15 (to nearest, halves up) and saturated
to int16.
"""

from __future__ import annotations

from math import gcd
from typing import Protocol

import numpy as np
import numpy.typing as npt
import soxr

from sipbridge.media import speed

PHONE_RATE = 8000
MODEL_RATE = 24000
TAPS = 72
SHIFT = 15  # the taps are Q15: 1 << SHIFT is a gain of 1


def _lowpass(taps: int, cutoff: float, rate: float, beta: float = 7.0) -> np.ndarray:
    """A windowed-sinc low-pass with unity gain at DC."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff / rate * n) * np.kaiser(taps, beta)
    out: np.ndarray = (h / h.sum()).astype(np.float32)
    return out


def _quantise(h: np.ndarray) -> npt.NDArray[np.int64]:
    """Taps `h` (summing to about 1) as Q15 integers summing to exactly 1 << SHIFT: each
    rounded to the nearest, then the few that rounding moved furthest from their value
    moved one step back, until the sum is exact."""
    scaled = h.astype(np.float64) * (1 << SHIFT)
    taps = np.round(scaled).astype(np.int64)
    short = (1 << SHIFT) - int(taps.sum())
    if short:
        error = scaled - taps  # > 0: rounded down
        order = np.argsort(-error if short > 0 else error, kind="stable")
        assert abs(short) <= len(taps)
        taps[order[:abs(short)]] += 1 if short > 0 else -1
    return taps


def _fixed_point_taps() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The 3:1 filter (72 Q15 taps) and the 1:3 filter (the same response times 3, as
    zero-stuffing by 3 divides the gain by 3): output sample 3m + p of the 1:3 filter
    sees only taps p, p + 3, ... (its polyphase branch p), so each branch of 24 taps is
    quantised to unity gain on its own."""
    h = _lowpass(TAPS, 3700.0, MODEL_RATE)
    up = np.zeros(TAPS, np.int64)
    for p in range(3):
        up[p::3] = _quantise(3 * h[p::3].astype(np.float64))
    return _quantise(h), up


TAPS_DOWN, TAPS_UP = _fixed_point_taps()
for _taps in (TAPS_DOWN, TAPS_UP):
    _taps.flags.writeable = False
_FILTER = TAPS_DOWN / (1 << SHIFT)  # the filters the taps make, as floats (for tests)
_FILTER_UP = TAPS_UP / (1 << SHIFT)
_HISTORY_UP = (TAPS - 1) // 3  # 8 kHz samples the 1:3 filter still needs from before
_HISTORY_DOWN = TAPS - 1  # 24 kHz samples the 3:1 filter still needs from before
# The polyphase branches: the 1:3 filter's output sample 3m + p takes only taps p::3
# (the stuffed zeros meet the rest); the 3:1 filter's taps q::3 meet only input samples
# of one phase (position mod 3).
_UP_BRANCHES = tuple(np.ascontiguousarray(TAPS_UP[p::3]) for p in range(3))
_DOWN_BRANCHES = tuple(np.ascontiguousarray(TAPS_DOWN[q::3]) for q in range(3))
_HALF = 1 << (SHIFT - 1)
_INT16_MIN, _INT16_MAX = np.int64(-32768), np.int64(32767)


def _up_sums(xh: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """1:3 before rounding: (history, x) in, 3 * len(x) sums out; sum 3m + p is branch
    p over input samples m - 23 .. m. Integer products summed in int64 are exact,
    whatever order numpy adds them in."""
    n = len(xh) - _HISTORY_UP
    sums = np.zeros(3 * max(n, 0), np.int64)
    if n > 0:
        for p, branch in enumerate(_UP_BRANCHES):
            sums[p::3] = np.convolve(xh, branch, "valid")
    return sums


def _down_sums(buf: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """3:1 before rounding: (history, x) in (len(x) a multiple of 3), len(x) // 3 sums
    out: sum m is the low-pass over buf[3m + 2 .. 3m + 73], i.e.
    np.convolve(buf, TAPS_DOWN, "valid")[2::3], computed a phase at a time (tap 3i + q
    meets buf[3(m + 24 - i) + 1 - q]) so that no sum is computed only to be dropped."""
    k = (len(buf) - _HISTORY_DOWN) // 3
    if k <= 0:
        return np.zeros(0, np.int64)
    b0, b1, b2 = _DOWN_BRANCHES
    sums: npt.NDArray[np.int64] = (np.convolve(buf[1::3], b0, "valid")[1:1 + k]
                                   + np.convolve(buf[0::3], b1, "valid")[1:1 + k]
                                   + np.convolve(buf[2::3], b2, "valid")[:k])
    return sums


def _round(sums: npt.NDArray[np.int64]) -> npt.NDArray[np.int16]:
    """Q15 sums to int16 samples: to the nearest (halves up), saturated."""
    y = (sums + _HALF) >> SHIFT
    np.maximum(y, _INT16_MIN, out=y)
    np.minimum(y, _INT16_MAX, out=y)
    out: npt.NDArray[np.int16] = y.astype(np.int16)
    return out


class _Kernel(Protocol):
    """sipbridge.media._kernels.Resampler: the 1:3 or 3:1 filter, s16 bytes out."""

    def process(self, samples: np.ndarray) -> bytearray: ...


class Resampler:
    """int16 mono in, int16 mono out, chunk by chunk, the filter state kept in between.

    With `compiled`, the 1:3 and 3:1 filters run in sipbridge.media._kernels (the same
    output bit for bit); MediaPathError when it is not built. Other ratios ignore it."""

    def __init__(self, in_rate: int, out_rate: int, *, compiled: bool = False) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._kernel: _Kernel | None = None
        if in_rate == out_rate:
            self._mode = "same"
        elif (in_rate, out_rate) == (PHONE_RATE, MODEL_RATE):
            self._mode = "up"
            self._history = np.zeros(_HISTORY_UP, np.int64)
        elif (in_rate, out_rate) == (MODEL_RATE, PHONE_RATE):
            self._mode = "down"
            self._history = np.zeros(_HISTORY_DOWN, np.int64)
        elif in_rate in CALL_RATES and out_rate in CALL_RATES:
            self._mode = "rational"
            self._rational = _Rational(in_rate, out_rate)
        else:
            self._mode = "soxr"
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        if compiled and self._mode in ("up", "down"):
            self._kernel = speed.require("kernels").Resampler(in_rate, out_rate)
        self._carry = np.zeros(0, np.int16)  # 24 kHz samples short of a multiple of 3

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Convert one chunk. The 1:3 and 3:1 paths give exactly 3x or 1/3 of the input
        (3:1 carries up to 2 samples over to the next chunk)."""
        if self._kernel is not None:
            out: np.ndarray = np.frombuffer(
                self._kernel.process(np.ascontiguousarray(samples, np.int16)), np.int16)
            return out
        if self._mode == "up":
            return self._up(samples.astype(np.int16, copy=False))
        if self._mode == "down":
            return self._down(samples.astype(np.int16, copy=False))
        if self._mode == "same":
            return samples.astype(np.int16, copy=False)
        if self._mode == "rational":
            return self._rational.process(samples)
        out = self._stream.resample_chunk(samples)
        return out

    def _up(self, x: np.ndarray) -> np.ndarray:
        xh = np.concatenate((self._history, x), dtype=np.int64)
        self._history = xh[len(x):]
        return _round(_up_sums(xh))

    def _down(self, x: np.ndarray) -> np.ndarray:
        if len(self._carry):
            x = np.concatenate((self._carry, x))
        usable = len(x) - len(x) % 3
        if usable != len(x):
            self._carry = x[usable:].copy()
            x = x[:usable]
        elif len(self._carry):
            self._carry = x[:0]
        buf = np.concatenate((self._history, x), dtype=np.int64)
        self._history = buf[usable:]
        return _round(_down_sums(buf))

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
