"""`GET /v1/sipbridge/registrations`: each registration to a provider and its state
(registered until when, or failing with the last status and the next attempt)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sipbridge.api.state import State

router = APIRouter()


@router.get("/v1/sipbridge/registrations")
async def list_registrations(api: State) -> dict[str, Any]:
    """`{"object": "list", "data": [...]}`; times are Unix seconds. Its shape: name, aor,
    registrar, transport, state, expires_at, last_status, last_reason, next_attempt_at,
    attempts, failures. Also the calls in progress, for `sipbridge status`."""
    control = api.control
    regs = control.registrations
    calls = control.calls
    return {"object": "list", "data": regs.report() if regs is not None else [],
            "calls_active": len(calls.calls) if calls is not None else 0}
