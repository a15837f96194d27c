"""The sideband session of one call: client events in, server events out, no I/O; and the
hubs that hold each call's session and the clients watching it.

An app connects to `/v1/realtime?call_id=...` and speaks OpenAI's Realtime protocol.
`SidebandSession` keeps the call's session config, answers `session.update` itself
(`session.updated` to every client, or an `error` to the sender), and hands every other
client event to the model side through `on_client_event`. Event shapes are the SDK's
(`SessionCreatedEvent`, `SessionUpdatedEvent`, `RealtimeErrorEvent`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from sipbridge.realtime.errors import (
    RealtimeError,
    describe,
    from_validation_errors,
    missing,
    wrong_type,
)
from sipbridge.realtime.events import (
    CLIENT_EVENT_TYPES,
    FORWARDED_EVENT_TYPES,
    SESSION_UPDATE,
    Events,
    error_event,
)
from sipbridge.realtime.ids import new_event_id, new_id
from sipbridge.realtime.schemas import SessionConfig, validate_session_update


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse(raw: str | bytes) -> tuple[dict[str, Any] | None, RealtimeError | None]:
    """A client message as a JSON object with a string `type`, or the error to answer."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        message = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, RealtimeError(
            f"The client event could not be parsed as JSON ({exc}). Send each event as a "
            "JSON object.",
            code="invalid_json",
        )
    if not isinstance(message, dict):
        return None, RealtimeError(
            f"The client event must be a JSON object, but got {describe(message)}.",
            code="invalid_json",
        )
    kind = message.get("type")
    if kind is None:
        return message, RealtimeError(
            "Missing required parameter: 'type'.", param="type", code="missing_type"
        )
    if not isinstance(kind, str):
        return message, RealtimeError(
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
        self.session_id = new_id("sess")
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
            except RealtimeError as exc:
                return [error_event(exc, client_event_id=client_event_id)], []
            if self.on_client_event is not None:
                # The model holds the session: it answers, and its session.updated
                # reaches every client through the fan-out.
                self.on_client_event(message)
                return [], []
            return [], [updated]
        if kind in FORWARDED_EVENT_TYPES:
            if self.on_client_event is None:
                error = RealtimeError(
                    f"No model session is attached to call '{self.call_id}', so "
                    f"'{kind}' cannot be handled.",
                    type="server_error",
                    code="model_unavailable",
                )
                return [error_event(error, client_event_id=client_event_id)], []
            self.on_client_event(message)
            return [], []
        error = RealtimeError(
            f"Invalid value: '{kind[:100]}'. Supported values are: "
            f"{_supported(CLIENT_EVENT_TYPES)}.",
            param="type",
            code="invalid_value",
        )
        return [error_event(error, client_event_id=client_event_id)], []

    def _update(self, message: dict[str, Any]) -> dict[str, Any]:
        """Apply a `session.update`; returns `session.updated` or raises RealtimeError."""
        for key in message:
            if key not in ("type", "event_id", "session"):
                raise RealtimeError(
                    f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter"
                )
        if "session" not in message:
            raise missing("session")
        session = message["session"]
        if not isinstance(session, dict):
            raise wrong_type("session", "an object", session)
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


class Identified(Protocol):
    """Anything with an id: a call, to the hubs."""

    @property
    def id(self) -> str: ...


class SidebandHubs:
    """Each accepted call's sideband session and the WebSocket clients watching it."""

    def __init__(self) -> None:
        self.sessions: dict[str, SidebandSession] = {}
        self.clients: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self.models: dict[str, Callable[[dict[str, Any]], None]] = {}  # call -> model sink

    def open(self, call: Identified, config: SessionConfig) -> SidebandSession:
        session = SidebandSession(call.id, config, on_client_event=self.models.get(call.id))
        self.sessions[call.id] = session
        self.clients.setdefault(call.id, set())
        return session

    def attach_model(self, call_id: str, sink: Callable[[dict[str, Any]], None]) -> None:
        """Client events of the call's sideband go to `sink` (the model) from now on."""
        self.models[call_id] = sink
        session = self.sessions.get(call_id)
        if session is not None:
            session.on_client_event = sink

    def publish(self, call_id: str, event: dict[str, Any]) -> None:
        """Fan one server event out to every sideband client of the call."""
        for queue in self.clients.get(call_id, ()):
            queue.put_nowait(event)

    def close(self, call_id: str) -> None:
        """The call ended: its clients are disconnected, its session dropped."""
        self.sessions.pop(call_id, None)
        self.models.pop(call_id, None)
        for queue in self.clients.pop(call_id, ()):
            queue.put_nowait(None)
