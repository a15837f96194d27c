"""The call store in one SQLite file.

The database runs in WAL mode with `synchronous=NORMAL`: a committed write survives the
process being killed (not necessarily a power cut), and reads go on while the writer
commits. The writer's transactions are `BEGIN IMMEDIATE`: they take the write lock first
and wait up to `busy_timeout` seconds for another process that holds it. The queue, the
writer thread and the reads are `SqlStore`'s.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from sipbridge.store.base import SqlStore, StoreError
from sipbridge.store.rows import encode

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
    # An event refers to its call by the call's rowid too (`call_key`; NULL when the call
    # had no row yet), and the index that finds a call's events is on that: the calls of
    # the moment are the newest, so their events go to the last pages of the index, where
    # call ids (random) sent them all over it, a page written for each call at each commit.
    (
        "ALTER TABLE events ADD COLUMN call_key INTEGER",
        "UPDATE events SET call_key = (SELECT rowid FROM calls WHERE calls.id = events.call_id)",
        "DROP INDEX events_call_id",
        "CREATE INDEX events_call_key ON events (call_key, id)",
        "CREATE INDEX events_orphan ON events (call_id, id) WHERE call_key IS NULL",
    ),
)


class SqliteStore(SqlStore[sqlite3.Connection]):
    PARAM = "?"
    ERRORS = (sqlite3.Error,)
    MIGRATIONS = MIGRATIONS
    CALLER_MATCH = "instr(caller, ?) > 0"
    TRANSFER_MATCH = (
        "EXISTS (SELECT 1 FROM json_each(calls.transfers) AS t "
        "WHERE json_extract(t.value, '$.status') = ?)"
    )
    INSERTION_ORDER = "rowid"  # an upsert that replaces a call keeps its rowid
    DIRECTION = "json_extract(extra, '$.direction')"  # ->> only from SQLite 3.38 on
    # JSON as plain str: sqlite3 binds an exact str at once, where a subclass of it is
    # looked up among its adapters, parameter by parameter.
    to_json = staticmethod(encode)
    EVENT_INSERT = ("INSERT INTO events (call_id, call_key, at, kind, data)",
                    "(?, (SELECT rowid FROM calls WHERE id = ?), ?, ?, ?)")
    # (A rowid freed by `purge` may be taken again: the call_id is checked as well.)
    EVENTS_OF_CALL = (
        "SELECT at, kind, data FROM events "
        "WHERE call_key = (SELECT rowid FROM calls WHERE id = ?) AND call_id = ? "
        "OR call_key IS NULL AND call_id = ? ORDER BY id")
    DELETE_EVENTS_OF = ("DELETE FROM events WHERE call_key IN (SELECT rowid {old}) "
                        "OR call_key IS NULL AND call_id IN (SELECT id {old})")

    def __init__(
        self,
        path: str | Path,
        *,
        retention_days: float | None = None,
        max_queue: int = 100_000,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.label = str(self.path)
        self.busy_timeout = busy_timeout
        try:
            super().__init__(retention_days=retention_days, max_queue=max_queue)
        except sqlite3.Error as exc:  # a directory that is missing or not ours, a bad file
            raise StoreError(f"cannot open the call store {self.label}: {exc}") from None

    def _event_rows(self, events: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        return [(call_id, call_id, at, kind, data) for call_id, at, kind, data in events]

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            if writer:
                conn.execute("PRAGMA journal_mode=WAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _begin(self, conn: sqlite3.Connection, *, writer: bool) -> None:
        conn.execute("BEGIN IMMEDIATE" if writer else "BEGIN")

    def _commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
