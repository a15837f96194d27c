"""A call's record through the gateway's HTTP API (``GET /v1/realtime/calls...``), and
waits on it that fail with what they waited for and the last record seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


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
    deadline = time.monotonic() + timeout
    while True:
        record = call_record(base, key, call_id)
        if check(record):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(
                f"call {call_id}: not {what} within {timeout:g} s; last record: {record}")
        time.sleep(interval)


def wait_first_call(base: str, key: str, timeout: float) -> str:
    """The id of the first call the gateway lists as active; fails when none is."""
    deadline = time.monotonic() + timeout
    calls: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        calls = api_get(base, key, "/realtime/calls")["data"]
        if calls and calls[0]["state"] == "active":
            return str(calls[0]["id"])
        time.sleep(0.05)
    raise AssertionError(f"no active call on the gateway within {timeout:g} s; "
                         f"last listed: {calls}")
