"""API errors in OpenAI's shape: an HTTP status and OpenAI's error object.

OpenAI answers a bad request with `{"error": {"message", "type", "param", "code"}}`. The SDK
turns the status into its exception class (400 `BadRequestError`, 401 `AuthenticationError`,
404 `NotFoundError`, 409 `ConflictError`), so apps handle sipbridge's errors exactly as
OpenAI's. The error object itself, and how pydantic's errors read in it, is the Realtime
protocol's (`sipbridge.realtime.errors`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse

from sipbridge.realtime.errors import RealtimeError, from_validation_errors


class ApiError(RealtimeError):
    """An error response: HTTP status plus OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, type=type, param=param, code=code)
        self.status = status

    def body(self) -> dict[str, object]:
        """The JSON response body; all four keys are always present."""
        return {"error": self.fields()}

    def __repr__(self) -> str:
        return (
            f"ApiError({self.status}, {self.message!r}, type={self.type!r}, "
            f"param={self.param!r}, code={self.code!r})"
        )


def error_response(error: ApiError) -> JSONResponse:
    """The HTTP response that carries `error`."""
    return JSONResponse(error.body(), status_code=error.status)


def invalid_request(errors: Sequence[Mapping[str, Any]], *, prefix: str = "") -> ApiError:
    """400 for the first error of a pydantic (or FastAPI) error list; `param` is the dotted
    path of the bad value under `prefix`."""
    error = from_validation_errors(errors, prefix=prefix)
    return ApiError(400, error.message, type=error.type, param=error.param, code=error.code)


def not_found(what: str) -> ApiError:
    """404 for a missing resource, e.g. `not_found("call 'rtc_123'")`."""
    return ApiError(404, f"{what[:1].upper()}{what[1:]} not found.", code="not_found")


def conflict(message: str) -> ApiError:
    """409: the request does not fit the resource's current state."""
    return ApiError(409, message, code="invalid_state")


def unauthorized(message: str) -> ApiError:
    """401: missing or wrong API key."""
    return ApiError(401, message, code="invalid_api_key")
