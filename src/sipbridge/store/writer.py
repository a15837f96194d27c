"""The call store's writer thread: writes queued by the caller, applied by one thread.

Writes never block the caller: they are put on a bounded queue, and one writer thread
applies what it finds there in small batches, as soon as the queue is drained (a batch is
at most `_BATCH_MAX` items), so a write is committed within a few milliseconds under normal
load. Tasks (restart marking, retention) and flushes go through the same queue, so they are
ordered with the writes queued before them.

The writer never raises into the caller: failures are logged (logger "sipbridge.store") and
counted in `write_errors`; writes that do not fit in the queue are counted in `dropped`.

`QueuedWriter` knows nothing of databases: a subclass (`SqlStore`) says how a batch and a
task are applied and what to release when the thread ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

log = logging.getLogger("sipbridge.store")

T = TypeVar("T")

_BATCH_MAX = 500  # writes per transaction; a batch this size commits in a few ms


@dataclass
class Write:
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

    def __init__(self, *, max_queue: int) -> None:
        self.write_errors = 0
        self.dropped = 0
        self._errors_at_flush = 0  # write_errors when the writer last reached a flush
        self._count_lock = threading.Lock()
        self._closed = False
        self._close_lock = threading.Lock()
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=max_queue)
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

    def _enqueue(self, item: Write) -> None:
        if self._closed:
            self._count_errors(1, "call store write after close ignored")
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
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
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        if not marker.done.wait(max(0.0, deadline - time.monotonic())):
            return False
        return marker.ok

    def _run_task(self, fn: Callable[[Any], T], default: T) -> T:
        """`fn` run by the writer after what is queued; `default` if it fails or cannot run."""
        if self._closed or not self._writer.is_alive():
            log.warning("call store is closed: %s skipped", getattr(fn, "__qualname__", fn))
            return default
        task = _Task(fn)
        self._queue.put(task)
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
        if self._writer.is_alive():
            self._queue.put(_Stop())
            self._writer.join(timeout=30)
            if self._writer.is_alive():
                log.error("call store writer did not stop; closing anyway")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                item: _Item | None = self._queue.get()
                writes: list[Write] = []
                while isinstance(item, Write):
                    writes.append(item)
                    if len(writes) >= _BATCH_MAX:
                        item = None
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                        break
                if writes:
                    self._apply(writes)
                if isinstance(item, _Flush):
                    errors = self.write_errors
                    item.ok = errors == self._errors_at_flush
                    self._errors_at_flush = errors
                    item.done.set()
                elif isinstance(item, _Task):
                    self._do_task(item)
                elif isinstance(item, _Stop):
                    return
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
        """Release whoever waits on the writer; count writes that will never be made."""
        lost = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Write):
                lost += 1
            elif isinstance(item, _Flush):
                item.ok = False
                item.done.set()
            elif isinstance(item, _Task):
                item.future.set_exception(RuntimeError("call store closed"))
        if lost:
            self._count_errors(lost, "call store stopped with %d writes queued", lost)
