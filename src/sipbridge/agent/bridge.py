"""One call's link to a realtime model over OpenAI's Realtime WebSocket protocol.

The model is the built-in local model, OpenAI (`wss://api.openai.com/v1/realtime?model=`)
or any server speaking the same protocol. The bridge:

- sends the accepted session config (`session.update`), and `response.create` when the
  gateway answers alone (the agent greets);
- streams the caller's audio as `input_audio_buffer.append`: 24 kHz PCM16, or the G.711
  bytes untouched when the session's input format is `audio/pcmu` / `audio/pcma`;
- plays `response.output_audio.delta` to the caller through the paced playout;
- barge-in: on `input_audio_buffer.speech_started` it drops the agent audio still queued
  and truncates the assistant item at what the caller actually heard;
- hands every server event to `on_event` (the sideband fan-out) and takes the sideband's
  client events (`send`);
- runs the built-in transfer tool when the model calls it (`on_function_call`), and
  holds what must wait for the agent's words until they are played out
  (`after_speech`: the transfer's REFER, say);
- pauses (nothing from the caller to the model, nothing of the model played) and moves to
  another media session and back (`pause`, `move`): a warm transfer's briefing talks with
  the person the gateway dialed through the same model session;
- reconnects when the connection drops (`reconnects` times, with back-off, the session
  config sent again); after that `on_failure` decides (hang up, or transfer).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.client import connect  # at import, not at the first call

from sipbridge.agent.speech import SpeechWait
from sipbridge.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from sipbridge.media.resample import MODEL_RATE, PHONE_RATE, Resampler
from sipbridge.media.session import MediaSession

log = logging.getLogger("sipbridge.agent")

BYTES_PER_MS = MODEL_RATE * 2 // 1000  # PCM16 at 24 kHz


def _format(session: dict[str, Any], side: str) -> str:
    audio = session.get("audio") or {}
    fmt = (audio.get(side) or {}).get("format") or {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    return kind if isinstance(kind, str) else "audio/pcm"


@dataclass(eq=False)
class _Held:
    """What waits for the agent's words, and its timer."""

    wait: SpeechWait
    then: Callable[[str, float], None]
    timer: asyncio.TimerHandle | None = None


