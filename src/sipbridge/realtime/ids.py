"""The ids OpenAI's Realtime protocol gives its objects: a prefix naming the kind ("event",
"item", "resp", "sess", "call", "conv") and 24 random hex digits."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """A fresh id of the kind `prefix`, e.g. `new_id("item")` -> "item_3f9a..."."""
    return f"{prefix}_{secrets.token_hex(12)}"


def new_event_id() -> str:
    """A server event's `event_id`."""
    return new_id("event")
