"""One response of the local model (`response.create`): its events from
`response.created` to `response.done`, the assistant's message as text or as speech (audio
and transcript deltas, the words spread over the audio), and the policy's function call.
`response.instructions` in a form of `sipbridge.realtime.brief` (a warm transfer's
briefing) say the given text, or a summary of the caller's words, instead of the policy.
A `response.cancel` stops it before its next piece of audio."""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sipbridge.localmodel import tts
from sipbridge.localmodel.policy import Policy, Reply
from sipbridge.localmodel.tts import Synthesizer
from sipbridge.media.g711 import alaw_encode, ulaw_encode
from sipbridge.media.resample import MODEL_RATE, PHONE_RATE, Resampler
from sipbridge.realtime.brief import read_brief
from sipbridge.realtime.ids import new_id

log = logging.getLogger("sipbridge.localmodel")

SAMPLES_PER_MS = MODEL_RATE // 1000


@dataclass(eq=False)
class PendingResponse:
    """A response requested (queued) or under way."""

    id: str
    params: dict[str, Any]
    auto: bool
    cancel_reason: str | None = None
    started: bool = False
    done: bool = False



class Voice(Protocol):
    """What a response uses of the model server."""

    @property
    def policy(self) -> Policy: ...

    @property
    def synthesizer(self) -> Synthesizer: ...

    @property
    def chunk_ms(self) -> int: ...


class ResponseSession(Protocol):
    """What a response uses of its session."""

    conversation_id: str
    greeted: bool
    last_response_id: str | None

    @property
    def server(self) -> Voice: ...

    def session_object(self) -> dict[str, Any]: ...

    def audio_config(self, side: str) -> dict[str, Any]: ...

    async def emit(self, event: dict[str, Any]) -> None: ...

    def insert_item(self, item: dict[str, Any]) -> str | None: ...

    def decide(self, tools: list[dict[str, Any]]) -> Reply: ...

    def brief(self, form: str, text: str) -> Reply: ...


