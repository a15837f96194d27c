"""Call recording: one stereo WAV per call, the caller on the left channel and the agent
on the right, at the call's audio rate (8 kHz for G.711, 16 kHz for G.722, 24 kHz for
Opus). Frames are gathered in memory and written a second at a time, so the media path
does not touch the disk every 20 ms."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

FLUSH_FRAMES = 50  # one second of 20 ms frames


class Recorder:
    """Writes interleaved stereo int16 frames to a WAV file."""

    def __init__(self, path: Path, rate: int = 8000) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._pending: list[np.ndarray] = []
        self.frames = 0
        self.closed = False

    def frame(self, caller: np.ndarray, agent: np.ndarray | None) -> None:
        """Add one 20 ms frame; `agent` None (nothing played) records silence."""
        stereo = np.zeros((len(caller), 2), np.int16)
        stereo[:, 0] = caller
        if agent is not None:
            stereo[: len(agent), 1] = agent[: len(caller)]
        self._pending.append(stereo)
        self.frames += 1
        if len(self._pending) >= FLUSH_FRAMES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._wav.writeframes(np.concatenate(self._pending).tobytes())
            self._pending.clear()

    def close(self) -> None:
        if not self.closed:
            self._flush()
            self._wav.close()
            self.closed = True
