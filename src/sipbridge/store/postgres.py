"""The call store in PostgreSQL (psycopg 3): several gateways may share one database.

Same records, same queue and writer thread as SQLite (`SqlStore`); here the JSON
columns are JSONB, events are ordered by a bigserial id, timestamps stay epoch seconds in
double precision (a float reads back as the same float).

- Migrations run in one transaction under `pg_advisory_xact_lock`, so gateways starting
  together migrate once.
- The writer thread and the readers each have a connection; when the server drops one
  (restart, failover, `pg_terminate_backend`), the transaction that found out is run once
  more on a new connection.
- Gateways sharing the database must not end each other's calls at start-up. Each store
  holds a session advisory lock on a random key of its own (`owner`) and stamps the calls
  it writes with it; `mark_unfinished` ends the open calls whose owner's lock is gone,
  that is, whose gateway's connection to the server is (the server drops a killed
  client's at once).
- A password in the URL appears in no log line and no error message (`redact`).
- PostgreSQL text refuses NUL characters, which SIP messages from a peer may carry: they
  are stored as U+FFFD, as undecodable bytes are, instead of failing the write; in JSON,
  NaN and infinities (which jsonb refuses) are stored as null.
- jsonb keeps JSON's values, not its spelling: an object's keys come back in jsonb's order,
  and a number as PostgreSQL's numeric writes it (a float large enough for Python to write
  with an exponent, 1e16 and up, reads back as an int).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg.types.string import StrDumperUnknown, TextLoader

from sipbridge.store.base import SqlStore, StoreError
from sipbridge.store.rows import JsonText, dumps

# Migration N is MIGRATIONS[N - 1]; a database records the last one applied in schema_version.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE calls (
            id          TEXT PRIMARY KEY,
            state       TEXT,
            created_at  DOUBLE PRECISION,
            answered_at DOUBLE PRECISION,
            ended_at    DOUBLE PRECISION,
            end_reason  TEXT,
            caller      TEXT,
            callee      TEXT,
            recording   TEXT,
            sip         JSONB NOT NULL DEFAULT '{}',
            transfers   JSONB NOT NULL DEFAULT '[]',
            webhooks    JSONB NOT NULL DEFAULT '[]',
            extra       JSONB NOT NULL DEFAULT '{}',
            seq         BIGSERIAL NOT NULL,
            owner       BIGINT
        )""",
        "CREATE INDEX calls_created_at ON calls (created_at)",
        "CREATE INDEX calls_ended_at ON calls (ended_at)",
        "CREATE INDEX calls_state ON calls (state)",
        "CREATE INDEX calls_transfers ON calls USING gin (transfers jsonb_path_ops)",
        "CREATE INDEX calls_unfinished ON calls (owner) WHERE ended_at IS NULL",
        """CREATE TABLE events (
            id      BIGSERIAL PRIMARY KEY,
            call_id TEXT NOT NULL,
            at      DOUBLE PRECISION NOT NULL,
            kind    TEXT NOT NULL,
            data    JSONB NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX events_call_id ON events (call_id, id)",
    ),
)

_SCHEMA_LOCK = "pg_advisory_xact_lock(1397313602, 1)"  # ("SIPB", 1): never an owner's key

# A call's owner is alive while some session of this database holds its key (a bigint
# advisory lock shows in pg_locks as classid = high half, objid = low half, objsubid = 1).
_OWNER_ALIVE = (
    "SELECT 1 FROM pg_locks AS l WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND ((l.classid::bigint << 32) | l.objid::bigint) = calls.owner"
)


# user:PASSWORD@ up to the last "@" (a password with an unencoded "@" is masked whole)
_USERINFO_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:@/?#]*:)(.*)@",
                                re.IGNORECASE | re.DOTALL)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL with its password, in the authority or as `password=`, shown as ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", url))


def _passwords(url: str) -> list[str]:
    """Every spelling of the URL's passwords that a driver's message might quote."""
    found = [m.group(2) for p in (_USERINFO_PASSWORD, _QUERY_PASSWORD) for m in p.finditer(url)]
    spellings = {s for p in found for s in (p, unquote(p)) if s}
    return sorted(spellings, key=len, reverse=True)


class _TextDumper(StrDumperUnknown):
    """str as psycopg binds it (the server infers the type), NUL made U+FFFD."""

    def dump(self, obj: str) -> Buffer | None:
        return super().dump(obj.replace("\x00", "\ufffd"))


def _jsonb_safe(value: object) -> object:
    """`value` as jsonb takes it: NUL in strings made U+FFFD, NaN and infinities null."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_jsonb_safe(v) for v in value]
    if isinstance(value, dict):
        return {_jsonb_safe(k): _jsonb_safe(v) for k, v in value.items()}
    return value


