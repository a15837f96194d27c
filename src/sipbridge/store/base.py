"""What every call store backend shares, on top of the writer thread (`QueuedWriter`):
transactions and reconnection, set-up and migrations, the SQL of writes, restart marking,
retention and reads.

Writes (`upsert_call`, `add_event`) are serialised on the spot (so a record the caller
mutates later is stored as it was) and queued for the writer thread, which owns the write
connection. A batch of writes is one transaction: each call's record once (the last one
queued: what one write after the other would leave), its events in the order queued, all
rows of a table in statements of `CHUNKS` rows each (a few SQL texts, so prepared
statements are reused). Reads are synchronous, on a second connection of their own (one
reader at a time): fine from a thread, a CLI or `asyncio.to_thread`, not from the event
loop itself. `mark_unfinished` and `purge` run on the writer thread and wait for it.

A backend supplies the connection, its transactions, the dialect's bits of SQL and its
migrations; the SQL here is written with `?` placeholders, turned into the driver's `PARAM`.
A backend whose server can go away (PostgreSQL) reports a lost connection through `_lost`:
the transaction is then run once more on a new connection.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import chain
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from sipbridge.callstats import (
    ANSWERED_SQL,
    FAILED_SQL,
    PERCENTILES,
    CallStats,
    Percentiles,
    count_transfers,
    minute_of,
    rank,
)
from sipbridge.records import CallRecord
from sipbridge.store.rows import (
    COLUMNS,
    call_params,
    event_params,
    row_to_call,
    timeline,
)
from sipbridge.store.writer import QueuedWriter, Write

log = logging.getLogger("sipbridge.store")

T = TypeVar("T")

_DAY = 86400.0

# Rows per INSERT of a batch, largest first: 200 rows go as 64 + 64 + 64 + 8, 11 as
# 8 + 2 + 1. Seven SQL texts per table, each prepared once and reused.
CHUNKS = (64, 32, 16, 8, 4, 2, 1)


class StoreError(RuntimeError):
    """The call store cannot be opened or used: unreachable, or a schema too new."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What the shared code needs of a DB-API connection (sqlite3's, psycopg's)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...
    def close(self) -> None: ...


C = TypeVar("C", bound=Connection)


class _Link(Generic[C]):
    """A connection, replaced by a new one when the server drops it."""

    def __init__(self, conn: C, *, writer: bool) -> None:
        self.conn = conn
        self.writer = writer


class _Rows:
    """One INSERT, for many rows at once: its SQL for each size of `CHUNKS`."""

    def __init__(self, head: str, row: str, tail: str, param: str) -> None:
        self.sql = {n: (f"{head} VALUES {', '.join([row] * n)}{tail}").replace("?", param)
                    for n in CHUNKS}

    def execute(self, conn: Connection, rows: list[tuple[object, ...]]) -> None:
        """Insert the rows in order, in as few statements as `CHUNKS` allows."""
        at, left = 0, len(rows)
        for n in CHUNKS:
            sql = self.sql[n]
            while left >= n:
                conn.execute(sql, list(chain.from_iterable(rows[at:at + n])))
                at += n
                left -= n


