"""Outbound calls: `POST /v1/realtime/calls` places one through a trunk (the body is
accept's: the session, plus `sipbridge.to` and the dialing options), `DELETE
/v1/realtime/calls/{call_id}` ends one (CANCEL while it rings, BYE once answered)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from sipbridge.api.calls import (
    _HEADER_NAME,
    _UNSAFE,
    call_control,
    with_call_options,
)
from sipbridge.api.errors import ApiError
from sipbridge.api.schemas import refer_target_problem
from sipbridge.api.state import State
from sipbridge.calls.call import CallError
from sipbridge.calls.outbound import OutboundLimit
from sipbridge.realtime.schemas import SessionConfig
from sipbridge.sip.headers import UA_WRITTEN_HEADERS

router = APIRouter()

RING_TIMEOUT = (1.0, 600.0)  # seconds, the bounds of sipbridge.ring_timeout
_USER = re.compile(r"[A-Za-z0-9+*#._!~'()-]{1,64}")  # a From user (a number, a name)


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=f"sipbridge.{param}", code="invalid_value")


def _dial_options(options: dict[str, Any], trunks: set[str]) -> dict[str, Any]:
    """The dialing options of a POST body's `sipbridge` object, checked: each problem a
    400 naming its parameter."""
    to = options.get("to")
    if not isinstance(to, str):
        raise _bad("to", "sipbridge.to is required: the tel: or sip: URI to call, e.g. "
                   "'tel:+14155550123'.")
    problem = refer_target_problem(to)
    if problem is not None:
        raise _bad("to", f"Invalid sipbridge.to: {problem}")
    from_ = options.get("from")
    if from_ is not None:
        if not isinstance(from_, str):
            raise _bad("from", "sipbridge.from must be a string.")
        if ":" in from_:
            problem = refer_target_problem(from_)
        else:
            problem = None if _USER.fullmatch(from_) else "a user or number: 1-64 of " \
                "letters, digits and +*#._!~'()-"
        if problem is not None:
            raise _bad("from", f"Invalid sipbridge.from: {problem}")
    trunk = options.get("trunk")
    if trunk is not None and (not isinstance(trunk, str) or trunk not in trunks):
        known = ", ".join(repr(t) for t in sorted(trunks)) or "none"
        raise _bad("trunk", f"Unknown trunk {trunk!r}; configured trunks: {known}.")
    if trunk is None and "default" not in trunks:
        raise _bad("trunk", "No default trunk is configured ([trunk]); name one of the "
                   f"configured trunks: {', '.join(sorted(trunks)) or 'none'}.")
    ring_timeout = options.get("ring_timeout")
    if ring_timeout is not None and (
            isinstance(ring_timeout, bool) or not isinstance(ring_timeout, int | float)
            or not RING_TIMEOUT[0] <= ring_timeout <= RING_TIMEOUT[1]):
        raise _bad("ring_timeout", f"sipbridge.ring_timeout must be a number of seconds "
                   f"from {RING_TIMEOUT[0]:g} to {RING_TIMEOUT[1]:g}.")
    headers = options.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _HEADER_NAME.fullmatch(k)
        and not _UNSAFE.search(v) for k, v in headers.items()
    ):
        raise _bad("headers", "sipbridge.headers must map header names to single-line "
                   "values.")
    reserved = [k for k in headers if k.lower() in UA_WRITTEN_HEADERS]
    if reserved:
        raise _bad("headers", f"sipbridge.headers may not set {reserved[0]!r}: the "
                   "gateway writes it.")
    greet = options.get("greet", True)
    if not isinstance(greet, bool):
        raise _bad("greet", "sipbridge.greet must be true or false.")
    return {"to": to, "from_": from_, "trunk": trunk,
            "ring_timeout": float(ring_timeout) if ring_timeout is not None else None,
            "headers": list(headers.items())}


@router.post("/v1/realtime/calls", status_code=200, response_model=None,
             summary="Place an outbound call through a trunk")
async def place(config: SessionConfig, api: State) -> JSONResponse:
    options = dict(config.sipbridge or {})
    with call_control(api.control) as calls:
        how = _dial_options(options, set(calls.outbound.trunks))
        # An agent that places a call may have a phone menu to walk: send_dtmf is offered
        # unless the options say false.
        config = with_call_options(config, options, send_dtmf=True)
        session = config.session_object()
        to = how.pop("to")
        try:
            call = calls.place(to, session, options,
                               created=lambda call: api.control.sideband.open(call, config),
                               **how)
        except CallError as exc:
            if exc.kind != "invalid":
                raise
            raise ApiError(400, exc.message, param="sipbridge.to",
                           code="invalid_value") from None
        except OutboundLimit as exc:
            error = ApiError(exc.status, exc.message,
                             type="rate_limit_error" if exc.status == 429 else "server_error",
                             code="rate_limit_exceeded" if exc.status == 429 else None)
            return JSONResponse(error.body(), status_code=exc.status,
                                headers={"Retry-After": str(exc.retry_after)})
        return JSONResponse(dict(call.to_dict()))


@router.delete("/v1/realtime/calls/{call_id}", status_code=200, response_class=Response,
               summary="End a call: CANCEL while an outbound call rings, BYE once answered")
async def delete(call_id: str, api: State) -> Response:
    with call_control(api.control) as calls:
        calls.hangup(call_id)
    return Response(status_code=200)
