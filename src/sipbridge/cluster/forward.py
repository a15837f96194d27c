"""Any node answers for any call: the API's requests about a call held by another node
(`/v1/realtime/calls/{call_id}` and what is under it) and its sideband WebSocket
(`/v1/realtime?call_id=...`) are carried to that node, found from the call's id
(`calls.call.call_node`) and the cluster's membership (`membership.ClusterNode`).

- A request is carried only with a valid API key (checked here too: no stranger's request
  is forwarded). A forwarded request carries the cluster secret (`X-Sipbridge-Cluster`)
  and the client's own Authorization, which the owner checks as usual (the nodes share
  their API keys); the owner serves it itself, never forwarding it on. A request that
  carries a wrong secret is answered 401 and logged (one line per `LOG_EVERY` s with the
  count).
- A call whose node is gone or stopped: control (accept, refer, ...) is answered 409 with
  the reason at once; reads (the record, the recording) come from the shared store, as on
  the owner. A node that does not answer within `CONNECT_TIMEOUT` is treated the same
  way (409 naming the error), so no request hangs on a dead node.
- The sideband: frames pass through both ways unchanged; when either side closes, the
  other is closed with the same code and reason; when the owner goes away without a
  close, the client is closed 1011 naming the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from sipbridge.api.app import replay_body
from sipbridge.api.auth import authorize
from sipbridge.api.errors import ApiError, error_response
from sipbridge.calls.call import call_node
from sipbridge.cluster.membership import ClusterNode, Owner
from sipbridge.realtime.ids import new_event_id

log = logging.getLogger("sipbridge.cluster")

SECRET_HEADER = "x-sipbridge-cluster"
FROM_HEADER = "x-sipbridge-forwarded-by"
CONNECT_TIMEOUT = 2.0  # s to reach the owner
REPLY_TIMEOUT = 15.0  # s for its answer
LOG_EVERY = 10.0  # s between two log lines about refused forwarded requests
MAX_FRAME = 1 << 20  # bytes, as the API's own WebSocket takes
PING_INTERVAL = 5.0  # s: an owner that vanished without a word is found within 2 of them
_CALL_PATH = re.compile(r"^/v1/realtime/calls/([^/]+)(?:/[a-z_]+)?$")
_HOP_BY_HOP = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding",
                         b"te", b"upgrade", b"proxy-authorization", b"content-length",
                         SECRET_HEADER.encode(), FROM_HEADER.encode()})
_READS = frozenset({"GET", "HEAD"})


class Forwarder:
    """ASGI middleware in front of the API: a request about a call of another node goes
    to that node."""

    def __init__(self, app: ASGIApp, node: ClusterNode, secret: str, *,
                 keys: tuple[bytes, ...] = (), verify: bool = True) -> None:
        self.app = app
        self.node = node
        self.secret = secret.encode()
        self.keys = keys  # the API keys: a request without one is not carried anywhere
        self.verify = verify
        self._client: httpx.AsyncClient | None = None
        self._refused = 0
        self._logged_at = -LOG_EVERY

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(REPLY_TIMEOUT, connect=CONNECT_TIMEOUT),
                verify=self.verify, follow_redirects=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = _header(scope, SECRET_HEADER.encode())
        if given is not None:  # forwarded to us: ours to serve, if the secret holds
            if secrets.compare_digest(given, self.secret):
                await self.app(scope, receive, send)
                return
            self._refuse(scope)
            if kind == "http":
                await error_response(ApiError(401, "Invalid cluster secret.",
                                              code="invalid_cluster_secret"))(
                    scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008,
                            "reason": "invalid cluster secret"})
            return
        call_id = _call_id(scope)
        name = call_node(call_id) if call_id else None
        owner = await self.node.owner(name) if name and name != self.node.name else None
        if owner is None:
            await self.app(scope, receive, send)
            return
        credentials = _header(scope, b"authorization")
        try:
            authorize(self.keys, None if credentials is None else credentials.decode("latin-1"))
        except ApiError as exc:  # answered here as the API would, nothing forwarded
            if kind == "http":
                await error_response(exc)(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008,
                            "reason": "invalid API key"})
            return
        if kind == "http":
            await self._http(owner, call_id, scope, receive, send)
        else:
            await self._websocket(owner, call_id, scope, receive, send)

    def _refuse(self, scope: Scope) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            client = scope.get("client") or ("?", 0)
            log.warning("cluster: %d forwarded request(s) refused for a wrong cluster "
                        "secret (the last from %s, %s %s)", self._refused, client[0],
                        scope.get("method", "WEBSOCKET"), scope.get("path", ""))
            self._refused = 0
            self._logged_at = now

    # --- HTTP -----------------------------------------------------------------------------

    async def _http(self, owner: Owner, call_id: str, scope: Scope, receive: Receive,
                    send: Send) -> None:
        method = scope["method"]
        if owner.gone is not None:
            if method in _READS:  # the record is in the shared store
                await self.app(scope, receive, send)
                return
            await error_response(_gone(call_id, owner.gone))(scope, receive, send)
            return
        body = await _body(receive)
        if body is None:
            return  # the client went away
        url = owner.api_url + scope["path"]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        request = self.client().build_request(
            method, url, content=body, headers=self._headers(scope))
        try:
            reply = await self.client().send(request, stream=True)
        except httpx.HTTPError as exc:
            if method in _READS:  # from the store, as for a gone node
                await self.app(scope, replay_body(body, receive), send)
                return
            problem = f"node {owner.name!r} does not answer ({_why(exc)})"
            await error_response(_gone(call_id, problem))(scope, receive, send)
            return
        try:
            await send({"type": "http.response.start", "status": reply.status_code,
                        "headers": [(k, v) for k, v in reply.headers.raw
                                    if k.lower() not in _HOP_BY_HOP]
                        + ([(b"content-length", reply.headers["content-length"].encode())]
                           if "content-length" in reply.headers else [])})
            async for chunk in reply.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:  # the owner died mid-answer: the client sees a cut
            log.warning("cluster: node %s cut its answer to %s %s: %s", owner.name, method,
                        scope["path"], _why(exc))
        finally:
            await reply.aclose()

    def _headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in scope.get("headers", ()) if k not in _HOP_BY_HOP
                   and not k.startswith(b"sec-websocket")]
        headers.append((SECRET_HEADER.encode(), self.secret))
        headers.append((FROM_HEADER.encode(), self.node.name.encode()))
        return headers

    # --- the sideband WebSocket ----------------------------------------------------------

    async def _websocket(self, owner: Owner, call_id: str, scope: Scope, receive: Receive,
                         send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if owner.gone is not None:
            await _refuse_socket(send, f"Call '{call_id}' has ended: {owner.gone}.",
                                 "call_node_gone")
            return
        url = "ws" + owner.api_url.removeprefix("http") + scope["path"] + "?" + \
            scope.get("query_string", b"").decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1"))
                   for k, v in self._headers(scope)]
        try:
            upstream = await connect(url, additional_headers=headers,
                                     open_timeout=CONNECT_TIMEOUT, max_size=MAX_FRAME,
                                     ping_interval=PING_INTERVAL, ping_timeout=PING_INTERVAL,
                                     compression=None,
                                     ssl=None if url.startswith("ws:") else _ssl(self.verify))
        except InvalidStatus as exc:  # the owner refused it (an API key it does not take)
            await send({"type": "websocket.close", "code": 1008,
                        "reason": f"refused by node {owner.name} "
                        f"(HTTP {exc.response.status_code})"})
            return
        except (OSError, TimeoutError, WebSocketException) as exc:
            await _refuse_socket(send, f"Call '{call_id}': node {owner.name!r} does not "
                                 f"answer ({_why(exc)}).", "call_node_gone")
            return
        await send({"type": "websocket.accept"})
        async with upstream:
            await _pipe(upstream, receive, send, owner.name)


async def _pipe(upstream: ClientConnection, receive: Receive, send: Send, name: str) -> None:
    """Frames both ways until one side closes; then the other is closed alike."""

    async def down() -> None:  # owner -> client
        try:
            async for frame in upstream:
                if isinstance(frame, str):
                    await send({"type": "websocket.send", "text": frame})
                else:
                    await send({"type": "websocket.send", "bytes": frame})
        except ConnectionClosed:
            pass
        close = upstream.protocol.close_rcvd
        if close is None:
            code, reason = 1011, f"node {name} went away"
        else:
            code, reason = close.code, close.reason
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.close", "code": code, "reason": reason})

    async def up() -> None:  # client -> owner
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(message.get("code", 1000) or 1000,
                                     message.get("reason") or "")
                return
            text = message.get("text")
            try:
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            except ConnectionClosed:
                return

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _refuse_socket(send: Send, message: str, code: str) -> None:
    """Accept, say why in an error event (as the API's own sideband does), close 1008."""
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({
        "type": "error", "event_id": new_event_id(),
        "error": {"type": "invalid_request_error", "code": code, "message": message,
                  "param": "call_id", "event_id": None}})})
    await send({"type": "websocket.close", "code": 1008, "reason": code})


def _gone(call_id: str, why: str) -> ApiError:
    return ApiError(409, f"Call '{call_id}' cannot be controlled: {why}; the call has ended.",
                    code="call_node_gone")


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _ssl(verify: bool) -> Any:
    import ssl

    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _call_id(scope: Scope) -> str:
    if scope["type"] == "websocket":
        if scope["path"] != "/v1/realtime":
            return ""
        ids = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("call_id")
        return ids[0] if ids else ""
    match = _CALL_PATH.match(scope["path"])
    return match.group(1) if match else ""


async def _body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)

