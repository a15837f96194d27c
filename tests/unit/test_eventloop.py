"""The event loop setting: auto, uvloop and asyncio give the loop they name, and on uvloop
the clock and timers behave as on asyncio's loop (full-resolution monotonic time, timers
never early)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sipbridge import eventloop
from sipbridge.config import load_config


async def _kind_and_clock() -> tuple[str, float]:
    loop = asyncio.get_running_loop()
    return eventloop.name(loop), loop.time() - time.monotonic()


def test_asyncio_is_asyncio_and_auto_is_uvloop_when_installed() -> None:
    kind, _ = eventloop.run(_kind_and_clock(), "asyncio")
    assert kind == "asyncio"
    kind, _ = eventloop.run(_kind_and_clock(), "auto")
    assert kind == ("uvloop" if eventloop.uvloop_installed() else "asyncio")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(eventloop.EventLoopError):
        eventloop.resolve("trio")


def test_uvloop_without_uvloop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventloop, "uvloop_installed", lambda: False)
    with pytest.raises(eventloop.EventLoopError, match="not installed"):
        eventloop.loop_factory("uvloop")
    assert eventloop.resolve("auto") == "asyncio"


def test_the_setting_is_read_from_the_config(tmp_path: object) -> None:
    assert load_config(None).event_loop == "asyncio"  # uvloop measured no faster
    assert load_config(None, event_loop="uvloop").event_loop == "uvloop"


async def _lateness(n: int) -> list[float]:
    loop = asyncio.get_running_loop()
    late = []

    def fired(fut: asyncio.Future[float]) -> None:
        fut.set_result(loop.time())

    for i in range(n):
        fut: asyncio.Future[float] = loop.create_future()
        due = loop.time() + 0.002 + i * 0.00013  # not on a millisecond
        loop.call_at(due, fired, fut)
        late.append(await fut - due)
    return late


def test_on_uvloop_the_clock_is_monotonic_and_timers_are_never_early() -> None:
    pytest.importorskip("uvloop")
    kind, offset = eventloop.run(_kind_and_clock(), "uvloop")
    assert kind == "uvloop"
    assert abs(offset) < 0.0005  # time.monotonic(), not libuv's millisecond clock
    late = eventloop.run(_lateness(30), "uvloop")
    assert min(late) > -0.0001, late  # uvloop's own call_at runs up to 0.5 ms early
    assert max(late) < 0.05


def test_a_sip_tls_listener_keeps_auto_on_asyncio_and_refuses_uvloop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventloop, "uvloop_installed", lambda: True)
    assert eventloop.resolve("auto") == "uvloop"
    assert eventloop.resolve("auto", tls_listener=True) == "asyncio"
    with pytest.raises(eventloop.EventLoopError, match="sip_tls"):
        eventloop.resolve("uvloop", tls_listener=True)
