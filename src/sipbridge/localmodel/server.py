"""The local model's WebSocket server: OpenAI's Realtime protocol, the part a call needs.

Connect to `ws://HOST:PORT/v1/realtime` (any query, such as `?model=...`; any or no
`Authorization`), as to `wss://api.openai.com/v1/realtime?model=...`. Each connection is
one session with its own conversation:

- `session.created` first; `session.update` is checked and merged as the gateway's API does
  it (`sipbridge.realtime.schemas.SessionConfig`) and answered with `session.updated` or `error`.
- `input_audio_buffer.append` takes PCM16 at 24 kHz, or G.711 (`audio/pcmu`, `audio/pcma`
  at 8 kHz) when the session's input format says so; `commit` and `clear` as OpenAI's.
- With `server_vad` (the default; `semantic_vad` is served by the same detector) the
  caller's turns are found in the audio (`localmodel.vad`): speech_started, speech_stopped,
  committed, the user item (`conversation.item.added` / `.done`), its transcript
  (`conversation.item.input_audio_transcription.completed`, or `.failed` when speech to
  text is unavailable) and, with `create_response`, a response. Speech while a response is
  under way cancels it when `interrupt_response` is on.
- `conversation.item.create` (user, assistant and system messages, `function_call`,
  `function_call_output`), `.truncate`, `.delete`, `.retrieve`; `output_audio_buffer.clear`.
- A response answers the newest input since the last response: a function's output with
  the policy's result line, a user message with the policy's reply (and its tool call),
  nothing with the greeting (first response) or the reprompt. Its audio goes out at once,
  in `chunk_ms` pieces, not paced: the gateway paces playout. `response.cancel` stops the
  audio before the next piece. A `response.create` while a response is under way is
  queued, not refused.

Every server event carries an `event_id` ("event_" + hex) and has the shape of the `openai`
SDK's `RealtimeServerEvent` union. Transcription and synthesis run in threads, so the
socket keeps being served.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import numpy as np
from pydantic import ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from sipbridge.localmodel import tts
from sipbridge.localmodel.policy import Policy, Reply
from sipbridge.localmodel.response import SAMPLES_PER_MS, PendingResponse, ResponseRun
from sipbridge.localmodel.stt import Transcriber
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
from sipbridge.realtime.events import error_event
from sipbridge.realtime.ids import new_event_id, new_id
from sipbridge.realtime.schemas import DEFAULT_MODEL, SessionConfig, validate_session_update

log = logging.getLogger("sipbridge.localmodel")

PATH = "/v1/realtime"
MIN_COMMIT_MS = 100
"""OpenAI refuses to commit less audio than this."""
IDLE_KEEP_MS = 1500
"""Audio kept before the prefix padding while no one speaks (server VAD)."""
EAGERNESS_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 300}
"""`semantic_vad` served by the plain detector: its eagerness as a silence duration."""

Synthesizer = Callable[[str, str | None, float], np.ndarray]
"""(text, voice, speed) -> 24 kHz mono int16 audio."""


def _espeak(text: str, voice: str | None, speed: float) -> np.ndarray:
    return tts.synthesize(text, voice, speed=speed)


def _string(data: Mapping[str, Any], key: str, param: str) -> str:
    value = data.get(key)
    if value is None:
        raise missing(param)
    if not isinstance(value, str):
        raise wrong_type(param, "a string", value)
    return value


def _b64(value: str, param: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError(f"Invalid '{param}': not valid base64.", param=param,
                       code="invalid_value") from None


@dataclass(eq=False)
class _Job:
    """Work for the session's worker, which runs one job at a time, in order."""

    run: Callable[[], Awaitable[None]]
    response: PendingResponse | None = None


@dataclass
class _Turn:
    """The caller's current turn, as the VAD found it."""

    item_id: str
    start_ms: int = 0


