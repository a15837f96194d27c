"""The log cannot flood: a repeated line is written once per interval, with a count."""

from __future__ import annotations

import logging

import pytest

from sipbridge.logs import CALL_BURST, Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines() -> tuple[list[str], Throttle, Clock]:
    clock = Clock()
    throttle = Throttle(interval=10.0, kinds=3, clock=clock)
    written: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(self.format(record))

    handler = Keep()
    handler.addFilter(throttle)
    logger = logging.getLogger("sipbridge.test.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return written, throttle, clock


def test_a_flood_of_one_line_is_one_line_per_interval_with_the_count(
    lines: tuple[list[str], Throttle, Clock]
) -> None:
    written, _, clock = lines
    log = logging.getLogger("sipbridge.test.logs")
    for i in range(5000):
        log.info("dropped unparseable message from %s", f"10.0.0.{i % 250}")
    assert written == ["dropped unparseable message from 10.0.0.0"]
    clock.now += 10.0
    log.info("dropped unparseable message from %s", "192.0.2.1")
    assert written[1] == ("dropped unparseable message from 192.0.2.1 "
                          "(4999 more like it in the last 10 s)")
    clock.now += 30.0  # quiet since: the next one is written plain
    log.info("dropped unparseable message from %s", "192.0.2.2")
    assert written[2] == "dropped unparseable message from 192.0.2.2"


def test_different_lines_and_levels_are_counted_apart(
    lines: tuple[list[str], Throttle, Clock]
) -> None:
    written, _, _ = lines
    log = logging.getLogger("sipbridge.test.logs")
    for _ in range(3):
        log.info("a %s", 1)
        log.warning("a %s", 1)
        log.info("b")
    assert written == ["a 1", "a 1", "b"]


def test_a_repeated_traceback_is_written_once(
    lines: tuple[list[str], Throttle, Clock]
) -> None:
    written, _, _ = lines
    log = logging.getLogger("sipbridge.test.logs")
    for _ in range(50):
        try:
            raise TypeError("bad")
        except TypeError:
            log.exception("error handling a message from %s", "10.0.0.1")
    assert len(written) == 1 and written[0].count("Traceback") == 1


def test_memory_is_bounded(lines: tuple[list[str], Throttle, Clock]) -> None:
    written, throttle, _ = lines
    log = logging.getLogger("sipbridge.test.logs")
    for i in range(100):
        log.info(f"line {i}")  # a new template each time
    assert len(written) == 100
    assert throttle.tracked == 3


def test_a_calls_own_lines_are_written_in_full_and_apart_from_other_calls(
    lines: tuple[list[str], Throttle, Clock]
) -> None:
    written, _, _ = lines
    log = logging.getLogger("sipbridge.test.logs")
    for call in ("rtc_a", "rtc_b"):
        log.info("call %s from %s to %s", call, "sip:a@x", "sip:b@y")
        log.info("call %s: model %s (%s)", call, "connected", "ws://m")
        log.warning("call %s: model %s (%s)", call, "dropped", "closed")
        log.info("call %s: model %s (%s)", call, "reconnected", "ws://m")
        for digit in "159*0#":
            log.info("call %s dtmf %s %dms", call, digit, 180)
    assert len(written) == 2 * 10
    assert [w.split()[3] for w in written if " dtmf " in w][:6] == list("159*0#")


def test_a_call_that_floods_its_own_line_is_counted_past_the_burst(
    lines: tuple[list[str], Throttle, Clock]
) -> None:
    written, _, clock = lines
    log = logging.getLogger("sipbridge.test.logs")
    for _ in range(CALL_BURST + 500):
        log.info("call %s dtmf %s %dms", "rtc_a", "1", 40)
    assert len(written) == CALL_BURST
    clock.now += 10.0
    log.info("call %s dtmf %s %dms", "rtc_a", "2", 40)
    assert written[-1] == "call rtc_a dtmf 2 40ms (500 more like it in the last 10 s)"
