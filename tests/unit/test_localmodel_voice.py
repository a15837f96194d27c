"""The local model's natural voice (piper-tts in a process of its own), the engine choice
with espeak-ng as the fallback, and the cutting of a reply into clauses."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from sipbridge.localmodel import tts
from sipbridge.localmodel.stt import Transcriber
from tests.unit.speechaudio import needs_espeak, phone_path, speech_bounds

VOICE = tts.NaturalVoice()
needs_voice = pytest.mark.skipif(not VOICE.available(),
                                 reason=f"natural voice unavailable: {VOICE.reason}")
TRANSCRIBER = Transcriber()


def test_clauses_put_the_first_clause_alone_then_whole_sentences() -> None:
    assert tts.clauses("Hello, thanks for calling. How can I help you?") == [
        "Hello,", "thanks for calling.", "How can I help you?"]
    assert tts.clauses("Sure. I am putting you through to a person, please hold.") == [
        "Sure.", "I am putting you through to a person, please hold."]
    assert tts.clauses("  One   long sentence\nwith no mark ") == [
        "One long sentence with no mark"]
    assert tts.clauses("Version 2.5 is out: yes") == ["Version 2.5 is out:", "yes"]
    assert tts.clauses("   ") == []
    text = "Well... maybe; who knows? Fine! Done."
    assert " ".join(tts.clauses(text)) == text


def test_gaps_and_trim() -> None:
    assert tts.gap_after("Hello,") == 24 * 120
    assert tts.gap_after("Fine!") == tts.gap_after("Done.") == 24 * tts.SENTENCE_GAP_MS
    assert tts.gap_after("no mark") == 0
    pcm = np.concatenate([np.zeros(4800, np.int16), np.full(2400, 5000, np.int16),
                          np.zeros(4800, np.int16)])
    trimmed = tts.trim(pcm)
    assert 2400 <= len(trimmed) <= 2400 + 2 * 240  # the sound and 10 ms each side
    assert len(tts.trim(np.zeros(2400, np.int16))) == 0


@needs_voice
def test_natural_voice_speaks_24k_audio_that_whisper_understands() -> None:
    VOICE.load()
    started = time.perf_counter()
    pcm = VOICE.synthesize("Can you please transfer me to a human?")
    took = time.perf_counter() - started
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert 1.2 < len(pcm) / tts.RATE < 4.0
    start, end = speech_bounds(pcm)
    assert end - start > 1000 and int(np.max(np.abs(pcm))) > 4000
    assert took < 3.0  # loaded: a sentence takes ~0.1-0.2 s on 2 cores
    if TRANSCRIBER.available():
        words = TRANSCRIBER.transcribe(phone_path(pcm)).lower()
        assert "transfer" in words and "human" in words, words
    print(f"natural voice: {len(pcm) / tts.RATE:.2f} s of speech in {took * 1000:.0f} ms")


@needs_voice
def test_natural_voice_takes_any_text_safely() -> None:
    # Nothing to say: no process round trip (piper fails on text with no word).
    assert len(VOICE.synthesize("...")) == 0
    assert len(VOICE.synthesize(" !? ")) == 0
    # Lines and options are just text: one utterance, nothing read as a flag.
    pcm = VOICE.synthesize('--help -m x\n"quoted"\r\n$(echo hi) `uname`')
    assert len(pcm) > tts.RATE // 2
    # A slower rate is a process of its own and longer audio.
    normal = VOICE.synthesize("One two three four five.")
    slow = VOICE.synthesize("One two three four five.", speed=0.5)
    assert len(slow) > 1.5 * len(normal)


@needs_voice
def test_natural_voice_comes_back_after_its_process_dies() -> None:
    voice = tts.NaturalVoice()
    try:
        voice.load()
        proc = voice._procs[1.0].proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # The dead process is seen before the next utterance and started anew.
        assert len(voice.synthesize("Are you there?")) > tts.RATE // 2
        assert voice._procs[1.0].proc.pid != proc.pid
    finally:
        voice.close()
    with pytest.raises(tts.TtsError, match="closed"):
        voice.synthesize("Hello.")


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tts, "module_spec", lambda name: None)
    voice = tts.NaturalVoice(model=tmp_path / "voice.onnx")
    assert not voice.available()
    assert "piper-tts is not installed" in voice.reason and "sipbridge[voice]" in voice.reason
    with pytest.raises(tts.TtsError, match="sipbridge\\[voice\\]"):
        voice.synthesize("Hello.")
    monkeypatch.undo()
    assert "no voice model at" in tts.NaturalVoice(model=tmp_path / "none.onnx").reason


@needs_espeak
def test_engine_piper_without_the_voice_warns_and_espeak_speaks(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    missing = tts.NaturalVoice(model=tmp_path / "none.onnx")
    with caplog.at_level(logging.WARNING, "sipbridge.localmodel"):
        speech = tts.Speech("piper", natural=missing)
    assert speech.name == "espeak-ng"
    assert "natural voice is unavailable" in caplog.text and "no voice model" in caplog.text
    pcm = speech("Hello there.", None, 1.0)
    assert np.array_equal(pcm, tts.synthesize("Hello there."))
    with pytest.raises(ValueError, match="unknown speech engine"):
        tts.Speech("festival")


@needs_voice
@needs_espeak
def test_a_failing_natural_voice_falls_back_to_espeak_and_says_so_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is no ONNX model")  # piper starts, fails to load, exits
    voice = tts.NaturalVoice(model=broken, timeout=30)
    speech = tts.Speech("auto", natural=voice)
    assert speech.name == "piper"
    try:
        with caplog.at_level(logging.WARNING, "sipbridge.localmodel"):
            first = speech("Hello there.", None, 1.0)
            second = speech("Hello there.", None, 1.0)  # espeak-ng at once: no new try
    finally:
        voice.close()
    assert np.array_equal(first, tts.synthesize("Hello there."))
    assert np.array_equal(second, first)
    assert speech.failures == 1
    assert caplog.text.count("the natural voice failed") == 1
    assert "exited" in caplog.text


@needs_voice
@needs_espeak
def test_an_espeak_voice_name_is_spoken_by_espeak_even_with_the_natural_voice() -> None:
    speech = tts.Speech("auto", natural=VOICE)
    assert speech.name == "piper"
    assert np.array_equal(speech("Hello there.", "en-gb", 1.0),
                          tts.synthesize("Hello there.", "en-gb"))
    natural = speech("Hello there.", "marin", 1.0)  # OpenAI's names: the natural voice
    assert not np.array_equal(natural[:len(natural) // 2],
                              tts.synthesize("Hello there.", "marin")[:len(natural) // 2])
    assert np.array_equal(tts.Speech("espeak")("Hello there.", None, 1.0),
                          tts.synthesize("Hello there."))


@needs_espeak
def test_what_was_said_is_kept_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    speech = tts.Speech("espeak")
    first = speech("Hello there.", None, 1.0)
    assert speech.hits == 0
    again = speech("Hello there.", None, 1.0)
    assert speech.hits == 1 and again is first and not again.flags.writeable
    assert speech("Hello there.", "en-gb", 1.0) is not first  # another voice: another entry
    assert speech("Hello there.", None, 1.5) is not first  # another rate too
    assert speech.hits == 1
    # The oldest goes first once the bound is passed.
    texts = ["Hello there.", "Hello there!", "Hello there?"]
    sizes = [tts.synthesize(t).nbytes for t in texts]
    monkeypatch.setattr(tts, "CACHE_BYTES", sizes[1] + sizes[2])
    small = tts.Speech("espeak")
    for text in texts:
        small(text, None, 1.0)
    assert small._kept_bytes <= tts.CACHE_BYTES
    assert [key[2] for key in small._kept] == ["Hello there!", "Hello there?"]
    uncached = tts.Speech("espeak", cache=False)
    uncached("Hello there.", None, 1.0)
    uncached("Hello there.", None, 1.0)
    assert uncached.hits == 0 and not uncached._kept
