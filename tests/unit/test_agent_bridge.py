"""The agent bridge's audio formats: 24 kHz PCM16 by default, G.711 passed through
untouched when the session asks for audio/pcmu or audio/pcma (no resampling)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import numpy as np
import pytest

from sipbridge.agent.bridge import AgentBridge
from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.media.g711 import alaw_encode, ulaw_encode
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.session import MediaSession


@pytest.fixture
def media() -> Iterator[MediaSession]:
    pool = PortPool(32000, 32999)
    audio = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "127.0.0.1", 9, Direction.SENDRECV, 20)
    session = MediaSession("rtc_b", pool.allocate("127.0.0.1"), audio, now=0.0,
                           wall=lambda: 0.0, timeout=0, jitter=JitterBuffer())
    yield session
    session.close()
    pool.release(session.endpoint)


def bridge(media: MediaSession, fmt: str | None) -> AgentBridge:
    session: dict[str, object] = {"type": "realtime"}
    if fmt is not None:
        session["audio"] = {"input": {"format": {"type": fmt}},
                            "output": {"format": {"type": fmt}}}
    b = AgentBridge("rtc_b", "ws://127.0.0.1:9", session, media)
    b.connected = True
    return b


def sent_audio(b: AgentBridge) -> bytes:
    event = b.outbox.get_nowait()
    assert event is not None and event["type"] == "input_audio_buffer.append"
    return base64.b64decode(event["audio"])


FRAME = (3000 * np.sin(np.arange(160) / 5)).astype(np.int16)


@pytest.mark.parametrize(("fmt", "encode"), [("audio/pcmu", ulaw_encode),
                                              ("audio/pcma", alaw_encode)])
def test_g711_goes_through_untouched(media: MediaSession, fmt: str, encode: object) -> None:
    b = bridge(media, fmt)
    assert media.on_audio is not None
    media.on_audio(FRAME)
    assert sent_audio(b) == encode(FRAME)  # type: ignore[operator]
    b.agent_audio("item_1", base64.b64encode(encode(FRAME)).decode())  # type: ignore[operator]
    assert media.queued_ms == 20  # 160 G.711 bytes: 20 ms at 8 kHz, played as they are


def test_pcm_is_24_khz_both_ways(media: MediaSession) -> None:
    b = bridge(media, None)
    assert media.on_audio is not None
    media.on_audio(FRAME)
    assert len(sent_audio(b)) == 480 * 2  # 20 ms at 24 kHz, 16-bit
    b.agent_audio("item_1", base64.b64encode(np.zeros(4800, "<i2").tobytes()).decode())
    assert media.queued_ms == 200  # 4800 samples at 24 kHz: 200 ms at 8 kHz


def test_barge_in_truncates_at_what_was_heard(media: MediaSession) -> None:
    b = bridge(media, None)
    b.agent_audio("item_7", base64.b64encode(np.zeros(24000, "<i2").tobytes()).decode())
    for n in range(10):  # 200 ms of it played
        media.tick(n * 0.02)
    b.server_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                     "item_id": "u1"})
    assert media.queued_ms == 0
    truncate = b.outbox.get_nowait()
    assert truncate is not None and truncate["type"] == "conversation.item.truncate"
    assert truncate["item_id"] == "item_7" and truncate["audio_end_ms"] == 200


# ---- what waits for the agent's words (the transfer's REFER) ----------------------

def speech(ms: int) -> str:
    return base64.b64encode(np.zeros(ms * 24, "<i2").tobytes()).decode()


def test_after_speech_waits_for_the_response_and_the_playout(media: MediaSession) -> None:
    """The order both OpenAI and the built-in model use: the words' audio, then the
    function call, then response.done; the REFER may go only once the audio is out."""
    b = bridge(media, None)
    outcomes: list[tuple[str, float, int]] = []

    async def run() -> None:
        b.server_event({"type": "response.created", "response": {"id": "resp_1"}})
        b.server_event({"type": "response.output_audio.delta", "item_id": "item_1",
                         "delta": speech(300)})
        b.after_speech(2.0, lambda outcome, waited: outcomes.append(
            (outcome, waited, media.queued_ms)))
        await asyncio.sleep(0.05)
        assert outcomes == []  # the response is under way
        b.server_event({"type": "response.done", "response": {"id": "resp_1"}})
        await asyncio.sleep(0.05)
        assert outcomes == []  # 300 ms still queued for the caller
        for n in range(15):  # the playout sends it
            media.tick(n * 0.02)
        await asyncio.sleep(0.6)  # the next look (when the queue would be out), the tail

    asyncio.run(run())
    assert len(outcomes) == 1 and outcomes[0][0] == "played" and outcomes[0][2] == 0
    assert 0.3 <= outcomes[0][1] < 1.0


def test_after_speech_is_bounded_and_released_on_close(media: MediaSession) -> None:
    b = bridge(media, None)
    outcomes: list[str] = []

    async def run() -> None:
        b.server_event({"type": "response.created", "response": {"id": "resp_1"}})
        b.after_speech(0.2, lambda outcome, waited: outcomes.append(outcome))
        await asyncio.sleep(0.3)  # the model never finishes: the limit decides
        b.after_speech(5.0, lambda outcome, waited: outcomes.append(outcome))
        await b.close()  # the call ended, or the model left it
        b.after_speech(5.0, lambda outcome, waited: outcomes.append(outcome))

    asyncio.run(run())
    assert outcomes == ["timed_out", "closed", "closed"]


def test_a_dropped_connection_ends_the_responses_under_way(media: MediaSession) -> None:
    b = bridge(media, None)
    outcomes: list[str] = []

    async def run() -> None:
        b.server_event({"type": "response.created", "response": {"id": "resp_1"}})
        b.after_speech(3.0, lambda outcome, waited: outcomes.append(outcome))
        b.connection_lost()  # no response.done will come for it
        await asyncio.sleep(0.35)

    asyncio.run(run())
    assert outcomes == ["played"]


def test_barge_in_empties_the_playout_the_wait_was_for(media: MediaSession) -> None:
    b = bridge(media, None)
    outcomes: list[str] = []

    async def run() -> None:
        b.agent_audio("item_1", speech(2000))
        b.after_speech(3.0, lambda outcome, waited: outcomes.append(outcome))
        b.server_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                         "item_id": "u1"})
        await asyncio.sleep(0.35)

    asyncio.run(run())
    assert outcomes == ["played"] and media.queued_ms == 0


def test_a_function_output_during_a_response_asks_for_the_next_one_after_it(
    media: MediaSession,
) -> None:
    """Asked again mid-response ("in_progress" comes back at once), the new response is
    requested once the current one is done: OpenAI refuses a second active response."""
    b = bridge(media, None)
    b.server_event({"type": "response.created", "response": {"id": "resp_1"}})
    b.function_output("call_2", '{"status": "in_progress"}')
    sent = [b.outbox.get_nowait() for _ in range(b.outbox.qsize())]
    assert [e["type"] for e in sent if e] == ["conversation.item.create"]
    b.server_event({"type": "response.done", "response": {"id": "resp_1"}})
    sent = [b.outbox.get_nowait() for _ in range(b.outbox.qsize())]
    assert [e["type"] for e in sent if e] == ["response.create"]
    b.function_output("call_1", '{"status": "failed"}')  # none under way: at once
    sent = [b.outbox.get_nowait() for _ in range(b.outbox.qsize())]
    assert [e["type"] for e in sent if e] == ["conversation.item.create", "response.create"]


def second_session() -> tuple[MediaSession, PortPool]:
    pool = PortPool(33000, 33099)
    audio = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "127.0.0.1", 9, Direction.SENDRECV, 20)
    return MediaSession("rtc_b:warm", pool.allocate("127.0.0.1"), audio, now=0.0,
                        wall=lambda: 0.0, timeout=0, jitter=JitterBuffer()), pool


def delta(response: str, item: str, ms: int) -> dict[str, object]:
    pcm = np.zeros(24 * ms, "<i2").tobytes()
    return {"type": "response.output_audio.delta", "response_id": response, "item_id": item,
            "delta": base64.b64encode(pcm).decode()}


def drain(b: AgentBridge) -> list[dict[str, object]]:
    events = []
    while not b.outbox.empty():
        event = b.outbox.get_nowait()
        assert event is not None
        events.append(event)
    return events


def test_pause_move_and_back(media: MediaSession) -> None:
    person, pool = second_session()
    try:
        b = bridge(media, None)
        b.server_event({"type": "response.created", "response": {"id": "resp_1"}})
        b.server_event(delta("resp_1", "item_1", 200))
        assert media.queued_ms == 200
        b.pause()
        assert media.queued_ms == 0  # what was queued for the caller is gone
        hold = media.on_audio
        assert hold is not None
        hold(FRAME)
        assert not drain(b)  # nothing of the caller goes to the model
        b.server_event(delta("resp_1", "item_1", 100))
        assert media.queued_ms == 0  # nor is the model played
        media.on_audio = None  # the transfer takes the caller's session meanwhile
        b.move(person)
        assert person.on_audio is not None and media.on_audio is None
        assert drain(b) == [{"type": "input_audio_buffer.clear"}]
        b.server_event(delta("resp_1", "item_1", 100))
        assert person.queued_ms == 0  # what the model said to the caller does not follow
        b.server_event({"type": "response.done", "response": {"id": "resp_1"}})
        b.server_event({"type": "response.created", "response": {"id": "resp_2"}})
        b.server_event(delta("resp_2", "item_2", 300))
        assert person.queued_ms == 300 and media.queued_ms == 0
        person.on_audio(FRAME)
        assert drain(b)[0]["type"] == "input_audio_buffer.append"
        # barge-in on the person's session truncates what the person heard
        b.server_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                        "item_id": "u1"})
        assert person.queued_ms == 0
        assert drain(b)[0] == {"type": "conversation.item.truncate", "item_id": "item_2",
                               "content_index": 0, "audio_end_ms": 0}
        b.move(media)  # back to the caller
        assert media.on_audio is not None and person.on_audio is None
        b.server_event({"type": "response.done", "response": {"id": "resp_2"}})
        b.server_event(delta("resp_3", "item_3", 100))
        assert media.queued_ms == 100
    finally:
        person.close()
        pool.release(person.endpoint)


def test_set_tools_is_kept_for_reconnections(media: MediaSession) -> None:
    b = bridge(media, None)
    b.set_tools([{"type": "function", "name": "finish_transfer"}])
    assert b.tools == [{"type": "function", "name": "finish_transfer"}]
    assert b.session["tools"] == b.tools
    assert drain(b) == [{"type": "session.update", "session": {
        "type": "realtime", "tools": [{"type": "function", "name": "finish_transfer"}]}}]