class ResponseRun:
    """One response: its events, from response.created to response.done."""

    def __init__(self, session: ResponseSession, response: PendingResponse) -> None:
        self.s = session
        self.r = response
        self.params = response.params
        config = session.session_object()
        self.in_band = self.params.get("conversation") != "none"
        modalities = self.params.get("output_modalities") or config.get("output_modalities")
        self.audio = "audio" in (modalities or ["audio"])
        self.modalities = ["audio"] if self.audio else ["text"]
        tools = self.params.get("tools")
        tools = tools if isinstance(tools, list) else config.get("tools") or []
        choice = self.params.get("tool_choice", config.get("tool_choice"))
        self.tools: list[dict[str, Any]] = [] if choice == "none" else [
            t for t in tools if isinstance(t, dict)]
        output = session.audio_config("output")
        audio = self.params.get("audio")
        given = audio.get("output") if isinstance(audio, dict) else None
        if isinstance(given, dict):
            output = {**output, **{k: v for k, v in given.items() if v is not None}}
        voice = output.get("voice")
        self.voice = voice if isinstance(voice, str) else None
        speed = output.get("speed")
        self.speed = float(speed) if isinstance(speed, int | float) else 1.0
        fmt = output.get("format")
        self.format = fmt if isinstance(fmt, dict) else {"type": "audio/pcm", "rate": 24000}
        self.output: list[dict[str, Any]] = []

    def _object(self, status: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "object": "realtime.response", "id": self.r.id, "status": status,
            "status_details": details, "output": self.output,
            "conversation_id": self.s.conversation_id if self.in_band else None,
            "output_modalities": self.modalities, "max_output_tokens": "inf",
            "audio": {"output": {"format": self.format, "voice": self.voice}},
            "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0},
            "metadata": self.params.get("metadata") if isinstance(
                self.params.get("metadata"), dict) else None,
        }

    @property
    def cancelled(self) -> bool:
        return self.r.cancel_reason is not None

    async def _item_added(self, item: dict[str, Any]) -> None:
        index = len(self.output)
        self.output.append(item)
        await self.s.emit({"type": "response.output_item.added", "response_id": self.r.id,
                           "output_index": index, "item": item})
        if self.in_band:
            previous = self.s.insert_item(item)
            await self.s.emit({"type": "conversation.item.added",
                               "previous_item_id": previous, "item": item})

    async def _item_done(self, item: dict[str, Any]) -> None:
        await self.s.emit({"type": "response.output_item.done", "response_id": self.r.id,
                           "output_index": self.output.index(item), "item": item})
        if self.in_band:
            await self.s.emit({"type": "conversation.item.done", "item": item})

    async def run(self) -> None:
        self.r.started = True
        self.s.last_response_id = self.r.id
        await self.s.emit({"type": "response.created", "response": self._object("in_progress")})
        if self.cancelled:
            await self._done()
            return
        policy = self.s.server.policy
        brief = read_brief(self.params.get("instructions"))
        if brief is not None and self.in_band:  # a warm transfer's briefing
            reply = self.s.brief(*brief)
        elif self.in_band:
            decide = self.s.decide
            # A policy that waits on the network (chat completions) runs in a thread.
            reply = (await asyncio.to_thread(decide, self.tools)
                     if getattr(policy, "blocking", False) else decide(self.tools))
        else:
            reply = policy.respond(None, self.tools)
        self.s.greeted = True
        await self._message(reply.text)
        if reply.tool_call is not None and not self.cancelled:
            await self._function_call(*reply.tool_call)
        await self._done()

    async def _done(self) -> None:
        if self.cancelled:
            details = {"type": "cancelled", "reason": self.r.cancel_reason}
            await self.s.emit({"type": "response.done",
                               "response": self._object("cancelled", details)})
        else:
            await self.s.emit({"type": "response.done", "response": self._object("completed")})

    async def _message(self, text: str) -> None:
        item_id = new_id("item")
        item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "message",
                                "role": "assistant", "status": "in_progress", "content": []}
        await self._item_added(item)
        where = {"response_id": self.r.id, "item_id": item_id, "output_index":
                 self.output.index(item), "content_index": 0}
        if not self.audio:
            await self.s.emit({"type": "response.content_part.added", **where,
                               "part": {"type": "text", "text": ""}})
            await self.s.emit({"type": "response.output_text.delta", **where, "delta": text})
            await self.s.emit({"type": "response.output_text.done", **where, "text": text})
            await self.s.emit({"type": "response.content_part.done", **where,
                               "part": {"type": "text", "text": text}})
            item.update(status="completed", content=[{"type": "output_text", "text": text}])
            await self._item_done(item)
            return
        await self.s.emit({"type": "response.content_part.added", **where,
                           "part": {"type": "audio", "transcript": ""}})
        said = await self._speak(where, text)
        complete = not self.cancelled
        transcript = text if complete else said
        await self.s.emit({"type": "response.output_audio.done", **where})
        await self.s.emit({"type": "response.output_audio_transcript.done", **where,
                           "transcript": transcript})
        await self.s.emit({"type": "response.content_part.done", **where,
                           "part": {"type": "audio", "transcript": transcript}})
        item.update(status="completed" if complete else "incomplete",
                    content=[{"type": "output_audio", "transcript": transcript}])
        await self._item_done(item)

    async def _speak(self, where: dict[str, Any], text: str) -> str:
        """Audio and transcript deltas, clause by clause (`tts.clauses`): the first clause's
        audio goes out as soon as it is synthesised, while the next is synthesised; each
        clause's words are spread over its audio. Returns the words sent (all of them
        unless cancelled)."""
        pieces = tts.clauses(text)
        encoder = _Encoder(self.format, self.s.server.chunk_ms)
        said: list[str] = []
        upcoming = self._synthesize(pieces[0]) if pieces else None
        for index, piece in enumerate(pieces):
            assert upcoming is not None
            pcm = await upcoming
            upcoming = None
            if self.cancelled:
                break
            last = index == len(pieces) - 1
            if not last:
                upcoming = self._synthesize(pieces[index + 1])
            chunks = encoder.take(tts.clause_audio(pcm, piece, last), flush=last)
            words = piece.split()
            sent = await self._send(where, words, chunks, first=not said)
            said += words[:sent]
            if sent < len(words):
                break
        if upcoming is not None:  # cancelled: the clause under way is not wanted
            upcoming.cancel()
        return " ".join(said)

    def _synthesize(self, piece: str) -> asyncio.Future[np.ndarray]:
        async def run() -> np.ndarray:
            try:
                pcm: np.ndarray = await asyncio.to_thread(
                    self.s.server.synthesizer, piece, self.voice, self.speed)
                return pcm
            except Exception as exc:  # noqa: BLE001 - any synthesizer: the transcript goes out
                log.warning("local model: speech synthesis failed: %s", exc)
                return np.zeros(0, np.int16)
        return asyncio.ensure_future(run())

    async def _send(self, where: dict[str, Any], words: list[str], chunks: list[bytes],
                    *, first: bool) -> int:
        """One clause: its audio chunks, its words spread over them (all of its words at
        once when it has no audio of its own); returns how many of its words were sent."""
        sent = 0
        for index, chunk in enumerate(chunks):
            if self.cancelled:
                return sent
            upto = math.ceil(len(words) * (index + 1) / len(chunks))
            if upto > sent:
                delta = ("" if first and not sent else " ") + " ".join(words[sent:upto])
                await self.s.emit({"type": "response.output_audio_transcript.delta", **where,
                                   "delta": delta})
                sent = upto
            await self.s.emit({"type": "response.output_audio.delta", **where,
                               "delta": base64.b64encode(chunk).decode("ascii")})
            await asyncio.sleep(0)  # let a response.cancel in
        if sent < len(words) and not self.cancelled:
            await self.s.emit({"type": "response.output_audio_transcript.delta", **where,
                               "delta": ("" if first and not sent else " ")
                               + " ".join(words[sent:])})
            sent = len(words)
        return sent

    async def _function_call(self, name: str, arguments: str) -> None:
        call_id = new_id("call")
        item: dict[str, Any] = {"id": new_id("item"), "object": "realtime.item",
                                "type": "function_call", "status": "in_progress",
                                "name": name, "call_id": call_id, "arguments": ""}
        await self._item_added(item)
        where = {"response_id": self.r.id, "item_id": item["id"],
                 "output_index": self.output.index(item), "call_id": call_id}
        await self.s.emit({"type": "response.function_call_arguments.delta", **where,
                           "delta": arguments})
        await self.s.emit({"type": "response.function_call_arguments.done", **where,
                           "name": name, "arguments": arguments})
        item.update(status="completed", arguments=arguments)
        await self._item_done(item)


class _Encoder:
    """24 kHz PCM16 into the output format, in `chunk_ms` pieces; what falls short of a
    piece waits for the next clause (the resampler's state too), `flush` sends it."""

    def __init__(self, fmt: dict[str, Any], chunk_ms: int) -> None:
        self.kind = fmt.get("type")
        self.g711 = self.kind in ("audio/pcmu", "audio/pcma")
        self.resampler = Resampler(MODEL_RATE, PHONE_RATE) if self.g711 else None
        self.step = (PHONE_RATE // 1000 * chunk_ms if self.g711
                     else SAMPLES_PER_MS * 2 * chunk_ms)
        self.pending = b""

    def take(self, pcm: np.ndarray, *, flush: bool) -> list[bytes]:
        if self.resampler is not None:
            pcm8 = self.resampler.process(pcm)
            data = ulaw_encode(pcm8) if self.kind == "audio/pcmu" else alaw_encode(pcm8)
        else:
            data = pcm.astype("<i2").tobytes()
        data = self.pending + data
        cut = len(data) if flush else len(data) - len(data) % self.step
        self.pending = data[cut:]
        return [data[i:i + self.step] for i in range(0, cut, self.step)]
