"""The caller's side of a local model session: the input audio buffer, the turn being spoken,
and the voice activity detector's settings that the session's turn detection asks for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

EAGERNESS_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 300}
"""`semantic_vad` served by the plain detector: its eagerness as a silence duration."""


def vad_settings(turn_detection: Mapping[str, Any]) -> tuple[float, int, int]:
    """The detector's (threshold, prefix padding ms, silence ms) for a session's
    `turn_detection` (`server_vad` or `semantic_vad`)."""
    if turn_detection.get("type") == "semantic_vad":
        silence = EAGERNESS_SILENCE_MS.get(str(turn_detection.get("eagerness")), 500)
        return (0.5, 300, silence)
    threshold = turn_detection.get("threshold")
    return (threshold if threshold is not None else 0.5,
            turn_detection.get("prefix_padding_ms") or 300,
            turn_detection.get("silence_duration_ms") or 500)


@dataclass
class Turn:
    """The caller's current turn, as the VAD found it."""

    item_id: str
    start_ms: int = 0


class InputBuffer:
    """The input audio buffer: 24 kHz samples since `start`, a session sample index (the
    count of samples appended in the whole session, `written`, is its time base)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self.length = 0
        self.start = 0
        self.written = 0

    def append(self, pcm: np.ndarray) -> None:
        self._parts.append(pcm)
        self.length += len(pcm)
        self.written += len(pcm)

    def trim(self, keep_from: int) -> None:
        """Drop buffered audio before session sample `keep_from`."""
        drop = min(self.length, keep_from - self.start)
        if drop <= 0:
            return
        audio = np.concatenate(self._parts) if self._parts else np.zeros(0, np.int16)
        rest = audio[drop:]
        self._parts = [rest] if len(rest) else []
        self.length = len(rest)
        self.start += drop

    def take(self, until: int) -> np.ndarray:
        """The buffered audio before session sample `until`, removed from the buffer."""
        audio = np.concatenate(self._parts) if self._parts else np.zeros(0, np.int16)
        cut = max(0, min(len(audio), until - self.start))
        rest = audio[cut:]
        self._parts = [rest] if len(rest) else []
        self.length = len(rest)
        self.start += cut
        taken: np.ndarray = audio[:cut]
        return taken