class LocalModelServer:
    """The local model, served over WebSocket (see the module docstring).

    `policy` decides what to say: a Policy, a YAML file's path, or None for the built-in one
    (PolicyError when it cannot be loaded, PyYAML missing included); `transcriber` does speech
    to text (default: faster-whisper with the packaged model, shared by all sessions),
    `synthesizer` speaks (default: espeak-ng), `chunk_ms` is the audio per
    `response.output_audio.delta`, `path` the WebSocket path, `preload` loads the speech
    model in `start` rather than on the first turn."""

    def __init__(
        self,
        *,
        policy: Policy | str | Path | None = None,
        transcriber: Transcriber | None = None,
        synthesizer: Synthesizer | None = None,
        chunk_ms: int = 100,
        path: str = PATH,
        preload: bool = True,
        max_message_size: int = 16 << 20,
    ) -> None:
        self.policy = policy if isinstance(policy, Policy) else Policy.load(policy)
        self.transcriber = transcriber if transcriber is not None else Transcriber()
        self.synthesizer: Synthesizer = synthesizer if synthesizer is not None else _espeak
        self.chunk_ms = max(10, int(chunk_ms))
        self.path = path.rstrip("/") or "/"
        self.preload = preload
        self.max_message_size = max_message_size
        self.host = ""
        self.port = 0
        self._server: Server | None = None
        self._sessions: set[_Session] = set()

    @property
    def url(self) -> str:
        """The WebSocket URL to connect to (after `start`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{self.path}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on (host, port); port 0 picks a free one, then in `self.port`."""
        if self.preload and self.transcriber.available():
            await asyncio.to_thread(self.transcriber.load)
        self._server = await serve(
            self._serve, host, port, process_request=self._check_path,
            max_size=self.max_message_size, compression=None,
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.host, self.port = host, int(sockname[1])
        log.info("local model listening on %s (speech to text: %s)", self.url,
                 "on" if self.transcriber.available() else self.transcriber.reason)

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path.rstrip("/") or "/"
        if path != self.path:
            return connection.respond(HTTPStatus.NOT_FOUND, f"No WebSocket at {path}; "
                                                            f"connect to {self.path}\n")
        return None

    async def _serve(self, connection: ServerConnection) -> None:
        query = parse_qs(urlsplit(connection.request.path if connection.request else "").query)
        model = (query.get("model") or [DEFAULT_MODEL])[0]
        session = _Session(self, connection, model)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)


