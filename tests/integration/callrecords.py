"""A call's record through the gateway's HTTP API (``GET /v1/realtime/calls...``), and
waits on it that fail with what they waited for and the last record seen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.polling import until


def api_get(base: str, key: str, path: str) -> Any:
    """``GET {base}{path}`` with the API key: the JSON body (fails on an error status)."""
    response = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {key}"},
                         timeout=10)
    response.raise_for_status()
    return response.json()


def call_record(base: str, key: str, call_id: str) -> dict[str, Any]:
    """The call's record as the API shows it now."""
    record: dict[str, Any] = api_get(base, key, f"/realtime/calls/{call_id}")
    return record


def wait_record(base: str, key: str, call_id: str, check: Callable[[dict[str, Any]], bool],
                what: str, timeout: float = 10.0, interval: float = 0.05) -> dict[str, Any]:
    """Poll the call's record until ``check`` holds and return it; an AssertionError naming
    ``what`` and the last record when it does not within ``timeout`` seconds."""
    return until(f"call {call_id} {what}", lambda: call_record(base, key, call_id), check,
                 timeout, interval)


def wait_first_call(base: str, key: str, timeout: float) -> str:
    """The id of the first call the gateway lists as active; fails when none is."""
    calls = until("an active call on the gateway",
                  lambda: list(api_get(base, key, "/realtime/calls")["data"]),
                  lambda calls: bool(calls) and calls[0]["state"] == "active", timeout)
    return str(calls[0]["id"])
