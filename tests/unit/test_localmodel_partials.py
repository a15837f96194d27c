"""The local model's guesses while the caller speaks, and a recogniser that fails.

A session is driven over a stand-in for its socket (client events in, server events out,
each checked against the `openai` SDK's types), with the audio paced as a caller sends it.
The speech is espeak-ng's, the recogniser the packaged Whisper; a recogniser that raises
is a stand-in (a library failing mid-call cannot be made to fail otherwise), except one
whose model file is damaged, which is the real one failing to load."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionFailedEvent,
    RealtimeServerEvent,
)
from pydantic import TypeAdapter

from sipbridge.localmodel import tts
from sipbridge.localmodel.conversation import transcribe as report
from sipbridge.localmodel.policy import Policy
from sipbridge.localmodel.session import PARTIAL_MS, Session
from sipbridge.localmodel.stt import Transcriber
from sipbridge.localmodel.tts import Synthesizer
from sipbridge.localmodel.turns import SPECULATE_MS
from sipbridge.localmodel.vad import Vad
from tests.unit.speechaudio import line_noise, needs_espeak, phone_path, speech

TRANSCRIBER = Transcriber()
needs_stt = pytest.mark.skipif(not TRANSCRIBER.available(),
                               reason=f"speech to text unavailable: {TRANSCRIBER.reason}")
ADAPTER: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"
FAILED = "conversation.item.input_audio_transcription.failed"
NO_PAUSE = "I am calling about my internet connection which has been very slow since Monday"
CHUNK = 480  # 20 ms at 24 kHz, as the gateway sends it

_final = contextvars.ContextVar("final", default=False)


@pytest.fixture(autouse=True)
def finals_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn's own transcription (on the session's worker) is told apart from a guess:
    the recogniser sees `_final` set in the thread it runs in."""

    async def final(*args: Any) -> dict[str, Any]:
        token = _final.set(True)
        try:
            return await report(*args)
        finally:
            _final.reset(token)

    monkeypatch.setattr("sipbridge.localmodel.session.transcribe", final)


class Recogniser(Transcriber):
    """A transcriber that counts its calls, guesses and turns' own apart, and how many
    guesses ran at once; it says what `words` says (the packaged Whisper unless given), and
    raises instead while `failing` (guesses only, with `only_guesses`)."""

    def __init__(self, words: Callable[[np.ndarray, str], str] | None = None) -> None:
        super().__init__()
        self.words = words or TRANSCRIBER.transcribe
        if words is None:
            TRANSCRIBER.load()  # before the call, as the server does (it takes ~1 s)
        else:
            self.reason = ""  # no model needed
        self.failing = ""
        self.only_guesses = False
        self.guesses = 0
        self.finals = 0
        self.failed = 0
        self.guessing = 0
        self.most_guessing = 0
        self._lock = threading.Lock()

    def transcribe(self, pcm24k: np.ndarray, prefix: str = "") -> str:
        final = _final.get()
        with self._lock:
            if final:
                self.finals += 1
            else:
                self.guesses += 1
                self.guessing += 1
                self.most_guessing = max(self.most_guessing, self.guessing)
        try:
            if self.failing and not (final and self.only_guesses):
                with self._lock:
                    self.failed += 1
                raise RuntimeError(self.failing)
            return self.words(pcm24k, prefix)
        finally:
            if not final:
                with self._lock:
                    self.guessing -= 1


def _silent(text: str, voice: str | None, speed: float) -> np.ndarray:
    return np.zeros(4800, np.int16)  # the answer's words are checked, not its sound


@dataclass
class Model:
    """What a session uses of the model server."""

    transcriber: Transcriber
    policy: Policy = field(default_factory=lambda: Policy.load(None))
    synthesizer: Synthesizer = _silent
    chunk_ms: int = 100


