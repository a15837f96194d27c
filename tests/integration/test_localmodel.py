"""The built-in local model over a real WebSocket, as the gateway (or any OpenAI Realtime
client) uses it. Every server event received is validated against the `openai` SDK's
`RealtimeServerEvent` union, and must carry no field the SDK does not know (except the
session's `object` and `id`, which OpenAI sends too)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from openai.types.realtime import RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter

from sipbridge.calls.tool import tool_definition
from sipbridge.localmodel import tts
from sipbridge.localmodel.server import LocalModelServer
from sipbridge.localmodel.stt import Transcriber
from sipbridge.media.g711 import ulaw_decode, ulaw_encode
from sipbridge.media.resample import resample

needs_espeak = pytest.mark.skipif(not tts.available(),
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")
pytestmark = [pytest.mark.integration, needs_espeak]

ADAPTER: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
ALLOWED_EXTRAS = {("session", "object"), ("session", "id")}
GREETING = "Hello, thanks for calling. How can I help you?"
TRANSCRIBER = Transcriber()
needs_stt = pytest.mark.skipif(not TRANSCRIBER.available(),
                               reason=f"speech to text unavailable: {TRANSCRIBER.reason}")
RESPONSE_EVENTS = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
]
FUNCTION_CALL_EVENTS = [
    "response.output_item.added",
    "conversation.item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "conversation.item.done",
]


def speech(text: str = "Hello. Can you please transfer me to a human?") -> np.ndarray:
    """espeak-ng saying `text`, 24 kHz int16."""
    return tts.synthesize(text)


def phone_path(pcm24k: np.ndarray) -> np.ndarray:
    """24 kHz audio taken down a phone line and back: 8 kHz, mu-law, 24 kHz."""
    return resample(ulaw_decode(ulaw_encode(resample(pcm24k, 24000, 8000))), 8000, 24000)


def _extras(value: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Fields of a validated SDK model (recursively) that the SDK does not declare."""
    found: list[tuple[str, ...]] = []
    if isinstance(value, BaseModel):
        found += [(*path, key) for key in (value.model_extra or {})]
        for name in type(value).model_fields:
            found += _extras(getattr(value, name), (*path, name))
    elif isinstance(value, list):
        for item in value:
            found += _extras(item, path)
    return found


def check(event: dict[str, Any]) -> None:
    """The event is one of the SDK's server events, exactly."""
    model = ADAPTER.validate_python(event)
    assert re.fullmatch(r"event_[0-9a-f]{8,}", event["event_id"]), event["event_id"]
    extras = set(_extras(model, ())) - ALLOWED_EXTRAS
    assert not extras, (event["type"], extras)


class Client:
    """A Realtime client over `websockets`; every event it receives is checked."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109 (per event)
        event: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        check(event)
        self.events.append(event)
        return event

    async def until(self, kind: str,
                    timeout: float = 15.0) -> list[dict[str, Any]]:  # noqa: ASYNC109 (overall)
        """Events up to and including the next one of type `kind`."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = await self.recv(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"no {kind} event within {timeout:g} s; events since: "
                                     f"{[e['type'] for e in got]}") from None
            got.append(event)
            if event["type"] == kind:
                return got

    async def append(self, pcm: np.ndarray, chunk: int = 480) -> None:
        """Stream 24 kHz audio as input_audio_buffer.append, 20 ms an event, at once."""
        for start in range(0, len(pcm), chunk):
            data = pcm[start:start + chunk].astype("<i2").tobytes()
            await self.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(data).decode()})


@asynccontextmanager
async def local_model(**options: Any) -> AsyncIterator[LocalModelServer]:
    options.setdefault("transcriber", TRANSCRIBER)
    server = LocalModelServer(**options)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def connect(server: LocalModelServer, query: str = "?model=gpt-realtime"
                  ) -> AsyncIterator[Client]:
    async with websockets.connect(server.url + query,
                                  additional_headers={"Authorization": "Bearer sk-anything"},
                                  max_size=None) as ws:
        client = Client(ws)
        created = await client.recv()
        assert created["type"] == "session.created"
        yield client


def kinds(events: list[dict[str, Any]], skip: tuple[str, ...] = (
        "response.output_audio.delta", "response.output_audio_transcript.delta")) -> list[str]:
    return [e["type"] for e in events if e["type"] not in skip]


def audio_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events
                    if e["type"] == "response.output_audio.delta")


def transcript_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events
                   if e["type"] == "response.output_audio_transcript.delta")


