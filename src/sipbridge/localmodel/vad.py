"""Server-side voice activity detection with OpenAI `server_vad` semantics.

The audio (24 kHz mono int16, chunks of any size) is brought down to 8 kHz, the phone band,
and judged in 20 ms frames. A frame is voiced when webrtcvad says so (an energy-only check
stands in when `webrtcvad` is not installed) and it is louder than both an absolute gate
and the tracked noise floor by a margin, so digital silence and the low-level noise of a
G.711 line never count.

- Speech starts when 3 of the last 4 frames are voiced (detected 60 to 80 ms after the
  onset). `audio_start_ms` is the first voiced frame's start minus `prefix_padding_ms`.
- Speech stops after `silence_duration_ms` without a voiced frame; `audio_end_ms` is the
  last voiced frame's end plus `silence_duration_ms`, as OpenAI reports it.
- `threshold` (0..1, default 0.5) picks webrtcvad's aggressiveness (0 to 3) and the gate
  (-60 dBFS at 0, -45 at 0.5, -30 at 1): higher needs louder, clearer speech.

Times are in the buffer's own time base: milliseconds of audio since the first sample fed
(or since the clock was anchored with `now_ms`).
"""

from __future__ import annotations

import importlib
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sipbridge.media.resample import Resampler

RATE = 24000
"""The input sample rate."""
VAD_RATE = 8000
FRAME_MS = 20
FRAME = VAD_RATE * FRAME_MS // 1000
START_WINDOW = 4
"""Frames looked at for a start ..."""
START_VOICED = 3
"""... of which this many must be voiced."""
NOISE_MARGIN_DB = 9.0
"""How far above the noise floor a voiced frame must be."""
FLOOR_RISE_DB = 0.06
"""How fast the noise floor follows louder frames, per frame (3 dB a second)."""


def _load_webrtcvad() -> Any:
    try:
        return importlib.import_module("webrtcvad")
    except ImportError:
        return None


_WEBRTCVAD = _load_webrtcvad()


@dataclass(frozen=True, slots=True)
class VadEvent:
    """A speech start or stop.

    `audio_ms` is `audio_start_ms` (prefix padding included) for a start and `audio_end_ms`
    (silence duration included) for a stop; `detected_ms` is when the decision was made,
    both in the buffer's time base."""

    kind: Literal["speech_started", "speech_stopped"]
    audio_ms: int
    detected_ms: int


def aggressiveness(threshold: float) -> int:
    """webrtcvad's mode (0..3) for a server_vad threshold (0..1)."""
    return min(3, max(0, int(threshold * 4)))


def gate_dbfs(threshold: float) -> float:
    """The level (dBFS, RMS of a 20 ms frame) below which no frame is voiced."""
    return -60.0 + 30.0 * min(1.0, max(0.0, threshold))


def _dbfs(frame: np.ndarray) -> float:
    rms = math.sqrt(float(np.mean(np.square(frame, dtype=np.float64))))
    return 20.0 * math.log10(max(rms, 1e-3) / 32768.0)