class Line:
    """A session's socket as its client sees it: client events in; server events out, each
    one of the SDK's server events."""

    def __init__(self) -> None:
        self._in: asyncio.Queue[str | None] = asyncio.Queue()
        self.events: list[dict[str, Any]] = []
        self.sent_ms: list[int] = []  # the audio sent when each event came
        self._sent = 0  # samples
        self._seen = 0

    async def send(self, raw: str) -> None:  # the session's side
        event = json.loads(raw)
        ADAPTER.validate_python(event)
        self.events.append(event)
        self.sent_ms.append(self._sent // 24)

    def __aiter__(self) -> Line:
        return self

    async def __anext__(self) -> str:
        raw = await self._in.get()
        if raw is None:
            raise StopAsyncIteration
        return raw

    def put(self, event: dict[str, Any] | None) -> None:
        self._in.put_nowait(None if event is None else json.dumps(event))

    async def speak(self, pcm: np.ndarray, speed: float = 1.0) -> None:
        """Send 24 kHz audio 20 ms an event, at `speed` times real time."""
        start = time.monotonic()
        for n, at in enumerate(range(0, len(pcm), CHUNK)):
            data = pcm[at:at + CHUNK].astype("<i2").tobytes()
            self.put({"type": "input_audio_buffer.append",
                      "audio": base64.b64encode(data).decode()})
            self._sent += len(data) // 2
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.020 / speed - time.monotonic()))

    async def until(self, kind: str, timeout: float = 20.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """The events after those already taken, up to and including the next `kind`."""
        deadline = time.monotonic() + timeout
        while True:
            for n in range(self._seen, len(self.events)):
                if self.events[n]["type"] == kind:
                    got, self._seen = self.events[self._seen:n + 1], n + 1
                    return got
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind} within {timeout:g} s: "
                                     f"{[e['type'] for e in self.events[self._seen:]]}")
            await asyncio.sleep(0.01)


@asynccontextmanager
async def session(transcriber: Transcriber, synthesizer: Synthesizer = _silent,
                  **turn_detection: Any) -> AsyncIterator[Line]:
    """A session on `transcriber` with server_vad (and `turn_detection`'s settings)."""
    line = Line()
    task = asyncio.create_task(Session(Model(transcriber, synthesizer=synthesizer),
                                       cast(Any, line), "gpt-realtime").run())
    line.put({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "server_vad", **turn_detection}}}}})
    await line.until("session.updated")
    try:
        yield line
    finally:
        line.put(None)
        await asyncio.wait_for(task, 10)


def arun(make: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await make()
    asyncio.run(main())


def _squeezed(pcm: np.ndarray, dbfs: float = -40.0, keep_ms: int = 40) -> np.ndarray:
    """`pcm` with every quiet stretch (10 ms windows under `dbfs`) cut to `keep_ms`: the
    gaps espeak-ng leaves between words go, the words stay."""
    frames = pcm[:len(pcm) // 240 * 240].reshape(-1, 240)
    level = 20 * np.log10(np.maximum(
        np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)), 1e-3) / 32768)
    loud = np.flatnonzero(level > dbfs)
    keep, quiet = [], 0
    for n in range(int(loud[0]), int(loud[-1]) + 1):
        quiet = 0 if level[n] > dbfs else quiet + 1
        if quiet <= keep_ms // 10:
            keep.append(n)
    squeezed: np.ndarray = frames[keep].reshape(-1)
    return squeezed


