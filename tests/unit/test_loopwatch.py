"""The stall watchdog: a blocking callback is counted, measured and named; short ones
are not; the log has one line per interval however many stalls there are."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from sipbridge.loopwatch import StallWatch, describe


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
    assert watch.stalls == 1
    assert 0.22 <= watch.longest < 0.6
    assert "test_loopwatch.py" in watch.longest_where
    assert "blocks_the_loop" in watch.longest_where
    [record] = [r for r in caplog.records if r.name == "sipbridge.loop"]
    assert "event loop stalled" in record.getMessage()
    assert "blocks_the_loop" in record.getMessage()
    assert "1 times over 100 ms" in watch.summary()


def test_callbacks_under_the_threshold_are_not_stalls() -> None:
    watch = StallWatch(0.2)
    asyncio.run(_run(watch, *((0.02 * i, 0.01) for i in range(10))))
    assert watch.stalls == 0
    assert watch.summary() == ""


def test_stalls_are_logged_once_per_interval_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = StallWatch(0.05, log_interval=60)
    with caplog.at_level(logging.WARNING, "sipbridge.loop"):
        asyncio.run(_run(watch, (0.02, 0.1), (0.2, 0.1), (0.4, 0.1)))
    assert watch.stalls == 3
    assert len([r for r in caplog.records if r.name == "sipbridge.loop"]) == 1


def test_an_idle_loop_is_told_apart_from_a_callback() -> None:
    class Code:
        co_filename = "/usr/lib/python3.11/selectors.py"
        co_name = "select"

    class Frame:
        f_code = Code()
        f_lineno = 468
        f_back = None

    assert "selector" in describe(Frame())  # type: ignore[arg-type]
    assert describe(None) == "unknown"


def test_a_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StallWatch(0)