class SqlStore(QueuedWriter, Generic[C]):
    """The call store, less what depends on the database: see the module's docstring."""

    # --- what a backend supplies --------------------------------------------------------

    PARAM: ClassVar[str]  # the driver's placeholder, for each "?" in the SQL
    ERRORS: ClassVar[tuple[type[Exception], ...]]  # what the driver raises
    MIGRATIONS: ClassVar[tuple[tuple[str, ...], ...]]  # migration N is MIGRATIONS[N - 1]
    CALLER_MATCH: ClassVar[str]  # caller contains ?, as a plain substring
    TRANSFER_MATCH: ClassVar[str]  # a transfer of the call has status ?
    INSERTION_ORDER: ClassVar[str]  # an expression growing with each new call row
    # How JSON values are serialised for the driver (a staticmethod): `rows.encode`'s plain
    # text, which a driver binds at once, or `rows.dumps` for a JSON column type.
    to_json: Callable[[object], str]
    # How events go in: the INSERT's head, one row's values, and `_event_rows`, which turns
    # each event's (call_id, at, kind, data) into that row's parameters. How a call's events
    # are read (each "?" its id) and how those of the calls `old` selects are deleted.
    EVENT_INSERT: ClassVar[tuple[str, str]] = (
        "INSERT INTO events (call_id, at, kind, data)", "(?, ?, ?, ?)")
    EVENTS_OF_CALL: ClassVar[str] = (
        "SELECT at, kind, data FROM events WHERE call_id = ? ORDER BY id")
    DELETE_EVENTS_OF: ClassVar[str] = "DELETE FROM events WHERE call_id IN (SELECT id {old})"
    # A call's direction, a field of the record kept in `extra` (JSON): PostgreSQL's way.
    DIRECTION: ClassVar[str] = "extra ->> 'direction'"
    label: str  # how logs and errors name the store (never with a password)
    unfinished = "ended_at IS NULL"  # the calls that `mark_unfinished` ends
    stamp: tuple[tuple[str, str], ...] = ()  # (column, SQL value) set by each upsert_call

    @abstractmethod
    def _connect(self, *, writer: bool) -> C:
        """A new connection, ready for `_begin`; for the writer thread or for reads."""

    @abstractmethod
    def _begin(self, conn: C, *, writer: bool) -> None:
        """Start a transaction (the writer's takes the database's write lock, if any)."""

    @abstractmethod
    def _commit(self, conn: C) -> None:
        """Commit the transaction."""

    @abstractmethod
    def _rollback(self, conn: C) -> None:
        """Roll back whatever is open; never raises."""

    def _lost(self, conn: C) -> bool:
        """After an error: is the connection gone (so that a new one may do better)?"""
        return False

    def _event_rows(self, events: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        """The parameters of `EVENT_INSERT`'s rows for events (call_id, at, kind, data)."""
        return events

    def _lock_schema(self, conn: C) -> None:
        """Inside the migration's transaction: keep other processes from migrating too."""

    # --- set-up -------------------------------------------------------------------------

    def __init__(self, *, retention_days: float | None, max_queue: int) -> None:
        super().__init__(max_queue=max_queue)
        self.retention_days = retention_days
        columns = (*COLUMNS, *(c for c, _ in self.stamp))
        values = "(" + ", ".join(("?",) * len(COLUMNS) + tuple(v for _, v in self.stamp)) + ")"
        conflict = " ON CONFLICT (id) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in columns if c != "id")
        self._calls = _Rows(f"INSERT INTO calls ({', '.join(columns)})", values, conflict,
                            self.PARAM)
        self._events = _Rows(*self.EVENT_INSERT, "", self.PARAM)
        self._upsert_sql = self._calls.sql[1]
        self._event_sql = self._events.sql[1]

        wconn = self._connect(writer=True)
        try:
            self._once(wconn, self._migrate, writer=True)
            rconn = self._connect(writer=False)
        except BaseException:
            wconn.close()
            raise
        self._w = _Link(wconn, writer=True)
        self._r = _Link(rconn, writer=False)
        self._read_lock = threading.Lock()
        self._start_writer()

    def _sql(self, text: str) -> str:
        return text.replace("?", self.PARAM)

    def _migrate(self, conn: C) -> None:
        self._lock_schema(conn)
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0] or 0)
        if current > len(self.MIGRATIONS):
            raise StoreError(
                f"call store schema version {current} is newer than this sipbridge "
                f"understands ({len(self.MIGRATIONS)})"
            )
        for version in range(current + 1, len(self.MIGRATIONS) + 1):
            for statement in self.MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute(self._sql("INSERT INTO schema_version (version) VALUES (?)"), (version,))

    # --- transactions -------------------------------------------------------------------

    def _once(self, conn: C, fn: Callable[[C], T], *, writer: bool) -> T:
        self._begin(conn, writer=writer)
        try:
            result = fn(conn)
            self._commit(conn)
        except BaseException:
            self._rollback(conn)
            raise
        return result

    def _transact(self, link: _Link[C], fn: Callable[[C], T]) -> T:
        """`fn(conn)` in one transaction; once more on a new connection if the server
        dropped the link's. (A commit cut off by the loss may have been applied: the retry
        then repeats it, which an upsert survives and an event shows twice.)"""
        try:
            return self._once(link.conn, fn, writer=link.writer)
        except self.ERRORS as exc:
            if not self._lost(link.conn):
                raise
            log.warning("call store %s: connection lost (%s); reconnecting",
                        self.label, self._describe(exc))
        link.conn.close()
        link.conn = self._connect(writer=link.writer)
        return self._once(link.conn, fn, writer=link.writer)

    # --- writes -------------------------------------------------------------------------

    def upsert_call(self, record: CallRecord) -> None:
        """Queue the call record (replacing any earlier one with the same id)."""
        try:
            params = call_params(record, self.to_json)
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            # a bad record must not break the call
            self._count_errors(1, "call store: unusable call record: %r", exc)
            return
        self._enqueue(Write(self._upsert_sql, params))

    def add_event(self, call_id: str, at: float, kind: str, data: Mapping[str, object]
                  ) -> None:
        """Queue one timeline entry of the call."""
        try:
            params = event_params(call_id, at, kind, data, self.to_json)
        except (TypeError, ValueError, RecursionError) as exc:
            self._count_errors(1, "call store: unusable event: %r", exc)
            return
        self._enqueue(Write(self._event_sql, params))

    def mark_unfinished(self, reason: str = "gateway_restarted") -> int:
        """End every call left without `ended_at` (by a crash): state "ended", ended now,
        end_reason "abnormal: <reason>", and a "gateway" timeline event. Returns how many.
        Blocks until the writer has done it (meant for start-up)."""

        def task(conn: C) -> int:
            now = time.time()
            ended = conn.execute(
                self._sql("UPDATE calls SET state = 'ended', ended_at = ?, end_reason = ? "
                          f"WHERE {self.unfinished} RETURNING id"),
                (now, f"abnormal: {reason}"),
            ).fetchall()
            data = self.to_json({"status": "restarted", "reason": reason})
            self._events.execute(conn, self._event_rows(
                [(call_id, now, "gateway", data) for (call_id,) in ended]))
            return len(ended)

        return self._run_task(task, default=0)

    def purge(self, now: float | None = None) -> int:
        """Delete ended calls (and their events) that ended more than `retention_days` ago,
        and orphan events as old. Returns how many calls. Blocks until done."""
        if self.retention_days is None:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_days * _DAY

        def task(conn: C) -> int:
            old = "FROM calls WHERE ended_at IS NOT NULL AND ended_at < ?"
            delete = self.DELETE_EVENTS_OF.format(old=old)
            conn.execute(self._sql(delete), (cutoff,) * delete.count("?"))
            n = conn.execute(self._sql(f"DELETE {old}"), (cutoff,)).rowcount
            conn.execute(
                self._sql("DELETE FROM events WHERE at < ? AND NOT EXISTS "
                          "(SELECT 1 FROM calls WHERE calls.id = events.call_id)"),
                (cutoff,),
            )
            return int(n)

        return self._run_task(task, default=0)

    def close(self) -> None:
        """Commit what is queued, stop the writer thread, close both connections."""
        super().close()
        with self._read_lock:
            self._r.conn.close()

    # --- on the writer thread -----------------------------------------------------------

    def _run_task_fn(self, fn: Callable[[C], T]) -> T:
        return self._transact(self._w, fn)

    def _writer_done(self) -> None:
        self._w.conn.close()

    def _batch(self, calls: dict[object, tuple[object, ...]], events: list[tuple[object, ...]],
               conn: C) -> None:
        self._calls.execute(conn, list(calls.values()))
        self._events.execute(conn, self._event_rows(events))

    def _apply(self, writes: list[Write]) -> None:
        # Each call's last record, in the order the calls first came (a new call's row is
        # inserted where its first record would have been); events as they came.
        calls: dict[object, tuple[object, ...]] = {}
        events: list[tuple[object, ...]] = []
        upsert = self._upsert_sql
        for sql, params in writes:
            if sql is upsert:
                calls[params[0]] = params
            else:
                events.append(params)
        try:
            self._transact(self._w, partial(self._batch, calls, events))
            return
        except self.ERRORS as exc:
            error = exc
        one_by_one = [partial(self._batch, {p[0]: p}, []) for p in calls.values()]
        one_by_one += [partial(self._batch, {}, [p]) for p in events]
        # Something failed: one write per transaction so only the bad ones are lost; all of
        # them when there is no connection to the server any more.
        failed = 0
        first: Exception | None = None
        for i, write in enumerate(one_by_one):
            if self._lost(self._w.conn):
                failed += len(one_by_one) - i
                break
            try:
                self._transact(self._w, write)
            except self.ERRORS as exc:
                failed += 1
                first = first or exc
        if failed:
            self._count_errors(failed, "call store: %d of %d writes failed: %s",
                               failed, len(one_by_one), self._describe(first or error))

    # --- reads ----------------------------------------------------------------------------

    def _read(self, fn: Callable[[C], T]) -> T:
        with self._read_lock:
            return self._transact(self._r, fn)

    def get_call(self, call_id: str) -> CallRecord | None:
        """The call record plus "timeline": its events in order, `{"at", "kind", **data}`."""

        def read(conn: C) -> tuple[Any, list[Any]]:
            row = conn.execute(
                self._sql(f"SELECT {', '.join(COLUMNS)} FROM calls WHERE id = ?"), (call_id,)
            ).fetchone()
            events = conn.execute(
                self._sql(self.EVENTS_OF_CALL), (call_id,) * self.EVENTS_OF_CALL.count("?")
            ).fetchall()
            return row, events

        row, events = self._read(read)
        if row is None:
            return None
        call = row_to_call(row)
        call["timeline"] = timeline(events)
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
    ) -> list[CallRecord]:
        """Calls newest first (by created_at), without timelines. `since` <= created_at <
        `until`; `caller` is a substring of the caller; `transfer_status` matches the status
        of any of the call's transfers."""
        where: list[str] = []
        params: list[object] = []
        for clause, value in (
            ("state = ?", state),
            ("created_at >= ?", since),
            ("created_at < ?", until),
            (self.CALLER_MATCH, caller),
            (self.TRANSFER_MATCH, transfer_status),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = f"SELECT {', '.join(COLUMNS)} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY created_at DESC NULLS LAST, {self.INSERTION_ORDER} DESC LIMIT ?"
        params.append(max(0, int(limit)))
        rows = self._read(lambda conn: conn.execute(self._sql(sql), params).fetchall())
        return [row_to_call(r) for r in rows]

    def call_stats(self, since: float, until: float | None = None) -> CallStats:
        """`sipbridge.callstats`'s figures of the calls that came in from `since` to `until`
        (now), worked out by the database: a row per minute and a value per percentile
        come back, whatever the number of calls; of the transfers, only the lists of the
        calls that have any (JSON, counted here). One read, one snapshot."""
        end = time.time() if until is None else until
        base = float(minute_of(since))
        window = "created_at >= ? AND created_at < ?"
        # The minute's index: floor() is not in every SQLite, and a cast truncates in
        # SQLite but rounds in PostgreSQL, so one taken where the cast went up.
        per_minute = self._sql(
            "SELECT k, SUM(a), SUM(f) FROM (SELECT CAST(d AS BIGINT) - "
            "CASE WHEN CAST(d AS BIGINT) > d THEN 1 ELSE 0 END AS k, a, f FROM ("
            "SELECT (created_at - ?) / 60 AS d, "
            f"CASE WHEN {ANSWERED_SQL} THEN 1 ELSE 0 END AS a, "
            f"CASE WHEN {FAILED_SQL} THEN 1 ELSE 0 END AS f "
            f"FROM calls WHERE {window}) AS w) AS m GROUP BY k")
        setup = (f"FROM calls WHERE {window} AND answered_at IS NOT NULL "
                 f"AND COALESCE({self.DIRECTION}, 'inbound') <> 'outbound'")
        count_sql = self._sql(f"SELECT COUNT(*) {setup}")
        nth_sql = self._sql(f"SELECT answered_at - created_at {setup} ORDER BY 1 LIMIT 1 OFFSET ?")
        transfers_sql = self._sql(f"SELECT transfers FROM calls WHERE {window} "
                                  "AND transfers <> '[]'")

        def read(conn: C) -> tuple[list[Any], dict[int, float], int, list[Any]]:
            minutes = conn.execute(per_minute, (base, since, end)).fetchall()
            n = int(conn.execute(count_sql, (since, end)).fetchone()[0])
            values = {p: float(conn.execute(nth_sql, (since, end, rank(p, n) - 1)).fetchone()[0])
                      for p in PERCENTILES} if n else {}
            return minutes, values, n, conn.execute(transfers_sql, (since, end)).fetchall()

        minutes, values, n, lists = self._read(read)
        answered: dict[int, int] = {}
        failed: dict[int, int] = {}
        for k, a, f in minutes:
            minute = int(base) + int(k) * 60
            if a:
                answered[minute] = int(a)
            if f:
                failed[minute] = int(f)
        transfers: dict[tuple[str, str], int] = {}
        for (text,) in lists:
            count_transfers(json.loads(text), transfers)
        return CallStats(since, end, answered, failed, Percentiles(n, values), transfers)
