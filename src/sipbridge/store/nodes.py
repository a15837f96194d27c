"""A cluster's membership in the shared PostgreSQL store: one row per node (its name, the
address of its API, its state and its last heartbeat), and the new calls each refused per
minute.

- Every time here is the database server's (`clock_timestamp()`), never a node's: a node
  whose clock is off beats and is judged on the same clock as the others.
- A node's name is held by a session advisory lock (on the name's hash) for as long as
  its membership connection lives: a second process with the same name cannot join,
  while a node that was killed frees its name at once (the server drops its connection)
  and may start again straight away.
- A node is gone when its heartbeat is older than the timeout. Any live node may find
  that out (`sweep`): one UPDATE marks it gone (so exactly one finds each), and in the
  same transaction its unfinished calls are ended, `abnormal: node_gone`. A call's id ends
  with its node's name (`calls.call.new_call_id`): the calls of a node are those whose id
  ends "_<name>".
- The connection is the caller's to use from one thread at a time (`NodeTable` holds a
  lock); after an error it is replaced at the next use, and the name's lock taken again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from sipbridge.records import NodeRecord
from sipbridge.store.base import StoreError
from sipbridge.store.postgres import _ADAPTERS, _passwords, redact

log = logging.getLogger("sipbridge.cluster")

T = TypeVar("T")

NOW = "extract(epoch from clock_timestamp())"
FORGET_AFTER = 86400.0  # s: a node stopped or gone this long ago leaves the table
MINUTES_KEPT = 86400.0  # s of per-minute refusals kept

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS nodes (
        name            TEXT PRIMARY KEY,
        api_url         TEXT NOT NULL,
        state           TEXT NOT NULL,
        started_at      DOUBLE PRECISION NOT NULL,
        heartbeat_at    DOUBLE PRECISION NOT NULL,
        live_calls      INTEGER NOT NULL DEFAULT 0,
        refused         BIGINT NOT NULL DEFAULT 0,
        drain_requested BOOLEAN NOT NULL DEFAULT false,
        reason          TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS node_minutes (
        node    TEXT NOT NULL,
        minute  BIGINT NOT NULL,
        refused BIGINT NOT NULL,
        PRIMARY KEY (node, minute)
    )""",
)
_SCHEMA_LOCK = "pg_advisory_xact_lock(1397313602, 2)"  # ("SIPB", 2)
_NAME_LOCK_SPACE = 1397313603  # ("SIPC", crc32 of the name): a two-key lock, never an owner's


class NodeNameTaken(StoreError):
    """Another running process holds this node name."""


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode()) - (1 << 31)  # int4, as the two-key lock takes it