def arun(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(make())


def _session(**extra: Any) -> dict[str, Any]:
    return {"type": "realtime", "instructions": "You answer the phone for Acme.",
            "tools": [tool_definition({"human": "tel:+14155550123"})], **extra}


@needs_stt
def test_a_whole_call() -> None:
    """Greeting; the caller asks for a human; transfer_call; the outcome is spoken."""

    async def main() -> None:
        async with local_model() as server, connect(server) as client:
            await client.send({"type": "session.update", "session": _session()})
            updated = (await client.until("session.updated"))[-1]
            assert updated["session"]["instructions"] == "You answer the phone for Acme."
            assert updated["session"]["tools"][0]["name"] == "transfer_call"

            # The agent greets first.
            await client.send({"type": "response.create"})
            greeting = await client.until("response.done")
            assert kinds(greeting) == [*RESPONSE_EVENTS, "response.done"]
            audio = audio_of(greeting)
            assert 2.0 < len(audio) / 48000 < 5.0  # PCM16 at 24 kHz: about 3 s
            deltas = [e for e in greeting if e["type"] == "response.output_audio.delta"]
            assert all(len(base64.b64decode(e["delta"])) <= 4800 for e in deltas)  # <= 100 ms
            assert transcript_of(greeting) == GREETING
            assert greeting[-1]["response"]["status"] == "completed"
            assert greeting[-1]["response"]["output"][0]["content"][0]["transcript"] == GREETING

            # The caller asks for a human (phone-path audio), then is silent.
            request = phone_path(speech())
            started = time.perf_counter()
            await client.append(np.concatenate([np.zeros(12000, np.int16), request,
                                                np.zeros(36000, np.int16)]))
            turn = await client.until("response.done", timeout=30)
            elapsed = time.perf_counter() - started
            assert kinds(turn)[:6] == [
                "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed", "conversation.item.added",
                "conversation.item.done",
                "conversation.item.input_audio_transcription.completed",
            ]
            start, stop, committed, added = turn[:4]
            assert 200 <= start["audio_start_ms"] <= 500  # onset ~520 ms, 300 ms padding
            assert stop["audio_end_ms"] > start["audio_start_ms"] + 2500
            item_id = start["item_id"]
            assert stop["item_id"] == committed["item_id"] == added["item"]["id"] == item_id
            assert committed["previous_item_id"] == greeting[-1]["response"]["output"][0]["id"]
            transcription = turn[5]
            assert transcription["item_id"] == item_id
            assert "human" in transcription["transcript"].lower()
            response = turn[6:]
            assert kinds(response) == [*RESPONSE_EVENTS, *FUNCTION_CALL_EVENTS, "response.done"]
            assert transcript_of(response) == "Sure, I'll transfer you now."
            call = next(e for e in response
                        if e["type"] == "response.function_call_arguments.done")
            assert call["name"] == "transfer_call"
            assert json.loads(call["arguments"]) == {"target": "human"}
            assert re.fullmatch(r"call_[0-9a-f]+", call["call_id"])
            done = response[-1]["response"]
            assert [o["type"] for o in done["output"]] == ["message", "function_call"]
            assert done["output"][1]["call_id"] == call["call_id"]
            print(f"caller's turn: last audio sent -> response.done in {elapsed:.2f} s")

            # The gateway ran the transfer: its outcome, and the model says so.
            await client.send({"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": call["call_id"],
                "output": json.dumps({"status": "succeeded", "transfer_id": "xfer_1"})}})
            await client.send({"type": "response.create"})
            confirm = await client.until("response.done")
            assert kinds(confirm)[:2] == ["conversation.item.added", "conversation.item.done"]
            assert kinds(confirm)[2:] == [*RESPONSE_EVENTS, "response.done"]
            assert transcript_of(confirm) == "You're being transferred."
            assert len(audio_of(confirm)) > 48000 // 2

    arun(main)


def test_errors_are_error_events() -> None:
    async def main() -> None:
        async with local_model() as server, connect(server) as client:
            await client.send({"type": "session.update", "event_id": "evt_1",
                               "session": {"instructions": "x"}})
            error = await client.recv()
            assert error["type"] == "error"
            assert error["error"]["param"] == "session.type"
            assert error["error"]["event_id"] == "evt_1"
            assert "type" in error["error"]["message"]
            cases: list[tuple[dict[str, Any], str]] = [
                ({"type": "no.such.event"}, "type"),
                ({"audio": "AAAA"}, "type"),
                ({"type": "input_audio_buffer.append"}, "audio"),
                ({"type": "input_audio_buffer.append", "audio": "!!"}, "audio"),
                ({"type": "conversation.item.create", "item": {"type": "banana"}}, "item.type"),
                ({"type": "conversation.item.delete", "item_id": "nope"}, "item_id"),
            ]
            for bad, param in cases:
                await client.send(bad)
                error = await client.recv()
                assert error["type"] == "error" and error["error"]["param"] == param, error
            await client.ws.send("{not json")
            assert (await client.recv())["error"]["code"] == "invalid_json"
            await client.send({"type": "input_audio_buffer.commit"})
            error = await client.recv()
            assert error["error"]["code"] == "input_audio_buffer_commit_empty"
            await client.send({"type": "response.cancel"})
            assert (await client.recv())["error"]["code"] == "response_cancel_not_active"
            # ... and the session goes on.
            await client.send({"type": "session.update", "session": {"type": "realtime"}})
            assert (await client.recv())["type"] == "session.updated"

    arun(main)


