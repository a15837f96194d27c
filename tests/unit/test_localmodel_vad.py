"""The local model's voice activity detection: OpenAI server_vad semantics on phone audio."""

from __future__ import annotations

import numpy as np
import pytest

from sipbridge.localmodel import vad as vad_module
from sipbridge.localmodel.vad import Vad, VadEvent, aggressiveness, gate_dbfs
from tests.unit.speechaudio import line_noise, needs_espeak, phone_path, speech, speech_bounds

RATE = 24000
CHUNK = 480  # 20 ms


def run(vad: Vad, pcm: np.ndarray, chunk: int = CHUNK) -> list[VadEvent]:
    events: list[VadEvent] = []
    for start in range(0, len(pcm), chunk):
        events += vad.feed(pcm[start:start + chunk], start * 1000 // RATE)
    return events


def ms(n: float) -> int:
    return int(RATE * n / 1000)


ENGINES = pytest.mark.parametrize("use_webrtcvad", [
    pytest.param(True, marks=pytest.mark.skipif(vad_module._WEBRTCVAD is None,
                                                reason="webrtcvad is not installed")),
    False,
], ids=["webrtcvad", "energy"])


@ENGINES
def test_silence_and_line_noise_never_trigger(use_webrtcvad: bool) -> None:
    for pcm in (np.zeros(ms(5000), np.int16), line_noise(10.0, -55.0), line_noise(10.0, -65.0),
                line_noise(5.0, -48.0, seed=7)):
        vad = Vad(use_webrtcvad=use_webrtcvad)
        assert run(vad, pcm) == []
        assert not vad.speaking


@needs_espeak
@ENGINES
def test_speech_starts_within_100ms_and_stops_after_the_silence(use_webrtcvad: bool) -> None:
    voice = phone_path(speech())
    onset, offset = speech_bounds(voice)
    lead = 1000
    pcm = np.concatenate([line_noise(lead / 1000), voice, line_noise(1.5, seed=2)])
    vad = Vad(use_webrtcvad=use_webrtcvad)
    events = run(vad, pcm)
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    start, stop = events
    true_onset, true_offset = lead + onset, lead + offset
    onset_delay = start.detected_ms - true_onset
    assert 0 <= onset_delay <= 100, onset_delay
    # audio_start_ms includes the 300 ms prefix padding
    assert abs(start.audio_ms - (true_onset - 300)) <= 40
    # audio_end_ms is the end of speech plus the 500 ms of silence that ended it
    offset_delay = stop.detected_ms - true_offset
    assert 500 <= offset_delay <= 600, offset_delay
    assert stop.audio_ms == stop.detected_ms
    print(f"VAD ({vad.engine}): onset detected after {onset_delay} ms, "
          f"stop {offset_delay} ms after the last word")


@needs_espeak
def test_chunk_size_does_not_matter() -> None:
    pcm = np.concatenate([line_noise(0.5), phone_path(speech()), np.zeros(ms(1000), np.int16)])
    reference = run(Vad(), pcm)
    for chunk in (1, 137, 2400, len(pcm)):
        vad = Vad()
        events = []
        for start in range(0, len(pcm), chunk):
            events += vad.feed(pcm[start:start + chunk])
        assert events == reference, chunk


@needs_espeak
def test_pauses_shorter_than_the_silence_duration_keep_the_turn() -> None:
    word = speech("Hello there.")
    first, last = speech_bounds(word)
    word = word[ms(first):ms(last)]  # espeak-ng's own leading and trailing silence cut
    pcm = np.concatenate([np.zeros(ms(500), np.int16), word, np.zeros(ms(300), np.int16), word,
                          np.zeros(ms(1200), np.int16)])
    kinds = [e.kind for e in run(Vad(silence_duration_ms=500), pcm)]
    assert kinds == ["speech_started", "speech_stopped"]
    kinds = [e.kind for e in run(Vad(silence_duration_ms=200), pcm)]
    assert kinds == ["speech_started", "speech_stopped"] * 2


@needs_espeak
def test_clock_anchor_prefix_padding_and_reset() -> None:
    pcm = np.concatenate([np.zeros(ms(200), np.int16), speech(), np.zeros(ms(800), np.int16)])
    vad = Vad(prefix_padding_ms=1000)
    events = []
    for start in range(0, len(pcm), CHUNK):
        events += vad.feed(pcm[start:start + CHUNK], 60_000 + start * 1000 // RATE)
    assert events[0].audio_ms == 60_000  # padding reaches back past the anchor: clamped
    assert events[0].detected_ms > 60_200
    vad.reset(5000)
    assert not vad.speaking
    again = vad.feed(pcm)
    assert again[0].detected_ms - 5000 == events[0].detected_ms - 60_000


@needs_espeak
def test_a_gap_in_the_clock_moves_it_on() -> None:
    vad = Vad()
    assert vad.feed(np.zeros(ms(1000), np.int16), 0) == []
    events = vad.feed(np.concatenate([speech(), np.zeros(ms(800), np.int16)]), 10_000)
    assert events[0].detected_ms > 10_000


def test_threshold_mapping() -> None:
    assert [aggressiveness(t) for t in (0.0, 0.3, 0.5, 0.8, 1.0)] == [0, 1, 2, 3, 3]
    assert gate_dbfs(0.0) == -60.0 and gate_dbfs(0.5) == -45.0 and gate_dbfs(1.0) == -30.0
    quiet = (speech_like(-40.0), 0.5)  # a quiet talker: above the default gate
    assert run(Vad(threshold=quiet[1], use_webrtcvad=False), quiet[0])
    assert run(Vad(threshold=0.9, use_webrtcvad=False), quiet[0]) == []


def speech_like(dbfs: float) -> np.ndarray:
    """A 1 s vowel-like tone burst at `dbfs` (RMS) between silences (no espeak-ng needed)."""
    t = np.arange(RATE) / RATE
    tone = sum(np.sin(2 * np.pi * f * t) for f in (220, 440, 880, 1320))
    tone = tone / np.sqrt(np.mean(tone**2)) * 32768 * 10 ** (dbfs / 20)
    return np.concatenate([np.zeros(ms(500)), tone, np.zeros(ms(1000))]).astype(np.int16)