class Vad:
    """Turn detection over a stream of 24 kHz PCM16 (see the module docstring)."""

    def __init__(
        self,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        *,
        use_webrtcvad: bool = True,
    ) -> None:
        self.threshold = min(1.0, max(0.0, float(threshold)))
        self.prefix_padding_ms = max(0, int(prefix_padding_ms))
        self.silence_duration_ms = max(FRAME_MS, int(silence_duration_ms))
        self.gate_db = gate_dbfs(self.threshold)
        self._webrtc: Any = None
        if use_webrtcvad and _WEBRTCVAD is not None:
            self._webrtc = _WEBRTCVAD.Vad(aggressiveness(self.threshold))
        self.reset()

    @property
    def engine(self) -> str:
        """"webrtcvad" or "energy"."""
        return "webrtcvad" if self._webrtc is not None else "energy"

    @property
    def speaking(self) -> bool:
        """Whether speech has started and not yet stopped."""
        return self._speaking

    @property
    def last_voiced_end(self) -> int:
        """While speaking: the end of the last voiced frame (the buffer's time base)."""
        return self._last_voiced_end

    @property
    def quiet_ms(self) -> int:
        """While speaking: how long no frame has been voiced (0 right after one was)."""
        return self._clock(self._frames) - self._last_voiced_end if self._speaking else 0

    def end_turn(self) -> None:
        """The turn was ended by other means than the silence (its words were complete):
        the next speech is a new turn."""
        self._speaking = False
        self._recent.clear()

    def reset(self, now_ms: int | None = None) -> None:
        """Forget all audio (the buffer was cleared); the clock restarts at `now_ms`
        (0 when None)."""
        self._down = Resampler(RATE, VAD_RATE)
        self._pending = np.zeros(0, np.int16)
        self._origin_ms = now_ms
        self._frames = 0  # 20 ms frames judged since the origin
        self._fed = 0  # 24 kHz samples fed since the origin
        self._recent: deque[tuple[bool, int]] = deque(maxlen=START_WINDOW)
        self._speaking = False
        self._last_voiced_end = 0
        self._floor_db = -90.0

    def _clock(self, frames: int) -> int:
        return (self._origin_ms or 0) + frames * FRAME_MS

    def feed(self, pcm: np.ndarray, now_ms: int | None = None) -> list[VadEvent]:
        """Judge another chunk; returns the starts and stops it completes.

        `now_ms` is the time of the chunk's first sample on the caller's clock. It anchors
        the VAD's clock on the first chunk (and after `reset`); later it is checked
        against the samples counted, and a gap of more than a frame (audio lost) moves the
        clock on to it."""
        if now_ms is not None:
            if self._origin_ms is None:
                self._origin_ms = now_ms
            else:
                expected = self._origin_ms + self._fed * 1000 // RATE
                if abs(now_ms - expected) > FRAME_MS:
                    self._origin_ms += now_ms - expected
        elif self._origin_ms is None:
            self._origin_ms = 0
        samples = np.asarray(pcm, dtype=np.int16).reshape(-1)
        self._fed += len(samples)
        low = self._down.process(samples)
        if len(self._pending):
            low = np.concatenate((self._pending, low))
        events: list[VadEvent] = []
        whole = len(low) - len(low) % FRAME
        for start in range(0, whole, FRAME):
            event = self._frame(low[start:start + FRAME])
            if event is not None:
                events.append(event)
        self._pending = low[whole:].copy()
        return events

    def _voiced(self, frame: np.ndarray) -> bool:
        level = _dbfs(frame)
        loud = level >= self.gate_db and level >= self._floor_db + NOISE_MARGIN_DB
        # The floor falls at once to a quieter frame and rises slowly with louder ones.
        self._floor_db = min(level, self._floor_db + FLOOR_RISE_DB) if level > -90.0 else -90.0
        if not loud:
            return False
        if self._webrtc is None:
            return True
        return bool(self._webrtc.is_speech(frame.astype("<i2").tobytes(), VAD_RATE))

    def _frame(self, frame: np.ndarray) -> VadEvent | None:
        begin = self._clock(self._frames)
        self._frames += 1
        end = begin + FRAME_MS
        voiced = self._voiced(frame)
        self._recent.append((voiced, begin))
        if not self._speaking:
            if sum(v for v, _ in self._recent) >= START_VOICED:
                onset = next(t for v, t in self._recent if v)
                self._speaking = True
                self._last_voiced_end = end
                floor = self._origin_ms or 0
                return VadEvent("speech_started", max(floor, onset - self.prefix_padding_ms),
                                end)
            return None
        if voiced:
            self._last_voiced_end = end
            return None
        if end - self._last_voiced_end >= self.silence_duration_ms:
            self._speaking = False
            self._recent.clear()
            return VadEvent("speech_stopped", self._last_voiced_end + self.silence_duration_ms,
                            end)
        return None