def _slow(seconds: float) -> Callable[[str, str | None, float], np.ndarray]:
    def synthesize(text: str, voice: str | None, speed: float) -> np.ndarray:
        time.sleep(seconds)
        return tts.synthesize(text, voice, speed=speed)
    return synthesize


def test_cancel_and_barge_in_stop_the_audio() -> None:
    async def main() -> None:
        async with local_model(synthesizer=_slow(0.4)) as server, connect(server) as client:
            await client.send({"type": "response.create"})
            created = await client.until("response.created")
            await client.send({"type": "response.cancel",
                               "response_id": created[-1]["response"]["id"]})
            events = await client.until("response.done")
            assert audio_of(events) == b""
            done = events[-1]["response"]
            assert done["status"] == "cancelled"
            assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
            assert done["output"][0]["status"] == "incomplete"

            # The caller talks over a response: server VAD cancels it.
            await client.send({"type": "response.create"})
            await client.until("response.created")
            await client.append(np.concatenate([speech("Wait a moment."),
                                                np.zeros(2400, np.int16)]))
            events = await client.until("response.done")
            assert "input_audio_buffer.speech_started" in kinds(events)
            assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"
            assert audio_of(events) == b""

    arun(main)


def test_g711_in_and_out_without_speech_to_text(tmp_path: Path) -> None:
    """audio/pcmu both ways; with no speech to text the turn's transcription fails and the
    policy's fallback answers."""

    async def main() -> None:
        async with local_model(transcriber=Transcriber(model_path=tmp_path)) as server, \
                connect(server) as client:
            pcmu = {"type": "audio/pcmu"}
            await client.send({"type": "session.update", "session": _session(
                audio={"input": {"format": pcmu}, "output": {"format": pcmu}})})
            await client.until("session.updated")
            pcm8 = resample(np.concatenate([np.zeros(12000, np.int16), speech(),
                                            np.zeros(36000, np.int16)]), 24000, 8000)
            data = ulaw_encode(pcm8)
            for start in range(0, len(data), 160):
                await client.send({"type": "input_audio_buffer.append",
                                   "audio": base64.b64encode(data[start:start + 160]).decode()})
            events = await client.until("response.done")
            failed = next(e for e in events if e["type"] ==
                          "conversation.item.input_audio_transcription.failed")
            assert "Speech to text is unavailable" in failed["error"]["message"]
            assert failed["error"]["code"] == "transcription_unavailable"
            assert transcript_of(events) == server.policy.fallback
            ulaw = audio_of(events)
            deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
            assert all(len(base64.b64decode(e["delta"])) <= 800 for e in deltas)
            level = np.sqrt(np.mean(ulaw_decode(ulaw).astype(np.float64) ** 2))
            assert len(ulaw) / 8000 > 2.0 and level > 1000  # 8 kHz mu-law speech

    arun(main)


