"""One playout clock for every media session in the process, sans-IO, plus its asyncio driver.

Each session ticks on its own grid `start + k * interval` (20 ms for G.711):
the jitter buffer's playout and the outgoing RTP both run from it. Tick times
are computed by multiplication, never by adding up intervals, so the grid does
not drift however long a call lasts. All sessions share one heap of next ticks,
so 300 calls cost one timer and O(log n) per tick, not 300 timers.

`PlayoutScheduler` is the clock-free core (`deadline()` says when to come back,
`due(now)` hands out the ticks that have come); `PacerDriver` arms one
`loop.call_at` for that deadline and does nothing else.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Tick:
    """One session's k-th tick: due `at` (= start + k * interval), handed out `lateness` late.
    (Not frozen: one is made for every session every 20 ms, and a frozen dataclass's
    `__init__` costs five times a plain one's.)"""

    key: Hashable
    index: int
    at: float
    lateness: float


@dataclass(frozen=True, slots=True)
class _Session:
    start: float
    token: int  # tells this session's heap entries from a removed namesake's


class PlayoutScheduler:
    """The next tick of every session in one heap; `due(now)` pops those that have come.

    A session more than `max_catch_up` ticks behind (the process stalled) hands
    out only its latest `max_catch_up` ticks and counts the rest in `skipped`:
    a short burst to catch up, never a flood, then back on its grid.
    """

    def __init__(
        self, interval: float = 0.020, late_threshold: float = 0.005, max_catch_up: int = 3
    ) -> None:
        if interval <= 0 or late_threshold < 0 or max_catch_up < 1:
            raise ValueError("need interval > 0, late_threshold >= 0, max_catch_up >= 1")
        self.interval = interval
        self.late_threshold = late_threshold
        self.max_catch_up = max_catch_up
        self.ticks = self.late = self.skipped = 0
        self._sessions: dict[Hashable, _Session] = {}
        # (at, token, index, key): token is unique, so keys are never compared
        self._heap: list[tuple[float, int, int, Hashable]] = []
        self._tokens = itertools.count()

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def heap_size(self) -> int:
        """Entries in its heap, those of removed sessions not yet compacted away included."""
        return len(self._heap)

    def __contains__(self, key: object) -> bool:
        return key in self._sessions

    def add(self, key: Hashable, start: float) -> None:
        """Starts ticking `key` at `start`, `start + interval`, ... (ValueError if present)."""
        if key in self._sessions:
            raise ValueError(f"session {key!r} is already scheduled")
        session = _Session(start, next(self._tokens))
        self._sessions[key] = session
        heapq.heappush(self._heap, (start, session.token, 0, key))

    def remove(self, key: Hashable) -> None:
        """Stops ticking `key` (KeyError if unknown); its heap entry is dropped lazily."""
        del self._sessions[key]
        if len(self._heap) > 2 * len(self._sessions) + 16:  # many removals: compact
            live = {s.token for s in self._sessions.values()}
            self._heap = [entry for entry in self._heap if entry[1] in live]
            heapq.heapify(self._heap)

    def deadline(self) -> float | None:
        """When the earliest next tick of any session is due; None with no sessions."""
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float) -> list[Tick]:
        """Every tick due by `now`, in time order, each session's grid advanced past them."""
        out: list[Tick] = []
        heap = self._heap
        interval = self.interval
        while heap and heap[0][0] <= now:
            at, token, index, key = heapq.heappop(heap)
            session = self._sessions.get(key)
            if session is None or session.token != token:
                continue
            following = session.start + (index + 1) * interval
            if following <= now:  # more than this one tick is due: catch up, or skip
                last = self._last_due(session.start, now)
                behind = last - index + 1
                if behind > self.max_catch_up:
                    self.skipped += behind - self.max_catch_up
                    index = last - self.max_catch_up + 1
                at = session.start + index * interval
                following = session.start + (index + 1) * interval
            # else `at` is the entry's, start + index * interval as pushed: the same float
            lateness = now - at
            out.append(Tick(key, index, at, lateness))
            self.ticks += 1
            if lateness > self.late_threshold:
                self.late += 1
            heapq.heappush(heap, (following, token, index + 1, key))
        return out

    def _last_due(self, start: float, now: float) -> int:
        """The largest k with start + k * interval <= now, exact despite float rounding."""
        k = math.floor((now - start) / self.interval)
        while start + k * self.interval > now:
            k -= 1
        while start + (k + 1) * self.interval <= now:
            k += 1
        return k

    def _live(self, entry: tuple[float, int, int, Hashable]) -> bool:
        session = self._sessions.get(entry[3])
        return session is not None and session.token == entry[1]


COALESCE = 0.0005  # seconds


class PacerDriver:
    """Runs a `PlayoutScheduler` on an asyncio loop with one `call_at` armed at a time.

    `on_tick` runs for each due tick; an exception in it is logged and the
    other sessions carry on. `on_pass`, if given, runs once after the ticks of
    each timer pass (to send what they queued). Call `poke()` after adding a
    session whose first tick may be earlier than the armed one.
    """

    def __init__(
        self,
        scheduler: PlayoutScheduler,
        on_tick: Callable[[Tick], None],
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        on_pass: Callable[[], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self._on_tick = on_tick
        self._on_pass = on_pass
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._running = False

    def start(self) -> None:
        """Starts firing ticks (on the running loop unless one was given)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._running = True
        self._arm()

    def stop(self) -> None:
        """Stops firing ticks; the scheduler keeps its sessions."""
        self._running = False
        self._disarm()

    def poke(self) -> None:
        """Re-arms if the scheduler's deadline moved earlier (after `add`)."""
        if self._running:
            deadline = self.scheduler.deadline()
            if deadline is not None and deadline < self._armed_at:
                self._arm()

    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf

    def _arm(self) -> None:
        self._disarm()
        deadline = self.scheduler.deadline()
        if deadline is not None and self._loop is not None:
            self._armed_at = deadline
            self._handle = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        # asyncio may run a timer up to its clock resolution early. Ticks due within
        # COALESCE of now fire in this pass too: with calls spread over the 20 ms, one
        # timer per distinct tick time would cost as much as the ticks themselves.
        now = max(self._loop.time(), self._armed_at) + COALESCE
        self._handle = None
        for tick in self.scheduler.due(now):
            if not self._running:
                return
            if tick.key not in self.scheduler:  # removed by an earlier callback
                continue
            try:
                self._on_tick(tick)
            except Exception:
                logger.exception("playout tick for %r failed", tick.key)
        if self._on_pass is not None:
            try:
                self._on_pass()
            except Exception:
                logger.exception("the playout pass's sends failed")
        if self._running:
            self._arm()
