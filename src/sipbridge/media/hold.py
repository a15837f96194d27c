"""Hold audio: what a caller hears while they wait (a warm transfer's briefing), looped and
fed a few frames ahead of the call's playout from its tick callback (`on_audio`)."""

from __future__ import annotations

import numpy as np

from sipbridge.media.resample import MODEL_RATE
from sipbridge.media.session import MediaSession

FRAME = MODEL_RATE // 50  # 20 ms at 24 kHz
AHEAD_MS = 40  # audio kept queued ahead of the playout (20-60 ms)


def hold_tone(*, level_dbfs: float = -30.0, hz: float = 440.0, beep: float = 0.4,
              every: float = 4.0) -> np.ndarray:
    """A soft beep (`beep` s of `hz` at `level_dbfs`, faded in and out) every `every`
    seconds, as 24 kHz int16: the default hold audio."""
    n = int(beep * MODEL_RATE)
    t = np.arange(n) / MODEL_RATE
    amplitude = 32767 * 10 ** (level_dbfs / 20)
    tone = amplitude * np.sin(2 * np.pi * hz * t)
    fade = min(n // 2, MODEL_RATE // 50)
    ramp = np.linspace(0.0, 1.0, fade)
    tone[:fade] *= ramp
    tone[n - fade:] *= ramp[::-1]
    out = np.zeros(int(every * MODEL_RATE), np.int16)
    out[:n] = tone.astype(np.int16)
    return out


class HoldAudio:
    """Loops `audio` (24 kHz int16) to `session` while installed as its `on_audio`."""

    def __init__(self, session: MediaSession, audio: np.ndarray) -> None:
        if len(audio) < FRAME:
            audio = np.concatenate([audio, np.zeros(FRAME - len(audio), np.int16)])
        self.session = session
        self.audio = audio
        self.pos = 0

    def __call__(self, pcm: np.ndarray) -> None:
        del pcm  # the caller's audio goes nowhere while they wait
        while self.session.queued_ms < AHEAD_MS:
            end = self.pos + FRAME
            chunk = self.audio[self.pos:end]
            if len(chunk) < FRAME:
                chunk = np.concatenate([chunk, self.audio[:FRAME - len(chunk)]])
            self.pos = end % len(self.audio)
            self.session.play(chunk)

    def install(self) -> None:
        self.session.clear_playout()
        self.session.on_audio = self
        self.session.follow_input = False

    def remove(self) -> None:
        """Take the hold audio off (the session's `on_audio` is None again)."""
        if self.session.on_audio is self:
            self.session.on_audio = None
            self.session.clear_playout()