def _longest_pause_ms(pcm: np.ndarray) -> int:
    """The longest pause within the speech in `pcm`, as the session's detector sees it
    (the same detector, fed as the session feeds it)."""
    vad, longest, voiced_ends = Vad(), 0, []
    for at in range(0, len(pcm), CHUNK):
        vad.feed(pcm[at:at + CHUNK], at * 1000 // 24000)
        if vad.speaking:
            voiced_ends.append((vad.last_voiced_end, vad.quiet_ms))
    last = voiced_ends[-1][0]
    for end, quiet in voiced_ends:
        if end < last:  # a pause that speech came after
            longest = max(longest, quiet)
    return longest


@needs_espeak
@needs_stt
def test_a_caller_who_does_not_pause_gets_partial_transcripts_while_speaking() -> None:
    """4 s of speech without a pause the session would guess at (none of SPECULATE_MS):
    deltas come while the caller speaks (before its last word was sent); their words are
    the completed transcript's, but for a word or two that the whole turn reads otherwise
    (it is decoded free of them). Guesses ran one at a time, none after the turn;
    the turn ending at a pause took the pause's guess as its transcript (no transcription
    after)."""
    voice = phone_path(_squeezed(speech(NO_PAUSE)))
    assert 3.5 < len(voice) / 24000 < 5.0
    audio = np.concatenate([line_noise(0.5), voice, line_noise(2.5, seed=3)])
    assert _longest_pause_ms(audio) < SPECULATE_MS  # only speech going on makes guesses
    recogniser = Recogniser()

    async def main() -> None:
        # 1.5 s of silence ends it: room for a guess under way at the pause to end first,
        # on a machine busy with other work too (800 ms was not always)
        async with session(recogniser, create_response=False,
                           silence_duration_ms=1500) as line:
            await line.speak(audio)
            turn = await line.until(COMPLETED)
            guesses = recogniser.guesses
            await asyncio.sleep(0.5)
            assert recogniser.guesses == guesses  # none after the turn
        kinds = [e["type"] for e in turn]
        spoken_ms = (len(audio) - len(line_noise(2.5))) // 24
        early = [e["delta"] for e, at in zip(line.events, line.sent_ms, strict=True)
                 if e["type"] == DELTA and at < spoken_ms]
        assert early, kinds  # while the caller spoke
        deltas = [e["delta"] for e in turn if e["type"] == DELTA]
        told, transcript = "".join(deltas), turn[-1]["transcript"]
        # The transcript is decoded from the whole turn, free of the deltas: they are what
        # was heard so far, and a word of them may read otherwise in it ("I'm" / "I am").
        heard = set(re.findall(r"[a-z]+", told.lower()))
        final = set(re.findall(r"[a-z]+", transcript.lower()))
        assert len(heard - final) <= 2, (deltas, transcript)
        assert "internet" in transcript.lower() and "monday" in transcript.lower(), transcript
        assert "internet" in "".join(early).lower(), early  # its words, as they were said
        assert all(e["item_id"] == turn[-1]["item_id"] for e in turn if e["type"] == DELTA)
        # one each PARTIAL_MS of speech at most, and the pause's; one at a time
        assert 3 <= guesses <= len(voice) // 24 // PARTIAL_MS + 2, guesses
        assert recogniser.most_guessing == 1
        assert recogniser.finals == 0  # the pause's guess was the transcript

    arun(main)


@needs_espeak
@needs_stt
def test_a_pause_guess_is_the_transcript_and_speech_after_it_goes_on_its_words() -> None:
    """"Hello." [320 ms] "Can you please transfer me to a human?": the pause's guess says
    "Hello" (a delta), the caller goes on; the turn's transcript starts with it."""
    recogniser = Recogniser()

    async def main() -> None:
        async with session(recogniser, create_response=False) as line:
            await line.speak(np.concatenate([line_noise(0.5), phone_path(speech()),
                                             line_noise(1.0, seed=3)]))
            turn = await line.until(COMPLETED)
        told = "".join(e["delta"] for e in turn if e["type"] == DELTA)
        assert told.lower().startswith("hello"), told
        assert turn[-1]["transcript"].startswith(told), (told, turn[-1])
        assert "human" in turn[-1]["transcript"].lower()
        assert recogniser.most_guessing == 1

    arun(main)


def test_a_minute_of_loud_noise_makes_guesses_one_at_a_time_and_spaced() -> None:
    """Noise the detector takes for a caller who never pauses (till its noise floor
    catches up, 22 s here): guessed at once each PARTIAL_MS of it at most (a guess here
    taking 300 ms, while 2.4 s of noise comes), never two at once; none once the buffer
    is cleared."""

    def slow(pcm: np.ndarray, prefix: str) -> str:
        time.sleep(0.3)  # 2.4 s of the noise, sent 8 times as fast
        return prefix

    recogniser = Recogniser(slow)
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 9000, 24000 * 62).clip(-32768, 32767).astype(np.int16)

    async def main() -> None:
        async with session(recogniser, create_response=False) as line:
            await line.speak(noise, speed=8.0)  # 62 s in 8 s
            line.put({"type": "input_audio_buffer.clear"})
            events = await line.until("input_audio_buffer.cleared")
            guesses = recogniser.guesses
            await asyncio.sleep(0.5)
            assert recogniser.guesses == guesses
        starts = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
        assert starts  # the noise was taken for speech
        assert 5 <= guesses <= 62 * 1000 // PARTIAL_MS + 2 * len(starts), guesses
        assert recogniser.most_guessing == 1

    arun(main)


@needs_espeak
@needs_stt
def test_a_recogniser_that_fails_mid_call_gets_failed_a_fallback_and_the_next_turn(
        caplog: pytest.LogCaptureFixture) -> None:
    """The recogniser raises in a turn (guesses and the turn's own transcription): the
    item's transcription is reported failed in OpenAI's shape, one warning is logged, the
    policy's fallback answers; the next turn, the recogniser well again, is transcribed."""
    recogniser = Recogniser()
    recogniser.failing = "CUDA failed with error out of memory"
    model = Model(recogniser)
    words = np.concatenate([line_noise(0.5), phone_path(speech()), line_noise(1.0, seed=3)])

    async def main() -> None:
        async with session(recogniser) as line:
            with caplog.at_level(logging.WARNING, logger="sipbridge.localmodel"):
                await line.speak(words, speed=2.0)
                turn = await line.until("response.done")
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            failed = next(e for e in turn if e["type"] == FAILED)
            event = ConversationItemInputAudioTranscriptionFailedEvent.model_validate(failed)
            assert not event.model_extra and not event.error.model_extra
            committed = next(e for e in turn if e["type"] == "input_audio_buffer.committed")
            assert event.item_id == committed["item_id"] and event.content_index == 0
            assert event.error.type == "transcription_error"
            assert event.error.code == "transcription_failed"
            assert event.error.message and "out of memory" in event.error.message
            assert event.error.message.startswith("Speech to text failed: ")
            assert not [e for e in turn if e["type"] == COMPLETED]
            said = next(e for e in turn if e["type"] == "response.output_audio_transcript.done")
            assert said["transcript"] == model.policy.fallback
            assert turn[-1]["response"]["status"] == "completed"
            assert recogniser.failed >= 2  # guesses tried, and the turn's own

            recogniser.failing = ""
            await line.speak(words, speed=2.0)
            done = await line.until(COMPLETED)
            assert "human" in done[-1]["transcript"].lower(), done[-1]
            await line.until("response.done")

    arun(main)


