"""How the call store's writer batches, on SQLite and on PostgreSQL: a batch of writes
(one transaction) stores what the same writes one transaction each would, with each
call's record written once and events in order; the rows of a batch go in multi-row
INSERTs of a few sizes; a flush, a task or close cuts the writer's linger short."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from sipbridge.records import CallRecord
from sipbridge.store import Store
from sipbridge.store.base import CHUNKS, SqlStore, _Rows
from sipbridge.store.writer import Write
from tests.polling import until
from tests.unit.storerecords import call, transfer
from tests.unit.test_store import Backend, postgres_backend, sqlite_backend

LONG = 60.0  # a linger that no test waits out: only a flush, a task or close ends it


@pytest.fixture(params=["sqlite", "postgres"])
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Backend, Backend]:
    """Two empty databases of one kind."""
    if request.param == "sqlite":
        return sqlite_backend(tmp_path / "a.db"), sqlite_backend(tmp_path / "b.db")
    server = request.getfixturevalue("pg_server")
    return postgres_backend(server.create_database()), postgres_backend(server.create_database())


@pytest.fixture
def backend(backends: tuple[Backend, Backend]) -> Backend:
    return backends[0]


def batches(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[list[Write]]:
    """Keep the store's writer lingering until a flush, a task or close, so that what is
    queued before one of those is one batch; the batches it applies, as it applies them."""
    sql_store = cast("SqlStore[Any]", store)
    seen: list[list[Write]] = []
    apply = sql_store._apply

    def spy(writes: list[Write]) -> None:
        seen.append(list(writes))
        apply(writes)

    monkeypatch.setattr(sql_store, "_apply", spy)
    sql_store.linger = LONG
    return seen


T0 = 1000.0  # every call's created_at: lists then come in insertion order (newest first)


def scripted_writes(store: Store) -> None:
    """Calls that change several times, interleaved with their events and each other's;
    rtc_old was stored before (in a batch of its own)."""
    store.upsert_call(call("rtc_b"))
    store.add_event("rtc_b", 1.0, "sip", {"n": 0, "method": "INVITE"})
    store.upsert_call(call("rtc_a", caller="sip:+1415@a.example"))
    store.add_event("rtc_a", 1.0, "sip", {"n": 1})
    store.upsert_call(call("rtc_old", state="active", answered_at=T0 + 1, custom={"v": 2}))
    store.upsert_call(call("rtc_b", state="active", answered_at=T0 + 2, custom={"x": [1, 2]}))
    store.add_event("rtc_b", 1.0, "api", {"n": 2, "detail": {"k": "v"}})
    store.upsert_call(call("rtc_c"))
    store.add_event("rtc_old", 1.0, "sip", {"n": 3})
    store.upsert_call(call("rtc_a", state="ended", ended_at=T0 + 3, end_reason="remote_bye"))
    store.add_event("rtc_c", 1.0, "sip", {"n": 4})
    store.upsert_call(call("rtc_b", state="ended", ended_at=T0 + 4, end_reason="local_bye",
                           transfers=[transfer("failed")], custom={"x": [3]}))
    for n in range(5, 25):  # one call's events, all at the same time: order from queueing
        store.add_event("rtc_a", 2.0, "media", {"n": n})
    store.upsert_call(call("rtc_old", state="ended", ended_at=T0 + 5, end_reason="timeout"))


def contents(store: Store, backend: Backend) -> tuple[object, ...]:
    ids = ("rtc_a", "rtc_b", "rtc_c", "rtc_old")
    return (
        [store.get_call(i) for i in ids],
        [c["id"] for c in store.list_calls()],  # insertion order, newest first
        backend.sql("SELECT call_id, at, kind, data FROM events ORDER BY id"),
    )


def test_a_batch_stores_what_one_write_per_transaction_stores(
    backends: tuple[Backend, Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    one_by_one, batched = backends
    with one_by_one.open() as store:
        applied = batches(store, monkeypatch)
        store.upsert_call(call("rtc_old", custom={"v": 1}))
        assert store.flush()

        def flushing(method: Callable[..., None]) -> Callable[..., None]:
            def write(*args: Any) -> None:
                method(*args)
                assert store.flush()
            return write

        monkeypatch.setattr(store, "upsert_call", flushing(store.upsert_call))
        monkeypatch.setattr(store, "add_event", flushing(store.add_event))
        scripted_writes(store)
        assert {len(b) for b in applied} == {1}  # a transaction for each write
        expected = contents(store, one_by_one)
        monkeypatch.undo()

    with batched.open() as store:
        applied = batches(store, monkeypatch)
        store.upsert_call(call("rtc_old", custom={"v": 1}))
        assert store.flush()
        scripted_writes(store)
        assert store.flush()
        assert [len(b) for b in applied] == [1, 33]  # the script: one batch
        got = contents(store, batched)
        assert store.write_errors == 0

    assert got == expected
    records, order, events = got
    assert order == ["rtc_c", "rtc_a", "rtc_b", "rtc_old"]
    assert [r["state"] for r in cast("list[CallRecord]", records)] == [
        "ended", "ended", "ringing", "ended"]
    assert [e[0] for e in cast("list[tuple[object, ...]]", events)] == [
        "rtc_b", "rtc_a", "rtc_b", "rtc_old", "rtc_c", *["rtc_a"] * 20]
    timeline = cast("list[CallRecord]", records)[0]["timeline"]
    assert [e["n"] for e in timeline] == [1, *range(5, 25)]


def test_each_call_is_written_once_per_batch(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch with a dozen records of one call makes one row write of it (PostgreSQL
    refuses one INSERT ... ON CONFLICT that touches a row twice: that passing is the proof
    there)."""
    with backend.open() as store:
        sql_store = cast("SqlStore[Any]", store)
        rows_written: list[int] = []
        execute = sql_store._calls.execute

        def counting(conn: Any, rows: list[tuple[object, ...]]) -> None:
            rows_written.append(len(rows))
            execute(conn, rows)

        monkeypatch.setattr(sql_store._calls, "execute", counting)
        applied = batches(store, monkeypatch)
        for i in range(12):
            store.upsert_call(call("rtc_1", state="active", answered_at=float(i)))
            store.add_event("rtc_1", float(i), "sip", {"i": i})
        store.upsert_call(call("rtc_2"))
        assert store.flush()
        assert [len(b) for b in applied] == [25]
        assert rows_written == [2]
        got = store.get_call("rtc_1")
        assert got is not None
        assert got["answered_at"] == 11.0
        assert [e["i"] for e in got["timeline"]] == list(range(12))


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 16, 17, 64, 65, 200])
def test_rows_of_a_batch_are_all_stored(
    n: int, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backend.open() as store:
        applied = batches(store, monkeypatch)
        for i in range(n):
            store.upsert_call(call(f"rtc_{i:03d}", created_at=float(i), custom={"i": i}))
            store.add_event(f"rtc_{n - 1 - i:03d}", float(i), "sip", {"i": i})
        assert store.flush()
        assert [len(b) for b in applied] == ([2 * n] if n else [])
        calls = store.list_calls(limit=1000)
        assert [c["id"] for c in calls] == [f"rtc_{i:03d}" for i in reversed(range(n))]
        assert [cast("dict[str, object]", c)["custom"] for c in calls] == [
            {"i": i} for i in reversed(range(n))]
        events = backend.sql("SELECT call_id, at FROM events ORDER BY id")
        assert events == [(f"rtc_{n - 1 - i:03d}", float(i)) for i in range(n)]
        assert store.write_errors == 0


class Recording:
    """A connection that keeps what it is asked to execute."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[object]]] = []

    def execute(self, sql: str, params: Any = ()) -> None:
        self.statements.append((sql, list(params)))


@pytest.mark.parametrize(("n", "sizes"), [
    (0, []), (1, [1]), (3, [2, 1]), (4, [4]), (5, [4, 1]), (16, [16]), (17, [16, 1]),
    (64, [64]), (65, [64, 1]), (127, [64, 32, 16, 8, 4, 2, 1]), (200, [64, 64, 64, 8]),
])
def test_rows_go_in_statements_of_a_few_sizes(n: int, sizes: list[int]) -> None:
    rows = _Rows("INSERT INTO t (a, b)", "(?, ?)", " ON CONFLICT DO NOTHING", "%s")
    assert set(rows.sql) == set(CHUNKS)
    assert rows.sql[2] == "INSERT INTO t (a, b) VALUES (%s, %s), (%s, %s) ON CONFLICT DO NOTHING"
    conn = Recording()
    rows.execute(cast("Any", conn), [(i, f"v{i}") for i in range(n)])
    assert [len(params) // 2 for _, params in conn.statements] == sizes
    assert [sql for sql, _ in conn.statements] == [rows.sql[s] for s in sizes]
    flat = [p for _, params in conn.statements for p in params]
    assert flat == [v for i in range(n) for v in (i, f"v{i}")]


def test_flush_task_and_close_cut_the_linger_short(backend: Backend) -> None:
    """Each is queued while the writer lingers (for a minute) with writes in hand."""
    store = backend.open()
    cast("SqlStore[Any]", store).linger = LONG

    def promptly(what: Callable[[], object]) -> object:
        time.sleep(0.1)  # the writer has woken for the writes and lingers
        started = time.monotonic()
        result = what()
        assert time.monotonic() - started < LONG / 6
        return result

    store.upsert_call(call("rtc_1"))
    assert promptly(store.flush) is True
    assert store.get_call("rtc_1") is not None
    store.upsert_call(call("rtc_2"))
    assert promptly(store.mark_unfinished) == 2  # after the write queued before it
    for i in range(50):
        store.upsert_call(call(f"rtc_late_{i}"))
        store.add_event(f"rtc_late_{i}", float(i), "sip", {"i": i})
    promptly(store.close)
    assert store.write_errors == 0
    with backend.open() as reopened:
        assert len(reopened.list_calls(limit=100)) == 52
        late = reopened.get_call("rtc_late_49")
        assert late is not None
        assert late["timeline"] == [{"at": 49.0, "kind": "sip", "i": 49}]


def test_writes_are_committed_without_a_flush(backend: Backend) -> None:
    """The writer wakes for a write by itself and commits within its linger."""
    with backend.open() as store:
        for n in (1, 2):  # from idle, then again after having gone back to sleep
            time.sleep(0.05)
            store.upsert_call(call("rtc_1", custom=n))
            store.add_event("rtc_1", 1.0, "sip", {"n": n})
            def has_it(got: CallRecord | None, n: int = n) -> bool:
                return got is not None and len(got["timeline"]) == n

            got = until("the write is committed", lambda: store.get_call("rtc_1"), has_it,
                        within=5.0, interval=0.005)
            assert cast("dict[str, object]", got)["custom"] == n
        assert len(backend.sql("SELECT id FROM events")) == 2


def test_close_with_writes_lingering_commits_them_all(backend: Backend) -> None:
    """No flush: close alone commits what waits, and the writer thread ends."""
    store = backend.open()
    sql_store = cast("SqlStore[Any]", store)
    sql_store.linger = LONG
    for i in range(300):
        store.upsert_call(call(f"rtc_{i:03d}", created_at=float(i)))
        store.add_event(f"rtc_{i:03d}", float(i), "sip", {"i": i})
    store.close()
    assert not sql_store._writer.is_alive()
    assert store.write_errors == 0
    assert store.dropped == 0
    with backend.open() as reopened:
        assert len(reopened.list_calls(limit=1000)) == 300
        assert len(backend.sql("SELECT id FROM events")) == 300


def test_a_bad_write_in_a_batch_loses_only_itself(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backend.open() as store:
        applied = batches(store, monkeypatch)
        for i in range(20):
            store.upsert_call(call(f"rtc_{i:02d}"))
            store.add_event(f"rtc_{i:02d}", float(i), "sip", {"i": i})
        store.upsert_call(call("rtc_bad", created_at={"not": "a number"}))
        assert store.flush() is False
        assert [len(b) for b in applied] == [41]
        assert store.write_errors == 1
        assert len(store.list_calls(limit=100)) == 20
        assert len(backend.sql("SELECT id FROM events")) == 20
