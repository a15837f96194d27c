"""The SQLite call store's schema upgrades: a database made by an earlier sipbridge, with
calls and events in it, reads back as it did once migrated, and takes new writes."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from sipbridge.store import SqliteStore
from sipbridge.store.sqlite import MIGRATIONS
from tests.unit.storerecords import call

DAY = 86400.0


def version_1(path: Path) -> None:
    """A database as schema version 1 left it: two calls, their events interleaved, an
    event whose call has no row, and one of a call whose row came after it."""
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        for statement in ("CREATE TABLE schema_version (version INTEGER NOT NULL)",
                          *MIGRATIONS[0], "INSERT INTO schema_version VALUES (1)"):
            raw.execute(statement)
        for call_id, ended_at in (("rtc_a", 1010.0), ("rtc_b", None)):
            raw.execute(
                "INSERT INTO calls (id, state, created_at, ended_at, caller, callee, sip, "
                "transfers, webhooks, extra) VALUES (?, ?, 1000.0, ?, 'sip:a@x', 'sip:b@x', "
                "?, '[]', '[]', ?)",
                (call_id, "ringing" if ended_at is None else "ended", ended_at,
                 json.dumps({"from": "sip:a@x", "to": "sip:b@x"}),
                 json.dumps({"custom": call_id})))
        for i, call_id in enumerate(["rtc_a", "rtc_b", "rtc_a", "rtc_gone", "rtc_b", "rtc_a"]):
            raw.execute("INSERT INTO events (call_id, at, kind, data) VALUES (?, ?, 'sip', ?)",
                        (call_id, 1000.0 + i, json.dumps({"at": 1000.0 + i, "kind": "sip",
                                                          "n": i})))


def test_a_version_1_database_is_upgraded_and_reads_back_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    version_1(path)
    with SqliteStore(path) as store:
        a, b = store.get_call("rtc_a"), store.get_call("rtc_b")
        assert a is not None and b is not None
        assert [e["n"] for e in a["timeline"]] == [0, 2, 5]
        assert [e["n"] for e in b["timeline"]] == [1, 4]
        assert a["timeline"][0] == {"at": 1000.0, "kind": "sip", "n": 0}
        assert a["state"] == "ended" and a["custom"] == "rtc_a"  # type: ignore[typeddict-item]
        assert [c["id"] for c in store.list_calls()] == ["rtc_b", "rtc_a"]
        # New writes: after the old ones on the timeline; an event before its call's row.
        store.add_event("rtc_a", 2000.0, "sip", {"n": 6})
        store.add_event("rtc_c", 2001.0, "sip", {"n": 7})
        assert store.flush()
        store.upsert_call(call("rtc_c"))
        store.add_event("rtc_c", 2002.0, "sip", {"n": 8})
        assert store.flush()
        a, c = store.get_call("rtc_a"), store.get_call("rtc_c")
        assert a is not None and c is not None
        assert [e["n"] for e in a["timeline"]] == [0, 2, 5, 6]
        assert [e["n"] for e in c["timeline"]] == [7, 8]
        # rtc_a ended long ago: it goes with its events; the orphan event as old goes too.
        store.retention_days = 1.0
        assert store.purge(now=1010.0 + 2 * DAY) == 1
        assert store.get_call("rtc_a") is None
        b = store.get_call("rtc_b")
        assert b is not None and [e["n"] for e in b["timeline"]] == [1, 4]
    with closing(sqlite3.connect(path)) as raw:
        assert raw.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [
            (1,), (2,)]
        left = raw.execute("SELECT call_id, call_key IS NULL FROM events ORDER BY id").fetchall()
        assert left == [("rtc_b", 0), ("rtc_b", 0), ("rtc_c", 1), ("rtc_c", 0)]
        indexes = {r[0] for r in raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")}
        assert indexes == {"events_call_key", "events_orphan"}


def test_a_call_whose_rowid_is_taken_again_keeps_only_its_own_events(tmp_path: Path) -> None:
    """The newest call purged frees its rowid for the next call: events are matched by
    call id as well as by the rowid."""
    with SqliteStore(tmp_path / "calls.db", retention_days=1.0) as store:
        store.upsert_call(call("rtc_old", state="ended", ended_at=1000.0))
        store.add_event("rtc_old", 1000.0, "sip", {"n": 0})
        assert store.flush()
        assert store.purge(now=1000.0 + 2 * DAY) == 1
        store.upsert_call(call("rtc_new"))
        store.add_event("rtc_new", 1001.0, "sip", {"n": 1})
        assert store.flush()
        got = store.get_call("rtc_new")
        assert got is not None and [e["n"] for e in got["timeline"]] == [1]
        assert store.get_call("rtc_old") is None
