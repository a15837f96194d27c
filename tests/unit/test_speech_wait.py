"""SpeechWait: an action held until the agent's words are played out, on a fake clock."""

from __future__ import annotations

import pytest

from sipbridge.agent.speech import CLOSED, PLAYED, TAIL, TIMED_OUT, SpeechWait

T0 = 100.0


def test_waits_for_the_response_then_the_playout_then_the_tail() -> None:
    wait = SpeechWait(T0, limit=5.0)
    # The tool call comes mid-response: the words are still being produced.
    assert wait.poll(T0, speaking=True, queued_ms=1200) is None
    assert wait.deadline == T0 + 5.0  # the response's end will say more
    # response.done: 1.5 s of audio queued, drained in real time.
    assert wait.poll(T0 + 0.1, speaking=False, queued_ms=1500) is None
    assert wait.deadline == pytest.approx(T0 + 1.6)
    assert wait.poll(T0 + 1.6, speaking=False, queued_ms=20) is None  # one frame left
    assert wait.deadline == pytest.approx(T0 + 1.62)
    assert wait.poll(T0 + 1.62, speaking=False, queued_ms=0) is None  # drained: the tail
    assert wait.deadline == pytest.approx(T0 + 1.62 + TAIL)
    assert wait.poll(T0 + 1.62 + TAIL, speaking=False, queued_ms=0) == PLAYED
    assert wait.waited == pytest.approx(1.62 + TAIL) and wait.deadline is None
    # Decided once: later changes change nothing.
    assert wait.poll(T0 + 9, speaking=True, queued_ms=900) == PLAYED


def test_less_than_a_frame_queued_is_drained() -> None:
    wait = SpeechWait(T0, limit=5.0, tail=0.0)
    assert wait.poll(T0, speaking=False, queued_ms=12) == PLAYED


def test_new_words_during_the_tail_are_waited_for_too() -> None:
    wait = SpeechWait(T0, limit=5.0)
    assert wait.poll(T0, speaking=False, queued_ms=0) is None
    assert wait.poll(T0 + 0.1, speaking=True, queued_ms=0) is None  # another response
    assert wait.poll(T0 + 0.3, speaking=False, queued_ms=400) is None
    assert wait.poll(T0 + 0.7, speaking=False, queued_ms=0) is None  # the tail from here
    assert wait.poll(T0 + 0.7 + TAIL - 0.01, speaking=False, queued_ms=0) is None
    assert wait.poll(T0 + 0.7 + TAIL, speaking=False, queued_ms=0) == PLAYED


def test_the_limit_bounds_a_model_that_keeps_talking() -> None:
    wait = SpeechWait(T0, limit=2.0)
    assert wait.poll(T0, speaking=True, queued_ms=0) is None
    assert wait.poll(T0 + 1.9, speaking=True, queued_ms=3000) is None
    assert wait.deadline == T0 + 2.0
    assert wait.poll(T0 + 2.0, speaking=False, queued_ms=3000) == TIMED_OUT
    assert wait.waited == pytest.approx(2.0)


def test_a_long_playout_is_cut_by_the_limit() -> None:
    wait = SpeechWait(T0, limit=1.0)
    assert wait.poll(T0, speaking=False, queued_ms=4000) is None
    assert wait.deadline == T0 + 1.0  # not the 4 s the queue would take


def test_closed_before_an_outcome() -> None:
    wait = SpeechWait(T0, limit=5.0)
    wait.poll(T0, speaking=True, queued_ms=0)
    assert wait.close(T0 + 0.5) == CLOSED and wait.waited == pytest.approx(0.5)
    assert wait.close(T0 + 1.0) == CLOSED
    done = SpeechWait(T0, limit=1.0, tail=0.0)
    assert done.poll(T0, speaking=False, queued_ms=0) == PLAYED
    assert done.close(T0 + 1) == PLAYED  # an outcome stands


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SpeechWait(T0, limit=0.0)
    assert SpeechWait(T0, limit=0.1).tail == pytest.approx(0.1)  # the tail fits the limit
