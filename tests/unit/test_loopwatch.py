"""The stall watchdog: a blocking callback is counted, measured and named; short ones
are not; the log has one line per interval however many stalls there are."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import pytest

from sipbridge.loopwatch import IDLE, StallWatch, describe


def blocks_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # as a blocking lookup would


async def _run(watch: StallWatch, *callbacks: tuple[float, float]) -> None:
    loop = asyncio.get_running_loop()
    watch.start(loop)
    try:
        for delay, seconds in callbacks:
            loop.call_later(delay, blocks_the_loop, seconds)
        await asyncio.sleep(max(d + s for d, s in callbacks) + 0.1)
    finally:
        watch.stop()


def test_a_blocking_callback_is_counted_measured_and_named(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = StallWatch(0.1)
    with caplog.at_level(logging.WARNING, "sipbridge.loop"):
        asyncio.run(_run(watch, (0.05, 0.25)))
    assert watch.stalls.count == 1
    assert 0.22 <= watch.stalls.longest < 0.6
    assert "test_loopwatch.py" in watch.stalls.where
    assert "blocks_the_loop" in watch.stalls.where
    [record] = [r for r in caplog.records if r.name == "sipbridge.loop"]
    assert "event loop stalled" in record.getMessage()
    assert "blocks_the_loop" in record.getMessage()
    assert "1 times over 100 ms" in watch.summary()


def test_callbacks_under_the_threshold_are_not_stalls() -> None:
    watch = StallWatch(0.2)
    asyncio.run(_run(watch, *((0.02 * i, 0.01) for i in range(10))))
    assert watch.stalls.count == 0
    assert watch.summary() == ""


def test_stalls_are_logged_once_per_interval_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = StallWatch(0.05, log_interval=60)
    with caplog.at_level(logging.WARNING, "sipbridge.loop"):
        asyncio.run(_run(watch, (0.02, 0.1), (0.2, 0.1), (0.4, 0.1)))
    assert watch.stalls.count == 3
    assert len([r for r in caplog.records if r.name == "sipbridge.loop"]) == 1


def test_an_idle_loop_is_told_apart_from_a_callback() -> None:
    class Code:
        co_filename = "/usr/lib/python3.11/selectors.py"
        co_name = "select"

    class Frame:
        f_code = Code()
        f_lineno = 468
        f_back = None

    assert describe(Frame()) == IDLE  # type: ignore[arg-type]
    assert describe(None) == "unknown"


def test_a_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StallWatch(0)


def computes(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:  # on the CPU all along
        pass


def test_a_computing_callback_is_a_stall_and_a_starved_loop_a_hold_up() -> None:
    watch = StallWatch(0.1)
    # The loop's thread used the CPU for most of the delay: a stall even unseen.
    watch.judge(0.3, 0.25, Counter(), 1.0)
    # Waiting in the selector, hardly on the CPU: a hold-up.
    watch.judge(0.3, 0.01, Counter({IDLE: 3}), 2.0)
    # One glimpse of code while off the CPU: the process was descheduled there.
    watch.judge(0.3, 0.01, Counter({"x.py:1 f": 1}), 3.0)
    assert watch.stalls.count == 1 and "GIL" in watch.stalls.where
    assert watch.holdups.count == 2


def test_computing_on_the_loop_is_named() -> None:
    watch = StallWatch(0.1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        watch.start(loop)
        loop.call_later(0.05, computes, 0.25)
        await asyncio.sleep(0.45)
        watch.stop()

    asyncio.run(main())
    assert watch.stalls.count == 1
    assert "computes" in watch.stalls.where


uvloop = pytest.importorskip("uvloop")


def test_on_uvloop_a_blocking_callback_is_named_and_an_idle_loop_is_idle() -> None:
    from sipbridge import eventloop

    watch = StallWatch(0.1)
    eventloop.run(_run(watch, (0.05, 0.25)), "uvloop")
    assert watch.stalls.count == 1
    assert "blocks_the_loop" in watch.stalls.where
    assert watch.holdups.count == 0

    # uvloop waits in C: the innermost Python frame is the call that runs the loop.
    import sys
    import threading

    seen: list[str] = []

    async def idle() -> None:
        await asyncio.sleep(0.05)
        frame = sys._current_frames()[threading.get_ident()]  # a frame of this callback
        assert describe(frame) != IDLE
        await asyncio.sleep(0.2)

    ident: list[int] = []

    def runner() -> None:
        ident.append(threading.get_ident())
        eventloop.run(idle(), "uvloop")

    thread = threading.Thread(target=runner)
    thread.start()
    time.sleep(0.15)  # the loop is in its 0.2 s sleep
    seen.append(describe(sys._current_frames().get(ident[0])))
    thread.join(2)
    assert seen == [IDLE]
