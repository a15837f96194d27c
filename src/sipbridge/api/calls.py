"""The call-control routes, OpenAI's (`POST /v1/realtime/calls/{call_id}/accept`, `reject`,
`refer`, `hangup`), and the call records (`GET /v1/realtime/calls`, one call, its
recording)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response

from sipbridge.api.calllookup import call_error, manager
from sipbridge.api.callrecord import MEDIA_FIGURES, UNIX_TIME, CallList, CallRecord
from sipbridge.api.errors import ApiError
from sipbridge.api.schemas import DtmfBody, ReferBody, RejectBody, refer_target_problem
from sipbridge.api.state import Control, State
from sipbridge.calls import dtmf_tool
from sipbridge.calls.call import CallError
from sipbridge.calls.manager import CallManager
from sipbridge.calls.targets import SpecError, parse_target, read_mode, read_timeouts, timers_for
from sipbridge.calls.tool import TOOL_NAME, tool_definition
from sipbridge.calls.warm_runner import CONNECT_MODES
from sipbridge.config import TRANSFER_FALLBACKS
from sipbridge.realtime.schemas import FunctionTool, SessionConfig

_HEADER_NAME = re.compile(r"[A-Za-z0-9!%*_+`'~.-]{1,64}")  # RFC 3261 token
_TOOL_TARGET = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")

router = APIRouter()


@contextlib.contextmanager
def call_control(control: Control) -> Iterator[CallManager]:
    """The call manager, for one call-control request: its CallError becomes the API's
    error."""
    try:
        yield manager(control)
    except CallError as exc:
        raise call_error(exc) from None


def _fallback(options: dict[str, Any], key: str) -> str | None:
    """The transfer fallback named in a body's `sipbridge` options, checked (400 if unknown)."""
    fallback = options.get(key)
    if fallback is not None and fallback not in TRANSFER_FALLBACKS:
        raise ApiError(400, f"Invalid value: {fallback!r}. Supported values are: "
                       f"{', '.join(repr(f) for f in TRANSFER_FALLBACKS)}.",
                       param=f"sipbridge.{key}", code="invalid_value")
    return fallback


def _with_transfer_tool(config: SessionConfig, targets: object) -> SessionConfig:
    """Check the declared transfer targets (a URI, or an object with its "uri" and the
    transfer's mode, brief and timeouts) and give the session the transfer tool."""
    if not isinstance(targets, dict) or not targets:
        raise ApiError(400, "sipbridge.transfer_targets must map names to tel: or sip: URIs "
                       "or target objects.",
                       param="sipbridge.transfer_targets", code="invalid_value")
    for name, value in targets.items():
        where = f"sipbridge.transfer_targets.{name}"
        if not _TOOL_TARGET.fullmatch(str(name)):
            raise ApiError(400, f"Invalid transfer target {name!r}: names are 1-64 letters, "
                           "digits, '_' or '-'", param=where, code="invalid_value")
        try:
            parse_target(value, where, refer_target_problem)
        except SpecError as exc:
            raise ApiError(400, f"Invalid transfer target {name!r}: {exc.message}",
                           param=exc.param, code="invalid_value") from None
    tools = [t for t in (config.tools or []) if getattr(t, "name", None) != TOOL_NAME]
    return config.model_copy(update={"tools": [*tools, FunctionTool(**tool_definition(targets))]})


def _with_dtmf_tool(config: SessionConfig, wanted: object) -> SessionConfig:
    """`sipbridge.send_dtmf`: true gives the session the send_dtmf tool."""
    if not isinstance(wanted, bool):
        raise ApiError(400, "sipbridge.send_dtmf must be true or false.",
                       param="sipbridge.send_dtmf", code="invalid_type")
    tools = [t for t in (config.tools or []) if getattr(t, "name", None)
             != dtmf_tool.TOOL_NAME]
    if wanted:
        tools.append(FunctionTool(**dtmf_tool.tool_definition()))
    return config.model_copy(update={"tools": tools})


def with_call_options(config: SessionConfig, options: dict[str, Any], *,
                      send_dtmf: bool = False) -> SessionConfig:
    """A call's `sipbridge` options (accept's, or an outbound call's) checked, each problem
    a 400 naming it, and the session given the tools they ask for: `transfer_call` for
    `transfer_targets`, `send_dtmf` when `send_dtmf` is true (`send_dtmf`: the default)."""
    _fallback(options, "transfer_fallback")
    try:
        read_timeouts(options, "sipbridge")  # the call's transfers' timeouts
    except SpecError as exc:
        raise ApiError(400, exc.message, param=exc.param, code="invalid_value") from None
    targets = options.get("transfer_targets")
    if targets is not None:
        config = _with_transfer_tool(config, targets)
    wanted = options.get(dtmf_tool.OPTION)
    if wanted is not None or send_dtmf:
        if wanted is None:
            options[dtmf_tool.OPTION] = wanted = True
        config = _with_dtmf_tool(config, wanted)
    return config


