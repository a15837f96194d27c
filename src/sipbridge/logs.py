"""A log that cannot flood: the same line, repeated, is written once per interval with a
count of the repeats it stood for.

"The same line" is the same logger, level and message template (the text before its
arguments are filled in), so "dropped unparseable message from %s" from a thousand
scanners is one line every 10 s that names the first of them and counts the rest. A
traceback is kept on the line that is written and dropped with the repeats.

A line about a call ("call %s ..." with the call's id first) is the same line only within
that call, and up to CALL_BURST of them pass per interval: an operator reads a call's
lines in full (each DTMF digit, each transfer step), and their number is bounded by the
calls admitted. A call that sends more than that in an interval is counted like a flood.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

INTERVAL = 10.0  # seconds between two writings of the same line
CALL_BURST = 50  # lines of one kind about one call written per interval
KINDS = 4096  # lines remembered; the least recently written is forgotten first


Kind = tuple[str, int, str, str | None]  # logger, level, template, the call it is about


def kind_of(record: logging.LogRecord) -> tuple[Kind, int]:
    """What a record counts as the same line with, and how many of it pass per interval."""
    template = str(record.msg)
    args = record.args
    if (template.startswith("call %s") and isinstance(args, tuple) and args
            and isinstance(args[0], str)):
        return (record.name, record.levelno, template, args[0]), CALL_BURST
    return (record.name, record.levelno, template, None), 1


class Throttle(logging.Filter):
    """A handler filter: the first records of a kind in an interval pass (one, or
    CALL_BURST for a call's own lines), the rest are counted and dropped, and the first
    one of a later interval passes carrying the count."""

    def __init__(self, interval: float = INTERVAL, kinds: int = KINDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.kinds = kinds
        self.clock = clock
        self._lock = threading.Lock()  # records come from the store's and the model's threads
        # kind -> (interval started at, records passed in it, records dropped in it)
        self._seen: OrderedDict[Kind, tuple[float, int, int]] = OrderedDict()

    @property
    def tracked(self) -> int:
        """How many kinds of record it keeps counts for (at most ``kinds``)."""
        return len(self._seen)

    def filter(self, record: logging.LogRecord) -> bool:
        key, burst = kind_of(record)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.interval:
                started, passed, dropped = seen
                if passed >= burst:
                    self._seen[key] = (started, passed, dropped + 1)
                    return False
                self._seen[key] = (started, passed + 1, dropped)
                return True
            self._seen[key] = (now, 1, 0)
            self._seen.move_to_end(key)
            while len(self._seen) > self.kinds:
                self._seen.popitem(last=False)
        if seen is not None and seen[2]:
            # The record is shared by the handlers: each written line carries the count.
            record.msg = f"{record.msg} ({seen[2]} more like it in the last {now - seen[0]:.0f} s)"
        return True


def setup(level: str, interval: float = INTERVAL) -> None:
    """The process's logging: one line per record on stderr, throttled."""
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(Throttle(interval))
