"""Waiting for a condition by polling, in tests: a wait that runs out of time fails with
what it waited for and the last value it saw, never returns as if all were well."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(what: str, within: float, value: object) -> AssertionError:
    return AssertionError(f"{what}: not within {within:g} s; last seen: {str(value)[:2000]}")


def until(what: str, get: Callable[[], T], ok: Callable[[T], bool], within: float,
          interval: float = 0.05) -> T:
    """Call ``get`` every ``interval`` seconds until ``ok`` holds of its value, and return
    that value; an AssertionError naming ``what`` and the last value after ``within`` seconds."""
    deadline = time.monotonic() + within
    value = get()
    while not ok(value):
        if time.monotonic() > deadline:
            raise _timed_out(what, within, value)
        time.sleep(interval)
        value = get()
    return value


async def until_async(what: str, get: Callable[[], T], ok: Callable[[T], bool],
                      within: float, interval: float = 0.01) -> T:
    """:func:`until` on an event loop: sleeps with ``asyncio.sleep`` between the polls, so
    the loop runs what is being waited for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    value = get()
    while not ok(value):
        if loop.time() > deadline:
            raise _timed_out(what, within, value)
        await asyncio.sleep(interval)
        value = get()
    return value
