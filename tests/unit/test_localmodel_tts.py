"""The local model's speech synthesis (espeak-ng)."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from sipbridge.localmodel import tts
from tests.unit.speechaudio import REQUEST, needs_espeak, speech_bounds


@needs_espeak
def test_synthesize_is_24k_int16_speech_of_plausible_length() -> None:
    started = time.perf_counter()
    pcm = tts.synthesize(REQUEST)
    elapsed = time.perf_counter() - started
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    seconds = len(pcm) / tts.RATE
    assert 2.0 < seconds < 4.5  # about 3 s for ten words at 175 words a minute
    start, end = speech_bounds(pcm)
    assert start < 300 and end > 1800  # speech, not silence
    assert int(np.max(np.abs(pcm))) > 8000
    assert elapsed < 2.0
    print(f"synthesis: {seconds:.2f} s of speech in {elapsed * 1000:.0f} ms")


@needs_espeak
def test_speed_and_voice() -> None:
    normal = tts.synthesize("One two three four five six seven eight.")
    fast = tts.synthesize("One two three four five six seven eight.", speed=1.5)
    assert len(fast) < 0.8 * len(normal)
    for voice in ("coral", "cedar", "en-gb", "no such voice; rm -rf /", None):
        assert len(tts.synthesize("Hello there.", voice)) > tts.RATE // 4


@needs_espeak
def test_text_is_never_read_as_options() -> None:
    # Passed on stdin: a leading dash or quotes are just text.
    pcm = tts.synthesize('--help -v xx "quoted" $(echo hi) `uname`')
    assert len(pcm) > tts.RATE // 2


def test_blank_text_is_silence_without_running_espeak() -> None:
    assert len(tts.synthesize("   ")) == 0


def test_voice_mapping() -> None:
    assert tts.espeak_voice(None) == tts.DEFAULT_VOICE
    assert tts.espeak_voice("marin") == tts.VOICES["marin"]
    assert tts.espeak_voice("en-us+f3") == "en-us+f3"
    assert tts.espeak_voice("--stdout") == tts.DEFAULT_VOICE
    assert tts.espeak_voice("a b") == tts.DEFAULT_VOICE


def _wav(samples: bytes, rate: int = 22050, size: int | None = None) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    data_size = len(samples) if size is None else size
    return (b"RIFF" + struct.pack("<I", 0x7FFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt + b"data" + struct.pack("<I", data_size) + samples)


def test_parse_wav_takes_a_streamed_data_chunk_to_the_end() -> None:
    samples = np.arange(-50, 50, dtype="<i2").tobytes()
    for size in (None, 0, 0x7FFFF000, 0xFFFFFFFF):
        pcm, rate = tts.parse_wav(_wav(samples, size=size))
        assert rate == 22050
        assert pcm.tolist() == list(range(-50, 50))
    with pytest.raises(tts.TtsError):
        tts.parse_wav(b"not a wav file")


def test_missing_espeak_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sipbridge.localmodel.tts.shutil.which", lambda name: None)
    assert not tts.available()
    with pytest.raises(tts.TtsError, match="espeak-ng is not installed"):
        tts.synthesize("Hello.")
