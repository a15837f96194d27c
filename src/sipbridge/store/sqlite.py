"""The call store: calls and their timelines in one SQLite file.

Writes (`upsert_call`, `add_event`) never block the caller: they are serialised to JSON on
the spot (so a record the caller mutates later is stored as it was) and put on a bounded
queue. One writer thread owns the write connection and commits what it finds on the queue
in small batches, as soon as the queue is drained (a batch is at most `_BATCH_MAX` items),
so a write is committed within a few milliseconds under normal load. The database runs in
WAL mode with `synchronous=NORMAL`: a committed write survives the process being killed
(not necessarily a power cut).

Reads are synchronous, on a second connection of their own: fine from a thread, a CLI or
`asyncio.to_thread`, not from the event loop itself. `mark_unfinished` and `purge` run on the
writer thread (so they are ordered with the writes queued before them) and wait for it.

The writer never raises into the caller: failures are logged (logger "sipbridge.store") and
counted in `write_errors`; writes that do not fit in the queue are counted in `dropped`.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

log = logging.getLogger("sipbridge.store")

T = TypeVar("T")

_BATCH_MAX = 500  # writes per transaction; a batch this size commits in a few ms
_DAY = 86400.0

# Migration N is MIGRATIONS[N - 1]; a database records the last one applied in schema_version.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE calls (
            id          TEXT PRIMARY KEY,
            state       TEXT,
            created_at  REAL,
            answered_at REAL,
            ended_at    REAL,
            end_reason  TEXT,
            caller      TEXT,
            callee      TEXT,
            recording   TEXT,
            sip         TEXT NOT NULL DEFAULT '{}',
            transfers   TEXT NOT NULL DEFAULT '[]',
            webhooks    TEXT NOT NULL DEFAULT '[]',
            extra       TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX calls_created_at ON calls (created_at)",
        "CREATE INDEX calls_ended_at ON calls (ended_at)",
        "CREATE INDEX calls_state ON calls (state)",
        """CREATE TABLE events (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            call_id TEXT NOT NULL,
            at      REAL NOT NULL,
            kind    TEXT NOT NULL,
            data    TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX events_call_id ON events (call_id, id)",
    ),
)

_SCALARS = ("state", "created_at", "answered_at", "ended_at", "end_reason", "caller", "callee")
_JSON_COLUMNS: dict[str, Any] = {"sip": {}, "transfers": [], "webhooks": []}
_KNOWN = {"id", "recording", "timeline", *_SCALARS, *_JSON_COLUMNS}
_COLUMNS = ("id", *_SCALARS, "recording", "sip", "transfers", "webhooks", "extra")

_UPSERT_SQL = (
    f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "id")
)
_EVENT_SQL = "INSERT INTO events (call_id, at, kind, data) VALUES (?, ?, ?, ?)"


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


@dataclass
class _Write:
    sql: str
    params: tuple[Any, ...]


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = True  # no write failed since the previous flush


@dataclass
class _Task:
    fn: Callable[[sqlite3.Connection], Any]
    future: Future[Any] = field(default_factory=Future)


class _Stop:
    pass


_Item = _Write | _Flush | _Task | _Stop


