"""A gateway on its own as a cluster of one node: what the dashboard's overview and
`sipbridge cluster` show of it, from memory."""

from __future__ import annotations

import time
from collections.abc import Callable

from sipbridge.records import NodeRecord

MINUTE = 60
KEEP_MINUTES = 24 * 60  # per-minute counts kept: one day


class Minutes:
    """Per-minute increments of a running total, sampled now and then (sans-IO: the time
    of each sample is given)."""

    def __init__(self, keep: int = KEEP_MINUTES) -> None:
        self.keep = keep
        self.counts: dict[int, int] = {}
        self._last: int | None = None

    def sample(self, total: int, now: float) -> int:
        """Count what `total` grew by since the last sample in `now`'s minute; returns
        the increment (the first sample sets the base: 0)."""
        grown = 0 if self._last is None else max(0, total - self._last)
        self._last = total
        if grown:
            minute = int(now // MINUTE) * MINUTE
            self.counts[minute] = self.counts.get(minute, 0) + grown
            if len(self.counts) > self.keep:
                del self.counts[min(self.counts)]
        return grown

    def since(self, since: float) -> dict[int, int]:
        """The counts of the minutes that end after `since`."""
        return {m: n for m, n in sorted(self.counts.items()) if m + MINUTE > since}


class LocalNode:
    """`api.state.Nodes` for a gateway without a cluster: itself, always "up" (or
    "draining"), its refusals sampled by `sample` (the gateway calls it every few
    seconds)."""

    def __init__(self, name: str, api_url: str, live_calls: Callable[[], int],
                 refused: Callable[[], int], draining: Callable[[], bool]) -> None:
        self.name = name
        self.api_url = api_url
        self.started_at = time.time()
        self.live_calls = live_calls
        self.refused = refused
        self.draining = draining
        self.minutes = Minutes()

    def sample(self, now: float | None = None) -> int:
        return self.minutes.sample(self.refused(), time.time() if now is None else now)

    def record(self) -> NodeRecord:
        return {"name": self.name, "api_url": self.api_url,
                "state": "draining" if self.draining() else "up",
                "started_at": self.started_at, "heartbeat_age": 0.0,
                "live_calls": self.live_calls(), "refused": self.refused(), "this": True}

    async def nodes(self) -> list[NodeRecord]:
        return [self.record()]

    async def refusals(self, since: float) -> dict[int, int]:
        self.sample()
        return self.minutes.since(since)
