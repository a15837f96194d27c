"""A cluster's membership in a real PostgreSQL store (tests/pgserver.py): names held by one
process at a time, heartbeats and the sweep that marks a silent node gone (and ends its
calls), judged on the server's clock, through a store outage shorter than the timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from sipbridge.calls.call import new_call_id
from sipbridge.store.base import StoreError
from sipbridge.store.nodes import NodeNameTaken, NodeTable
from sipbridge.store.postgres import PostgresStore
from tests.pgserver import PASSWORD
from tests.unit.storerecords import call


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    with PostgresStore(pg_url) as s:
        yield s


def table(pg_url: str, name: str, api: str = "") -> NodeTable:
    t = NodeTable(pg_url, name)
    t.join(api or f"http://127.0.0.1:1/{name}")
    return t


def beat(t: NodeTable, **kw: object) -> tuple[bool, str | None]:
    args: dict[str, object] = {"live_calls": 0, "refused": 0, "refused_since_last": 0,
                               "draining": False}
    args.update(kw)
    return t.beat(**args)  # type: ignore[arg-type]


def test_a_name_is_held_by_one_process_and_freed_when_it_goes(
        store: PostgresStore, pg_url: str) -> None:
    a = table(pg_url, "a")
    with pytest.raises(NodeNameTaken) as taken:
        table(pg_url, "a")
    assert "node name 'a' is in use by a running node (http://127.0.0.1:1/a, up" \
        in str(taken.value)
    assert PASSWORD not in str(taken.value)
    a.close()  # as a killed process: the server drops its session and its lock
    again = table(pg_url, "a", "http://127.0.0.1:2/")
    [node] = again.nodes()
    assert (node["name"], node["state"], node["api_url"], node["this"]) == (
        "a", "up", "http://127.0.0.1:2/", True)
    again.leave()
    assert [n["state"] for n in again.nodes()] == ["stopped"]
    table(pg_url, "a").close()  # a clean stop freed the name too
    again.close()


def test_a_silent_node_is_marked_gone_once_and_its_calls_ended(
        store: PostgresStore, pg_url: str) -> None:
    a, b, c = table(pg_url, "a"), table(pg_url, "b"), table(pg_url, "c")
    mine = [call(new_call_id(node="a"), state="active") for _ in range(3)]
    other = call(new_call_id(node="b"), state="active")
    done = call(new_call_id(node="a"), state="ended", ended_at=time.time(),
                end_reason="remote_bye")
    for record in (*mine, other, done):
        store.upsert_call(record)
    assert store.flush()
    beat(a, live_calls=3)
    assert b.sweep(timeout=0.5) == [] and c.sweep(timeout=0.5) == []  # all fresh
    time.sleep(0.8)
    beat(b)
    beat(c)
    found = b.sweep(timeout=0.5) + c.sweep(timeout=0.5)
    assert found == [("a", 3)]  # one sweep found it, the other had nothing left to do
    states = {n["name"]: n for n in c.nodes()}
    assert states["a"]["state"] == "gone" and states["a"]["live_calls"] == 0
    assert states["b"]["state"] == "up"
    for record in mine:
        stored = store.get_call(record["id"])
        assert stored is not None and stored["end_reason"] == "abnormal: node_gone"
        assert stored["timeline"][-1]["kind"] == "gateway"
        assert stored["timeline"][-1]["status"] == "node_gone"
    assert store.get_call(other["id"])["end_reason"] is None  # type: ignore[index]
    assert store.get_call(done["id"])["end_reason"] == "remote_bye"  # type: ignore[index]
    # a comes back (its store link was cut for longer than the timeout): told, up again
    asked, gone = beat(a)
    assert not asked and gone is not None and gone.startswith("no heartbeat for 0."), gone
    assert {n["name"]: n["state"] for n in c.nodes()}["a"] == "up"
    for t in (a, b, c):
        t.close()


def test_heartbeats_use_the_server_s_clock(store: PostgresStore, pg_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose clock is an hour ahead (or behind) beats on the server's time: the
    others see it fresh, and it does not see them stale."""
    a = table(pg_url, "a")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    b = table(pg_url, "b")
    beat(b)
    ages = {n["name"]: n["heartbeat_age"] for n in a.nodes()}
    assert ages["b"] < 5 and ages["a"] < 5
    assert b.sweep(timeout=10) == []
    monkeypatch.setattr(time, "time", lambda: real() - 3600)
    assert b.sweep(timeout=10) == [] and a.sweep(timeout=10) == []
    a.close()
    b.close()


def test_a_store_outage_shorter_than_the_timeout_marks_no_node_gone(
        store: PostgresStore, pg_url: str) -> None:
    a, b = table(pg_url, "a"), table(pg_url, "b")
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = 'sipbridge node a'")
    with pytest.raises(StoreError) as failed:  # the beat that finds the link cut
        beat(a)
    assert "cluster store" in str(failed.value) and PASSWORD not in str(failed.value)
    assert b.sweep(timeout=2) == []
    assert beat(a) == (False, None)  # a new connection: the beat goes through
    assert a.holds_name  # and the name was taken again
    with pytest.raises(NodeNameTaken):
        table(pg_url, "a")
    assert b.sweep(timeout=2) == []
    a.close()
    b.close()


def test_drain_requests_and_refusals_per_minute(store: PostgresStore, pg_url: str) -> None:
    a, b = table(pg_url, "a"), table(pg_url, "b")
    cli = NodeTable(pg_url, "")
    assert cli.request_drain("a") and not cli.request_drain("nosuch")
    assert beat(a, refused=4, refused_since_last=4) == (True, None)
    assert {n["name"]: n["state"] for n in cli.nodes()}["a"] == "draining"
    beat(b, refused=2, refused_since_last=2)
    minutes = cli.refusals(time.time() - 120)
    assert sum(minutes.values()) == 6 and all(m % 60 == 0 for m in minutes)
    assert [(n["name"], n["refused"]) for n in cli.nodes()] == [("a", 4), ("b", 2)]
    for t in (a, b, cli):
        t.close()