class SqliteStore:
    def __init__(
        self,
        path: str | Path,
        *,
        retention_days: float | None = None,
        max_queue: int = 100_000,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self.write_errors = 0
        self.dropped = 0
        self._errors_at_flush = 0  # write_errors when the writer last reached a flush
        self._count_lock = threading.Lock()
        self._closed = False
        self._close_lock = threading.Lock()
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=max_queue)

        self._wconn = self._connect(busy_timeout)
        try:
            self._wconn.execute("PRAGMA journal_mode=WAL")
            self._migrate(self._wconn)
        except BaseException:
            self._wconn.close()
            raise
        self._rconn = self._connect(busy_timeout)
        self._read_lock = threading.Lock()
        self._writer = threading.Thread(target=self._run, name="sipbridge-store", daemon=True)
        self._writer.start()

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = int(row[0] or 0)
            if current > len(MIGRATIONS):
                raise RuntimeError(
                    f"call store schema version {current} is newer than this sipbridge "
                    f"understands ({len(MIGRATIONS)})"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # --- accounting -------------------------------------------------------------------

    def _count_errors(self, n: int, message: str, *args: Any) -> None:
        with self._count_lock:
            before = self.write_errors
            after = self.write_errors = before + n
        if before == 0 or before // 1000 != after // 1000:
            log.error(message + " (write errors so far: %d)", *args, after)
        else:
            log.debug(message, *args)

    def _enqueue(self, item: _Write) -> None:
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

    # --- writes -------------------------------------------------------------------------

    def upsert_call(self, record: Mapping[str, Any]) -> None:
        """Queue the call record (replacing any earlier one with the same id)."""
        try:
            call_id = str(record["id"])
            recording = record.get("recording")
            params = (
                call_id,
                *(record.get(c) for c in _SCALARS),
                None if recording is None else str(recording),
                *(_dumps(record.get(c) or empty) for c, empty in _JSON_COLUMNS.items()),
                _dumps({k: v for k, v in record.items() if k not in _KNOWN}),
            )
        except (KeyError, TypeError, ValueError) as exc:  # a bad record must not break the call
            self._count_errors(1, "call store: unusable call record: %r", exc)
            return
        self._enqueue(_Write(_UPSERT_SQL, params))

    def add_event(self, call_id: str, at: float, kind: str, data: Mapping[str, Any]) -> None:
        """Queue one timeline entry of the call."""
        try:
            params = (str(call_id), float(at), str(kind), _dumps(dict(data)))
        except (TypeError, ValueError) as exc:
            self._count_errors(1, "call store: unusable event: %r", exc)
            return
        self._enqueue(_Write(_EVENT_SQL, params))

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

    def mark_unfinished(self, reason: str = "gateway_restarted") -> int:
        """End every call left without `ended_at` (by a crash): state "ended", ended now,
        end_reason "abnormal: <reason>", and a "gateway" timeline event. Returns how many.
        Blocks until the writer has done it (meant for start-up)."""

        def task(conn: sqlite3.Connection) -> int:
            now = time.time()
            ids = [r[0] for r in conn.execute("SELECT id FROM calls WHERE ended_at IS NULL")]
            conn.execute(
                "UPDATE calls SET state = 'ended', ended_at = ?, end_reason = ? "
                "WHERE ended_at IS NULL",
                (now, f"abnormal: {reason}"),
            )
            data = _dumps({"status": "restarted", "reason": reason})
            conn.executemany(_EVENT_SQL, [(i, now, "gateway", data) for i in ids])
            return len(ids)

        return self._run_task(task, default=0)

    def purge(self, now: float | None = None) -> int:
        """Delete ended calls (and their events) that ended more than `retention_days` ago,
        and orphan events as old. Returns how many calls. Blocks until done."""
        if self.retention_days is None:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_days * _DAY

        def task(conn: sqlite3.Connection) -> int:
            old = "SELECT id FROM calls WHERE ended_at IS NOT NULL AND ended_at < ?"
            conn.execute(f"DELETE FROM events WHERE call_id IN ({old})", (cutoff,))
            n = conn.execute(
                "DELETE FROM calls WHERE ended_at IS NOT NULL AND ended_at < ?", (cutoff,)
            ).rowcount
            conn.execute(
                "DELETE FROM events WHERE at < ? AND call_id NOT IN (SELECT id FROM calls)",
                (cutoff,),
            )
            return int(n)

        return self._run_task(task, default=0)

    def _run_task(self, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
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
        """Commit what is queued, stop the writer thread, close both connections."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._writer.is_alive():
            self._queue.put(_Stop())
            self._writer.join(timeout=30)
            if self._writer.is_alive():
                log.error("call store writer did not stop; closing anyway")
        with self._read_lock:
            self._rconn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        conn = self._wconn
        try:
            while True:
                item: _Item | None = self._queue.get()
                writes: list[_Write] = []
                while isinstance(item, _Write):
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
                    self._commit(conn, writes)
                if isinstance(item, _Flush):
                    errors = self.write_errors
                    item.ok = errors == self._errors_at_flush
                    self._errors_at_flush = errors
                    item.done.set()
                elif isinstance(item, _Task):
                    self._do_task(conn, item)
                elif isinstance(item, _Stop):
                    return
        except BaseException:  # a bug here must not pass silently
            log.exception("call store writer thread crashed")
        finally:
            self._closed = True
            self._drain_after_stop()
            conn.close()

    def _drain_after_stop(self) -> None:
        """Release whoever waits on the writer; count writes that will never be made."""
        lost = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Write):
                lost += 1
            elif isinstance(item, _Flush):
                item.ok = False
                item.done.set()
            elif isinstance(item, _Task):
                item.future.set_exception(RuntimeError("call store closed"))
        if lost:
            self._count_errors(lost, "call store stopped with %d writes queued", lost)

    def _commit(self, conn: sqlite3.Connection, writes: list[_Write]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for w in writes:
                conn.execute(w.sql, w.params)
            conn.execute("COMMIT")
            return
        except sqlite3.Error:
            self._rollback(conn)
        # Something failed: retry one write per transaction so only the bad ones are lost.
        failed = 0
        first: sqlite3.Error | None = None
        for w in writes:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(w.sql, w.params)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                failed += 1
                first = first or exc
        if failed:
            self._count_errors(failed, "call store: %d of %d writes failed: %s",
                               failed, len(writes), first)

    def _do_task(self, conn: sqlite3.Connection, task: _Task) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = task.fn(conn)
            conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - reported to the caller; the writer goes on
            self._rollback(conn)
            self._count_errors(1, "call store: %s failed: %s",
                               getattr(task.fn, "__qualname__", task.fn), exc)
            task.future.set_exception(exc)
        else:
            task.future.set_result(result)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    # --- reads ----------------------------------------------------------------------------

    @staticmethod
    def _row_to_call(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
        values = dict(zip(_COLUMNS, row, strict=True))
        extra = json.loads(values.pop("extra") or "{}")
        call: dict[str, Any] = {}
        for column, value in values.items():
            call[column] = json.loads(value) if column in _JSON_COLUMNS else value
        for key, value in extra.items():
            call.setdefault(key, value)
        return call

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        """The call record plus "timeline": its events in order, `{"at", "kind", **data}`."""
        with self._read_lock:
            conn = self._rconn
            conn.execute("BEGIN")
            try:
                row = conn.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM calls WHERE id = ?", (call_id,)
                ).fetchone()
                events = conn.execute(
                    "SELECT at, kind, data FROM events WHERE call_id = ? ORDER BY id", (call_id,)
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        if row is None:
            return None
        call = self._row_to_call(row)
        timeline = []
        for at, kind, data in events:
            entry: dict[str, Any] = {"at": at, "kind": kind}
            for key, value in json.loads(data).items():
                entry.setdefault(key, value)
            timeline.append(entry)
        call["timeline"] = timeline
        return call

    def list_calls(
        self,
        *,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        caller: str | None = None,
        transfer_status: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Calls newest first (by created_at), without timelines. `since` <= created_at <
        `until`; `caller` is a substring of the caller; `transfer_status` matches the status
        of any of the call's transfers."""
        where: list[str] = []
        params: list[Any] = []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        if until is not None:
            where.append("created_at < ?")
            params.append(until)
        if caller is not None:
            where.append("instr(caller, ?) > 0")
            params.append(caller)
        if transfer_status is not None:
            where.append(
                "EXISTS (SELECT 1 FROM json_each(calls.transfers) AS t "
                "WHERE json_extract(t.value, '$.status') = ?)"
            )
            params.append(transfer_status)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        params.append(max(0, int(limit)))
        with self._read_lock:
            rows = self._rconn.execute(sql, params).fetchall()
        return [self._row_to_call(r) for r in rows]
