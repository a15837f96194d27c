"""API keys: every `/v1/` request, the sideband WebSocket included, and the keyed paths
outside it carry one, once keys are configured."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence

from fastapi import Request
from fastapi.responses import Response

from sipbridge.api.dashboard import basic_password
from sipbridge.api.errors import ApiError, error_response, unauthorized
from sipbridge.api.state import api_state

# Outside /v1/ but not public once API keys are set: what the gateway counts and the shape
# of its API say too much to strangers. Bearer or Basic (the key as password) both work.
KEYED_PATHS = frozenset({"/metrics", "/openapi.json"})


def authorize(keys: Sequence[bytes], header: str | None, *, basic: bool = False) -> None:
    """Check a `Bearer` API key (and, with `basic`, an API key as the password of HTTP Basic
    auth, as scrapers and browsers send it) against `keys`; none configured: all pass."""
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


async def require_key(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                      ) -> Response:
    """HTTP middleware: a request to a keyed path without a valid key is answered 401."""
    path = request.url.path
    if path == "/metrics" and api_state(request).open_metrics:
        return await call_next(request)
    if path.startswith("/v1/") or path in KEYED_PATHS:
        try:
            authorize(api_state(request).keys, request.headers.get("authorization"),
                      basic=path in KEYED_PATHS)
        except ApiError as exc:
            response = error_response(exc)
            if path in KEYED_PATHS:
                response.headers["WWW-Authenticate"] = 'Bearer, Basic realm="sipbridge"'
            return response
    return await call_next(request)
