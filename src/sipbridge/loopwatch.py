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
  at the price of debug mode's overhead on every callback;
- the loop thread's own CPU time tells a loop that was busy (a callback computing, or C
  code holding the GIL) from one that was kept waiting.

Two kinds of delay over `threshold` are told apart:

- a *stall*: the loop was in a callback. Its stack was seen at least twice (a blocking
  call, such as a lookup, lets the watch see it as often as it looks), or the loop's
  thread was on the CPU for at least half the delay. That is a fault of the code, and
  what tests fail on;
- a *hold-up*: the loop's thread was waiting in its selector or off the CPU, ready but
  not run: the machine's other processes had the CPU, or another thread of ours (a
  speech model's) the GIL. Counted and logged apart.

Each is logged as a warning, at most one line per `log_interval` each (the lines between
are counted in the next one), and `summary()` gives the counts and the longest at
shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import Counter
from types import FrameType

log = logging.getLogger("sipbridge.loop")

LOG_INTERVAL = 10.0  # seconds between two warnings of a kind at most
IDLE = "the loop's selector"
# The innermost Python frame of a loop waiting for work: asyncio's selector, or, on
# uvloop (which waits in C), the call that runs the loop.
_IDLE_FRAMES = (("selectors.py", "select"), ("selectors.py", "poll"), ("runners.py", "run"),
                ("base_events.py", "run_until_complete"))
_IMPORT_FRAMES = "<frozen importlib"


def describe(frame: FrameType | None, depth: int = 4) -> str:
    """The innermost frames of a stack, innermost first: `file.py:LINE function <- ...`;
    an import's machinery shows as `import`, and a loop waiting in its selector as
    IDLE."""
    if frame is None:
        return "unknown"
    parts: list[str] = []
    f: FrameType | None = frame
    while f is not None and len(parts) < depth:
        code = f.f_code
        name = code.co_filename.rsplit("/", 1)[-1]
        if not parts and (name, code.co_name) in _IDLE_FRAMES:
            return IDLE
        if code.co_filename.startswith(_IMPORT_FRAMES):
            if not parts or parts[-1] != "import":
                parts.append("import")
        else:
            parts.append(f"{name}:{f.f_lineno} {code.co_name}")
        f = f.f_back
    return " <- ".join(parts)


class _Tally:
    """One kind of delay: how many, the longest and where, and its log's throttle."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0
        self.longest = 0.0
        self.where = ""
        self.logged_at = -1e9
        self.unlogged = 0
        self.unlogged_longest = 0.0

    def add(self, lag: float, where: str, now: float, threshold: float,
            interval: float) -> None:
        self.count += 1
        if lag > self.longest:
            self.longest, self.where = lag, where
        if now - self.logged_at < interval:
            self.unlogged += 1
            self.unlogged_longest = max(self.unlogged_longest, lag)
            return
        more = ""
        if self.unlogged:
            more = (f" (and {self.unlogged} more since the last line, the longest "
                    f"{self.unlogged_longest * 1000:.0f} ms)")
        log.warning("%s %.0f ms (bound %.0f ms) %s%s", self.message, lag * 1000,
                    threshold * 1000, where, more)
        self.logged_at = now
        self.unlogged = 0
        self.unlogged_longest = 0.0


class StallWatch:
    """Counts and names the event loop's delays longer than `threshold` seconds."""

    def __init__(self, threshold: float, *, period: float | None = None,
                 log_interval: float = LOG_INTERVAL) -> None:
        if threshold <= 0:
            raise ValueError("a stall threshold is a positive number of seconds")
        self.threshold = threshold
        # A tenth of the threshold (5 to 50 ms): the measure is within a tenth of it.
        self.period = period if period is not None else min(max(threshold / 10, 0.005), 0.05)
        self.log_interval = log_interval
        self.stalls = _Tally("event loop stalled")
        self.holdups = _Tally("event loop held up")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop_thread = 0
        self._due = 0.0  # when the next heartbeat should run (loop.time())
        self._cpu = 0.0  # the loop thread's CPU time at the last heartbeat
        self._samples: Counter[str] = Counter()  # the stacks seen since the last heartbeat
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch `loop`; call from the loop's own thread."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._cpu = time.thread_time()
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
        cpu = time.thread_time()
        lag = now - self._due
        if lag >= self.threshold:
            with self._lock:
                samples = Counter(self._samples)
            self.judge(lag, cpu - self._cpu, samples, now)
        with self._lock:
            self._samples.clear()
        self._cpu = cpu
        self._due = now + self.period
        self._handle = self._loop.call_at(self._due, self._heartbeat)

    def judge(self, lag: float, cpu: float, samples: Counter[str], now: float) -> None:
        """One late heartbeat's figures (its lag, the loop thread's CPU time meanwhile and
        the stacks sampled) judged: a stall (the loop ran code) or a hold-up (it was kept
        waiting)."""
        code = [(where, n) for where, n in samples.most_common() if where != IDLE]
        on_cpu = f"the loop's thread on the CPU {cpu * 1000:.0f} ms"
        if code and (code[0][1] >= 2 or cpu >= lag / 2):
            self.stalls.add(lag, f"in {code[0][0]} ({on_cpu})", now, self.threshold,
                            self.log_interval)
        elif cpu >= lag / 2:
            self.stalls.add(lag, f"in C code holding the GIL, no stack seen ({on_cpu})", now,
                            self.threshold, self.log_interval)
        else:
            seen = f"waiting in {IDLE}" if IDLE in samples else "no stack seen"
            self.holdups.add(lag, f"with no callback running ({seen}, {on_cpu}: the CPU or "
                             "the GIL was elsewhere)", now, self.threshold, self.log_interval)

    def summary(self) -> str:
        """One line: how many stalls and hold-ups, the longest of each and where; empty
        when there were none."""
        parts = [f"{t.message} {t.count} times over {self.threshold * 1000:.0f} ms, the "
                 f"longest {t.longest * 1000:.0f} ms {t.where}"
                 for t in (self.stalls, self.holdups) if t.count]
        return "; ".join(parts)

    # ---- on the sampler's thread ------------------------------------------------------

    def _sample(self) -> None:
        """While a heartbeat is overdue by half the threshold, note the loop thread's
        stack every period: the most frequent place is where the stall was."""
        loop = self._loop
        assert loop is not None
        while not self._stop.wait(self.period):
            if loop.time() - self._due < self.threshold / 2:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            where = describe(frame)
            del frame
            with self._lock:
                self._samples[where] += 1