class NodeTable:
    """One node's view of the cluster's membership: join, beat, sweep, read."""

    def __init__(self, url: str, name: str, *, connect_timeout: float = 5.0) -> None:
        self.name = name
        self.label = redact(url)
        self._passwords = _passwords(url)
        try:
            params: dict[str, Any] = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the cluster store {self.label}: "
                             f"{self._describe(exc)}") from None
        params.setdefault("connect_timeout", max(1, round(connect_timeout)))
        params.setdefault("application_name", f"sipbridge node {name}")
        self._params = params
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._lock = threading.Lock()
        self.holds_name = False

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).strip() or type(exc).__name__
        for password in self._passwords:
            text = text.replace(password, "***")
        return text

    # --- the connection ----------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[TupleRow]:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        conn = psycopg.connect(autocommit=True, context=_ADAPTERS, **self._params)
        self._conn = conn
        if self.holds_name:  # a new session after a lost one: take the name again
            self.holds_name = bool(self._take_name(conn))
            if not self.holds_name:
                log.error("cluster: node name %r is now held by another process", self.name)
        return conn

    def _take_name(self, conn: psycopg.Connection[TupleRow]) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                           (_NAME_LOCK_SPACE, _name_key(self.name))).fetchone()
        return bool(row and row[0])

    def _run(self, fn: Callable[[psycopg.Connection[TupleRow]], T]) -> T:
        """`fn(conn)`; a failure closes the connection (the next call opens a new one) and
        raises StoreError without the password."""
        with self._lock:
            try:
                return fn(self._connection())
            except psycopg.Error as exc:
                if self._conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        self._conn.close()
                    self._conn = None
                raise StoreError(f"cluster store {self.label}: {self._describe(exc)}"
                                 ) from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    # --- membership ---------------------------------------------------------------------

    def join(self, api_url: str) -> None:
        """Create the tables if need be, take the name and mark this node up. Raises
        NodeNameTaken when another process holds the name."""

        def join(conn: psycopg.Connection[TupleRow]) -> tuple[Any, ...] | None:
            with conn.transaction():
                conn.execute(f"SELECT {_SCHEMA_LOCK}")
                for statement in SCHEMA:
                    conn.execute(statement)
            if not self._take_name(conn):
                return conn.execute(
                    f"SELECT api_url, state, {NOW} - heartbeat_at FROM nodes WHERE name = %s",
                    (self.name,)).fetchone() or ("?", "?", None)
            self.holds_name = True
            conn.execute(
                "INSERT INTO nodes (name, api_url, state, started_at, heartbeat_at) "
                f"VALUES (%s, %s, 'up', {NOW}, {NOW}) ON CONFLICT (name) DO UPDATE SET "
                "api_url = excluded.api_url, state = 'up', started_at = excluded.started_at, "
                "heartbeat_at = excluded.heartbeat_at, live_calls = 0, refused = 0, "
                "drain_requested = false, reason = NULL",
                (self.name, api_url))
            return None

        taken = self._run(join)
        if taken is not None:
            url, state, age = taken
            seen = f", last heartbeat {age:.1f} s ago" if isinstance(age, float) else ""
            raise NodeNameTaken(
                f"node name {self.name!r} is in use by a running node ({url}, {state}{seen}) "
                f"in {self.label}: give this node another node_name, or stop that one")

    def beat(self, *, live_calls: int, refused: int, refused_since_last: int,
             draining: bool) -> tuple[bool, str | None]:
        """This node's heartbeat; returns (a drain was asked for, why the others marked it
        gone while it could not beat, if they did)."""

        def beat(conn: psycopg.Connection[TupleRow]) -> tuple[bool, str | None]:
            with conn.transaction():
                row = conn.execute(
                    "SELECT state, reason, drain_requested FROM nodes WHERE name = %s "
                    "FOR UPDATE", (self.name,)).fetchone()
                if row is None:
                    return False, "its row was deleted"
                old_state, reason, requested = row
                conn.execute(
                    f"UPDATE nodes SET heartbeat_at = {NOW}, live_calls = %s, refused = %s, "
                    "state = %s, reason = NULL WHERE name = %s",
                    (live_calls, refused, "draining" if draining or requested else "up",
                     self.name))
                if refused_since_last:
                    conn.execute(
                        "INSERT INTO node_minutes (node, minute, refused) VALUES "
                        f"(%s, floor({NOW} / 60)::bigint * 60, %s) "
                        "ON CONFLICT (node, minute) DO UPDATE "
                        "SET refused = node_minutes.refused + excluded.refused",
                        (self.name, refused_since_last))
            return bool(requested), (reason or "gone") if old_state == "gone" else None

        return self._run(beat)

    def sweep(self, timeout: float) -> list[tuple[str, int]]:
        """Mark gone the nodes whose heartbeat is older than `timeout` s, end their
        unfinished calls (`abnormal: node_gone`), forget old rows. Returns (node, calls
        ended) for each node this sweep found gone."""

        def sweep(conn: psycopg.Connection[TupleRow]) -> list[tuple[str, int]]:
            found: list[tuple[str, int]] = []
            with conn.transaction():
                gone = conn.execute(
                    "UPDATE nodes SET state = 'gone', reason = 'no heartbeat for ' || "
                    f"round(({NOW} - heartbeat_at)::numeric, 1) || ' s', live_calls = 0 "
                    f"WHERE state IN ('up', 'draining') AND heartbeat_at < {NOW} - %s "
                    "AND name <> %s RETURNING name",
                    (timeout, self.name)).fetchall()
                for (name,) in gone:
                    suffix = f"_{name}"
                    ended = conn.execute(
                        f"UPDATE calls SET state = 'ended', ended_at = {NOW}, "
                        "end_reason = 'abnormal: node_gone' WHERE ended_at IS NULL "
                        "AND right(id, %s) = %s RETURNING id",
                        (len(suffix), suffix)).fetchall()
                    for (call_id,) in ended:
                        conn.execute(
                            "INSERT INTO events (call_id, at, kind, data) VALUES "
                            f"(%s, {NOW}, 'gateway', %s::jsonb)",
                            (call_id, json.dumps({"status": "node_gone", "node": name})))
                    found.append((name, len(ended)))
                conn.execute(f"DELETE FROM nodes WHERE state IN ('gone', 'stopped') AND "
                             f"heartbeat_at < {NOW} - %s", (FORGET_AFTER,))
                conn.execute(f"DELETE FROM node_minutes WHERE minute < {NOW} - %s",
                             (MINUTES_KEPT,))
            return found

        return self._run(sweep)

    def leave(self) -> None:
        """A clean stop: the node is "stopped" (its calls ended with it) and frees its name."""

        def leave(conn: psycopg.Connection[TupleRow]) -> None:
            conn.execute(f"UPDATE nodes SET state = 'stopped', live_calls = 0, "
                         f"heartbeat_at = {NOW}, reason = NULL WHERE name = %s", (self.name,))
            if self.holds_name:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)",
                             (_NAME_LOCK_SPACE, _name_key(self.name)))
                self.holds_name = False

        self._run(leave)

    # --- reads and requests (also for the CLI) -------------------------------------------

    def nodes(self) -> list[NodeRecord]:
        """Every node the store knows, by name."""

        def read(conn: psycopg.Connection[TupleRow]) -> list[Any]:
            return conn.execute(
                f"SELECT name, api_url, state, started_at, {NOW} - heartbeat_at, live_calls, "
                "refused FROM nodes ORDER BY name").fetchall()

        return [{"name": name, "api_url": url, "state": state, "started_at": started,
                 "heartbeat_age": max(0.0, float(age)), "live_calls": int(live),
                 "refused": int(refused), "this": name == self.name}
                for name, url, state, started, age, live, refused in self._run(read)]

    def refusals(self, since: float) -> dict[int, int]:
        """New calls refused with 503 by all nodes, per minute, from `since` on."""
        rows = self._run(lambda conn: conn.execute(
            "SELECT minute, sum(refused) FROM node_minutes WHERE minute + 60 > %s "
            "GROUP BY minute ORDER BY minute", (since,)).fetchall())
        return {int(m): int(n) for m, n in rows}

    def request_drain(self, name: str) -> bool:
        """Ask the node to drain (it does at its next heartbeat); False: no such node up."""
        row = self._run(lambda conn: conn.execute(
            "UPDATE nodes SET drain_requested = true WHERE name = %s "
            "AND state IN ('up', 'draining') RETURNING name", (name,)).fetchone())
        return row is not None

