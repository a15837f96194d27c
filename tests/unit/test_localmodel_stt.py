"""The local model's speech to text: faster-whisper with the packaged model, offline."""

from __future__ import annotations

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
        assert missing.reason == f"no Whisper model at {tmp_path} (model.bin is missing)"
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
