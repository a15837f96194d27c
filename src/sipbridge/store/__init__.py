"""Durable storage of calls and their timelines, written off the event loop: a SQLite file
or a PostgreSQL database (`open_store` picks by the target)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, Self

from sipbridge.callstats import CallStats
from sipbridge.records import CallRecord
from sipbridge.store.base import StoreError
from sipbridge.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "StoreError", "is_database_url", "open_store"]

_URL_SCHEMES = ("postgresql://", "postgres://")


class Store(Protocol):
    """A call store, whatever the backend: see `sipbridge.store.base`."""

    label: str  # how logs name it, never with a password
    retention_days: float | None
    write_errors: int
    dropped: int

    def upsert_call(self, record: CallRecord) -> None: ...
    def add_event(self, call_id: str, at: float, kind: str, data: Mapping[str, object]
                  ) -> None: ...
    def flush(self, timeout: float = 5.0) -> bool: ...
    def mark_unfinished(self, reason: str = "gateway_restarted") -> int: ...
    def purge(self, now: float | None = None) -> int: ...
    def get_call(self, call_id: str) -> CallRecord | None: ...
    def list_calls(self, *, state: str | None = None, since: float | None = None,
                   until: float | None = None, caller: str | None = None,
                   transfer_status: str | None = None, limit: int = 100,
                   ) -> list[CallRecord]: ...
    def call_stats(self, since: float, until: float | None = None) -> CallStats: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


def is_database_url(target: str) -> bool:
    """A PostgreSQL URL rather than a SQLite file's path."""
    return target.lower().startswith(_URL_SCHEMES)


def open_store(target: str, *, retention_days: float | None = None) -> Store:
    """The store at `target`: a postgresql:// (or postgres://) URL, else a SQLite file.
    StoreError when it cannot be opened (the message never shows a password)."""
    if not is_database_url(target):
        return SqliteStore(target, retention_days=retention_days)
    try:
        import psycopg  # noqa: F401 - only to tell a missing driver from our own bugs
    except ImportError as exc:
        raise StoreError(
            f"a PostgreSQL call store needs psycopg: pip install 'sipbridge[postgres]' ({exc})"
        ) from None
    from sipbridge.store.postgres import PostgresStore

    return PostgresStore(target, retention_days=retention_days)
