"""The agent bridge against a model server that replays OpenAI Realtime events.

The server speaks OpenAI's protocol from a scripted sequence (each event checked
against the `openai` package's own types before it is sent): `session.created`,
`session.updated`, and for `response.create` a response whose audio is a tone. The
gateway answers a SIPp call with `--auto-answer agent` bridged to it; the call's RTP
goes to the test's own receiver, so what the caller hears is timed here.

- the agent's audio reaches the caller as paced RTP;
- barge-in: the server reports `input_audio_buffer.speech_started` in the middle of a
  long answer; the agent's audio must stop within 200 ms, and the gateway must
  truncate the item at what was played;
- a dropped connection: the server closes it after the greeting; the bridge connects
  again and sends the session config again, and the call goes on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np
import pydantic
import pytest
import websockets
from openai.types.realtime import RealtimeServerEvent

from tests.integration.gateway import Gateway
from tests.integration.peers import RtpSink
from tests.integration.sipp import SCENARIOS, run_sipp

pytestmark = pytest.mark.integration

SERVER_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeServerEvent)
SILENCE = 0xFF  # a PCMU byte for 0


def tone(seconds: float, rate: int = 24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


class ReplayModel:
    """A Realtime model server in a thread: scripted OpenAI events, a log of what it got."""

    def __init__(self, answer_seconds: float, *, barge_in_after: float | None = None,
                 drop_after_first: bool = False) -> None:
        self.answer_seconds = answer_seconds
        self.barge_in_after = barge_in_after
        self.drop_after_first = drop_after_first
        self.received: list[dict[str, Any]] = []
        self.connections = 0
        self.barge_in_at: float | None = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._loop.run_until_complete,
                                        args=(self._main(),), daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(5), "the fake model server did not start listening within 5 s"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime?model=gpt-realtime"

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with websockets.serve(self._session, "127.0.0.1", 0) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _send(self, ws: Any, event: dict[str, Any]) -> None:
        event.setdefault("event_id", f"event_{len(self.received)}_{time.monotonic_ns()}")
        SERVER_EVENTS.validate_python(event)  # what OpenAI would send, by the SDK's types
        await ws.send(json.dumps(event))

    async def _session(self, ws: Any) -> None:
        self.connections += 1
        session = {"type": "realtime", "object": "realtime.session", "id": "sess_replay",
                   "model": "gpt-realtime", "output_modalities": ["audio"],
                   "instructions": "", "tools": [], "tool_choice": "auto",
                   "max_output_tokens": "inf"}
        await self._send(ws, {"type": "session.created", "session": session})
        async for raw in ws:
            event = json.loads(raw)
            self.received.append(event)
            if event["type"] == "session.update":
                await self._send(ws, {"type": "session.updated", "session": session})
            elif event["type"] == "response.create":
                await self._respond(ws)
                if self.drop_after_first and self.connections == 1:
                    await ws.close()
                    return

    async def _respond(self, ws: Any) -> None:
        n = sum(1 for e in self.received if e["type"] == "response.create")
        resp, item = f"resp_{n}", f"item_{n}"
        response = {"id": resp, "object": "realtime.response", "status": "in_progress",
                    "output": []}
        await self._send(ws, {"type": "response.created", "response": response})
        message = {"id": item, "type": "message", "role": "assistant", "status": "in_progress",
                   "content": []}
        await self._send(ws, {"type": "response.output_item.added", "response_id": resp,
                              "output_index": 0, "item": message})
        await self._send(ws, {"type": "response.content_part.added", "response_id": resp,
                              "item_id": item, "output_index": 0, "content_index": 0,
                              "part": {"type": "audio", "transcript": ""}})
        audio = tone(self.answer_seconds)
        chunk = 24000 * 2 // 5  # 200 ms
        for i in range(0, len(audio), chunk):
            await self._send(ws, {"type": "response.output_audio.delta", "response_id": resp,
                                  "item_id": item, "output_index": 0, "content_index": 0,
                                  "delta": base64.b64encode(audio[i:i + chunk]).decode()})
        await self._send(ws, {"type": "response.output_audio.done", "response_id": resp,
                              "item_id": item, "output_index": 0, "content_index": 0})
        done = dict(response, status="completed")
        await self._send(ws, {"type": "response.done", "response": done})
        if self.barge_in_after is not None:
            await asyncio.sleep(self.barge_in_after)
            self.barge_in_at = time.monotonic()
            await self._send(ws, {"type": "input_audio_buffer.speech_started",
                                  "audio_start_ms": 1000, "item_id": "item_user_1"})


def listen(gateway: Gateway, sink: RtpSink, tmp: Path, hold_ms: int) -> None:
    text = (SCENARIOS / "uac_listen.xml").read_text()
    path = tmp / "listen.xml"
    path.write_text(text.replace("__RTP_PORT__", str(sink.port))
                    .replace("__HOLD__", str(hold_ms)))
    result = run_sipp(gateway.address, path, tmp / "sipp", timeout=30)
    assert result.ok, result.describe()


def voiced(sink: RtpSink) -> list[float]:
    """Arrival times of the packets that carried agent audio (not silence)."""
    return [p.arrival for p in sink.packets
            if p.payload_type == 0 and any(b not in (SILENCE, 0x7F) for b in p.payload)]


@pytest.fixture
def agent_gateway(start_gateway: Callable[..., Gateway]) -> Iterator[Callable[..., Gateway]]:
    def start(model: ReplayModel) -> Gateway:
        return start_gateway(auto_answer="agent", agent_url=model.url, agent_reconnects=2,
                             media_timeout=0)
    yield start


def test_agent_audio_reaches_the_caller_and_barge_in_stops_it(
    agent_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    with ReplayModel(answer_seconds=8.0, barge_in_after=1.5) as model, RtpSink() as sink:
        gateway = agent_gateway(model)
        listen(gateway, sink, tmp_path, 4500)
    first = [e["type"] for e in model.received[:2]]
    assert first == ["session.update", "response.create"]  # config first, then the greeting
    heard = voiced(sink)
    assert heard, "no agent audio reached the caller"
    assert model.barge_in_at is not None
    after = [t for t in heard if t > model.barge_in_at]
    stopped = (after[-1] - model.barge_in_at) if after else 0.0
    assert stopped < 0.200, f"agent audio went on {stopped * 1000:.0f} ms after barge-in"
    before = [t for t in heard if t <= model.barge_in_at]
    assert before[-1] - before[0] > 1.0  # it had been speaking, paced, until then
    [truncate] = [e for e in model.received if e["type"] == "conversation.item.truncate"]
    assert truncate["item_id"] == "item_1" and truncate["content_index"] == 0
    played_ms = (before[-1] - before[0]) * 1000
    assert abs(truncate["audio_end_ms"] - played_ms) < 300, (truncate, played_ms)


def test_a_dropped_model_connection_is_reopened(
    agent_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    with ReplayModel(answer_seconds=1.0, drop_after_first=True) as model, RtpSink() as sink:
        gateway = agent_gateway(model)
        listen(gateway, sink, tmp_path, 3000)
    assert model.connections == 2
    updates = [e for e in model.received if e["type"] == "session.update"]
    assert len(updates) == 2  # the session config again on the new connection
    assert voiced(sink)  # the greeting was heard
    log = gateway.log()
    assert "model dropped" in log and "model reconnected" in log


def test_a_model_that_cannot_be_reached_does_not_leave_the_caller_in_silence(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    gateway = start_gateway(auto_answer="agent", agent_url="ws://127.0.0.1:9/v1/realtime",
                            agent_reconnects=1, api_key=["k"], recordings=str(recordings))
    result = run_sipp(gateway.address, "uac_wait_bye.xml", tmp_path / "sipp")
    assert result.ok, result.describe()  # the gateway hung up (SIPp waited for its BYE)
    [wav] = recordings.glob("*.wav")
    with wave.open(str(wav), "rb") as w:
        agent = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)[:, 1]
    assert np.abs(agent.astype(np.int32)).max() > 3000  # the caller was told, not left silent
    assert np.count_nonzero(np.abs(agent) > 500) > 8000  # a whole sentence of it
    base = f"http://127.0.0.1:{gateway.http_port}/v1/realtime/calls"
    [listed] = httpx.get(base, headers={"Authorization": "Bearer k"}).json()["data"]
    call = httpx.get(f"{base}/{listed['id']}", headers={"Authorization": "Bearer k"}).json()
    assert call["end_reason"] == "agent_failed"
    steps = [e["status"] for e in call["timeline"] if e["kind"] == "agent"]
    assert steps == ["dropped", "failed"]
