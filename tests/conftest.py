"""Fixtures for every test: a real PostgreSQL server (see tests/pgserver.py).

- ``pg_server``: session fixture, the running server (skipped, with the reason, only when
  this machine has no initdb).
- ``pg_url``: a new empty database on it, per test: its postgresql:// URL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pgserver import PgServer, find_bindir


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb) here: apt-get install postgresql")
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    return pg_server.create_database()
