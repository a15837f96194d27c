"""The HTTP API: OpenAI's Realtime call control (accept, reject, refer, hangup), the call
records, and the sideband WebSocket, served by FastAPI in the gateway's own event loop.

The routes live in their own modules (`calls`, `sideband`, `prometheus`, `dashboard`);
`create_app` puts them together with what they share (`state.ApiState`), the API-key check
and the error handlers. Every error, ours or the framework's, leaves in OpenAI's shape
(`{"error": {"message", "type", "param", "code"}}`) so the SDK raises its usual exception
classes (`openai.NotFoundError`, `openai.ConflictError`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sipbridge.api import calls, outbound, prometheus, registrations, sideband
from sipbridge.api.auth import require_key
from sipbridge.api.calllookup import CallRecords
from sipbridge.api.dashboard import mount_dashboard
from sipbridge.api.errors import ApiError, error_response, invalid_request
from sipbridge.api.state import ApiState, Control, Nodes

MAX_BODY = 1 << 20  # bytes: a session config with long instructions and many tools fits


def create_app(control: Control, api_keys: list[str], *, open_metrics: bool = False,
               nodes: Nodes | None = None) -> FastAPI:
    """The FastAPI application for one gateway. With no API keys configured the API is
    open (the default listens on loopback only); `open_metrics` leaves `/metrics` open
    even with keys (for a scraper on loopback)."""
    app = FastAPI(
        title="sipbridge",
        summary="OpenAI Realtime API call control for SIP calls, self-hosted.",
        version="0.1.0",
        docs_url=None, redoc_url=None,
    )
    records = CallRecords(control)
    app.state.sipbridge = ApiState(control, records, tuple(k.encode() for k in api_keys),
                                    open_metrics=open_metrics, nodes=nodes)
    app.middleware("http")(require_key)
    app.exception_handler(ApiError)(_api_error)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.include_router(calls.router)
    app.include_router(outbound.router)
    app.include_router(prometheus.router)
    app.include_router(registrations.router)
    app.include_router(sideband.router)
    mount_dashboard(app)
    return app


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc)


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(ApiError(
            400, "We could not parse the JSON body of your request. The body must be "
            "a JSON object.", code="invalid_json"))
    return error_response(invalid_request(errors))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    messages = {404: "Not found.", 405: "Method not allowed."}
    message = messages.get(exc.status_code, str(exc.detail))
    return error_response(ApiError(exc.status_code, message,
                                   code="not_found" if exc.status_code == 404 else None))


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
                    await error_response(too_big)(scope, receive, send)
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
                await error_response(too_big)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay_body(b"".join(chunks), receive), send)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the whole `body` (already read) as one message, then what
    `receive` gives (the disconnect, when it comes)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# Seconds a client has to finish the TLS handshake before it is closed (asyncio's own
# bound is 60 s: a long time to hold a socket for a client that sends nothing).
TLS_HANDSHAKE_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    """uvicorn inside the gateway's loop: the gateway owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn does not pass a handshake bound to `create_server`: give it one, for
        # the listeners it creates here and only while it creates them.
        loop = asyncio.get_running_loop()
        create_server = loop.create_server

        async def bounded(*args: Any, **kwargs: Any) -> asyncio.Server:
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", TLS_HANDSHAKE_TIMEOUT)
            return await create_server(*args, **kwargs)

        try:
            loop.create_server = bounded  # type: ignore[method-assign]
        except AttributeError:  # a loop class that takes no attributes: asyncio's bound
            await super().startup(sockets)
            return
        try:
            await super().startup(sockets)
        finally:
            del loop.create_server


def tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    """The server side of HTTPS: TLS 1.2 and later with OpenSSL's default ciphers; a
    certificate or key that does not load raises `ValueError` naming the file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        files = cert if key is None else f"{cert} and {key}"
        raise ValueError(f"http_tls_cert/http_tls_key: cannot load {files}: {exc}") from None
    return context


class HttpServer:
    """Runs the API on a socket it binds itself (so port 0 works and the port is known);
    with `tls` (from `tls_context`), over HTTPS and WSS only."""

    def __init__(self, app: ASGIApp, host: str, port: int,
                 tls: ssl.SSLContext | None = None) -> None:
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
        config.load()
        config.ssl = tls  # ours, made and checked before anything was bound
        self.tls = tls is not None
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
