"""The HTTP API: OpenAI's Realtime call control (accept, reject, refer, hangup), the call
records, and the sideband WebSocket, served by FastAPI in the gateway's own event loop.

Every error, ours or the framework's, leaves in OpenAI's shape
(`{"error": {"message", "type", "param", "code"}}`) so the SDK raises its usual
exception classes (`openai.NotFoundError`, `openai.ConflictError`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Literal, Protocol

import uvicorn
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sipbridge.api.calllookup import CallRecords, call_error, manager
from sipbridge.api.callrecord import MEDIA_FIGURES, UNIX_TIME, CallList, CallRecord
from sipbridge.api.dashboard import basic_password, mount_dashboard
from sipbridge.api.errors import ApiError, from_validation_errors, unauthorized
from sipbridge.api.schemas import (
    FunctionTool,
    ReferBody,
    RejectBody,
    SessionConfig,
    refer_target_problem,
)
from sipbridge.api.session import SidebandSession
from sipbridge.calls.call import Call, CallError
from sipbridge.calls.manager import CallManager
from sipbridge.calls.tool import TOOL_NAME, tool_definition
from sipbridge.config import TRANSFER_FALLBACKS
from sipbridge.metrics import CONTENT_TYPE, Metrics
from sipbridge.store import Store

log = logging.getLogger("sipbridge.api")

MAX_BODY = 1 << 20
_HEADER_NAME = re.compile(r"[A-Za-z0-9!%*_+`'~.-]{1,64}")  # RFC 3261 token
_TOOL_TARGET = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")  # bytes: a session config with long instructions and many tools fits



class Control(Protocol):
    """What the API needs from the gateway."""

    calls: CallManager | None
    sideband: SidebandHubs
    store: Store | None
    metrics: Metrics


class SidebandHubs:
    """Each accepted call's sideband session and the WebSocket clients watching it."""

    def __init__(self) -> None:
        self.sessions: dict[str, SidebandSession] = {}
        self.clients: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self.models: dict[str, Callable[[dict[str, Any]], None]] = {}  # call -> model sink

    def open(self, call: Call, config: SessionConfig) -> SidebandSession:
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


def _fallback(options: dict[str, Any], key: str) -> str | None:
    """The transfer fallback named in a body's `sipbridge` options, checked (400 if unknown)."""
    fallback = options.get(key)
    if fallback is not None and fallback not in TRANSFER_FALLBACKS:
        raise ApiError(400, f"Invalid value: {fallback!r}. Supported values are: "
                       f"{', '.join(repr(f) for f in TRANSFER_FALLBACKS)}.",
                       param=f"sipbridge.{key}", code="invalid_value")
    return fallback


def _with_transfer_tool(config: SessionConfig, targets: object) -> SessionConfig:
    """Check the declared transfer targets and give the session the transfer tool."""
    if not isinstance(targets, dict) or not targets:
        raise ApiError(400, "sipbridge.transfer_targets must map names to tel: or sip: URIs.",
                       param="sipbridge.transfer_targets", code="invalid_value")
    for name, uri in targets.items():
        problem = (None if _TOOL_TARGET.fullmatch(str(name)) else
                   "names are 1-64 letters, digits, '_' or '-'")
        if problem is None:
            problem = refer_target_problem(uri) if isinstance(uri, str) else "not a string"
        if problem is not None:
            raise ApiError(400, f"Invalid transfer target {name!r}: {problem}",
                           param=f"sipbridge.transfer_targets.{name}", code="invalid_value")
    tools = [t for t in (config.tools or []) if getattr(t, "name", None) != TOOL_NAME]
    return config.model_copy(update={"tools": [*tools, FunctionTool(**tool_definition(targets))]})


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413 before the app reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = ApiError(413, f"Request body too large: the limit is {self.limit} bytes.",
                           code="request_too_large")
        sized = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await _error_response(too_big)(scope, receive, send)
                    return
                sized = True
        if sized:
            await self.app(scope, receive, send)  # uvicorn stops at Content-Length
            return
        # No length given (chunked): read the body here, up to the limit, and hand the app
        # the whole of it. Raising from inside the app's read would be caught by FastAPI's
        # body parsing and answered 400; the body is small enough to hold.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await _error_response(too_big)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


# Outside /v1/ but not public once API keys are set: what the gateway counts and the shape
# of its API say too much to strangers. Bearer or Basic (the key as password) both work.
KEYED_PATHS = frozenset({"/metrics", "/openapi.json"})


