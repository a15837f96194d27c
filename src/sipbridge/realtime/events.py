"""Events of OpenAI's Realtime protocol: the client event types, and the `error` server event
(the SDK's `RealtimeErrorEvent`)."""

from __future__ import annotations

from typing import Any

from sipbridge.realtime.errors import RealtimeError
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
