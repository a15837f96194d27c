"""The call store's writer thread: writes queued by the caller, applied by one thread.

Writes never block the caller: they go on a bounded queue (a list under a lock), and the
caller wakes the writer thread only when it sleeps with nothing to do. Once awake, the
writer lingers `linger` seconds (50 ms) for more, so that one transaction takes what
the calls of that time write, then applies what it found in batches of at most
`_BATCH_MAX` writes (each batch one transaction): a write is committed within about
`linger` under normal load. Each transaction writes the pages it changed (a table's
last page, each index's) whatever it holds, and a call's record written several times
in one batch is written once: at 700 calls a second the writer thread spends ~90 us a
call lingering 50 ms against ~190 lingering 2 ms (bench/README.md). Transactions are
at least `linger` apart while writes keep coming.
Tasks (restart marking, retention), flushes and `close` go through the same queue, so they
are ordered with the writes queued before them, and they cut the linger short: `flush()`
returns as soon as what was queued before it is committed.

The writer never raises into the caller: failures are logged (logger "sipbridge.store") and
counted in `write_errors`; writes that do not fit in the queue are counted in `dropped`.

`QueuedWriter` knows nothing of databases: a subclass (`SqlStore`) says how a batch and a
task are applied and what to release when the thread ends.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self, TypeVar

log = logging.getLogger("sipbridge.store")

T = TypeVar("T")

_BATCH_MAX = 1000  # writes per transaction; a batch this size commits in a few ms
LINGER = 0.050  # seconds the writer waits, once woken, for more writes to batch

# What the writer thread is doing, as the callers see it (under `_lock`).
_BUSY = 0  # applying writes or about to look at the queue: nobody needs to wake it
_IDLE = 1  # asleep with nothing queued: any item wakes it
_LINGERING = 2  # asleep for `linger` with writes queued: a flush, task or stop wakes it


class Write(NamedTuple):
    """One statement and its parameters, as the caller queued it."""

    sql: str
    params: tuple[object, ...]


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = True  # no write failed since the previous flush


@dataclass
class _Task:
    fn: Callable[[Any], Any]  # given to `_run_task_fn`, on the writer thread
    future: Future[Any] = field(default_factory=Future)


class _Stop:
    pass


_Item = Write | _Flush | _Task | _Stop


class QueuedWriter(ABC):
    """The queue, the writer thread and the error accounting of a store."""

    @abstractmethod
    def _apply(self, writes: list[Write]) -> None:
        """On the writer thread: make the writes, counting (not raising) those that fail."""

    @abstractmethod
    def _run_task_fn(self, fn: Callable[[Any], T]) -> T:
        """On the writer thread: run a task; what it raises is counted and handed back."""

    @abstractmethod
    def _writer_done(self) -> None:
        """On the writer thread, as it ends: release what it holds."""

    def __init__(self, *, max_queue: int, linger: float = LINGER) -> None:
        self.write_errors = 0
        self.dropped = 0
        self.linger = linger
        self._errors_at_flush = 0  # write_errors when the writer last reached a flush
        self._count_lock = threading.Lock()
        self._closed = False
        self._close_lock = threading.Lock()
        # The queue: `_items` in order, of which `_queued` writes (bounded by `_max_queue`);
        # `_urgent` when a flush, task or stop is among them. All under `_lock`.
        self._max_queue = max_queue
        self._lock = threading.Lock()
        self._items: list[_Item] = []
        self._queued = 0
        self._urgent = False
        self._stopped = False  # the writer has ended: nothing more is taken
        self._state = _BUSY
        self._wake = threading.Lock()  # released (by a caller) to wake the sleeping writer
        self._wake.acquire()
        self._last_take = 0.0  # time.monotonic() when the writer last took the queue
        self._writer = threading.Thread(target=self._run, name="sipbridge-store", daemon=True)

    def _start_writer(self) -> None:
        self._writer.start()

    # --- accounting ---------------------------------------------------------------------

    def _count_errors(self, n: int, message: str, *args: object) -> None:
        with self._count_lock:
            before = self.write_errors
            after = self.write_errors = before + n
        if before == 0 or before // 1000 != after // 1000:
            log.error(message + " (write errors so far: %d)", *args, after)
        else:
            log.debug(message, *args)

    def _put(self, item: _Flush | _Task | _Stop) -> bool:
        """Queue a flush, a task or the stop, waking the writer if it sleeps (a linger
        too: these do not wait). False when the writer has ended. (Writes: `_enqueue`.)"""
        with self._lock:
            if self._stopped:
                return False
            self._items.append(item)
            self._urgent = True
            if self._state != _BUSY:
                self._state = _BUSY
                self._wake.release()
        return True

    def _enqueue(self, item: Write) -> None:
        """Queue a write, waking the writer only if it sleeps with nothing to do (a linger
        goes on, to gather more)."""
        with self._lock:
            if not (self._closed or self._stopped or self._queued >= self._max_queue):
                self._items.append(item)
                self._queued += 1
                if self._state == _IDLE:
                    self._state = _BUSY
                    self._wake.release()
                return
        if self._closed or self._stopped:
            self._count_errors(1, "call store write after close ignored")
            return
        with self._count_lock:
            self.dropped += 1
            dropped = self.dropped
        if dropped == 1 or dropped % 1000 == 0:
            log.error("call store queue full: write dropped (dropped so far: %d)", dropped)

    # --- for the caller -----------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is committed. False on timeout, after close,
        or if any write has failed since the previous flush (see `write_errors`)."""
        if self._closed or not self._writer.is_alive():
            return False
        marker = _Flush()
        if not self._put(marker):
            return False
        if not marker.done.wait(max(0.0, timeout)):
            return False
        return marker.ok

    def _run_task(self, fn: Callable[[Any], T], default: T) -> T:
        """`fn` run by the writer after what is queued; `default` if it fails or cannot run."""
        task = _Task(fn)
        if self._closed or not self._writer.is_alive() or not self._put(task):
            log.warning("call store is closed: %s skipped", getattr(fn, "__qualname__", fn))
            return default
        while True:
            try:
                result: T = task.future.result(timeout=1.0)
                return result
            except TimeoutError:
                if not self._writer.is_alive() and not task.future.done():
                    return default  # the writer died; the task will never run
            except Exception:  # noqa: BLE001 - already logged and counted by the writer
                return default

    def close(self) -> None:
        """Commit what is queued and stop the writer thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._writer.is_alive() and self._put(_Stop()):
            self._writer.join(timeout=30)
            if self._writer.is_alive():
                log.error("call store writer did not stop; closing anyway")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer thread --------------------------------------------------------------

    def _sleep(self, state: int, timeout: float | None) -> None:
        """Wait to be woken (in `state`, which the caller set under `_lock`) or for
        `timeout` seconds."""
        woken = self._wake.acquire() if timeout is None else self._wake.acquire(timeout=timeout)
        with self._lock:
            if self._state == state:  # nobody woke us: the wait ran out
                self._state = _BUSY
            elif not woken:  # woken just as the wait ran out: take what they released
                self._wake.acquire()

    def _take(self) -> list[_Item]:
        """What is queued, once there is something: after sleeping until a caller queues
        an item, then lingering for more writes (unless a flush, task or stop waits)."""
        with self._lock:
            idle = not self._items
            if idle:
                self._state = _IDLE
        if idle:
            self._sleep(_IDLE, None)
        if self.linger > 0:
            # A transaction at most every `linger` seconds; a full one at once.
            wait = self.linger if idle else self._last_take + self.linger - time.monotonic()
            with self._lock:
                linger = wait > 0 and not self._urgent and self._queued < _BATCH_MAX
                if linger:
                    self._state = _LINGERING
            if linger:
                self._sleep(_LINGERING, wait)
        with self._lock:
            items, self._items = self._items, []
            self._queued = 0
            self._urgent = False
        self._last_take = time.monotonic()
        return items

    def _run(self) -> None:
        try:
            while True:
                items = self._take()
                writes: list[Write] = []
                for i, item in enumerate(items):
                    if isinstance(item, Write):
                        writes.append(item)
                        if len(writes) >= _BATCH_MAX:
                            self._apply(writes)
                            writes = []
                        continue
                    if writes:
                        self._apply(writes)
                        writes = []
                    if isinstance(item, _Flush):
                        errors = self.write_errors
                        item.ok = errors == self._errors_at_flush
                        self._errors_at_flush = errors
                        item.done.set()
                    elif isinstance(item, _Task):
                        self._do_task(item)
                    else:  # _Stop: what came after it is never made (see the finally)
                        with self._lock:
                            self._items[:0] = items[i + 1:]
                        return
                if writes:
                    self._apply(writes)
        except BaseException:  # a bug here must not pass silently
            log.exception("call store writer thread crashed")
        finally:
            self._closed = True
            self._drain_after_stop()
            self._writer_done()

    def _do_task(self, task: _Task) -> None:
        try:
            result = self._run_task_fn(task.fn)
        except Exception as exc:  # noqa: BLE001 - reported to the caller; the writer goes on
            self._count_errors(1, "call store: %s failed: %s",
                               getattr(task.fn, "__qualname__", task.fn), self._describe(exc))
            task.future.set_exception(exc)
        else:
            task.future.set_result(result)

    def _describe(self, exc: BaseException) -> str:
        """`exc` as logs may show it."""
        return str(exc)

    def _drain_after_stop(self) -> None:
        """Take nothing more; release whoever waits on the writer; count writes that will
        never be made."""
        with self._lock:
            self._stopped = True
            items, self._items = self._items, []
            self._queued = 0
        lost = 0
        for item in items:
            if isinstance(item, Write):
                lost += 1
            elif isinstance(item, _Flush):
                item.ok = False
                item.done.set()
            elif isinstance(item, _Task):
                item.future.set_exception(RuntimeError("call store closed"))
        if lost:
            self._count_errors(lost, "call store stopped with %d writes queued", lost)