def create_app(control: Control, api_keys: list[str]) -> FastAPI:
    """The FastAPI application for one gateway. With no API keys configured the API is
    open (the default listens on loopback only)."""
    app = FastAPI(
        title="sipbridge",
        summary="OpenAI Realtime API call control for SIP calls, self-hosted.",
        version="0.1.0",
        docs_url=None, redoc_url=None,
    )
    keys = [k.encode() for k in api_keys]

    def authorize(header: str | None, *, basic: bool = False) -> None:
        """Check a `Bearer` API key (and, with `basic`, an API key as the password of
        HTTP Basic auth, as scrapers and browsers send it)."""
        if not keys:
            return
        if not header:
            raise unauthorized("You didn't provide an API key. Provide it in the "
                               "Authorization header as 'Bearer YOUR_KEY'.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer":
            given: str | None = token.strip()
        else:
            given = basic_password(header) if basic else None
        if given is None or not any(secrets.compare_digest(given.encode(), k) for k in keys):
            raise unauthorized("Incorrect API key provided.")

    @app.middleware("http")
    async def auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                   ) -> Response:
        path = request.url.path
        if path.startswith("/v1/") or path in KEYED_PATHS:
            try:
                authorize(request.headers.get("authorization"), basic=path in KEYED_PATHS)
            except ApiError as exc:
                response = _error_response(exc)
                if path in KEYED_PATHS:
                    response.headers["WWW-Authenticate"] = 'Bearer, Basic realm="sipbridge"'
                return response
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error_response(ApiError(
                400, "We could not parse the JSON body of your request. The body must be "
                "a JSON object.", code="invalid_json"))
        return _error_response(from_validation_errors(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {404: "Not found.", 405: "Method not allowed."}
        message = messages.get(exc.status_code, str(exc.detail))
        return _error_response(ApiError(exc.status_code, message,
                                        code="not_found" if exc.status_code == 404 else None))

    records = CallRecords(control)

    @contextlib.contextmanager
    def call_control() -> Iterator[CallManager]:
        try:
            yield manager(control)
        except CallError as exc:
            raise call_error(exc) from None

    @app.post("/v1/realtime/calls/{call_id}/accept", status_code=200,
              response_class=Response, summary="Accept an incoming call")
    async def accept(call_id: str, config: SessionConfig) -> Response:
        options = config.sipbridge or {}
        _fallback(options, "transfer_fallback")
        targets = options.get("transfer_targets")
        if targets is not None:
            config = _with_transfer_tool(config, targets)
        with call_control() as calls:
            call = calls.accept(call_id, config.session_object(), options)
            control.sideband.open(call, config)
        return Response(status_code=200)

    @app.post("/v1/realtime/calls/{call_id}/reject", status_code=200,
              response_class=Response, summary="Reject an incoming call")
    async def reject(call_id: str, body: RejectBody | None = None) -> Response:
        status = body.status_code if body is not None else 603
        with call_control() as calls:
            calls.reject(call_id, status)
        return Response(status_code=200)

    @app.post("/v1/realtime/calls/{call_id}/refer", status_code=200,
              response_class=Response, summary="Transfer an answered call (SIP REFER)")
    async def refer(call_id: str, body: ReferBody) -> Response:
        options = body.sipbridge or {}
        fallback = _fallback(options, "fallback")
        extra = options.get("headers") or {}
        if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _HEADER_NAME.fullmatch(k)
            and not _UNSAFE.search(v) for k, v in extra.items()
        ):
            raise ApiError(400, "sipbridge.headers must map header names to single-line "
                           "values.", param="sipbridge.headers", code="invalid_value")
        with call_control() as calls:
            calls.refer(call_id, body.target_uri, fallback=fallback,
                        headers=list(extra.items()))
        return Response(status_code=200)

    @app.post("/v1/realtime/calls/{call_id}/hangup", status_code=200,
              response_class=Response, summary="End a call")
    async def hangup(call_id: str) -> Response:
        with call_control() as calls:
            calls.hangup(call_id)
        return Response(status_code=200)

    @app.get("/v1/realtime/calls", summary="List calls, newest first (live ones included)",
             description=MEDIA_FIGURES,
             response_model=None, responses={200: {"model": CallList}})
    async def list_calls(state: Literal["ringing", "active", "ended"] | None = None,
                         since: float | None = Query(None, description=(
                             f"{UNIX_TIME}: calls created at or after it.")),
                         until: float | None = Query(None, description=(
                             f"{UNIX_TIME}: calls created before it.")),
                         caller: str | None = Query(None, max_length=256),
                         transfer_status: str | None = Query(None, max_length=32),
                         limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        data = await records.list(state=state, since=since, until=until, caller=caller,
                                  transfer_status=transfer_status, limit=limit)
        return {"object": "list", "data": data}

    @app.get("/v1/realtime/calls/{call_id}",
             summary="One call: state, SIP details, media figures, transfers, the timeline",
             description=MEDIA_FIGURES,
             response_model=None, responses={200: {"model": CallRecord}})
    async def get_call(call_id: str) -> Mapping[str, object]:
        return await records.get(call_id)

    @app.get("/v1/realtime/calls/{call_id}/recording", summary="The call's stereo WAV",
             response_class=FileResponse)
    async def recording(call_id: str) -> FileResponse:
        path = await records.recording(call_id)
        return FileResponse(str(path), media_type="audio/wav", filename=f"{call_id}.wav")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(control.metrics.render(), media_type=CONTENT_TYPE)

    @app.websocket("/v1/realtime")
    async def sideband(ws: WebSocket) -> None:
        try:
            authorize(ws.headers.get("authorization"))
        except ApiError:
            await ws.close(code=1008, reason="invalid API key")
            return
        call_id = ws.query_params.get("call_id", "")
        session = control.sideband.sessions.get(call_id)
        await ws.accept()
        if session is None:
            reason = _no_session_reason(control, call_id)
            await ws.send_json({"type": "error", "event_id": "event_" + secrets.token_hex(12),
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

    mount_dashboard(app, records, api_keys)
    return app


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


class _Server(uvicorn.Server):
    """uvicorn inside the gateway's loop: the gateway owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Runs the API on a socket it binds itself (so port 0 works and the port is known)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited on accept
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(BodyLimit(app, MAX_BODY), log_level="warning",
                                lifespan="off", ws_max_size=MAX_BODY, access_log=False,
                                timeout_graceful_shutdown=2)
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.server.serve([self.sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                return
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            # Open keep-alive and sideband connections get `timeout_graceful_shutdown`.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 5)
        self.sock.close()