class _JsonbDumper(_TextDumper):
    """`JsonText` as jsonb, which refuses the escape \\u0000 and NaN: such a rare text is
    parsed, cleaned and serialised again rather than failing the write."""

    oid = psycopg.postgres.types["jsonb"].oid

    def dump(self, obj: str) -> Buffer | None:
        if "\\u0000" in obj or "NaN" in obj or "Infinity" in obj:
            obj = dumps(_jsonb_safe(json.loads(obj)))
        return super().dump(obj)


_ADAPTERS = AdaptersMap(psycopg.adapters)
_ADAPTERS.register_dumper(str, _TextDumper)
_ADAPTERS.register_dumper(JsonText, _JsonbDumper)
_ADAPTERS.register_loader("jsonb", TextLoader)  # JSON comes back as text, parsed once


class PostgresStore(SqlStore[psycopg.Connection[TupleRow]]):
    PARAM = "%s"
    ERRORS = (psycopg.Error,)
    MIGRATIONS = MIGRATIONS
    CALLER_MATCH = "strpos(caller, ?) > 0"
    TRANSFER_MATCH = "transfers @> jsonb_build_array(jsonb_build_object('status', ?::text))"
    INSERTION_ORDER = "seq"  # an upsert that replaces a call keeps its seq
    to_json = staticmethod(dumps)  # `JsonText`: bound as jsonb

    def __init__(
        self,
        url: str,
        *,
        retention_days: float | None = None,
        max_queue: int = 100_000,
        connect_timeout: float = 10.0,
    ) -> None:
        """Connect, migrate, start the writer. StoreError (without the password) when the
        URL does not parse, the server cannot be reached or refuses us."""
        self.label = redact(url)
        self._passwords = _passwords(url)
        self.owner = secrets.randbits(62) + 1
        self.stamp = (("owner", str(self.owner)),)
        self.unfinished = (
            f"ended_at IS NULL AND (owner = {self.owner} OR NOT EXISTS ({_OWNER_ALIVE}))"
        )
        try:
            params: dict[str, Any] = conninfo_to_dict(url)
            params.setdefault("connect_timeout", max(1, round(connect_timeout)))
            params.setdefault("application_name", "sipbridge")
            self._params = params
            super().__init__(retention_days=retention_days, max_queue=max_queue)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot open the call store {self.label}: {self._describe(exc)}"
            ) from None

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).strip()
        for password in self._passwords:
            text = text.replace(password, "***")
        return text

    def _connect(self, *, writer: bool) -> psycopg.Connection[TupleRow]:
        conn = psycopg.connect(autocommit=False, context=_ADAPTERS, **self._params)
        try:
            if writer:
                # Held as long as this connection lives: our calls are not to be ended. A
                # try: after a reconnect, a session of ours the server has not yet seen die
                # may hold it still (and then it guards our calls until it goes).
                conn.execute(f"SELECT pg_try_advisory_lock({self.owner})")
                conn.commit()
            else:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot
                conn.read_only = True
        except BaseException:
            conn.close()
            raise
        return conn

    def _lock_schema(self, conn: psycopg.Connection[TupleRow]) -> None:
        conn.execute(f"SELECT {_SCHEMA_LOCK}")

    def _begin(self, conn: psycopg.Connection[TupleRow], *, writer: bool) -> None:
        pass  # psycopg opens the transaction with the first statement

    def _commit(self, conn: psycopg.Connection[TupleRow]) -> None:
        conn.commit()

    def _rollback(self, conn: psycopg.Connection[TupleRow]) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()

    def _lost(self, conn: psycopg.Connection[TupleRow]) -> bool:
        return conn.closed
