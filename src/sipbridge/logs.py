"""A log that cannot flood: the same line, repeated, is written once per interval with a
count of the repeats it stood for.

"The same line" is the same logger, level and message template (the text before its
arguments are filled in), so "dropped unparseable message from %s" from a thousand
scanners is one line every 10 s that names the first of them and counts the rest. A
traceback is kept on the line that is written and dropped with the repeats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

INTERVAL = 10.0  # seconds between two writings of the same line
KINDS = 1000  # lines remembered; the least recently written is forgotten first


class Throttle(logging.Filter):
    """A handler filter: the first record of a kind passes, repeats within `interval`
    are counted and dropped, and the next one after it passes carrying the count."""

    def __init__(self, interval: float = INTERVAL, kinds: int = KINDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.kinds = kinds
        self.clock = clock
        self._lock = threading.Lock()  # records come from the store's and the model's threads
        # (logger, level, template) -> (written at, repeats dropped since)
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.interval:
                self._seen[key] = (seen[0], seen[1] + 1)
                return False
            self._seen[key] = (now, 0)
            self._seen.move_to_end(key)
            while len(self._seen) > self.kinds:
                self._seen.popitem(last=False)
        if seen is not None and seen[1]:
            # The record is shared by the handlers: each written line carries the count.
            record.msg = f"{record.msg} ({seen[1]} more like it in the last {now - seen[0]:.0f} s)"
        return True


def setup(level: str, interval: float = INTERVAL) -> None:
    """The process's logging: one line per record on stderr, throttled."""
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(Throttle(interval))
