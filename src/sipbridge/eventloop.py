"""The event loop the gateway runs on: uvloop (libuv's loop, in C) or asyncio's own.

Everything of the gateway runs on one loop (SIP, the HTTP API, the media sockets'
readers), so the loop's own cost per wake-up, per reader added or removed and per timer
is paid on every call. uvloop pays less of it than asyncio's pure-Python loop
(bench/README.md, sip_cps). Two of its habits are evened out here so that code written
for asyncio's loop sees the same clock and timers on both:

- uvloop's `time()` is libuv's millisecond clock; ours returns `time.monotonic()`, the
  same CLOCK_MONOTONIC at full resolution (RTP arrival times, jitter, lag figures);
- uvloop's timers have a resolution of a millisecond and `call_at` rounds to the
  nearest one, so a timer could run up to half a millisecond before its time; ours
  counts the delay from libuv's last whole millisecond and rounds it up, so a timer
  runs at `when` or up to about 2 ms after it (asyncio's: up to about 1 ms), never
  before, and code that re-arms until its deadline has passed does not spin.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import time
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
CHOICES: tuple[EventLoopChoice, ...] = ("auto", "uvloop", "asyncio")


class EventLoopError(RuntimeError):
    """The loop asked for cannot be had (uvloop not installed)."""


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str, *, tls_listener: bool = False) -> Literal["uvloop", "asyncio"]:
    """The loop a setting names: "auto" is uvloop when it is installed, else asyncio.

    Not uvloop with a SIP TLS listener (`tls_listener`): an inbound TLS connection is
    admitted as TCP, paused, then handed to `start_tls`, and uvloop starts reading a
    connection after its `connection_made` whatever it was told, so the client's hello
    would be read as plain bytes (`sip.transport`). "auto" then takes asyncio."""
    if choice == "asyncio":
        return "asyncio"
    if choice == "uvloop":
        if not uvloop_installed():
            raise EventLoopError("event_loop = \"uvloop\" but uvloop is not installed "
                                 "(pip install uvloop, or event_loop = \"auto\")")
        if tls_listener:
            raise EventLoopError("event_loop = \"uvloop\" does not serve sip_tls (uvloop "
                                 "reads a TLS connection before its handshake can start); "
                                 "use event_loop = \"auto\" or \"asyncio\"")
        return "uvloop"
    if choice == "auto":
        return "uvloop" if uvloop_installed() and not tls_listener else "asyncio"
    raise EventLoopError(f"unknown event_loop {choice!r}; choose from {', '.join(CHOICES)}")


def loop_factory(choice: str, *, tls_listener: bool = False
                 ) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function that makes a new loop of the kind `choice` names (see `resolve`)."""
    if resolve(choice, tls_listener=tls_listener) == "asyncio":
        return asyncio.new_event_loop
    return _uvloop_class()


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """`asyncio.run(main)` on the loop `choice` names."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


def name(loop: asyncio.AbstractEventLoop) -> str:
    """"uvloop" or "asyncio": the kind of a running loop."""
    return "uvloop" if type(loop).__module__.startswith(("uvloop", __name__)) else "asyncio"


_UVLOOP: type[asyncio.AbstractEventLoop] | None = None


def _uvloop_class() -> type[asyncio.AbstractEventLoop]:
    global _UVLOOP
    if _UVLOOP is None:
        import uvloop

        class Loop(uvloop.Loop):
            """uvloop with asyncio's clock and never-early timers (the module's doc)."""

            def time(self) -> float:
                return time.monotonic()

            def call_at(  # type: ignore[override]  # asyncio's signature, less its generics
                    self, when: float, callback: Callable[..., object], *args: Any,
                    context: Context | None = None) -> asyncio.TimerHandle:
                # libuv counts a timer's delay in whole milliseconds from its clock's
                # last whole millisecond (uv_now): count from there, rounded up.
                now = time.monotonic()
                delay = ((math.ceil(when * 1000) - math.floor(now * 1000)) / 1000
                         if when > now else 0.0)
                handle: asyncio.TimerHandle = self.call_later(delay, callback, *args,
                                                              context=context)
                return handle

        _UVLOOP = Loop
    return _UVLOOP
