"""The local model's turn taking: when words read as complete, semantic_vad's pauses,
the input buffer's peek, and the detector's pause and hand-over of a turn."""

from __future__ import annotations

import numpy as np
import pytest

from sipbridge.localmodel.turns import (
    EAGERNESS_MS,
    InputBuffer,
    semantic_pauses,
    vad_settings,
    words_complete,
)
from sipbridge.localmodel.vad import Vad
from tests.unit.speechaudio import line_noise, needs_espeak, phone_path, speech, speech_bounds


@pytest.mark.parametrize(("text", "complete"), [
    ("Can you please transfer me to a human?", True),
    ("Who am I speaking to?", True),  # a question may end on "to"
    ("I need a human.", True),
    ("Thank you.", True),
    ("Yes!", True),
    ("Um, I want...", False),
    ("I would like\u2026", False),
    ("I would like.", False),  # Whisper's stop after a cut-off sentence
    ("I would like to.", False),
    ("My number is, um.", False),
    ("I would like to speak to a human", False),  # no mark: not sure
    ("Hello,", False),
    ("", False),
    ("   ", False),
])
def test_words_complete(text: str, complete: bool) -> None:
    assert words_complete(text) is complete


def test_semantic_pauses_by_eagerness() -> None:
    assert semantic_pauses({"type": "semantic_vad"}) == EAGERNESS_MS["auto"]
    assert semantic_pauses({"type": "semantic_vad", "eagerness": "high"}) == (200, 800)
    assert semantic_pauses({"type": "semantic_vad", "eagerness": "bogus"}) == (400, 1500)
    # the detector waits for the longest silence; the words decide before it
    assert vad_settings({"type": "semantic_vad", "eagerness": "low"}) == (0.5, 300, 3000)
    assert vad_settings({"type": "server_vad", "silence_duration_ms": 200}) == (0.5, 300, 200)
    for complete, longest in EAGERNESS_MS.values():
        assert complete < longest


def test_peek_copies_and_leaves_the_buffer_as_it_was() -> None:
    buffer = InputBuffer()
    for n in range(5):
        buffer.append(np.full(100, n, np.int16))
    part = buffer.peek(150, 320)
    assert part.tolist() == [1] * 50 + [2] * 100 + [3] * 20
    part[:] = 99  # a copy
    assert buffer.peek(0, 500).tolist() == [n for n in range(5) for _ in range(100)]
    assert buffer.peek(480, 900).tolist() == [4] * 20 and buffer.peek(300, 200).size == 0
    assert buffer.take(250).size == 250 and buffer.peek(0, 300).tolist() == [2] * 50


@needs_espeak
def test_the_detector_tells_how_long_the_caller_has_paused_and_hands_the_turn_over() -> None:
    voice = phone_path(speech())
    vad = Vad(silence_duration_ms=3000)
    assert vad.quiet_ms == 0 and not vad.speaking
    chunk = 480
    fed = np.concatenate([line_noise(0.5), voice, line_noise(0.6, seed=3)])
    for at in range(0, len(fed), chunk):
        vad.feed(fed[at:at + chunk], at * 1000 // 24000)
    assert vad.speaking
    end = vad.last_voiced_end
    _, offset = speech_bounds(voice)
    fed_ms = len(fed) * 1000 // 24000 // 20 * 20  # whole frames judged
    # paused since the last word: from its end (within the frames around it) till now
    assert abs(vad.quiet_ms - (fed_ms - (500 + offset))) <= 60, (vad.quiet_ms, offset)
    assert vad.quiet_ms + end == fed_ms
    vad.end_turn()
    assert not vad.speaking and vad.quiet_ms == 0
    events = vad.feed(voice, len(fed) * 1000 // 24000)
    assert [e.kind for e in events] == ["speech_started"]  # the next words: a new turn
