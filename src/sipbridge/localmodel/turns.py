"""The caller's side of a local model session: the input audio buffer, the turn being spoken,
and the voice activity detector's settings that the session's turn detection asks for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# `semantic_vad`'s eagerness: (the silence that ends a turn whose words are complete, the
# silence that ends any turn). "Complete": `words_complete` on the transcript of the turn
# so far, made while the caller pauses.
# People leave 200-500 ms between sentences ("Hello." [320 ms] "Can you ..." as espeak-ng
# says it): auto waits 400 ms after a complete sentence.
EAGERNESS_MS = {"high": (200, 800), "auto": (400, 1500), "medium": (400, 1500),
                "low": (600, 3000)}
SPECULATE_MS = 100
"""A pause this long in a turn starts the transcription of the turn so far (kept if the
turn ends there, dropped if the caller goes on)."""
MAX_TURN_MS = 30_000
"""A turn that lasts this long ends (a caller who never pauses, a line of steady noise)."""
# Words a statement does not end on: a pause after them is no end of turn (a question,
# "Who am I speaking to?", may end on one).
_GOES_ON = frozenset(["a", "an", "the", "and", "or", "but", "because", "if", "than", "of",
                      "to", "with", "from", "for", "um", "uh", "er", "erm", "hmm", "like",
                      "my", "your", "our", "their", "its", "i", "i'm", "would", "could",
                      "should", "want", "wanted", "need"])


def words_complete(text: str) -> bool:
    """Whether a transcript reads as a finished utterance: a question or an exclamation,
    or a statement's full stop (not an ellipsis) after a word a statement can end on.
    "Who am I speaking to?" and "I need a human." are; "Um, I want...", "I would like
    to." and "I would like to speak to a human" (no mark) are not."""
    text = text.strip()
    if not text or text.endswith(("...", "\u2026", ",", "-", ";", ":")):
        return False
    if text[-1] in "?!":
        return True
    if text[-1] != ".":
        return False
    words = text.rstrip(".").split()
    last = words[-1].strip("\"'()").lower() if words else ""
    return bool(last) and last not in _GOES_ON


def vad_settings(turn_detection: Mapping[str, Any]) -> tuple[float, int, int]:
    """The detector's (threshold, prefix padding ms, silence ms) for a session's
    `turn_detection` (`server_vad` or `semantic_vad`: its longest silence)."""
    if turn_detection.get("type") == "semantic_vad":
        return (0.5, 300, semantic_pauses(turn_detection)[1])
    threshold = turn_detection.get("threshold")
    return (threshold if threshold is not None else 0.5,
            turn_detection.get("prefix_padding_ms") or 300,
            turn_detection.get("silence_duration_ms") or 500)


def semantic_pauses(turn_detection: Mapping[str, Any]) -> tuple[int, int]:
    """`semantic_vad`'s (complete, any) silences in ms for its eagerness."""
    return EAGERNESS_MS.get(str(turn_detection.get("eagerness")), EAGERNESS_MS["auto"])


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

    def peek(self, since: int, until: int) -> np.ndarray:
        """A copy of the buffered audio from session sample `since` to `until`."""
        audio = np.concatenate(self._parts) if self._parts else np.zeros(0, np.int16)
        first = max(0, since - self.start)
        last = max(first, min(len(audio), until - self.start))
        self._parts = [audio] if len(audio) else []  # joined once, not at every peek
        peeked: np.ndarray = audio[first:last].copy()
        return peeked

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
