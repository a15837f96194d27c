"""Events of OpenAI's Realtime protocol: the client event types, reading a client event's
fields, and the `error` server event (the SDK's `RealtimeErrorEvent`)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from sipbridge.realtime.errors import RealtimeError, missing, wrong_type
from sipbridge.realtime.ids import new_event_id

SESSION_UPDATE = "session.update"
FORWARDED_EVENT_TYPES = (
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
)
"""Client events the model side handles."""
CLIENT_EVENT_TYPES = (SESSION_UPDATE, *FORWARDED_EVENT_TYPES)

Events = list[dict[str, Any]]


def error_event(error: RealtimeError, *, client_event_id: str | None = None) -> dict[str, Any]:
    """An `error` server event (the SDK's RealtimeErrorEvent) for `error`; `client_event_id`
    names the client event that caused it."""
    return {
        "type": "error",
        "event_id": new_event_id(),
        "error": {
            "type": error.type,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": client_event_id,
        },
    }


def string_field(data: Mapping[str, Any], key: str, param: str) -> str:
    """`data[key]`, a required string; `param` names it in the error."""
    value = data.get(key)
    if value is None:
        raise missing(param)
    if not isinstance(value, str):
        raise wrong_type(param, "a string", value)
    return value


def base64_field(value: str, param: str) -> bytes:
    """The bytes a base64 field (audio) carries."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError(f"Invalid '{param}': not valid base64.", param=param,
                            code="invalid_value") from None