class AgentBridge:
    """Bridges one call's media session to a model session (protocol notes above)."""

    def __init__(
        self,
        call_id: str,
        url: str,
        session: dict[str, Any],
        media: MediaSession,
        *,
        api_key: str | None = None,
        greet: bool = False,
        on_event: Callable[[dict[str, Any]], None] = lambda e: None,
        on_function_call: Callable[[str, str, str], None] | None = None,
        on_status: Callable[[str, str], None] = lambda kind, detail: None,
        on_latency: Callable[[float], None] = lambda seconds: None,
        reconnects: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.call_id = call_id
        self.url = url
        self.session = {k: v for k, v in session.items() if k not in ("object", "id")}
        self.media = media
        self.api_key = api_key
        self.greet = greet
        self.on_event = on_event
        self.on_function_call = on_function_call
        self.on_status = on_status
        self.on_latency = on_latency  # end of caller speech to the model's first audio
        self._speech_stopped: float | None = None
        self.reconnects = reconnects
        self.backoff = backoff
        self.input_format = _format(self.session, "input")
        self.output_format = _format(self.session, "output")
        self._convert: dict[tuple[int, int], Resampler] = {}  # (from, to) rates
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = False
        # What the caller heard of the current assistant item, for truncation.
        self._item: str | None = None
        self._item_ms = 0.0  # its audio received so far; what is still queued was not heard
        self.stats = {"audio_in": 0, "audio_out_ms": 0, "barge_ins": 0, "reconnects": 0}
        self._responding: set[str] = set()  # responses under way (created, not done)
        self._respond_when_done = False  # a function output's response waits for them
        self._held: list[_Held] = []
        self.paused = False
        self._muted: set[str] = set()  # responses whose audio is dropped (see `pause`)
        media.on_audio = self._caller_audio

    # ---- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._closed = True
        self._release_all()
        self._outbox.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @property
    def outbox(self) -> asyncio.Queue[dict[str, Any] | None]:
        """The client events waiting to go to the model, in order (None: close)."""
        return self._outbox

    def send(self, event: dict[str, Any]) -> None:
        """A client event to the model (from the sideband, or the gateway itself)."""
        if not self._closed:
            self._outbox.put_nowait(event)

    async def _run(self) -> None:
        attempt = 0
        first = True
        while not self._closed:
            try:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                async with connect(self.url, additional_headers=headers,
                                              max_size=16 << 20, open_timeout=10) as ws:
                    self.connected = True
                    attempt = 0
                    self.on_status("connected" if first else "reconnected", self.url)
                    await ws.send(json.dumps({"type": "session.update",
                                              "session": self.session}))
                    if self.greet and first:
                        await ws.send(json.dumps({"type": "response.create"}))
                    first = False
                    sender = asyncio.create_task(self._send_loop(ws))
                    try:
                        async for raw in ws:
                            self.server_event(json.loads(raw))
                    finally:
                        sender.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await sender
                        self.connection_lost()
            except (OSError, websockets.exceptions.WebSocketException, TimeoutError,
                    ValueError) as exc:
                self.connected = False
                if self._closed:
                    return
                attempt += 1
                if attempt > self.reconnects:
                    self.on_status("failed", f"{type(exc).__name__}: {exc}")
                    return
                self.stats["reconnects"] += 1
                self.on_status("dropped", f"{type(exc).__name__}: {exc}; reconnecting "
                                          f"({attempt}/{self.reconnects})")
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            self.connected = False
            if self._closed:
                return
            attempt += 1  # the server closed the connection
            if attempt > self.reconnects:
                self.on_status("failed", "the model closed the connection")
                return
            self.stats["reconnects"] += 1
            self.on_status("dropped", f"the model closed the connection; reconnecting "
                                      f"({attempt}/{self.reconnects})")
            await asyncio.sleep(self.backoff * 2 ** (attempt - 1))

    async def _send_loop(self, ws: Any) -> None:
        while True:
            event = await self._outbox.get()
            if event is None:
                await ws.close()
                return
            await ws.send(json.dumps(event))

    # ---- where the audio goes -----------------------------------------------------------

    def pause(self) -> None:
        """Stop the audio both ways: no caller audio to the model, the model's audio of the
        responses under way dropped, what is queued for the caller cleared. The media
        session's `on_audio` is left as it is (another may take it meanwhile)."""
        self.paused = True
        self._muted |= self._responding
        self.media.clear_playout()
        self._item = None

    def move(self, media: MediaSession) -> None:
        """Talk through `media` from now on (unpaused): its audio to the model, the
        model's audio played to it; barge-in and truncation work on it. What the model
        was saying, and the audio it has not yet taken in, do not follow."""
        old = self.media
        self._muted |= self._responding
        old.clear_playout()
        if old is not media and old.on_audio == self._caller_audio:
            old.on_audio = None
        self.media = media
        self._item = None
        self.paused = False
        media.on_audio = self._caller_audio
        self.send({"type": "input_audio_buffer.clear"})

    def set_tools(self, tools: list[dict[str, Any]]) -> None:
        """The session's tools from now on (kept across reconnections)."""
        self.session["tools"] = tools
        self.send({"type": "session.update", "session": {"type": "realtime", "tools": tools}})

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The session's tools as the bridge last sent them."""
        tools = self.session.get("tools")
        return [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []

    # ---- audio ----------------------------------------------------------------------

    def _resample(self, pcm: np.ndarray, rate: int, to: int) -> np.ndarray:
        if rate == to:
            return pcm
        key = (rate, to)
        resampler = self._convert.get(key)
        if resampler is None:
            resampler = self._convert[key] = Resampler(rate, to)
        return resampler.process(pcm)

    def _caller_audio(self, pcm: np.ndarray) -> None:
        """One 20 ms frame of the caller (at the call's rate) to the model, in the
        session's input format: a wideband call's 16 or 24 kHz goes to 24 kHz PCM16
        directly, never through 8 kHz."""
        if not self.connected or self.paused:
            return
        rate = self.media.rate
        if self.input_format == "audio/pcmu":
            data = ulaw_encode(self._resample(pcm, rate, PHONE_RATE))
        elif self.input_format == "audio/pcma":
            data = alaw_encode(self._resample(pcm, rate, PHONE_RATE))
        else:
            data = self._resample(pcm, rate, MODEL_RATE).tobytes()
        self.stats["audio_in"] += 1
        self._outbox.put_nowait({"type": "input_audio_buffer.append",
                                 "audio": base64.b64encode(data).decode()})

    def agent_audio(self, item_id: str, b64: str) -> None:
        """A delta of the agent's audio (base64, in the session's output format): queued
        to be played out to the caller in paced frames."""
        data = base64.b64decode(b64)
        if self.output_format == "audio/pcmu":
            self.media.play_phone(ulaw_decode(data))
            ms = len(data) / 8
        elif self.output_format == "audio/pcma":
            self.media.play_phone(alaw_decode(data))
            ms = len(data) / 8
        else:
            self.media.play(np.frombuffer(data, np.int16))
            ms = len(data) / BYTES_PER_MS
        if item_id != self._item:
            self._item, self._item_ms = item_id, 0.0
        self._item_ms += ms
        self.stats["audio_out_ms"] += int(ms)

    def _barge_in(self) -> None:
        """The caller spoke over the agent: stop its audio, truncate what was not heard."""
        if self.paused:
            return
        queued = self.media.queued_ms
        self.media.clear_playout()
        self._poll_held()
        if self._item is None or queued <= 0:
            return
        heard = max(0, int(self._item_ms - queued))
        self.stats["barge_ins"] += 1
        self.send({"type": "conversation.item.truncate", "item_id": self._item,
                   "content_index": 0, "audio_end_ms": heard})
        self._item = None

    # ---- server events --------------------------------------------------------------

    def server_event(self, event: dict[str, Any]) -> None:
        """One event from the model (a Realtime server event): audio to the caller,
        barge-in, the transfer tool, and everything to the call's sideband."""
        kind = event.get("type")
        if kind in ("response.created", "response.done"):
            self._response(kind, event.get("response"))
        elif kind == "response.output_audio.delta" and (
                self.paused or event.get("response_id") in self._muted):
            pass  # said to no one: the model is paused or has moved since
        elif kind == "response.output_audio.delta":
            if self._speech_stopped is not None:
                self.on_latency(time.monotonic() - self._speech_stopped)
                self._speech_stopped = None
            self.agent_audio(str(event.get("item_id", "")), str(event.get("delta", "")))
        elif kind == "input_audio_buffer.speech_stopped":
            self._speech_stopped = time.monotonic()
        elif kind == "input_audio_buffer.speech_started":
            self._barge_in()
        self.on_event(event)
        if kind == "response.function_call_arguments.done" and self.on_function_call:
            # After the fan-out: the sideband sees the call before what it sets going.
            self.on_function_call(str(event.get("name", "")), str(event.get("call_id", "")),
                                  str(event.get("arguments", "")))

    def _response(self, kind: str, response: object) -> None:
        rid = response.get("id") if isinstance(response, dict) else None
        key = rid if isinstance(rid, str) else ""
        if kind == "response.created":
            self._responding.add(key)
        else:
            self._responding.discard(key)
            self._muted.discard(key)
            if not key:  # a server that names no responses: none is under way now
                self._responding.clear()
            if not self._responding and self._respond_when_done:
                self._respond_when_done = False
                self.send({"type": "response.create"})
        self._poll_held()

    # ---- what waits for the agent's words ---------------------------------------------

    def after_speech(self, limit: float, then: Callable[[str, float], None]) -> None:
        """Run `then(outcome, waited)` once the model has finished its responses under
        way and their audio is played out to the caller ("played"), or after `limit`
        seconds ("timed_out"), or when the bridge closes first ("closed")."""
        held = _Held(SpeechWait(asyncio.get_running_loop().time(), limit), then)
        if self._closed:
            self._finish(held, held.wait.close(held.wait.started))
            return
        self._held.append(held)
        self._poll_held()

    def _poll_held(self) -> None:
        if not self._held:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for held in list(self._held):
            outcome = held.wait.poll(now, speaking=bool(self._responding),
                                     queued_ms=self.media.queued_ms)
            if held.timer is not None:
                held.timer.cancel()
                held.timer = None
            if outcome is not None:
                self._finish(held, outcome)
            elif held.wait.deadline is not None:
                held.timer = loop.call_at(held.wait.deadline, self._poll_held)

    def _finish(self, held: _Held, outcome: str) -> None:
        if held in self._held:
            self._held.remove(held)
        if held.timer is not None:
            held.timer.cancel()
            held.timer = None
        try:
            held.then(outcome, held.wait.waited)
        except Exception:
            log.exception("call %s: what waited for the agent's words failed", self.call_id)

    def connection_lost(self) -> None:
        """The model's responses under way ended with its connection."""
        self._responding.clear()
        self._muted.clear()
        self._respond_when_done = False
        self._poll_held()

    def _release_all(self) -> None:
        if not self._held:
            return
        now = asyncio.get_running_loop().time()
        for held in list(self._held):
            self._finish(held, held.wait.close(now))

    def dtmf(self, digit: str) -> None:
        """A DTMF digit from the caller: told to the sideband as OpenAI's SIP does."""
        self.on_event({"type": "input_audio_buffer.dtmf_event_received", "event": digit,
                       "received_at": int(time.time())})

    def function_output(self, call_id: str, output: str, *, respond: bool = True) -> None:
        """The result of a function call back to the model, and a new response."""
        self.send({"type": "conversation.item.create",
                   "item": {"type": "function_call_output", "call_id": call_id,
                            "output": output}})
        if respond:
            self.respond()

    def respond(self) -> None:
        """Ask the model for a response: now, or once the one under way is done (OpenAI
        refuses a second one at a time)."""
        if self._responding:
            self._respond_when_done = True
        else:
            self.send({"type": "response.create"})
