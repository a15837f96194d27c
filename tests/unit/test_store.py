"""The call store, on SQLite and on PostgreSQL: round trips, filters, restart handling,
retention, durability. Tests of one backend only say so in their name; PostgreSQL's own
are in test_store_postgres.py."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from sipbridge.records import CallRecord
from sipbridge.store import SqliteStore, Store, StoreError
from sipbridge.store.rows import COLUMNS, JSON_COLUMNS, SCALARS, call_params, dumps, encode
from sipbridge.store.writer import Write
from tests.unit.storerecords import call, run_killed_child, transfer


@dataclass
class Backend:
    """A database for the store, and a way around the store to look at it or get in its way."""

    name: str
    target: str  # a SQLite file's path or a postgresql:// URL
    open: Callable[..., Store]  # open(**options): a store on it
    sql: Callable[[str], list[tuple[Any, ...]]]  # a statement run on a connection of our own
    block: Callable[[], AbstractContextManager[None]]  # nobody may write; reading goes on


def sqlite_backend(path: Path) -> Backend:
    def sql(statement: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(path, isolation_level=None)) as raw:
            return raw.execute(statement).fetchall()

    @contextmanager
    def block() -> Iterator[None]:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # the disk is "stuck": no writer can get in
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

    return Backend("sqlite", str(path), lambda **kw: SqliteStore(path, **kw), sql, block)


def postgres_backend(url: str) -> Backend:
    import psycopg

    from sipbridge.store.postgres import PostgresStore

    def sql(statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as raw:
            cursor = raw.execute(statement.encode())
            return cursor.fetchall() if cursor.description else []

    @contextmanager
    def block() -> Iterator[None]:
        with psycopg.connect(url) as blocker:
            # EXCLUSIVE: no INSERT or UPDATE gets in, SELECT does
            blocker.execute("LOCK TABLE calls, events IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                blocker.rollback()

    return Backend("postgres", url, lambda **kw: PostgresStore(url, **kw), sql, block)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return sqlite_backend(tmp_path / "calls.db")
    return postgres_backend(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open(retention_days=30)
    yield s
    s.close()


def test_round_trip_call_and_timeline_in_order(store: Store) -> None:
    record = call(
        "rtc_1",
        state="active",
        answered_at=1001.5,
        transfers=[{"target": "tel:+1415", "status": "succeeded"}],
        webhooks=[{"type": "realtime.call.incoming", "status": 200}],
        recording="/var/rec/rtc_1.wav",
    )
    store.upsert_call(record)
    kinds = ["sip", "webhook", "api", "sideband", "dtmf", "transfer", "media", "agent"]
    for i, kind in enumerate(kinds):
        # same timestamp for all: order must come from insertion, not from `at`
        store.add_event("rtc_1", 1001.0, kind, {"n": i, "detail": {"x": [1, 2]}})
    store.add_event("rtc_2", 1001.0, "sip", {"n": 99})  # another call's timeline
    assert store.flush()

    got = store.get_call("rtc_1")
    assert got is not None
    timeline = got.pop("timeline")
    assert got == record
    assert [e["kind"] for e in timeline] == kinds
    assert timeline[0] == {"at": 1001.0, "kind": "sip", "n": 0, "detail": {"x": [1, 2]}}
    assert [e["n"] for e in timeline] == list(range(len(kinds)))
    assert store.get_call("rtc_missing") is None


def test_upsert_replaces_and_keeps_extra_fields(store: Store) -> None:
    store.upsert_call(call("rtc_1", custom={"a": 1}))
    store.add_event("rtc_1", 1000.0, "sip", {"method": "INVITE"})
    store.upsert_call(
        call("rtc_1", state="ended", ended_at=1060.0, end_reason="remote_bye", custom={"a": 2})
    )
    assert store.flush()
    got = store.get_call("rtc_1")
    assert got is not None
    assert got["state"] == "ended"
    assert got["ended_at"] == 1060.0
    assert got["end_reason"] == "remote_bye"
    fields: Mapping[str, object] = got  # "custom" is no key of a CallRecord
    assert fields["custom"] == {"a": 2}
    assert [e["kind"] for e in got["timeline"]] == ["sip"]  # replacing keeps the timeline
    assert len(store.list_calls()) == 1


def test_record_is_captured_when_queued(store: Store) -> None:
    record = call("rtc_1")
    store.upsert_call(record)
    record["transfers"].append(transfer("failed"))  # the caller goes on mutating it
    record["state"] = "active"
    assert store.flush()
    got = store.get_call("rtc_1")
    assert got is not None
    assert got["state"] == "ringing"
    assert got["transfers"] == []


def test_list_filters_order_and_limit(store: Store) -> None:
    store.upsert_call(call("rtc_a", created_at=100.0, state="ended", ended_at=150.0,
                           caller="sip:+14155550100@a.example",
                           transfers=[transfer("failed"), transfer("succeeded")]))
    store.upsert_call(call("rtc_b", created_at=200.0, state="active",
                           caller="sip:+442071234567@b.example",
                           transfers=[transfer("timed_out")]))
    store.upsert_call(call("rtc_c", created_at=300.0, state="ringing",
                           caller="sip:+14155550777@c.example"))
    store.upsert_call(call("rtc_d", created_at=400.0, state="ended", ended_at=410.0,
                           caller="anonymous", transfers=[transfer("failed")]))
    assert store.flush()

    def ids(**kw: Any) -> list[str]:
        return [c["id"] for c in store.list_calls(**kw)]

    assert ids() == ["rtc_d", "rtc_c", "rtc_b", "rtc_a"]
    assert ids(limit=2) == ["rtc_d", "rtc_c"]
    assert ids(limit=0) == []
    assert ids(state="ended") == ["rtc_d", "rtc_a"]
    assert ids(since=200.0) == ["rtc_d", "rtc_c", "rtc_b"]
    assert ids(until=300.0) == ["rtc_b", "rtc_a"]
    assert ids(since=150.0, until=350.0) == ["rtc_c", "rtc_b"]
    assert ids(caller="+1415555") == ["rtc_c", "rtc_a"]
    assert ids(caller="b.example") == ["rtc_b"]
    assert ids(caller="%") == []  # a substring, not a LIKE pattern
    assert ids(transfer_status="failed") == ["rtc_d", "rtc_a"]
    assert ids(transfer_status="succeeded") == ["rtc_a"]
    assert ids(transfer_status="unconfirmed") == []
    assert ids(state="ended", transfer_status="failed", caller="+1415") == ["rtc_a"]
    assert all("timeline" not in c for c in store.list_calls())
    assert store.list_calls(state="active")[0]["transfers"] == [transfer("timed_out")]


def test_mark_unfinished(store: Store) -> None:
    store.upsert_call(call("rtc_ringing"))
    store.upsert_call(call("rtc_active", state="active", answered_at=1001.0))
    store.upsert_call(call("rtc_done", state="ended", ended_at=1002.0, end_reason="local_bye"))
    before = time.time()
    # no flush: mark_unfinished is ordered after the writes queued before it
    assert store.mark_unfinished() == 2
    for call_id in ("rtc_ringing", "rtc_active"):
        got = store.get_call(call_id)
        assert got is not None
        assert got["state"] == "ended"
        assert got["ended_at"] is not None
        assert got["ended_at"] >= before
        assert got["end_reason"] == "abnormal: gateway_restarted"
        assert got["timeline"][-1]["kind"] == "gateway"
        assert got["timeline"][-1]["status"] == "restarted"
    done = store.get_call("rtc_done")
    assert done is not None
    assert done["end_reason"] == "local_bye"
    assert done["timeline"] == []
    assert store.mark_unfinished() == 0


def test_purge_with_retention(backend: Backend) -> None:
    day = 86400.0
    now = 100 * day
    with backend.open(retention_days=7) as store:
        store.upsert_call(call("rtc_old", state="ended", created_at=now - 10 * day,
                               ended_at=now - 10 * day))
        store.upsert_call(call("rtc_recent", state="ended", created_at=now - 8 * day,
                               ended_at=now - 6 * day))
        store.upsert_call(call("rtc_live", state="active", created_at=now - 9 * day))
        store.add_event("rtc_old", now - 10 * day, "sip", {})
        store.add_event("rtc_recent", now - 6 * day, "sip", {})
        store.add_event("rtc_orphan", now - 20 * day, "sip", {})
        assert store.purge(now=now) == 1
        assert store.get_call("rtc_old") is None
        assert {c["id"] for c in store.list_calls()} == {"rtc_recent", "rtc_live"}
        left = backend.sql("SELECT call_id FROM events ORDER BY id")
        assert left == [("rtc_recent",)]
        assert store.purge(now=now) == 0

    with backend.open() as keep_forever:
        assert keep_forever.purge(now=now + 1000 * day) == 0
        assert len(keep_forever.list_calls()) == 2


def test_timestamps_and_text_round_trip_exactly(store: Store) -> None:
    record = call("rtc_1", created_at=1712345678.123456789, answered_at=0.1 + 0.2,
                  ended_at=1e-7, caller="sip:\u00e9l\u00e8ve@\u4f8b.example",
                  sip={"text": "INVITE \\u0000 \U0001f600\r\n", "n": 2**53 + 1,
                       "jitter": 1e-05, "mos": 0.1 + 0.2})
    store.upsert_call(record)
    store.add_event("rtc_1", 1712345678.987654321, "sip", {"line": "back\\slash \"quoted\""})
    assert store.flush()
    got = store.get_call("rtc_1")
    assert got is not None
    timeline = got.pop("timeline")
    assert got == record
    assert timeline == [{"at": 1712345678.987654321, "kind": "sip",
                         "line": "back\\slash \"quoted\""}]


def test_writes_do_not_block_on_a_locked_database(backend: Backend) -> None:
    with backend.open() as store:
        with backend.block():
            for i in range(1000):
                store.upsert_call(call(f"rtc_{i:04d}", created_at=float(i)))
                store.add_event(f"rtc_{i:04d}", float(i), "sip", {"i": i})
            # every call returned although nothing could be written yet
            assert store.list_calls(limit=5) == []
        assert store.flush(timeout=10.0)
        calls = store.list_calls(limit=5000)
        assert len(calls) == 1000
        assert calls[0]["id"] == "rtc_0999"
        got = store.get_call("rtc_0500")
        assert got is not None
        assert got["timeline"] == [{"at": 500.0, "kind": "sip", "i": 500}]
        assert store.write_errors == 0
        assert store.dropped == 0


def test_reopen_runs_no_migration_twice(backend: Backend) -> None:
    with backend.open() as store:
        store.upsert_call(call("rtc_1"))
    with backend.open() as store:
        assert store.get_call("rtc_1") is not None
    migrations = 2 if backend.name == "sqlite" else 1
    assert backend.sql("SELECT version FROM schema_version ORDER BY version") == [
        (v,) for v in range(1, migrations + 1)]
    backend.sql("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        backend.open()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    SqliteStore(path).close()
    with closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_durable_across_a_killed_process(backend: Backend) -> None:
    run_killed_child(backend.target)

    with backend.open() as store:
        got = store.get_call("rtc_crash")
        assert got is not None
        assert got["state"] == "active"
        assert [e["i"] for e in got["timeline"]] == [0, 1, 2, 3, 4]
        assert store.mark_unfinished() == 1
        got = store.get_call("rtc_crash")
        assert got is not None
        assert got["state"] == "ended"
        assert got["end_reason"] == "abnormal: gateway_restarted"
        assert got["timeline"][-1]["kind"] == "gateway"


def test_sqlite_write_errors_on_a_locked_database_are_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "calls.db"
    caplog.set_level(logging.DEBUG, logger="sipbridge.store")
    with SqliteStore(path, busy_timeout=0.05) as store:
        # a locked database: the write fails after the busy timeout, flush says so
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        store.upsert_call(call("rtc_locked"))
        assert store.flush() is False
        assert store.write_errors == 1
        blocker.execute("ROLLBACK")
        blocker.close()
        assert any("writes failed" in r.getMessage() for r in caplog.records)

        # the writer is still alive and well
        store.upsert_call(call("rtc_ok"))
        assert store.flush() is True
        assert store.get_call("rtc_ok") is not None
        assert store.get_call("rtc_locked") is None


def test_write_errors_are_logged_and_counted_not_raised(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sipbridge.store")
    store = backend.open()

    # a record that cannot be stored: a bad value, a missing id
    store.upsert_call(call("rtc_ok"))
    store.upsert_call(call("rtc_bad", created_at={"not": "a number"}))
    store.upsert_call(cast("CallRecord", {"state": "ringing"}))
    store.add_event("rtc_ok", 1.0, "sip", {"after": "the bad one"})
    assert store.flush() is False
    assert store.write_errors == 2
    assert store.get_call("rtc_bad") is None
    assert any("writes failed" in r.getMessage() for r in caplog.records)
    # the rest of the batch is in, and the writer is alive and well
    got = store.get_call("rtc_ok")
    assert got is not None
    assert got["timeline"] == [{"at": 1.0, "kind": "sip", "after": "the bad one"}]
    store.upsert_call(call("rtc_later"))
    assert store.flush() is True
    assert store.get_call("rtc_later") is not None

    # writes after close are ignored and counted
    store.close()
    store.upsert_call(call("rtc_late"))
    store.add_event("rtc_late", 1.0, "sip", {})
    assert store.write_errors == 4
    assert store.flush() is False
    assert store.mark_unfinished() == 0
    store.close()  # idempotent
    assert any("after close" in r.getMessage() for r in caplog.records)


def test_full_queue_drops_and_counts(backend: Backend) -> None:
    store = backend.open(max_queue=1)
    with backend.block():  # the writer is stuck on its first write
        for i in range(20):
            store.add_event("rtc_1", float(i), "sip", {"i": i})
    # at most one write in the writer's hands and one in the queue
    assert store.dropped >= 18
    store.close()


class Opaque:
    def __str__(self) -> str:
        return "opaque"


@pytest.mark.parametrize("value", [
    {}, [], "", 0, None, True, 1e16, 0.1 + 0.2, -0.0, math.nan, math.inf,
    {"a": [1, 2.5, None, False, "\u00e9\u00e8 \u4f8b \U0001f600 \x00 \"q\" \\ \r\n"]},
    {"nested": {"deep": [{"k": [[], {}]}]}, 1: "int key", 2.5: "float key", None: "null key"},
    {"opaque": Opaque(), "tuple": (1, 2), "bytes": b"x"},
])
def test_json_is_written_as_json_dumps_writes_it(value: object) -> None:
    text = dumps(value)
    assert text == json.dumps(value, default=str, separators=(",", ":"))
    assert type(text).__name__ == "JsonText"
    plain = encode(value)
    assert plain == text and type(plain) is str


@pytest.mark.parametrize("fields", [
    {},
    {"state": "ended", "answered_at": 2.0, "ended_at": 3.0, "end_reason": "remote_bye",
     "recording": Path("/r/rtc_1.wav"), "transfers": [transfer("failed")],
     "webhooks": [{"id": "wh_1"}], "custom": {"v": [1]}, "object": "realtime.call"},
    {"sip": None, "transfers": None, "webhooks": None},
    {"sip": ["not", "a", "mapping"], "transfers": {}, "webhooks": ""},
])
@pytest.mark.parametrize("to_json", [encode, dumps])
def test_call_params_are_the_columns_in_order(fields: dict[str, object],
                                              to_json: Callable[[object], str]) -> None:
    record = cast("dict[str, object]", call("rtc_1", "sip:+14155550100@carrier.example", **fields))
    sip = record.get("sip")
    sip = sip if isinstance(sip, Mapping) else {}
    known = {"id", "recording", "timeline", *SCALARS, *JSON_COLUMNS}
    expected = {
        **{c: record.get(c) for c in COLUMNS},
        "id": "rtc_1", "caller": sip.get("from"), "callee": sip.get("to"),
        "recording": None if record.get("recording") is None else str(record["recording"]),
        **{c: to_json(record.get(c) or empty) for c, empty in JSON_COLUMNS.items()},
        "extra": to_json({k: v for k, v in record.items() if k not in known}),
    }
    params = call_params(record, to_json)
    assert params == tuple(expected[c] for c in COLUMNS)
    assert {type(p) for p in params[-4:]} == {type(to_json({}))}


def test_sqlite_binds_json_as_plain_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """sqlite3 binds an exact str at once; a str subclass (JsonText, for PostgreSQL's jsonb)
    it first looks up among its adapters, for each parameter."""
    store = SqliteStore(tmp_path / "calls.db")
    applied: list[Write] = []
    apply = store._apply

    def spy(writes: list[Write]) -> None:
        applied.extend(writes)
        apply(writes)

    monkeypatch.setattr(store, "_apply", spy)
    store.upsert_call(call("rtc_1", custom={"a": 1}))
    store.add_event("rtc_1", 1.0, "sip", {"line": "INVITE sip:a@b SIP/2.0"})
    assert store.flush()
    store.close()
    assert len(applied) == 2
    texts = [p for w in applied for p in w.params if isinstance(p, str)]
    assert {type(p) for p in texts} == {str}
    assert '{"line":"INVITE sip:a@b SIP/2.0"}' in texts


def test_json_refuses_a_record_that_holds_itself(store: Store) -> None:
    record = call("rtc_loop")
    record["transfers"].append(cast("Any", record["transfers"]))
    store.upsert_call(record)  # refused and counted: the call goes on
    store.upsert_call(call("rtc_ok"))
    assert store.flush() is False  # a write failed since the last flush
    assert store.write_errors == 1
    assert [c["id"] for c in store.list_calls()] == ["rtc_ok"]
