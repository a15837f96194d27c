"""The thin asyncio layer that feeds the overload detector what only the loop can see.

Every `interval` it schedules a callback and measures how late it runs (the event
loop's lag) and, when asked, the process's CPU share since the last probe. The queue
delay of datagrams comes from the transport; the decisions are `sip.overload`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sipbridge.sip.overload import OverloadDetector

log = logging.getLogger("sipbridge.sip")

LOG_INTERVAL = 10.0  # seconds between two log lines about overload


class LoadProbe:
    """Loop lag and CPU share into an `OverloadDetector`, and one log line when it turns
    active (at most one per LOG_INTERVAL, with the count of rejections since)."""

    def __init__(self, detector: OverloadDetector, loop: asyncio.AbstractEventLoop, *,
                 interval: float = 0.1, cpu: bool = False,
                 on_lag: Callable[[float], None] | None = None) -> None:
        self.detector = detector
        self.on_lag = on_lag  # each lag measured, seconds (the metrics' histogram)
        self.loop = loop
        self.interval = interval
        self.cpu = cpu
        self.lag = 0.0  # the last lag measured, seconds
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cpu_at = (0.0, 0.0)  # (wall, process CPU) at the last probe
        self._activations = 0
        self._rejected = 0
        self._logged_at = float("-inf")

    def start(self) -> None:
        self._cpu_at = (time.monotonic(), time.process_time())
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        self._due = self.loop.time() + self.interval
        self._handle = self.loop.call_at(self._due, self._probe)

    def _probe(self) -> None:
        now = self.loop.time()
        self.lag = max(0.0, now - self._due)
        detector = self.detector
        detector.loop_lag(self.lag, now)
        if self.on_lag is not None:
            self.on_lag(self.lag)
        if self.cpu:
            wall, used = time.monotonic(), time.process_time()
            elapsed = wall - self._cpu_at[0]
            if elapsed > 0:
                detector.cpu((used - self._cpu_at[1]) / elapsed, now)
            self._cpu_at = (wall, used)
        self._report(now)
        self._arm()

    def _report(self, now: float) -> None:
        detector = self.detector
        if detector.activations == self._activations or now - self._logged_at < LOG_INTERVAL:
            return
        signs = ", ".join(f"{s.value} {n}" for s, n in detector.signs.items() if n)
        log.warning("overloaded: new calls get 503 + Retry-After (since the last report: "
                    "%d calls refused; overloaded since start, by sign: %s)",
                    detector.rejected - self._rejected, signs)
        self._activations = detector.activations
        self._rejected = detector.rejected
        self._logged_at = now
