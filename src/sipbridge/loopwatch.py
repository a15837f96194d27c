"""Finds what keeps the event loop from running: a stall watchdog.

Everything the gateway does runs on one event loop, so one callback that blocks (a name
lookup, a file read, a long computation) delays every call's 20 ms media tick and every
SIP answer. `StallWatch` measures that delay and names its cause:

- on the loop, a heartbeat every `period` seconds measures how late it runs: a heartbeat
  due at t that runs at t + lag means the loop could not run anything for about `lag`
  (at least lag, at most lag + period: the period bounds the error);
- a thread of its own looks at the loop thread's stack while a heartbeat is overdue, so
  a stall is reported with the code it was in (`session.py:401 _send_frame <- ...`),
  which asyncio's debug mode (`slow_callback_duration`) would name only by its callback,
  at the price of debug mode's overhead on every callback. When the loop thread was in
  its selector, the loop was ready to run but did not get the CPU or the GIL (another
  thread, such as a speech model's, held it): the report says so.

A stall over `threshold` is counted and logged as a warning, at most one line per
`log_interval` (the lines between are counted in the next one), and `summary()` gives the
count and the longest at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections import Counter
from types import FrameType

log = logging.getLogger("sipbridge.loop")

LOG_INTERVAL = 10.0  # seconds between two stall warnings at most
_IDLE = ("selectors.py", "select"), ("selectors.py", "poll")
_IDLE_WHERE = "the loop's selector (no callback ran: the CPU or the GIL was elsewhere)"


def describe(frame: FrameType | None, depth: int = 4) -> str:
    """The innermost frames of a stack, innermost first: `file.py:LINE function <- ...`."""
    if frame is None:
        return "unknown"
    parts: list[str] = []
    f: FrameType | None = frame
    while f is not None and len(parts) < depth:
        code = f.f_code
        name = code.co_filename.rsplit("/", 1)[-1]
        if not parts and (name, code.co_name) in _IDLE:
            return _IDLE_WHERE
        parts.append(f"{name}:{f.f_lineno} {code.co_name}")
        f = f.f_back
    return " <- ".join(parts)


class StallWatch:
    """Counts and names the event loop's stalls longer than `threshold` seconds."""

    def __init__(self, threshold: float, *, period: float | None = None,
                 log_interval: float = LOG_INTERVAL) -> None:
        if threshold <= 0:
            raise ValueError("a stall threshold is a positive number of seconds")
        self.threshold = threshold
        # A tenth of the threshold (5 to 50 ms): the measure is within a tenth of it.
        self.period = period if period is not None else min(max(threshold / 10, 0.005), 0.05)
        self.log_interval = log_interval
        self.stalls = 0
        self.longest = 0.0
        self.longest_where = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop_thread = 0
        self._due = 0.0  # when the next heartbeat should run (loop.time())
        self._samples: Counter[str] = Counter()  # the stacks seen since the last heartbeat
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged_at = -LOG_INTERVAL
        self._unlogged = 0
        self._unlogged_longest = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch `loop`; call from the loop's own thread."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._due = loop.time() + self.period
        self._handle = loop.call_at(self._due, self._heartbeat)
        self._thread = threading.Thread(target=self._sample, name="stall-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None

    # ---- on the loop ------------------------------------------------------------------

    def _heartbeat(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        lag = now - self._due
        if lag >= self.threshold:
            with self._lock:
                where = self._samples.most_common(1)[0][0] if self._samples else \
                    "unknown (the sampler saw no stack)"
            self._stalled(lag, where, now)
        with self._lock:
            self._samples.clear()
        self._due = now + self.period
        self._handle = self._loop.call_at(self._due, self._heartbeat)

    def _stalled(self, lag: float, where: str, now: float) -> None:
        self.stalls += 1
        if lag > self.longest:
            self.longest, self.longest_where = lag, where
        if now - self._logged_at < self.log_interval:
            self._unlogged += 1
            self._unlogged_longest = max(self._unlogged_longest, lag)
            return
        more = ""
        if self._unlogged:
            more = (f" (and {self._unlogged} more since the last line, the longest "
                    f"{self._unlogged_longest * 1000:.0f} ms)")
        log.warning("event loop stalled %.0f ms (bound %.0f ms) in %s%s",
                    lag * 1000, self.threshold * 1000, where, more)
        self._logged_at = now
        self._unlogged = 0
        self._unlogged_longest = 0.0

    def summary(self) -> str:
        """One line: how many stalls, the longest and where; empty when there were none."""
        if not self.stalls:
            return ""
        return (f"event loop stalled {self.stalls} times over {self.threshold * 1000:.0f} ms, "
                f"the longest {self.longest * 1000:.0f} ms in {self.longest_where}")

    # ---- on the sampler's thread ------------------------------------------------------

    def _sample(self) -> None:
        """While a heartbeat is overdue by half the threshold, note the loop thread's
        stack every period: the most frequent place is where the stall was."""
        loop = self._loop
        assert loop is not None
        while not self._stop.wait(self.period):
            overdue = loop.time() - self._due
            if overdue < self.threshold / 2:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            where = describe(frame)
            del frame
            with self._lock:
                self._samples[where] += 1