@needs_espeak
@needs_stt
def test_guesses_that_fail_are_dropped_and_the_turn_transcribed_again() -> None:
    """Every guess raises (the pause's one too, which the turn would have taken): no
    delta, no failure reported; the turn's own transcription gives the words."""
    recogniser = Recogniser()
    recogniser.failing, recogniser.only_guesses = "CTranslate2: bad_alloc", True

    async def main() -> None:
        async with session(recogniser, create_response=False) as line:
            await line.speak(np.concatenate([line_noise(0.5), phone_path(speech()),
                                             line_noise(1.0, seed=3)]))
            turn = await line.until(COMPLETED)
        kinds = [e["type"] for e in turn]
        assert DELTA not in kinds and FAILED not in kinds, kinds
        assert "human" in turn[-1]["transcript"].lower()
        assert recogniser.failed >= 1 and recogniser.finals == 1

    arun(main)


@needs_espeak
def test_a_model_that_does_not_load_is_a_failed_transcription_naming_the_package(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged model file (the real library failing to load it, in the first guess):
    the turn is reported failed, saying what to install, at once; the fallback answers;
    one warning."""
    pytest.importorskip("faster_whisper")
    (tmp_path / "model.bin").write_bytes(np.random.default_rng(1).bytes(4096))
    broken = Transcriber(model_path=tmp_path)
    model = Model(broken)

    async def main() -> None:
        async with session(broken) as line:
            with caplog.at_level(logging.WARNING, logger="sipbridge.localmodel"):
                await line.speak(np.concatenate([line_noise(0.5), phone_path(speech()),
                                                 line_noise(1.0, seed=3)]), speed=4.0)
                turn = await line.until("response.done", timeout=10)
        failed = ConversationItemInputAudioTranscriptionFailedEvent.model_validate(
            next(e for e in turn if e["type"] == FAILED))
        assert failed.error.message and "pip install 'sipbridge[agent]'" in failed.error.message
        assert not broken.available() and "pip install 'sipbridge[agent]'" in broken.reason
        said = next(e for e in turn if e["type"] == "response.output_audio_transcript.done")
        assert said["transcript"] == model.policy.fallback
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]

    arun(main)


class Spoken(tts.Speech):
    """espeak-ng that keeps what it said (as the server's default) and notes, for each
    text it is asked for, how many events the session had sent by then."""

    def __init__(self, line: list[Line]) -> None:
        super().__init__("espeak")
        self.line = line
        self.asked: list[tuple[str, int]] = []

    def __call__(self, text: str, voice: str | None, speed: float) -> np.ndarray:
        self.asked.append((text, len(self.line[0].events) if self.line else -1))
        return super().__call__(text, voice, speed)


@needs_espeak
@needs_stt
def test_a_reply_is_synthesised_at_the_pause_before_the_turn_ends() -> None:
    """A turn that ends at a pause after complete words: its reply's first clause was
    synthesised while the session still waited for the silence to end the turn, and the
    response took it from what the synthesizer kept (no second synthesis)."""
    recogniser = Recogniser()
    lines: list[Line] = []
    spoken = Spoken(lines)
    words = phone_path(speech("Can you please transfer me to a human?"))
    audio = np.concatenate([line_noise(0.5), words, line_noise(2.0, seed=3)])

    async def main() -> None:
        async with session(recogniser, spoken, silence_duration_ms=500) as line:
            lines.append(line)
            await line.speak(audio)
            turn = await line.until("response.done")
        stopped = next(n for n, e in enumerate(line.events)
                       if e["type"] == "input_audio_buffer.speech_stopped")
        transcript = next(e["transcript"] for e in turn if e["type"] == COMPLETED)
        reply = Policy.load(None).respond(transcript, []).text
        first = tts.clauses(reply)[0]
        ahead = [at for text, at in spoken.asked if text == first]
        assert ahead and ahead[0] <= stopped, (spoken.asked, stopped)
        assert spoken.hits >= 1  # the response found it made
        said = next(e for e in turn if e["type"] == "response.output_audio_transcript.done")
        assert said["transcript"] == reply

    arun(main)