def test_text_items_and_conversation_events() -> None:
    async def main() -> None:
        async with local_model() as server, connect(server) as client:
            await client.send({"type": "session.update", "session": _session(
                output_modalities=["text"], audio={"input": {"turn_detection": None}})})
            await client.until("session.updated")
            await client.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "When are you open?"}]}})
            added = (await client.until("conversation.item.done"))[0]
            await client.send({"type": "response.create"})
            events = await client.until("response.done")
            assert kinds(events) == [
                "response.created", "response.output_item.added", "conversation.item.added",
                "response.content_part.added", "response.output_text.delta",
                "response.output_text.done", "response.content_part.done",
                "response.output_item.done", "conversation.item.done", "response.done"]
            text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
            assert "Monday to Friday" in text
            answer = events[-1]["response"]["output"][0]["id"]
            await client.send({"type": "conversation.item.retrieve",
                               "item_id": added["item"]["id"]})
            retrieved = await client.recv()
            assert retrieved["item"]["content"][0]["text"] == "When are you open?"
            await client.send({"type": "conversation.item.truncate", "item_id": answer,
                               "content_index": 0, "audio_end_ms": 300})
            truncated = await client.recv()
            assert truncated["type"] == "conversation.item.truncated"
            assert truncated["audio_end_ms"] == 300
            await client.send({"type": "conversation.item.delete", "item_id": answer})
            assert (await client.recv())["type"] == "conversation.item.deleted"
            await client.send({"type": "output_audio_buffer.clear"})
            assert (await client.recv())["type"] == "output_audio_buffer.cleared"
            # No VAD: the client commits.
            await client.send({"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(bytes(9600)).decode()})
            await client.send({"type": "input_audio_buffer.clear"})
            assert (await client.recv())["type"] == "input_audio_buffer.cleared"
            await client.send({"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(bytes(9600)).decode()})
            await client.send({"type": "input_audio_buffer.commit"})
            assert kinds(await client.until("conversation.item.done")) == [
                "input_audio_buffer.committed", "conversation.item.added",
                "conversation.item.done"]
            # 200 ms of silence: an empty transcript, or the failure without the model.
            last = await client.recv()
            assert last["type"].startswith("conversation.item.input_audio_transcription.")

    arun(main)


def test_the_openai_sdk_as_client() -> None:
    openai = pytest.importorskip("openai")

    async def main() -> None:
        async with local_model() as server:
            client = openai.AsyncOpenAI(api_key="sk-local",
                                        websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")
            async with client.realtime.connect(model="gpt-realtime") as conn:
                await conn.session.update(session=_session())
                await conn.response.create()
                seen = []
                async for event in conn:
                    seen.append(event.type)
                    if event.type == "response.done":
                        assert event.response.status == "completed"
                        break
            assert seen[:2] == ["session.created", "session.updated"]
            assert "response.output_audio.delta" in seen

    arun(main)


def test_run_alone_with_python_m(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("greeting: Local hello.\nfallback: Pardon?\n", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipbridge.localmodel", "--port", "0", "--policy", str(policy)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 30
        while "sipbridge-localmodel: listening on" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the local model exited"
        url = re.search(r"listening on (ws://\S+)", line)
        assert url, f"the local model did not say where it listens within 30 s: {line!r}"

        async def main() -> None:
            async with websockets.connect(url.group(1) + "?model=x") as ws:
                client = Client(ws)
                assert (await client.recv())["type"] == "session.created"
                await client.send({"type": "response.create"})
                assert transcript_of(await client.until("response.done")) == "Local hello."

        arun(main)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def detect_turns(client: Client, kind: str, **options: Any) -> None:
    """The session finds turns with `kind` (server_vad, semantic_vad) and creates no
    response of its own."""
    await client.send({"type": "session.update", "session": _session(audio={"input": {
        "turn_detection": {"type": kind, **options, "create_response": False}}})})
    await client.until("session.updated")


async def paced(client: Client, pcm: np.ndarray, chunk: int = 480) -> None:
    """Stream 24 kHz audio as a caller speaks it: 20 ms an event, in real time."""
    start = time.monotonic()
    for n, at in enumerate(range(0, len(pcm), chunk)):
        data = pcm[at:at + chunk].astype("<i2").tobytes()
        await client.send({"type": "input_audio_buffer.append",
                           "audio": base64.b64encode(data).decode()})
        await asyncio.sleep(max(0.0, start + (n + 1) * 0.020 - time.monotonic()))


@needs_stt
def test_semantic_vad_waits_out_a_pause_mid_sentence_and_ends_a_complete_one_soon() -> None:
    """"I would like... to speak to a human.": the pause after "like" (700 ms, past the
    pause that ends complete words at eagerness low, 600 ms, and within its longest
    silence, 3 s) is no end of turn, as the words so far are not complete; the pause
    after "human." ends it well before that longest silence. One turn, its transcript the
    whole sentence, the words so far sent as a transcription delta."""

    async def main() -> None:
        async with local_model() as server, connect(server) as client:
            await detect_turns(client, "semantic_vad", eagerness="low")
            first, second = phone_path(speech("I would like")), phone_path(speech(
                "to speak to a human."))
            lead, pause = np.zeros(9600, np.int16), np.zeros(16800, np.int16)  # 0.4, 0.7 s
            spoken = np.concatenate([lead, first, pause, second])
            await paced(client, np.concatenate([spoken, np.zeros(84000, np.int16)]))
            events = await client.until(
                "conversation.item.input_audio_transcription.completed", timeout=20)
            await asyncio.sleep(0.5)
            while True:  # anything after it (a second turn) is a failure below
                try:
                    events.append(await client.recv(timeout=0.2))
                except TimeoutError:
                    break
            seen = kinds(events)
            assert seen.count("input_audio_buffer.speech_started") == 1, seen
            assert seen.count("input_audio_buffer.speech_stopped") == 1, seen
            assert seen.count("input_audio_buffer.committed") == 1, seen
            deltas = [e["delta"] for e in events
                      if e["type"] == "conversation.item.input_audio_transcription.delta"]
            assert deltas and "like" in deltas[0].lower(), seen
            done = next(e for e in events
                        if e["type"] == "conversation.item.input_audio_transcription.completed")
            assert "like" in done["transcript"].lower() and "human" in done["transcript"].lower()
            assert "".join(deltas) == done["transcript"][:len("".join(deltas))]
            stop = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
            spoken_ms = int(np.flatnonzero(np.abs(spoken) > 500)[-1]) * 1000 // 24000
            # ended by its words (600 ms after them, and their transcription), well before
            # the longest silence (eagerness low: 3000 ms) ran out
            assert 550 <= stop["audio_end_ms"] - spoken_ms < 2400, (stop, spoken_ms)

    arun(main)


@needs_stt
def test_a_caller_who_never_pauses_gets_turns_of_at_most_30_s() -> None:
    async def main() -> None:
        async with local_model() as server, connect(server) as client:
            await detect_turns(client, "server_vad")
            words = phone_path(speech())
            loud = np.flatnonzero(np.abs(words) > 500)
            words = words[loud[0]:loud[-1]]  # no silence at either end: no pause between
            talk = np.tile(words, int(34 * 24000 / len(words)) + 1)
            await client.append(talk)
            turn = await client.until("input_audio_buffer.committed", timeout=20)
            start, stop = turn[0], turn[-2]
            assert (start["type"], stop["type"]) == ("input_audio_buffer.speech_started",
                                                     "input_audio_buffer.speech_stopped")
            assert 30_000 <= stop["audio_end_ms"] - start["audio_start_ms"] <= 30_100
            following = await client.until("input_audio_buffer.speech_started", timeout=20)
            assert following[-1]["item_id"] != start["item_id"]  # the caller goes on: a turn

    arun(main)


@needs_stt
def test_noise_silence_and_clipped_speech_keep_turns_bounded() -> None:
    """A minute of loud noise is at most turns of 30 s; silence is no turn at all;
    speech clipped at a third of full scale is still heard and transcribed."""

    async def main() -> None:
        async with local_model() as server, connect(server) as client:
            await detect_turns(client, "semantic_vad")
            await client.append(np.zeros(24000 * 20, np.int16))  # 20 s of silence
            await client.send({"type": "input_audio_buffer.clear"})
            cleared = await client.until("input_audio_buffer.cleared")
            assert not [e for e in cleared if e["type"].startswith("input_audio_buffer.speech")]

            rng = np.random.default_rng(5)
            noise = rng.normal(0, 9000, 24000 * 65).clip(-32768, 32767).astype(np.int16)
            await client.append(noise)
            await client.send({"type": "input_audio_buffer.clear"})
            events = await client.until("input_audio_buffer.cleared", timeout=60)
            starts = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
            stops = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
            for start, stop in zip(starts, stops, strict=False):
                assert stop["audio_end_ms"] - start["audio_start_ms"] <= 30_100

            clipped = phone_path(speech()).astype(np.int32) * 4
            clipped = clipped.clip(-11000, 11000).astype(np.int16)
            await client.append(np.concatenate([np.zeros(12000, np.int16), clipped,
                                                np.zeros(48000, np.int16)]))
            item_id = (await client.until("input_audio_buffer.committed"))[-1]["item_id"]
            while True:  # the noise's turns are transcribed first, in order
                done = (await client.until(
                    "conversation.item.input_audio_transcription.completed", timeout=30))[-1]
                if done["item_id"] == item_id:
                    break
            assert "human" in done["transcript"].lower(), done

    arun(main)


def test_sessions_past_the_limit_are_refused_with_503_until_one_ends() -> None:
    async def main() -> None:
        async with local_model(max_sessions=1) as server:
            async with connect(server):
                with pytest.raises(websockets.InvalidStatus) as refused:
                    async with websockets.connect(server.url):
                        pass
                response = refused.value.response
                assert response.status_code == 503
                assert response.headers["Retry-After"] == "5"
                assert json.loads(response.body)["error"]["code"] == "too_many_sessions"
                assert server.refused == 1
            for _ in range(50):  # the first session's end is seen by the server
                if not server._sessions:
                    break
                await asyncio.sleep(0.02)
            async with connect(server):  # room again
                pass

    arun(main)