@router.post("/v1/realtime/calls/{call_id}/accept", status_code=200,
             response_class=Response, summary="Accept an incoming call")
async def accept(call_id: str, config: SessionConfig, api: State) -> Response:
    options = config.sipbridge or {}
    config = with_call_options(config, options)
    with call_control(api.control) as calls:
        call = calls.accept(call_id, config.session_object(), options)
        api.control.sideband.open(call, config)
    return Response(status_code=200)


@router.post("/v1/realtime/calls/{call_id}/reject", status_code=200,
             response_class=Response, summary="Reject an incoming call")
async def reject(call_id: str, api: State, body: RejectBody | None = None) -> Response:
    status = body.status_code if body is not None else 603
    with call_control(api.control) as calls:
        calls.reject(call_id, status)
    return Response(status_code=200)


@router.post("/v1/realtime/calls/{call_id}/refer", status_code=200,
             response_class=Response, summary="Transfer an answered call (SIP REFER)")
async def refer(call_id: str, body: ReferBody, api: State) -> Response:
    options = body.sipbridge or {}
    fallback = _fallback(options, "fallback")
    extra = options.get("headers") or {}
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _HEADER_NAME.fullmatch(k)
        and not _UNSAFE.search(v) for k, v in extra.items()
    ):
        raise ApiError(400, "sipbridge.headers must map header names to single-line "
                       "values.", param="sipbridge.headers", code="invalid_value")
    try:
        mode, brief = read_mode(options, "sipbridge")
        timeouts = read_timeouts(options, "sipbridge")
    except SpecError as exc:
        raise ApiError(400, exc.message, param=exc.param, code="invalid_value") from None
    connect = options.get("connect")
    if connect is not None and (mode != "warm" or connect not in CONNECT_MODES):
        raise ApiError(400, f"connect is for a warm transfer (mode \"warm\"), one of "
                       f"{', '.join(repr(c) for c in CONNECT_MODES)}; not {connect!r}.",
                       param="sipbridge.connect", code="invalid_value")
    with call_control(api.control) as calls:
        # The request's timeouts over the call's (accept's, checked then) over the config's.
        per_call = read_timeouts(calls.get(call_id).options, "sipbridge")
        timers = timers_for(calls.transfers.timers, per_call, timeouts) \
            if timeouts or per_call else None
        calls.refer(call_id, body.target_uri, fallback=fallback,
                    headers=list(extra.items()), mode=mode, brief=brief, timers=timers,
                    connect=connect)
    return Response(status_code=200)


@router.post("/v1/realtime/calls/{call_id}/dtmf", status_code=200,
             summary="Send DTMF digits on an answered call (RFC 4733 events or SIP INFO)")
async def dtmf(call_id: str, body: DtmfBody, api: State) -> dict[str, object]:
    with call_control(api.control) as calls:
        try:
            send = calls.send_dtmf(call_id, body.digits, duration_ms=body.duration_ms,
                                   gap_ms=body.gap_ms, method=body.method)
        except ValueError as exc:  # checked above already; the calls plane's own check
            param, _, message = str(exc).partition(": ")
            raise ApiError(400, message, param=param, code="invalid_value") from None
    return send.to_dict()


@router.post("/v1/realtime/calls/{call_id}/hangup", status_code=200,
             response_class=Response, summary="End a call")
async def hangup(call_id: str, api: State) -> Response:
    with call_control(api.control) as calls:
        calls.hangup(call_id)
    return Response(status_code=200)


@router.get("/v1/realtime/calls", summary="List calls, newest first (live ones included)",
            description=MEDIA_FIGURES,
            response_model=None, responses={200: {"model": CallList}})
async def list_calls(api: State,
                     state: Literal["ringing", "active", "ended"] | None = None,
                     since: float | None = Query(None, description=(
                         f"{UNIX_TIME}: calls created at or after it.")),
                     until: float | None = Query(None, description=(
                         f"{UNIX_TIME}: calls created before it.")),
                     caller: str | None = Query(None, max_length=256),
                     transfer_status: str | None = Query(None, max_length=32),
                     limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    data = await api.records.list(state=state, since=since, until=until, caller=caller,
                                  transfer_status=transfer_status, limit=limit)
    return {"object": "list", "data": data}


@router.get("/v1/realtime/calls/{call_id}",
            summary="One call: state, SIP details, media figures, transfers, the timeline",
            description=MEDIA_FIGURES,
            response_model=None, responses={200: {"model": CallRecord}})
async def get_call(call_id: str, api: State) -> Mapping[str, object]:
    return await api.records.get(call_id)


@router.get("/v1/realtime/calls/{call_id}/recording", summary="The call's stereo WAV",
            response_class=FileResponse)
async def recording(call_id: str, api: State) -> FileResponse:
    path = await api.records.recording(call_id)
    return FileResponse(str(path), media_type="audio/wav", filename=f"{call_id}.wav")
