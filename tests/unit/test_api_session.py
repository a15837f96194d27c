"""SidebandSession: client events in, server events out, every event checked with the SDK."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openai.types.realtime import (
    RealtimeErrorEvent,
    RealtimeServerEvent,
    RealtimeSessionCreateRequest,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from pydantic import BaseModel, TypeAdapter

from sipbridge.realtime.events import FORWARDED_EVENT_TYPES
from sipbridge.realtime.schemas import SessionConfig
from sipbridge.realtime.sideband import SidebandSession

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
EVENT_ID = re.compile(r"^event_[0-9a-f]{24}$")


def parse(event: dict[str, Any]) -> BaseModel:
    """The event as the SDK parses it off the WebSocket (a round trip through JSON)."""
    parsed = SERVER_EVENT.validate_python(json.loads(json.dumps(event)))
    assert isinstance(parsed, BaseModel)
    assert EVENT_ID.match(event["event_id"])
    return parsed


def new_session(**kwargs: Any) -> SidebandSession:
    config = SessionConfig.model_validate({"type": "realtime", "instructions": "Greet the caller."})
    return SidebandSession("rtc_123", config, **kwargs)


def only_error(result: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> RealtimeErrorEvent:
    own, everyone = result
    assert everyone == []
    assert len(own) == 1
    parsed = parse(own[0])
    assert isinstance(parsed, RealtimeErrorEvent)
    return parsed


def send(session: SidebandSession, event: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    return session.handle(json.dumps(event))


def test_created_event() -> None:
    session = new_session()
    event = parse(session.created_event())
    assert isinstance(event, SessionCreatedEvent)
    assert isinstance(event.session, RealtimeSessionCreateRequest)
    assert event.session.instructions == "Greet the caller."
    raw = session.created_event()["session"]
    assert raw["object"] == "realtime.session"
    assert re.match(r"^sess_[0-9a-f]+$", raw["id"])


def test_event_ids_are_unique() -> None:
    session = new_session()
    ids = {session.created_event()["event_id"] for _ in range(50)}
    assert len(ids) == 50


def test_update_without_type_is_an_error_to_the_sender() -> None:
    session = new_session()
    before = session.session_object()
    error = only_error(
        send(session, {"type": "session.update", "event_id": "evt_c1", "session": {"x": 1}})
    ).error
    assert error.type == "invalid_request_error"
    assert error.code == "missing_required_parameter"
    assert error.param == "session.type"
    assert error.event_id == "evt_c1"
    assert error.message.startswith("Missing required parameter: 'session.type'.")
    assert 'Add "type": "realtime"' in error.message
    assert session.session_object() == before


def test_update_is_applied_and_sent_to_everyone() -> None:
    session = new_session()
    update = {
        "type": "session.update",
        "event_id": "evt_c2",
        "session": {
            "type": "realtime",
            "instructions": "Speak German.",
            "audio": {"output": {"voice": "marin"}},
            "tools": [{"type": "function", "name": "transfer_call"}],
        },
    }
    own, everyone = send(session, update)
    assert own == []
    assert len(everyone) == 1
    updated = parse(everyone[0])
    assert isinstance(updated, SessionUpdatedEvent)
    assert isinstance(updated.session, RealtimeSessionCreateRequest)
    assert updated.session.instructions == "Speak German."
    sent = everyone[0]["session"]
    assert sent["audio"]["output"]["voice"] == "marin"
    assert sent["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert sent["tools"] == [{"type": "function", "name": "transfer_call"}]
    assert sent["id"] == session.created_event()["session"]["id"]
    assert session.config.instructions == "Speak German."
    assert session.created_event()["session"]["audio"]["output"]["voice"] == "marin"


def test_update_merges_with_what_was_accepted() -> None:
    config = SessionConfig.model_validate(
        {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    )
    session = SidebandSession("rtc_1", config)
    _, everyone = send(
        session,
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        },
    )
    audio_in = everyone[0]["session"]["audio"]["input"]
    assert audio_in["format"] == {"type": "audio/pcmu"}
    assert audio_in["turn_detection"] is None


def test_bytes_are_accepted() -> None:
    session = new_session()
    raw = json.dumps({"type": "session.update", "session": {"type": "realtime"}}).encode()
    own, everyone = session.handle(raw)
    assert own == [] and everyone[0]["type"] == "session.updated"


@pytest.mark.parametrize(
    ("session_value", "param", "code"),
    [
        ({"type": "realtime", "voice": "alloy"}, "session.voice", "unknown_parameter"),
        ({"type": "transcription"}, "session.type", "invalid_value"),
        (
            {"type": "realtime", "audio": {"input": {"format": {"type": "audio/wav"}}}},
            "session.audio.input.format.type",
            "invalid_value",
        ),
        (
            {"type": "realtime", "max_output_tokens": 0},
            "session.max_output_tokens",
            "integer_below_min_value",
        ),
        ("realtime", "session", "invalid_type"),
    ],
)
def test_invalid_updates_change_nothing(session_value: Any, param: str, code: str) -> None:
    session = new_session()
    before = session.session_object()
    event = {"type": "session.update", "event_id": "evt_9", "session": session_value}
    error = only_error(send(session, event)).error
    assert (error.param, error.code, error.event_id) == (param, code, "evt_9")
    assert session.session_object() == before


def test_update_event_shape_is_checked() -> None:
    session = new_session()
    missing = only_error(send(session, {"type": "session.update"})).error
    assert (missing.param, missing.code) == ("session", "missing_required_parameter")
    extra = {"type": "session.update", "session": {"type": "realtime"}, "sesion": {}}
    unknown = only_error(send(session, extra)).error
    assert (unknown.param, unknown.code) == ("sesion", "unknown_parameter")


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        ("not json", "invalid_json", None),
        (b"\xff\xfe", "invalid_json", None),
        ('{"type": "session.update", "session": {"speed": NaN}}', "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        ('"session.update"', "invalid_json", None),
        ('{"event_id": "e"}', "missing_type", "type"),
        ('{"type": 7}', "invalid_type", "type"),
    ],
)
def test_malformed_messages(raw: str | bytes, code: str, param: str | None) -> None:
    error = only_error(new_session().handle(raw)).error
    assert error.type == "invalid_request_error"
    assert (error.code, error.param) == (code, param)
    assert error.message


def test_missing_type_keeps_the_client_event_id() -> None:
    error = only_error(new_session().handle('{"event_id": "evt_7"}')).error
    assert error.event_id == "evt_7"


@pytest.mark.parametrize("kind", FORWARDED_EVENT_TYPES)
def test_client_events_go_to_the_model_side(kind: str) -> None:
    received: list[dict[str, Any]] = []
    session = new_session(on_client_event=received.append)
    event = {"type": kind, "event_id": "evt_1"}
    assert send(session, event) == ([], [])
    assert received == [event]


def test_without_a_model_the_sender_is_told() -> None:
    session = new_session()
    error = only_error(send(session, {"type": "response.create", "event_id": "evt_3"})).error
    assert error.code == "model_unavailable"
    assert error.event_id == "evt_3"
    assert "rtc_123" in error.message and "response.create" in error.message


def test_a_model_attached_later_receives_events() -> None:
    session = new_session()
    received: list[dict[str, Any]] = []
    session.on_client_event = received.append
    assert send(session, {"type": "input_audio_buffer.commit"}) == ([], [])
    assert received == [{"type": "input_audio_buffer.commit"}]


def test_unknown_event_types() -> None:
    received: list[dict[str, Any]] = []
    session = new_session(on_client_event=received.append)
    error = only_error(send(session, {"type": "session.create", "event_id": "e"})).error
    assert (error.code, error.param, error.event_id) == ("invalid_value", "type", "e")
    assert error.message.startswith("Invalid value: 'session.create'. Supported values are: ")
    for kind in ("session.update", *FORWARDED_EVENT_TYPES):
        assert f"'{kind}'" in error.message
    assert received == []


def test_server_event_stamps_an_event_id() -> None:
    session = new_session()
    event = {"type": "input_audio_buffer.speech_started", "audio_start_ms": 120, "item_id": "i1"}
    stamped = session.server_event(event)
    assert "event_id" not in event
    parsed = parse(stamped)
    assert type(parsed).__name__ == "InputAudioBufferSpeechStartedEvent"
    kept = session.server_event({**event, "event_id": "event_fromthemodel"})
    assert kept["event_id"] == "event_fromthemodel"
