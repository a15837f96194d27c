"""Text to speech with espeak-ng (the Debian package), run as a separate process.

The text goes to espeak-ng on stdin, never through a shell or as an argument, so nothing in
it is read as an option. Its 22.05 kHz WAV is resampled (soxr) to 24 kHz mono int16, the
Realtime protocol's PCM16. OpenAI's voice names map to espeak-ng voice variants; an
espeak-ng voice name (`en-gb`, `en-us+f3`) is used as given.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from collections.abc import Callable

import numpy as np

from sipbridge.media.resample import resample

RATE = 24000

Synthesizer = Callable[[str, str | None, float], np.ndarray]
"""Any speech synthesis: (text, voice, speed) -> 24 kHz mono int16 audio."""
"""The output sample rate."""
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
    """espeak-ng is missing or failed."""


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
