"""The sideband WebSocket, `/v1/realtime?call_id=...`: an app watches and steers an accepted
call's Realtime session, as with OpenAI's sideband connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from sipbridge.api.auth import authorize
from sipbridge.api.calllookup import manager
from sipbridge.api.errors import ApiError
from sipbridge.api.state import Control, State
from sipbridge.calls.call import CallError
from sipbridge.realtime.ids import new_event_id

router = APIRouter()


@router.websocket("/v1/realtime")
async def sideband(ws: WebSocket, api: State) -> None:
    control = api.control
    try:
        authorize(api.keys, ws.headers.get("authorization"))
    except ApiError:
        await ws.close(code=1008, reason="invalid API key")
        return
    call_id = ws.query_params.get("call_id", "")
    session = control.sideband.sessions.get(call_id)
    await ws.accept()
    if session is None:
        reason = _no_session_reason(control, call_id)
        await ws.send_json({"type": "error", "event_id": new_event_id(),
                            "error": {"type": "invalid_request_error",
                                      "code": "call_not_found" if "No call" in reason
                                      else "invalid_state",
                                      "message": reason, "param": "call_id",
                                      "event_id": None}})
        await ws.close(code=1008)
        return
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    clients = control.sideband.clients.setdefault(call_id, set())
    clients.add(queue)
    sender = asyncio.create_task(_send_events(ws, queue))
    client = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
    manager(control).note(call_id, "sideband", status="connected", client=client)
    try:
        await ws.send_json(session.created_event())
        while True:
            raw = await ws.receive_text()
            own, everyone = session.handle(raw)
            kind = next((e["error"].get("code") for e in own if e.get("type") == "error"),
                        None)
            manager(control).note(call_id, "sideband", status="client_event",
                                  event=_event_type(raw), error=kind)
            for event in own:
                queue.put_nowait(event)
            for event in everyone:
                control.sideband.publish(call_id, event)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        manager(control).note(call_id, "sideband", status="disconnected", client=client)
        clients.discard(queue)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


def _event_type(raw: str) -> str:
    try:
        kind = json.loads(raw).get("type")
    except (ValueError, AttributeError):
        return "(not a JSON object)"
    return kind[:64] if isinstance(kind, str) else "(no type)"


def _no_session_reason(control: Control, call_id: str) -> str:
    calls = control.calls
    if not call_id:
        return "Missing required parameter: 'call_id'."
    if calls is None:
        return "The gateway is starting."
    try:
        call = calls.get(call_id)
    except CallError as exc:
        return exc.message
    if call.end_reason is not None or call.state.value == "ended":
        return f"Call '{call_id}' has ended."
    return f"Call '{call_id}' has not been accepted yet: accept it first."


async def _send_events(ws: WebSocket, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
    """Writes one client's events in order; None means the call ended."""
    while True:
        event = await queue.get()
        if event is None:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await ws.close(code=1000, reason="call ended")
            return
        try:
            await ws.send_text(json.dumps(event))
        except (RuntimeError, OSError, WebSocketDisconnect):
            return  # the client went away; its reader ends the connection
