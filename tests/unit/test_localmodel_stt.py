"""The local model's speech to text: faster-whisper with the packaged model, offline."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from sipbridge.localmodel.stt import Transcriber, TranscriberUnavailable
from tests.unit.speechaudio import needs_espeak, phone_path, speech

TRANSCRIBER = Transcriber()
needs_stt = pytest.mark.skipif(
    not TRANSCRIBER.available(),
    reason=f"speech to text unavailable: {TRANSCRIBER.reason}",
)


@needs_espeak
@needs_stt
def test_transcribes_a_request_over_the_phone_path() -> None:
    audio = phone_path(speech())  # 8 kHz, mu-law and back up to 24 kHz
    started = time.perf_counter()
    TRANSCRIBER.load()
    loaded = time.perf_counter()
    text = TRANSCRIBER.transcribe(audio)
    done = time.perf_counter()
    assert "transfer" in text.lower() and "human" in text.lower(), text
    assert done - loaded < 10.0
    print(f"transcription: {text!r}: {len(audio) / 24000:.2f} s of audio in "
          f"{done - loaded:.2f} s (model load {loaded - started:.2f} s)")


@needs_stt
def test_short_audio_is_an_empty_transcript() -> None:
    assert TRANSCRIBER.transcribe(np.zeros(1000, np.int16)) == ""


def test_unavailable_with_a_clear_reason(tmp_path: Path) -> None:
    missing = Transcriber(model_path=tmp_path)
    if missing.reason.startswith("faster-whisper is not installed"):
        assert not missing.available()
    else:
        assert missing.reason == (f"no Whisper model at {tmp_path} (model.bin is missing; "
                                  "pip install 'sipbridge[agent]')")
    assert not missing.available()
    with pytest.raises(TranscriberUnavailable, match=r"model\.bin|faster-whisper"):
        missing.transcribe(np.zeros(24000, np.int16))


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "faster_whisper" else real(name, *a))
    transcriber = Transcriber()
    assert not transcriber.available()
    assert "faster-whisper is not installed" in transcriber.reason
    assert "pip install 'sipbridge[agent]'" in transcriber.reason


@needs_espeak
@needs_stt
def test_a_short_turn_takes_the_10_s_window_a_long_one_whispers_30_s(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both give the words; a turn past SHORT_SECONDS goes to faster-whisper's own
    transcribe (30 s windows), a shorter one to the one-window decode."""
    TRANSCRIBER.load()
    windows: list[int] = []
    short = TRANSCRIBER._short

    def counted(audio: np.ndarray, prefix: str = "") -> str:
        windows.append(len(audio))
        return short(audio, prefix)

    monkeypatch.setattr(TRANSCRIBER, "_short", counted)
    words = phone_path(speech())
    assert "human" in TRANSCRIBER.transcribe(words).lower() and len(windows) == 1
    long = np.concatenate([words, np.zeros(24000 * 9, np.int16), words])  # ~15 s
    text = TRANSCRIBER.transcribe(long).lower()
    assert len(windows) == 1  # not the short path
    assert text.count("human") == 2, text


@needs_stt
def test_transcriptions_from_many_threads_at_once_on_a_fresh_model() -> None:
    """The first turns may come while the model loads (the gateway preloads it in the
    background): each gets its words, none fails."""
    from concurrent.futures import ThreadPoolExecutor

    fresh = Transcriber()
    audio = (np.sin(np.arange(24000) * 0.05) * 3000).astype(np.int16)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fresh.transcribe(audio), range(4)))
    assert all(isinstance(r, str) for r in results)


def test_a_model_that_does_not_load_makes_it_unavailable_naming_the_package(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged model file: faster-whisper (CTranslate2) refuses it; `load` says so in
    `reason`, with what to install, logs it once, and no transcription tries again."""
    pytest.importorskip("faster_whisper")
    (tmp_path / "model.bin").write_bytes(np.random.default_rng(1).bytes(4096))
    damaged = Transcriber(model_path=tmp_path)
    assert damaged.available()  # as far as can be told without loading it
    with caplog.at_level(logging.WARNING, logger="sipbridge.localmodel"):
        assert damaged.load() is False
        assert damaged.load() is False
        for _ in range(2):
            with pytest.raises(TranscriberUnavailable, match=r"did not load"):
                damaged.transcribe(np.zeros(24000, np.int16))
    assert not damaged.available()
    assert damaged.reason.startswith(f"the Whisper model at {tmp_path} did not load (")
    assert damaged.reason.endswith("pip install 'sipbridge[agent]')")
    assert len(caplog.records) == 1


@needs_espeak
@needs_stt
def test_the_transcript_goes_on_the_words_given_as_its_start() -> None:
    """`prefix`: the words of the audio's start already given out are the transcript's
    start, even where Whisper would say them otherwise ("Hello, can you" for "Hello? Can
    you"), and the rest follows; in the 10 s window and in faster-whisper's 30 s."""
    TRANSCRIBER.load()
    words = phone_path(speech())
    plain = TRANSCRIBER.transcribe(words)
    assert not plain.startswith("Hello, can you"), plain
    text = TRANSCRIBER.transcribe(words, prefix="Hello, can you")
    assert text.startswith("Hello, can you ") and "human" in text.lower(), text
    assert TRANSCRIBER.transcribe(words, prefix=" Hello ").startswith("Hello")
    long = np.concatenate([words, np.zeros(24000 * 7, np.int16), words])  # ~13 s
    text = TRANSCRIBER.transcribe(long, prefix="Hello, can you")
    assert text.startswith("Hello, can you ") and text.lower().count("human") == 2, text
    assert TRANSCRIBER.transcribe(np.zeros(1000, np.int16), prefix="Hello") == "Hello"
