"""Durable storage of calls and their timelines (SQLite, written off the event loop)."""

from sipbridge.store.sqlite import SqliteStore

__all__ = ["SqliteStore"]
