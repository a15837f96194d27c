"""The local model's WebSocket server: OpenAI's Realtime protocol, the part a call needs.

Connect to `ws://HOST:PORT/v1/realtime` (any query, such as `?model=...`; any or no
`Authorization`), as to `wss://api.openai.com/v1/realtime?model=...`. Each connection is
one session with its own conversation:

- `session.created` first; `session.update` is checked and merged as the gateway's API does
  it (`sipbridge.realtime.schemas.SessionConfig`) and answered with `session.updated` or `error`.
- `input_audio_buffer.append` takes PCM16 at 24 kHz, or G.711 (`audio/pcmu`, `audio/pcma`
  at 8 kHz) when the session's input format says so; `commit` and `clear` as OpenAI's.
- With `server_vad` (the default) or `semantic_vad` the caller's turns are found in the
  audio (`localmodel.vad`): speech_started, speech_stopped, committed, the user item
  (`conversation.item.added` / `.done`), its transcript
  (`conversation.item.input_audio_transcription.completed`, or `.failed` when speech to
  text is unavailable) and, with `create_response`, a response. Speech while a response is
  under way cancels it when `interrupt_response` is on. A pause of 100 ms within a turn
  starts the transcription of the turn so far, in a thread, and so does speech going on
  700 ms without a pause (its words sent once two transcriptions agree): its words go out as a
  `conversation.item.input_audio_transcription.delta`, and if the turn ends at that pause
  they are its transcript, with nothing left to transcribe. `server_vad` ends a turn after
  `silence_duration_ms`; `semantic_vad` after a short pause when those words are complete
  (`turns.words_complete`), else after its longest silence (both by `eagerness`,
  `turns.EAGERNESS_MS`). No turn lasts more than 30 s.
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
import json
import logging
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from sipbridge.localmodel import tts
from sipbridge.localmodel.policy import Policy
from sipbridge.localmodel.session import Session
from sipbridge.localmodel.stt import Transcriber
from sipbridge.localmodel.tts import Synthesizer
from sipbridge.realtime.schemas import DEFAULT_MODEL

log = logging.getLogger("sipbridge.localmodel")

PATH = "/v1/realtime"


class LocalModelServer:
    """The local model, served over WebSocket (see the module docstring).

    `policy` decides what to say: a Policy, a YAML file's path, or None for the built-in one
    (PolicyError when it cannot be loaded, PyYAML missing included); `transcriber` does speech
    to text (default: faster-whisper with the packaged model, shared by all sessions),
    `synthesizer` speaks (default: `tts.Speech(voice_engine)`: the natural voice when the
    `voice` extra is installed and `voice_engine` is "auto" or "piper", else espeak-ng),
    `chunk_ms` is the audio per `response.output_audio.delta`, `path` the WebSocket path,
    `preload` loads the speech models in `start` rather than on the first turn (`load` does
    it later); past `max_sessions` sessions at once a connection is refused with HTTP 503
    (its body in OpenAI's error shape)."""

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
        max_sessions: int | None = None,
        voice_engine: str = "auto",
    ) -> None:
        self.policy = policy if isinstance(policy, Policy) else Policy.load(policy)
        self.transcriber = transcriber if transcriber is not None else Transcriber()
        self.speech: tts.Speech | None = None
        if synthesizer is None:
            self.speech = synthesizer = tts.Speech(voice_engine)
        self.synthesizer: Synthesizer = synthesizer
        self.chunk_ms = max(10, int(chunk_ms))
        self.path = path.rstrip("/") or "/"
        self.preload = preload
        self.max_message_size = max_message_size
        self.max_sessions = max_sessions
        self.refused = 0  # connections refused past max_sessions
        self.host = ""
        self.port = 0
        self._server: Server | None = None
        self._sessions: set[Session] = set()

    @property
    def url(self) -> str:
        """The WebSocket URL to connect to (after `start`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{self.path}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on (host, port); port 0 picks a free one, then in `self.port`."""
        if self.preload:
            await asyncio.to_thread(self.load)
        self._server = await serve(
            self._serve, host, port, process_request=self._check_path,
            max_size=self.max_message_size, compression=None,
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.host, self.port = host, int(sockname[1])
        log.info("local model listening on %s (speech to text: %s; voice: %s)", self.url,
                 "on" if self.transcriber.available() else self.transcriber.reason,
                 self.speech.name if self.speech is not None else "given")

    def load(self) -> None:
        """Load the speech models (blocking: run it in a thread): the transcriber's, and the
        natural voice's process when it speaks."""
        if self.transcriber.available():
            try:
                self.transcriber.load()
            except Exception as exc:  # noqa: BLE001 - any load failure: turns report it
                log.warning("local model: the speech-to-text model failed to load: %s", exc)
        if self.speech is not None:
            self.speech.load()

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
        if self.max_sessions is not None and len(self._sessions) >= self.max_sessions:
            self.refused += 1
            log.warning("local model: a session refused: %d at once is its limit",
                        self.max_sessions)
            response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, json.dumps({
                "error": {"type": "server_error", "code": "too_many_sessions",
                          "message": f"The local model serves {self.max_sessions} sessions "
                                     "at once; try again later.", "param": None}}) + "\n")
            response.headers["Content-Type"] = "application/json"
            response.headers["Retry-After"] = "5"
            return response
        return None

    async def _serve(self, connection: ServerConnection) -> None:
        query = parse_qs(urlsplit(connection.request.path if connection.request else "").query)
        model = (query.get("model") or [DEFAULT_MODEL])[0]
        session = Session(self, connection, model)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