class _Session:
    """One connection: the session config, the conversation, the audio buffer."""

    def __init__(self, server: LocalModelServer, ws: ServerConnection, model: str) -> None:
        self.server = server
        self.ws = ws
        self.id = new_id("sess")
        self.conversation_id = new_id("conv")
        try:
            self.config = SessionConfig.model_validate({"type": "realtime", "model": model})
        except ValidationError:
            self.config = SessionConfig.model_validate({"type": "realtime"})
        self.items: dict[str, dict[str, Any]] = {}
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        self._answered_seq = -1
        self.greeted = False
        # The input audio buffer: 24 kHz samples since `_buf_start` (a session sample index).
        self._buf: list[np.ndarray] = []
        self._buf_len = 0
        self._buf_start = 0
        self._written = 0  # samples appended in the whole session: the buffer's time base
        self._up = Resampler(PHONE_RATE, MODEL_RATE)
        self._vad: Vad | None = None
        self._vad_key: tuple[Any, ...] | None = None
        self._turn: _Turn | None = None
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
                await self.emit(error_event(RealtimeError(f"The local model failed: {exc}",
                                                     type="server_error", code="server_error")))

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
            kind = _string(event, "type", "type")
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
        data = _b64(_string(event, "audio", "audio"), "audio")
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
        now_ms = self._written // SAMPLES_PER_MS
        self._buf.append(pcm)
        self._buf_len += len(pcm)
        self._written += len(pcm)
        if self._vad is None:
            return
        for vad_event in self._vad.feed(pcm, now_ms):
            if vad_event.kind == "speech_started":
                await self._speech_started(vad_event.audio_ms)
            else:
                await self._speech_stopped(vad_event.audio_ms)
        if self._turn is None:
            self._trim(self._written - (self._vad.prefix_padding_ms + IDLE_KEEP_MS)
                       * SAMPLES_PER_MS)

    async def _commit(self, event: dict[str, Any]) -> None:
        ms = self._buf_len // SAMPLES_PER_MS
        if ms < MIN_COMMIT_MS:
            raise RealtimeError("Error committing input audio buffer: buffer too small. "
                                f"Expected at least {MIN_COMMIT_MS}ms of audio, but buffer "
                                f"only has {ms}ms of audio.",
                           code="input_audio_buffer_commit_empty")
        item_id = self._turn.item_id if self._turn is not None else new_id("item")
        pcm = self._take(self._written)
        self._turn = None
        if self._vad is not None:
            self._vad.reset(self._written // SAMPLES_PER_MS)
        await self._committed(item_id, pcm)

    async def _clear(self, event: dict[str, Any]) -> None:
        self._take(self._written)
        self._turn = None
        if self._vad is not None:
            self._vad.reset(self._written // SAMPLES_PER_MS)
        await self.emit({"type": "input_audio_buffer.cleared"})

    async def _item_create(self, event: dict[str, Any]) -> None:
        raw = event.get("item")
        if raw is None:
            raise missing("item")
        if not isinstance(raw, dict):
            raise wrong_type("item", "an object", raw)
        item, audio = self._checked_item(raw)
        if item["id"] in self.items:
            raise RealtimeError(f"Item with id '{item['id']}' already exists.",
                           param="item.id", code="item_id_already_exists")
        await self._add_item(item)
        if audio is not None:
            pcm, index = audio
            self._jobs.put_nowait(_Job(lambda: self._transcribe(item, pcm, index)))

    async def _item_truncate(self, event: dict[str, Any]) -> None:
        item = self._item(event)
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
        item = self._item(event)
        del self.items[item["id"]]
        await self.emit({"type": "conversation.item.deleted", "item_id": item["id"]})

    async def _item_retrieve(self, event: dict[str, Any]) -> None:
        item = self._item(event)
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

    _HANDLERS: ClassVar[dict[str, Callable[[_Session, dict[str, Any]], Awaitable[None]]]] = {
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
        if turn.get("type") == "semantic_vad":
            silence = EAGERNESS_SILENCE_MS.get(str(turn.get("eagerness")), 500)
            key: tuple[Any, ...] = (0.5, 300, silence)
        else:
            key = (turn.get("threshold") if turn.get("threshold") is not None else 0.5,
                   turn.get("prefix_padding_ms") or 300,
                   turn.get("silence_duration_ms") or 500)
        if key != self._vad_key:
            self._vad, self._vad_key, self._turn = Vad(*key), key, None

    async def _speech_started(self, audio_start_ms: int) -> None:
        self._turn = _Turn(new_id("item"), audio_start_ms)
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
        self._trim(turn.start_ms * SAMPLES_PER_MS)
        pcm = self._take(audio_end_ms * SAMPLES_PER_MS)
        await self._committed(turn.item_id, pcm)
        if (self._turn_detection() or {}).get("create_response", True) is not False:
            self._request_response({}, auto=True)

    # ---- the input buffer -----------------------------------------------------------

    def _trim(self, keep_from: int) -> None:
        """Drop buffered audio before session sample `keep_from`."""
        drop = min(self._buf_len, keep_from - self._buf_start)
        if drop <= 0:
            return
        audio = np.concatenate(self._buf) if self._buf else np.zeros(0, np.int16)
        rest = audio[drop:]
        self._buf = [rest] if len(rest) else []
        self._buf_len = len(rest)
        self._buf_start += drop

    def _take(self, until: int) -> np.ndarray:
        """The buffered audio before session sample `until`, removed from the buffer."""
        audio = np.concatenate(self._buf) if self._buf else np.zeros(0, np.int16)
        cut = max(0, min(len(audio), until - self._buf_start))
        rest = audio[cut:]
        self._buf = [rest] if len(rest) else []
        self._buf_len = len(rest)
        self._buf_start += cut
        taken: np.ndarray = audio[:cut]
        return taken

    async def _committed(self, item_id: str, pcm: np.ndarray) -> None:
        previous = next(reversed(self.items), None)
        await self.emit({"type": "input_audio_buffer.committed", "item_id": item_id,
                         "previous_item_id": previous})
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                "status": "completed", "content": [{"type": "input_audio", "transcript": None}]}
        await self._add_item(item)
        self._jobs.put_nowait(_Job(lambda: self._transcribe(item, pcm)))

    def insert_item(self, item: dict[str, Any]) -> str | None:
        """Append `item` to the conversation; the id of the item before it (or None)."""
        previous = next(reversed(self.items), None)
        self.items[item["id"]] = item
        self._seq[item["id"]] = self._next_seq
        self._next_seq += 1
        return previous

    async def _add_item(self, item: dict[str, Any]) -> None:
        previous = self.insert_item(item)
        await self.emit({"type": "conversation.item.added", "previous_item_id": previous,
                         "item": item})
        await self.emit({"type": "conversation.item.done", "previous_item_id": previous,
                         "item": item})

    async def _transcribe(self, item: dict[str, Any], pcm: np.ndarray, index: int = 0) -> None:
        content = item["content"][index]
        transcriber = self.server.transcriber
        problem, code = transcriber.reason, "transcription_unavailable"
        text = ""
        if not problem:
            started = time.perf_counter()
            try:
                text = await asyncio.to_thread(transcriber.transcribe, pcm)
            except Exception as exc:  # noqa: BLE001 - reported to the client, as OpenAI does
                log.warning("local model: transcription failed: %s", exc)
                problem, code = f"{type(exc).__name__}: {exc}", "transcription_failed"
            log.debug("local model: %.2f s of audio transcribed in %.2f s: %r",
                      len(pcm) / MODEL_RATE, time.perf_counter() - started, text)
        content["transcript"] = text
        if problem:
            await self.emit({
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": item["id"], "content_index": index,
                "error": {"type": "transcription_error", "code": code,
                          "message": f"Speech to text is unavailable: {problem}. "
                                     "The local model answers with its fallback.",
                          "param": None},
            })
            return
        await self.emit({
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item["id"], "content_index": index, "transcript": text,
            "usage": {"type": "duration", "seconds": round(len(pcm) / MODEL_RATE, 3)},
        })

    # ---- conversation items ---------------------------------------------------------

    def _item(self, event: dict[str, Any]) -> dict[str, Any]:
        item_id = _string(event, "item_id", "item_id")
        item = self.items.get(item_id)
        if item is None:
            raise RealtimeError(f"Item with item_id '{item_id}' not found.", param="item_id",
                           code="item_not_found")
        return item

    def _checked_item(
        self, raw: dict[str, Any]
    ) -> tuple[dict[str, Any], tuple[np.ndarray, int] | None]:
        """A client's item as stored (and echoed), and the input audio to transcribe with
        its content index (the first audio part only)."""
        kind = _string(raw, "type", "item.type")
        item_id = raw.get("id")
        if item_id is not None and not isinstance(item_id, str):
            raise wrong_type("item.id", "a string", item_id)
        item: dict[str, Any] = {"id": item_id or new_id("item"), "object": "realtime.item",
                                "type": kind, "status": "completed"}
        audio: tuple[np.ndarray, int] | None = None
        if kind == "message":
            role = _string(raw, "role", "item.role")
            allowed = {"user": ("input_text", "input_audio", "input_image"),
                       "assistant": ("output_text", "output_audio"),
                       "system": ("input_text",)}.get(role)
            if allowed is None:
                raise RealtimeError(f"Invalid value: '{role[:100]}'. Supported values are: "
                                    "'user', 'assistant', and 'system'.", param="item.role",
                               code="invalid_value")
            content = raw.get("content")
            if not isinstance(content, list):
                raise wrong_type("item.content", "an array", content)
            parts = []
            for i, part in enumerate(content):
                where = f"item.content[{i}]"
                if not isinstance(part, dict):
                    raise wrong_type(where, "an object", part)
                ptype = _string(part, "type", f"{where}.type")
                if ptype not in allowed:
                    raise RealtimeError(f"Invalid value: '{ptype[:100]}'. Supported values "
                                        f"for a {role} message are: "
                                        f"{', '.join(repr(a) for a in allowed)}.",
                                   param=f"{where}.type", code="invalid_value")
                kept = {k: v for k, v in part.items()
                        if k in ("type", "text", "transcript", "image_url", "detail")}
                if (ptype == "input_audio" and audio is None
                        and isinstance(part.get("audio"), str)):
                    audio = (self._decode_input(_b64(part["audio"], f"{where}.audio")), i)
                    kept.setdefault("transcript", None)
                parts.append(kept)
            item.update(role=role, content=parts)
        elif kind == "function_call_output":
            item.update(call_id=_string(raw, "call_id", "item.call_id"),
                        output=_string(raw, "output", "item.output"))
        elif kind == "function_call":
            item.update(name=_string(raw, "name", "item.name"),
                        arguments=_string(raw, "arguments", "item.arguments"),
                        call_id=raw.get("call_id") if isinstance(raw.get("call_id"), str)
                        else new_id("call"))
        else:
            raise RealtimeError(f"Invalid value: '{kind[:100]}'. Supported values are: "
                                "'message', 'function_call', and 'function_call_output'.",
                           param="item.type", code="invalid_value")
        return item, audio

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
        policy = self.server.policy
        fresh = [item for item in self.items.values()
                 if self._seq.get(item["id"], -1) > self._answered_seq]
        self._answered_seq = self._next_seq - 1
        for item in reversed(fresh):
            if item["type"] == "function_call_output":
                name = next((i["name"] for i in self.items.values()
                             if i["type"] == "function_call" and i["call_id"] == item["call_id"]),
                            "")
                return policy.after_tool(name, item["output"])
            if item["type"] == "message" and item.get("role") == "user":
                text = " ".join(
                    str(part.get("text") or part.get("transcript") or "")
                    for part in item["content"]
                ).strip()
                return policy.respond(text, tools)
        if not self.greeted:
            return policy.respond(None, tools)
        return Reply(policy.reprompt)

    async def _run_response(self, response: PendingResponse) -> None:
        try:
            if response.cancel_reason is not None and response.auto:
                return  # the caller spoke again before it started: their next turn answers
            await ResponseRun(self, response).run()
        finally:
            response.done = True
            if response in self._responses:
                self._responses.remove(response)
