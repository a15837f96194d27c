"""Test audio for the local model: espeak-ng's speech (`speech`, cached), a phone line's
path and noise (`phone_path`, `line_noise`) and where speech starts and ends
(`speech_bounds`)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from sipbridge.localmodel import tts
from sipbridge.media.g711 import ulaw_decode, ulaw_encode
from sipbridge.media.resample import resample

REQUEST = "Hello. Can you please transfer me to a human?"
needs_espeak = pytest.mark.skipif(not tts.available(),
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


@functools.cache
def _speech(text: str) -> np.ndarray:
    pcm = tts.synthesize(text)
    pcm.flags.writeable = False
    return pcm


def speech(text: str = REQUEST) -> np.ndarray:
    """espeak-ng saying `text`, 24 kHz int16 (cached)."""
    return _speech(text)


def phone_path(pcm24k: np.ndarray) -> np.ndarray:
    """24 kHz audio taken down a phone line and back: 8 kHz, μ-law, 24 kHz."""
    pcm8 = resample(pcm24k, 24000, 8000)
    return resample(ulaw_decode(ulaw_encode(pcm8)), 8000, 24000)


def line_noise(seconds: float, dbfs: float = -55.0, seed: int = 1) -> np.ndarray:
    """Low-level noise of a G.711 line: Gaussian noise at `dbfs` (RMS), μ-law quantised at
    8 kHz, at 24 kHz."""
    rng = np.random.default_rng(seed)
    rms = 32768 * 10 ** (dbfs / 20)
    pcm8 = np.clip(rng.normal(0, rms, int(8000 * seconds)), -32768, 32767).astype(np.int16)
    return resample(ulaw_decode(ulaw_encode(pcm8)), 8000, 24000)


def speech_bounds(pcm: np.ndarray, dbfs: float = -40.0) -> tuple[int, int]:
    """The first and last 10 ms window louder than `dbfs`, in ms."""
    frames = pcm[: len(pcm) // 240 * 240].reshape(-1, 240).astype(np.float64)
    level = 20 * np.log10(np.maximum(np.sqrt(np.mean(frames**2, axis=1)), 1e-3) / 32768)
    loud = np.flatnonzero(level > dbfs)
    return int(loud[0]) * 10, int(loud[-1]) * 10 + 10
