"""One connection to the local model: a Realtime session (see `server` for what it serves).

Client events are checked and handled one at a time; transcriptions and responses run on the
session's worker, in order, so the socket keeps being served while they take their time.
While the caller speaks, guesses (transcriptions of the turn so far, one at a time, in a
thread) give the transcription deltas and, at a pause, the turn's transcript ahead of time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from sipbridge.localmodel.conversation import Conversation, check_item, transcribe
from sipbridge.localmodel.policy import Policy, Reply
from sipbridge.localmodel.response import SAMPLES_PER_MS, PendingResponse, ResponseRun
from sipbridge.localmodel.stt import Transcriber
from sipbridge.localmodel.tts import Synthesizer, clauses
from sipbridge.localmodel.turns import (
    MAX_TURN_MS,
    SPECULATE_MS,
    InputBuffer,
    Turn,
    semantic_pauses,
    vad_settings,
    words_complete,
)
from sipbridge.localmodel.vad import Vad
from sipbridge.media.g711 import alaw_decode, ulaw_decode
from sipbridge.media.resample import MODEL_RATE, PHONE_RATE, Resampler
from sipbridge.realtime.errors import (
    RealtimeError,
    describe,
    from_validation_errors,
    missing,
    wrong_type,
)
from sipbridge.realtime.events import base64_field, error_event, string_field
from sipbridge.realtime.ids import new_event_id, new_id
from sipbridge.realtime.schemas import SessionConfig, validate_session_update

log = logging.getLogger("sipbridge.localmodel")

MIN_COMMIT_MS = 100
"""OpenAI refuses to commit less audio than this."""
IDLE_KEEP_MS = 1500
"""Audio kept before the prefix padding while no one speaks (server VAD)."""
PARTIAL_MS = 700
"""Speech since the last guess (or since the turn's speech began) after which a guess starts
while the caller speaks on without a pause. Its words go out as a delta where they agree
with the guess before (speech cut off mid-word changes Whisper's last words: "I am calling
an out" at 1 s, "... about my internet connection with" at 2 s), so the first words go out
at the second guess: 1.5-1.8 s into the speech (with 1 s: 2.3 s, or none in 4 s when tiny.en
flips "I am" to "I'm" once). A guess of up to 8 s of speech costs 120-330 ms (2 cores)."""
PARTIAL_SPACING = 4
"""... and no sooner than this many times the last guess's own time (in speech) after it:
a turn past 8 s takes 0.6-2 s a guess (Whisper's 30 s window), so a caller who talks on,
or a line of noise, keeps guesses to a quarter of the time, not back to back."""
_MARKS = ".?!,;:\u2026 "  # what Whisper ends the words so far with (the sentence may go on)


class ModelServer(Protocol):
    """What a session uses of the server: the parts shared by every session."""

    @property
    def policy(self) -> Policy: ...

    @property
    def transcriber(self) -> Transcriber: ...

    @property
    def synthesizer(self) -> Synthesizer: ...

    @property
    def chunk_ms(self) -> int: ...


@dataclass(eq=False)
class _Guess:
    """A transcription of the turn so far, started while the caller paused (the turn's
    transcript if it ends there, without transcribing it again) or while they spoke on
    (`partial`: its last word may be cut off). A partial guess goes on the words already
    sent as deltas (`told`, Whisper's decoding forced to start with them), so it can only
    add to them; a pause's guess, like a turn's own transcription, is decoded free of them:
    Whisper reads the start of a turn better with its end in hand ("Yes, put them through"
    heard as "Yeah, both" 700 ms in), and the transcript is what the policy answers."""

    end_ms: int  # the audio it transcribes ends here (the last voiced frame's end)
    task: asyncio.Future[str]
    partial: bool = False
    reported: bool = False  # its text went out as a transcription delta
    cost_ms: int = 0  # how long it took, once done

    def words(self, before: str | None) -> str | None:
        """The words it tells: its transcript without the mark Whisper ends it with, or for
        a partial guess only its first words that read as those of the guess `before` it
        (case and marks aside): LocalAgreement, as whisper_streaming's."""
        text = self.text()
        if text is None:
            return None
        if self.partial:
            agreed = []
            for mine, theirs in zip(text.split(), (before or "").split(), strict=False):
                if _word(mine) != _word(theirs):
                    break
                agreed.append(mine)
            text = " ".join(agreed)
        return text.rstrip(_MARKS)

    def text(self) -> str | None:
        """Its transcript, once it is done and did not fail."""
        task = self.task
        if not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return task.result()


def _quiet(task: asyncio.Future[Any]) -> None:
    """A synthesis ahead of time that failed: the response synthesises (and reports) it."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("local model: a reply synthesised ahead failed: %s", exc)


def _word(word: str) -> str:
    """A word as guesses are compared: "Hello," and "hello." agree."""
    return re.sub(r"[^\w']", "", word.lower())


@dataclass(eq=False)
class _Job:
    """Work for the session's worker, which runs one job at a time, in order."""

    run: Callable[[], Awaitable[None]]
    response: PendingResponse | None = None


class Session:
    """One connection: the session config, the client events, turn detection, and the
    order in which transcriptions and responses run. The conversation, the input buffer and
    each response are objects of their own."""

    def __init__(self, server: ModelServer, ws: ServerConnection, model: str) -> None:
        self.server = server
        self.ws = ws
        self.id = new_id("sess")
        self.conversation_id = new_id("conv")
        try:
            self.config = SessionConfig.model_validate({"type": "realtime", "model": model})
        except ValidationError:
            self.config = SessionConfig.model_validate({"type": "realtime"})
        self.conversation = Conversation()
        self.greeted = False
        self.input = InputBuffer()
        self._up = Resampler(PHONE_RATE, MODEL_RATE)
        self._vad: Vad | None = None
        self._vad_key: tuple[float, int, int] | None = None
        self._turn: Turn | None = None
        self._guess: _Guess | None = None  # of the current turn, the newest
        self._guessing: asyncio.Future[str] | None = None  # the newest guess of any turn
        self._told = ""  # the current turn's transcript sent as deltas so far
        self._heard: str | None = None  # the current turn's last guess's transcript
        self._preparing: asyncio.Future[Any] | None = None  # a reply's first clause, ahead
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._responses: list[PendingResponse] = []  # requested and not done, oldest first
        self.last_response_id: str | None = None
        self._object = self.config.session_object(session_id=self.id)
        self._configure_vad()

    # ---- plumbing -----------------------------------------------------------------

    async def run(self) -> None:
        worker = asyncio.create_task(self._work())
        try:
            await self.emit({"type": "session.created", "session": self.session_object()})
            async for raw in self.ws:
                await self.handle(raw)
        except ConnectionClosed:
            pass
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await worker

    async def emit(self, event: dict[str, Any]) -> None:
        """Send a server event, with a new `event_id`."""
        event = {"type": event["type"], "event_id": new_event_id(),
                 **{k: v for k, v in event.items() if k != "type"}}
        await self.ws.send(json.dumps(event))

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job.run()
            except (ConnectionClosed, asyncio.CancelledError):
                raise
            except Exception as exc:  # a bug must not end the call: report it
                log.exception("local model: job failed")
                failed = RealtimeError(f"The local model failed: {exc}", type="server_error",
                                       code="server_error")
                await self.emit(error_event(failed))

    def session_object(self) -> dict[str, Any]:
        """The session as `session.created` / `session.updated` report it (not to be
        changed: it is kept until the next update)."""
        return self._object

    def audio_config(self, side: str) -> dict[str, Any]:
        audio = self.session_object().get("audio") or {}
        value = audio.get(side) or {}
        return value if isinstance(value, dict) else {}

    def _format(self, side: str) -> str:
        fmt = self.audio_config(side).get("format") or {}
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        return kind if isinstance(kind, str) else "audio/pcm"

    # ---- client events --------------------------------------------------------------

    async def handle(self, raw: str | bytes) -> None:
        """One client message."""
        event: Any = None
        client_event_id: str | None = None
        try:
            try:
                event = json.loads(raw)
            except (UnicodeDecodeError, ValueError) as exc:
                raise RealtimeError(f"The client event could not be parsed as JSON ({exc}).",
                                    code="invalid_json") from None
            if not isinstance(event, dict):
                raise RealtimeError(f"The client event must be a JSON object, but got "
                                    f"{describe(event)}.", code="invalid_json")
            if isinstance(event.get("event_id"), str):
                client_event_id = event["event_id"]
            kind = string_field(event, "type", "type")
            handler = self._HANDLERS.get(kind)
            if handler is None:
                raise RealtimeError(f"Invalid value: '{kind[:100]}'. Supported values are: "
                                    f"{', '.join(repr(k) for k in self._HANDLERS)}.",
                                    param="type", code="invalid_value")
            await handler(self, event)
        except RealtimeError as exc:
            await self.emit(error_event(exc, client_event_id=client_event_id))
        except ConnectionClosed:
            raise
        except Exception as exc:  # a bug must not end the call: report it
            log.exception("local model: a client event failed")
            await self.emit(error_event(RealtimeError(f"The local model failed: {exc}",
                                                      type="server_error", code="server_error"),
                                        client_event_id=client_event_id))

    async def _session_update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if session is None:
            raise missing("session")
        if not isinstance(session, dict):
            raise wrong_type("session", "an object", session)
        partial = validate_session_update(session)
        try:
            self.config = self.config.updated(partial)
        except ValidationError as exc:
            raise from_validation_errors(exc.errors(), prefix="session") from None
        self._object = self.config.session_object(session_id=self.id)
        self._configure_vad()
        await self.emit({"type": "session.updated", "session": self.session_object()})

    async def _append(self, event: dict[str, Any]) -> None:
        data = base64_field(string_field(event, "audio", "audio"), "audio")
        fmt = self._format("input")
        if fmt == "audio/pcmu":
            pcm = self._up.process(ulaw_decode(data))
        elif fmt == "audio/pcma":
            pcm = self._up.process(alaw_decode(data))
        else:
            if len(data) % 2:
                raise RealtimeError("Invalid 'audio': PCM16 audio has an even number of "
                                    f"bytes, not {len(data)}.", param="audio",
                                    code="invalid_value")
            pcm = np.frombuffer(data, "<i2").astype(np.int16)
        now_ms = self.input.written // SAMPLES_PER_MS
        self.input.append(pcm)
        if self._vad is None:
            return
        for vad_event in self._vad.feed(pcm, now_ms):
            if vad_event.kind == "speech_started":
                await self._speech_started(vad_event.audio_ms)
            else:
                await self._speech_stopped(vad_event.audio_ms)
        if self._turn is not None and self._vad.speaking:
            await self._follow_turn(self._vad, self._turn)
        if self._turn is None:
            keep_ms = self._vad.prefix_padding_ms + IDLE_KEEP_MS
            self.input.trim(self.input.written - keep_ms * SAMPLES_PER_MS)

    async def _commit(self, event: dict[str, Any]) -> None:
        ms = self.input.length // SAMPLES_PER_MS
        if ms < MIN_COMMIT_MS:
            raise RealtimeError("Error committing input audio buffer: buffer too small. "
                                f"Expected at least {MIN_COMMIT_MS}ms of audio, but buffer "
                                f"only has {ms}ms of audio.",
                                code="input_audio_buffer_commit_empty")
        item_id = self._turn.item_id if self._turn is not None else new_id("item")
        pcm = self.input.take(self.input.written)
        self._turn = None
        self._drop_guess()
        if self._vad is not None:
            self._vad.reset(self.input.written // SAMPLES_PER_MS)
        await self._committed(item_id, pcm)  # transcribed on the worker, free of the deltas

    async def _clear(self, event: dict[str, Any]) -> None:
        self.input.take(self.input.written)
        self._turn = None
        self._drop_guess()
        if self._vad is not None:
            self._vad.reset(self.input.written // SAMPLES_PER_MS)
        await self.emit({"type": "input_audio_buffer.cleared"})

    async def _item_create(self, event: dict[str, Any]) -> None:
        raw = event.get("item")
        if raw is None:
            raise missing("item")
        if not isinstance(raw, dict):
            raise wrong_type("item", "an object", raw)
        item, audio = check_item(raw, self._decode_input)
        if item["id"] in self.conversation.items:
            raise RealtimeError(f"Item with id '{item['id']}' already exists.",
                                param="item.id", code="item_id_already_exists")
        await self._add_item(item)
        if audio is not None:
            pcm, index = audio
            self._jobs.put_nowait(_Job(lambda: self._transcribe(item, pcm, index)))

    async def _item_truncate(self, event: dict[str, Any]) -> None:
        item = self.conversation.named(event)
        audio_end_ms = event.get("audio_end_ms")
        content_index = event.get("content_index", 0)
        if not isinstance(audio_end_ms, int) or audio_end_ms < 0:
            raise wrong_type("audio_end_ms", "a non-negative integer", audio_end_ms)
        if item.get("role") != "assistant":
            raise RealtimeError("Only assistant messages can be truncated.", param="item_id",
                                code="invalid_value")
        await self.emit({"type": "conversation.item.truncated", "item_id": item["id"],
                         "content_index": content_index if isinstance(content_index, int)
                         else 0, "audio_end_ms": audio_end_ms})

    async def _item_delete(self, event: dict[str, Any]) -> None:
        item = self.conversation.named(event)
        del self.conversation.items[item["id"]]
        await self.emit({"type": "conversation.item.deleted", "item_id": item["id"]})

    async def _item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.conversation.named(event)
        await self.emit({"type": "conversation.item.retrieved", "item": item})

    async def _response_create(self, event: dict[str, Any]) -> None:
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise wrong_type("response", "an object", params)
        self._request_response(params, auto=False)

    async def _response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        pending = [r for r in self._responses if r.cancel_reason is None]
        if wanted is not None:
            pending = [r for r in pending if r.id == wanted]
        if not pending:
            raise RealtimeError("Cancellation failed: no active response found.",
                                code="response_cancel_not_active")
        pending[0].cancel_reason = "client_cancelled"

    async def _output_clear(self, event: dict[str, Any]) -> None:
        if self.last_response_id is not None:
            await self.emit({"type": "output_audio_buffer.cleared",
                             "response_id": self.last_response_id})

    _HANDLERS: ClassVar[dict[str, Callable[[Session, dict[str, Any]], Awaitable[None]]]] = {
        "session.update": _session_update,
        "input_audio_buffer.append": _append,
        "input_audio_buffer.commit": _commit,
        "input_audio_buffer.clear": _clear,
        "conversation.item.create": _item_create,
        "conversation.item.truncate": _item_truncate,
        "conversation.item.delete": _item_delete,
        "conversation.item.retrieve": _item_retrieve,
        "response.create": _response_create,
        "response.cancel": _response_cancel,
        "output_audio_buffer.clear": _output_clear,
    }

    # ---- turn detection -------------------------------------------------------------

    def _turn_detection(self) -> dict[str, Any] | None:
        value = self.audio_config("input").get("turn_detection")
        return value if isinstance(value, dict) else None

    def _configure_vad(self) -> None:
        turn = self._turn_detection()
        if turn is None:
            self._vad, self._vad_key, self._turn = None, None, None
            return
        key = vad_settings(turn)
        if key != self._vad_key:
            self._vad, self._vad_key, self._turn = Vad(*key), key, None

    async def _follow_turn(self, vad: Vad, turn: Turn) -> None:
        """While the caller speaks: a guess's words go out as a delta once it is done; a
        pause starts a guess of the turn so far, and so does speech going on PARTIAL_MS past
        the last guess; with `semantic_vad`, a pause long enough after words that are
        complete ends the turn. A turn that lasts MAX_TURN_MS ends.

        One guess at a time per session (one that was dropped included, as its thread runs
        on): a guess that was not done is waited for, not run beside."""
        end, quiet = vad.last_voiced_end, vad.quiet_ms
        now_ms = end + quiet
        if now_ms - turn.start_ms >= MAX_TURN_MS:
            vad.end_turn()
            await self._speech_stopped(now_ms)
            return
        guess = self._guess
        if guess is not None and not guess.reported and guess.task.done():
            guess.reported = True
            if not guess.partial and (made := guess.text()) and words_complete(made):
                self._prepare_reply(made)
            words = guess.words(self._heard)
            self._heard = guess.text() or self._heard
            # Only words that go on those sent: a pause's guess that reads the start of the
            # turn otherwise than the partial guesses did says nothing (its transcript, the
            # turn's, is still the better reading: the deltas are what was heard so far).
            if words is not None and words.startswith(self._told) and words != self._told:
                await self.emit({"type": "conversation.item.input_audio_transcription.delta",
                                 "item_id": turn.item_id, "content_index": 0,
                                 "delta": words[len(self._told):]})
                self._told = words
        if ((self._guessing is None or self._guessing.done())
                and self.server.transcriber.available()):
            if quiet >= SPECULATE_MS:
                wanted = guess is None or guess.end_ms != end
            else:
                since = (guess.end_ms if guess is not None
                         else turn.start_ms + vad.prefix_padding_ms)
                spacing = max(PARTIAL_MS, PARTIAL_SPACING * (guess.cost_ms if guess else 0))
                wanted = end - since >= spacing
            if wanted:
                guess = self._start_guess(turn, end, partial=quiet < SPECULATE_MS)
        text = guess.text() if guess is not None else None
        if guess is None or text is None:
            return
        detection = self._turn_detection() or {}
        if (guess.end_ms == end and detection.get("type") == "semantic_vad"
                and quiet >= semantic_pauses(detection)[0] and words_complete(text)):
            vad.end_turn()
            await self._speech_stopped(now_ms)

    def _prepare_reply(self, text: str) -> None:
        """At a pause after complete words: synthesise, in a thread, the first clause of what
        the policy would answer `text` now, so that a turn that ends at this pause finds
        its reply's first audio made (a synthesizer that keeps what it said, `tts.Speech`,
        gives it at once; a turn that goes on only leaves it unused). Not for a policy
        that waits on the network, nor with a synthesis of that kind under way."""
        synthesizer, policy = self.server.synthesizer, self.server.policy
        if (not getattr(synthesizer, "cache", False) or getattr(policy, "blocking", False)
                or (self._preparing is not None and not self._preparing.done())):
            return
        config = self.session_object()
        tools = [] if config.get("tool_choice") == "none" else [
            t for t in config.get("tools") or [] if isinstance(t, dict)]
        pieces = clauses(policy.respond(text, tools).text)
        if not pieces:
            return
        output = self.audio_config("output")
        voice, speed = output.get("voice"), output.get("speed")
        self._preparing = asyncio.ensure_future(asyncio.to_thread(
            synthesizer, pieces[0], voice if isinstance(voice, str) else None,
            float(speed) if isinstance(speed, int | float) else 1.0))
        self._preparing.add_done_callback(_quiet)

    def _start_guess(self, turn: Turn, end_ms: int, *, partial: bool) -> _Guess:
        """Transcribe the turn up to `end_ms` in a thread, going on the words told."""
        pcm = self.input.peek(turn.start_ms * SAMPLES_PER_MS, end_ms * SAMPLES_PER_MS)
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.ensure_future(
            asyncio.to_thread(self.server.transcriber.transcribe, pcm,
                              self._told if partial else ""))
        guess = self._guess = _Guess(end_ms, task, partial)
        self._guessing = task

        def done(task: asyncio.Future[str]) -> None:
            guess.cost_ms = round((loop.time() - started) * 1000)
            if not task.cancelled() and (exc := task.exception()) is not None:
                # Dropped: the end of the turn transcribes it again (and reports a failure).
                log.debug("local model: a guess failed: %s: %s", type(exc).__name__, exc)

        task.add_done_callback(done)
        return guess

    def _turn_text(self, pcm: np.ndarray,
                   guess: _Guess | None) -> Callable[[], Awaitable[str]]:
        """How the worker gets a turn's transcript: the pause's guess when it covers the
        turn's words (waited for if not done), else a transcription of `pcm`."""
        transcriber = self.server.transcriber

        async def text() -> str:
            if guess is not None and not guess.partial:
                await asyncio.wait([guess.task])  # its failure is not this turn's
                made = guess.text()
                if made is not None:
                    return made
            return await asyncio.to_thread(transcriber.transcribe, pcm)

        return text

    def _drop_guess(self) -> None:
        # Its thread runs on (and is waited for before the next guess); its text is not used.
        self._guess, self._told, self._heard = None, "", None

    async def _speech_started(self, audio_start_ms: int) -> None:
        self._drop_guess()
        self._turn = Turn(new_id("item"), audio_start_ms)
        await self.emit({"type": "input_audio_buffer.speech_started",
                         "audio_start_ms": audio_start_ms, "item_id": self._turn.item_id})
        turn = self._turn_detection() or {}
        if turn.get("interrupt_response", True) is not False:
            for response in self._responses:
                if response.cancel_reason is None and (response.started or response.auto):
                    response.cancel_reason = "turn_detected"

    async def _speech_stopped(self, audio_end_ms: int) -> None:
        turn = self._turn
        self._turn = None
        if turn is None:
            return
        await self.emit({"type": "input_audio_buffer.speech_stopped",
                         "audio_end_ms": audio_end_ms, "item_id": turn.item_id})
        # What the pause's guess covered: the turn's words, up to its last voiced frame
        # (what follows is silence); kept unless the caller spoke after it.
        guess, vad = self._guess, self._vad
        if guess is not None and (vad is None or guess.end_ms != vad.last_voiced_end):
            guess = None
        self.input.trim(turn.start_ms * SAMPLES_PER_MS)
        pcm = self.input.take(audio_end_ms * SAMPLES_PER_MS)
        made = self._turn_text(pcm, guess)
        self._drop_guess()
        await self._committed(turn.item_id, pcm, made)
        if (self._turn_detection() or {}).get("create_response", True) is not False:
            self._request_response({}, auto=True)

    # ---- conversation items ---------------------------------------------------------

    async def _committed(self, item_id: str, pcm: np.ndarray,
                         made: Callable[[], Awaitable[str]] | None = None) -> None:
        previous = self.conversation.last_id()
        await self.emit({"type": "input_audio_buffer.committed", "item_id": item_id,
                         "previous_item_id": previous})
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                "status": "completed", "content": [{"type": "input_audio", "transcript": None}]}
        await self._add_item(item)
        self._jobs.put_nowait(_Job(lambda: self._transcribe(item, pcm, made=made)))

    def insert_item(self, item: dict[str, Any]) -> str | None:
        """Append `item` to the conversation; the id of the item before it (or None)."""
        return self.conversation.insert(item)

    async def _add_item(self, item: dict[str, Any]) -> None:
        previous = self.insert_item(item)
        await self.emit({"type": "conversation.item.added", "previous_item_id": previous,
                         "item": item})
        await self.emit({"type": "conversation.item.done", "previous_item_id": previous,
                         "item": item})

    async def _transcribe(self, item: dict[str, Any], pcm: np.ndarray, index: int = 0, *,
                          made: Callable[[], Awaitable[str]] | None = None) -> None:
        """Report the item's transcript (`made` makes it, when given) or why it failed: a
        failed transcription is reported, and the response to the turn still comes."""
        transcriber = self.server.transcriber
        text = made() if made is not None and transcriber.available() else None
        await self.emit(await transcribe(transcriber, item, pcm, index, text))

    def _decode_input(self, data: bytes) -> np.ndarray:
        fmt = self._format("input")
        if fmt in ("audio/pcmu", "audio/pcma"):
            pcm8 = ulaw_decode(data) if fmt == "audio/pcmu" else alaw_decode(data)
            return Resampler(PHONE_RATE, MODEL_RATE).process(pcm8)
        return np.frombuffer(data[:len(data) - len(data) % 2], "<i2").astype(np.int16)

    # ---- responses ------------------------------------------------------------------

    def _request_response(self, params: dict[str, Any], *, auto: bool) -> None:
        response = PendingResponse(new_id("resp"), params, auto)
        self._responses.append(response)
        self._jobs.put_nowait(_Job(lambda: self._run_response(response), response))

    def decide(self, tools: list[dict[str, Any]]) -> Reply:
        """The reply to the newest input since the last response."""
        return self.conversation.decide(self.server.policy, tools, greeted=self.greeted)

    def brief(self, form: str, text: str) -> Reply:
        """The briefing of a warm transfer's person (`Conversation.brief`)."""
        return self.conversation.brief(form, text)

    async def _run_response(self, response: PendingResponse) -> None:
        try:
            if response.cancel_reason is not None and response.auto:
                return  # the caller spoke again before it started: their next turn answers
            await ResponseRun(self, response).run()
        finally:
            response.done = True
            if response in self._responses:
                self._responses.remove(response)
