"""The sideband session of one call: client events in, server events out, no I/O.

An app connects to `/v1/realtime?call_id=...` and speaks OpenAI's Realtime protocol.
`SidebandSession` keeps the call's session config, answers `session.update` itself
(`session.updated` to every client, or an `error` to the sender), and hands every other
client event to the model side through `on_client_event`. Event shapes are the SDK's
(`SessionCreatedEvent`, `SessionUpdatedEvent`, `RealtimeErrorEvent`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from sipbridge.realtime.errors import ApiError, describe, from_validation_errors
from sipbridge.realtime.schemas import SessionConfig, validate_session_update

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


def new_event_id() -> str:
    return "event_" + secrets.token_hex(12)


def error_event(error: ApiError, *, client_event_id: str | None = None) -> dict[str, Any]:
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse(raw: str | bytes) -> tuple[dict[str, Any] | None, ApiError | None]:
    """A client message as a JSON object with a string `type`, or the error to answer."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        message = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, ApiError(
            400,
            f"The client event could not be parsed as JSON ({exc}). Send each event as a "
            "JSON object.",
            code="invalid_json",
        )
    if not isinstance(message, dict):
        return None, ApiError(
            400,
            f"The client event must be a JSON object, but got {describe(message)}.",
            code="invalid_json",
        )
    kind = message.get("type")
    if kind is None:
        return message, ApiError(
            400, "Missing required parameter: 'type'.", param="type", code="missing_type"
        )
    if not isinstance(kind, str):
        return message, ApiError(
            400,
            f"Invalid type for 'type': expected a string, but got {describe(kind)} instead.",
            param="type",
            code="invalid_type",
        )
    return message, None


def _supported(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


class SidebandSession:
    """One call's sideband session: its config and the client-event protocol."""

    def __init__(
        self,
        call_id: str,
        config: SessionConfig,
        *,
        on_client_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.call_id = call_id
        self.session_id = "sess_" + secrets.token_hex(12)
        self.config = config
        self.on_client_event = on_client_event
        """The model side; None until a model session is attached."""

    def session_object(self) -> dict[str, Any]:
        return self.config.session_object(session_id=self.session_id)

    def created_event(self) -> dict[str, Any]:
        """`session.created`: the first event each sideband client receives."""
        return {
            "type": "session.created",
            "event_id": new_event_id(),
            "session": self.session_object(),
        }

    def handle(self, raw: str | bytes) -> tuple[Events, Events]:
        """One client message in; returns (events for the sender, events for every client of
        the call, the sender included)."""
        message, problem = _parse(raw)
        client_event_id = message.get("event_id") if message is not None else None
        if not isinstance(client_event_id, str):
            client_event_id = None
        if problem is not None or message is None:
            assert problem is not None
            return [error_event(problem, client_event_id=client_event_id)], []
        kind = message["type"]
        if kind == SESSION_UPDATE:
            try:
                updated = self._update(message)
            except ApiError as exc:
                return [error_event(exc, client_event_id=client_event_id)], []
            if self.on_client_event is not None:
                # The model holds the session: it answers, and its session.updated
                # reaches every client through the fan-out.
                self.on_client_event(message)
                return [], []
            return [], [updated]
        if kind in FORWARDED_EVENT_TYPES:
            if self.on_client_event is None:
                error = ApiError(
                    400,
                    f"No model session is attached to call '{self.call_id}', so "
                    f"'{kind}' cannot be handled.",
                    type="server_error",
                    code="model_unavailable",
                )
                return [error_event(error, client_event_id=client_event_id)], []
            self.on_client_event(message)
            return [], []
        error = ApiError(
            400,
            f"Invalid value: '{kind[:100]}'. Supported values are: "
            f"{_supported(CLIENT_EVENT_TYPES)}.",
            param="type",
            code="invalid_value",
        )
        return [error_event(error, client_event_id=client_event_id)], []

    def _update(self, message: dict[str, Any]) -> dict[str, Any]:
        """Apply a `session.update`; returns `session.updated` or raises ApiError."""
        for key in message:
            if key not in ("type", "event_id", "session"):
                raise ApiError(
                    400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter"
                )
        if "session" not in message:
            raise ApiError(
                400,
                "Missing required parameter: 'session'.",
                param="session",
                code="missing_required_parameter",
            )
        session = message["session"]
        if not isinstance(session, dict):
            raise ApiError(
                400,
                f"Invalid type for 'session': expected an object, but got {describe(session)} "
                "instead.",
                param="session",
                code="invalid_type",
            )
        partial = validate_session_update(session)
        try:
            self.config = self.config.updated(partial)
        except ValidationError as exc:  # the merge produced a config that does not validate
            raise from_validation_errors(exc.errors(), prefix="session") from None
        return {
            "type": "session.updated",
            "event_id": new_event_id(),
            "session": self.session_object(),
        }

    def server_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """`event` (from the model side) ready to fan out: a copy with an `event_id`."""
        out = dict(event)
        if not isinstance(out.get("event_id"), str) or not out["event_id"]:
            out["event_id"] = new_event_id()
        return out
