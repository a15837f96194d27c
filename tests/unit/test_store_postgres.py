"""The PostgreSQL call store's own behaviour, against a real server (tests/pgserver.py):
gateways starting together, a server that restarts or goes away under an open store,
clear errors that never show the password, gateways sharing one database, and what
PostgreSQL refuses to store. What both backends do alike is in test_store.py."""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from sipbridge.store import SqliteStore, StoreError, is_database_url, open_store
from sipbridge.store.postgres import PostgresStore, redact
from tests.pgserver import PASSWORD, PgServer
from tests.polling import until
from tests.unit.storerecords import SRC, call, run_killed_child

SECRETS = (PASSWORD, quote(PASSWORD, safe=""))


def assert_no_password(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@contextmanager
def unused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound, so nobody else takes it, but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def sipbridge_backends(url: str) -> int:
    """How many connections sipbridge stores hold to the URL's database."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND application_name = 'sipbridge'").fetchone()
    assert row is not None
    return int(row[0])


def test_gateways_starting_together_migrate_once(pg_url: str) -> None:
    n = 6
    barrier = threading.Barrier(n)
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            stores.append(PostgresStore(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == []
        with psycopg.connect(pg_url) as raw:
            assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        for i, store in enumerate(stores):
            store.upsert_call(call(f"rtc_{i}", created_at=float(i)))
            assert store.flush()
        assert [c["id"] for c in stores[0].list_calls()] == [f"rtc_{i}" for i in reversed(range(n))]
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize("how", ["server_restart", "pg_terminate_backend"])
def test_an_open_store_survives_losing_its_connections(
    pg_server: PgServer, pg_url: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sipbridge.store")
    with PostgresStore(pg_url) as store:
        store.upsert_call(call("rtc_before", created_at=1.0))
        assert store.flush()
        assert store.get_call("rtc_before") is not None
        assert sipbridge_backends(pg_url) == 2  # the writer's and the reader's
        if how == "server_restart":
            with pg_server.down():
                pass
        else:
            with psycopg.connect(pg_url, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND application_name = 'sipbridge'").fetchall()
            assert killed == [(True,), (True,)]

        store.upsert_call(call("rtc_after", state="active", created_at=2.0))
        store.add_event("rtc_after", 2.5, "sip", {"line": "INVITE sip:bot@gw"})
        assert store.flush()
        assert store.write_errors == 0
        assert [c["id"] for c in store.list_calls()] == ["rtc_after", "rtc_before"]
        after = store.get_call("rtc_after")
        assert after is not None
        assert after["timeline"] == [{"at": 2.5, "kind": "sip", "line": "INVITE sip:bot@gw"}]
        # the new writer connection holds the store's lock again: a gateway starting now
        # leaves our call in progress alone
        with PostgresStore(pg_url) as starting:
            assert starting.mark_unfinished() == 0
        still = store.get_call("rtc_after")
        assert still is not None
        assert still["state"] == "active"
    assert "reconnecting" in caplog.text
    assert_no_password(caplog.text)


def test_writes_while_the_server_is_down_are_counted_then_land_again(
    pg_server: PgServer, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sipbridge.store")
    with PostgresStore(pg_url, connect_timeout=2) as store:
        store.upsert_call(call("rtc_1", created_at=1.0))
        assert store.flush()
        with pg_server.down():
            store.upsert_call(call("rtc_lost", created_at=2.0))
            store.add_event("rtc_lost", 2.0, "sip", {})
            started = time.monotonic()
            assert store.flush(timeout=10) is False  # counted, not raised, no hang
            assert time.monotonic() - started < 10
            assert store.write_errors == 2
            with pytest.raises(psycopg.OperationalError):
                store.list_calls()  # a read cannot be answered: it says so
        store.upsert_call(call("rtc_2", created_at=3.0))
        assert store.flush()
        assert [c["id"] for c in store.list_calls()] == ["rtc_2", "rtc_1"]
        assert store.write_errors == 2
    assert "2 of 2 writes failed" in caplog.text
    assert_no_password(caplog.text)


def test_open_errors_are_clear_and_never_show_the_password(
    pg_server: PgServer, pg_url: str
) -> None:
    base = pg_url.rsplit("/", 1)[0]
    with unused_port() as free:
        cases = {
            "password authentication failed": pg_server.url("postgres", password="Wr0ng-secret"),
            "does not exist": f"{base}/no_such_database",
            "refused": pg_url.replace(f":{pg_server.port}/", f":{free}/"),
            'invalid integer value "notaport"': pg_url.replace(f":{pg_server.port}/",
                                                                ":notaport/"),
        }
        for expected, url in cases.items():
            with pytest.raises(StoreError) as raised:
                open_store(url)
            shown = "".join(traceback.format_exception(raised.value))
            assert expected in str(raised.value), shown
            assert "***" in str(raised.value)
            assert_no_password(shown)
            assert "Wr0ng-secret" not in shown


def test_the_label_hides_the_password() -> None:
    assert redact("postgresql://u:s%40cret@db.example:5432/calls?sslmode=require") == (
        "postgresql://u:***@db.example:5432/calls?sslmode=require")
    assert redact("postgres://u:p@ss@db/calls") == "postgres://u:***@db/calls"
    assert redact("postgresql://db/calls?user=u&password=s3cret&x=1") == (
        "postgresql://db/calls?user=u&password=***&x=1")
    assert redact("postgresql://u@db/calls") == "postgresql://u@db/calls"


def test_open_store_picks_the_backend(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(str(tmp_path / "calls.db"), retention_days=3) as lite:
        assert isinstance(lite, SqliteStore)
        assert lite.retention_days == 3
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        assert is_database_url(url)
        with open_store(url) as store:
            assert isinstance(store, PostgresStore)
            assert_no_password(store.label)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # the driver is not installed
    with pytest.raises(StoreError, match=r"sipbridge\[postgres\]"):
        open_store(pg_url)


def test_gateways_sharing_a_database_end_only_a_dead_ones_calls(pg_url: str) -> None:
    with PostgresStore(pg_url) as alive:
        alive.upsert_call(call("rtc_alive", state="active"))
        assert alive.flush()
        run_killed_child(pg_url)  # its call "rtc_crash" is open and its gateway gone
        # the server notices the dead client's connection at once
        until("the killed gateway's connections gone", lambda: sipbridge_backends(pg_url),
              lambda backends: backends <= 2, 5, interval=0.01)

        with PostgresStore(pg_url) as starting:
            assert starting.mark_unfinished() == 1
            crash = starting.get_call("rtc_crash")
            assert crash is not None
            assert crash["end_reason"] == "abnormal: gateway_restarted"
            assert [e["i"] for e in crash["timeline"][:-1]] == [0, 1, 2, 3, 4]
            assert crash["timeline"][-1]["kind"] == "gateway"
            other = starting.get_call("rtc_alive")
            assert other is not None
            assert other["state"] == "active"
            assert other["timeline"] == []
        # a gateway still ends its own calls left open (as SQLite's does)
        assert alive.mark_unfinished() == 1


def test_a_write_the_server_refuses_loses_only_itself(pg_url: str) -> None:
    with PostgresStore(pg_url) as store:
        store.upsert_call(call("rtc_1"))
        store.upsert_call(call("rtc_bad", created_at="soon"))  # SQLite would take it
        store.add_event("rtc_1", 1.0, "sip", {})
        assert store.flush() is False
        assert store.write_errors == 1
        assert store.get_call("rtc_bad") is None
        got = store.get_call("rtc_1")
        assert got is not None
        assert len(got["timeline"]) == 1
        store.upsert_call(call("rtc_2"))
        assert store.flush()


def test_what_postgresql_refuses_is_stored_not_lost(pg_url: str) -> None:
    with PostgresStore(pg_url) as store:
        store.upsert_call(call("rtc_1", extra_field={"k\x00": "v"},
                               sip={"from": "sip:a\x00b@x", "jitter": math.nan,
                                    "peak": math.inf, "raw": "\\u0000"}))
        store.add_event("rtc_1", 1.0, "sip", {"text": "BYE\x00\r\n"})
        assert store.flush()
        assert store.write_errors == 0
        got = store.get_call("rtc_1")
        found = [c["id"] for c in store.list_calls(caller="a\ufffdb")]
    assert got is not None
    assert found == ["rtc_1"]  # the caller column, NUL replaced
    # a key no CallRecord has, and a sip part not shaped as one: read as plain mappings
    fields: Mapping[str, object] = got
    sip: Mapping[str, object] = got["sip"]
    assert fields["extra_field"] == {"k\ufffd": "v"}
    assert sip == {"from": "sip:a\ufffdb@x", "jitter": None, "peak": None,
                   "raw": "\\u0000"}  # text kept as is
    assert got["timeline"] == [{"at": 1.0, "kind": "sip", "text": "BYE\ufffd\r\n"}]


def test_the_cli_reads_a_postgresql_store(pg_server: PgServer, pg_url: str) -> None:
    with PostgresStore(pg_url) as store:
        store.upsert_call(call("rtc_cli", state="ended", ended_at=1060.0, end_reason="remote_bye"))
        store.add_event("rtc_cli", 1000.5, "sip", {"dir": "in", "line": "INVITE sip:bot@gw"})
        assert store.flush()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC),
                                                            os.environ.get("PYTHONPATH", "")])}
        return subprocess.run([sys.executable, "-m", "sipbridge", *args], capture_output=True,
                              text=True, timeout=60, check=False, env=env)

    calls = cli("calls", "--store", pg_url)
    assert calls.returncode == 0, calls.stderr
    assert "rtc_cli" in calls.stdout
    trace = cli("trace", "rtc_cli", "--store", pg_url)
    assert trace.returncode == 0, trace.stderr
    assert "INVITE sip:bot@gw" in trace.stdout
    missing = cli("trace", "rtc_nope", "--store", pg_url)
    assert missing.returncode == 1
    assert "no call rtc_nope" in missing.stderr
    assert_no_password(missing.stderr)
    refused = cli("calls", "--store", pg_server.url("postgres", password="Wr0ng-secret"))
    assert refused.returncode == 1
    assert "password authentication failed" in refused.stderr
    assert "Wr0ng-secret" not in refused.stderr + refused.stdout
