"""The webhook event types the gateway sends, and which of them an endpoint asked for.

OpenAI's Realtime API for SIP sends one type, `realtime.call.incoming`: an application
written for it (OpenAI's own samples among them) answers anything else with an error.
The gateway's own events (a transfer's outcome, an outbound call's) go only to an
endpoint that names them (`[[webhook]]`'s `events`)."""

from __future__ import annotations

from collections.abc import Iterable

INCOMING = "realtime.call.incoming"
# The types OpenAI sends: what an endpoint gets unless it says otherwise.
OPENAI_EVENTS = (INCOMING,)
# Outbound calls' outcomes (sipbridge.calls.outbound), each `realtime.call.outbound.<it>`.
OUTBOUND_OUTCOMES = ("answered", "busy", "no_answer", "rejected", "failed", "cancelled")
EVENT_TYPES = (
    INCOMING,
    "realtime.call.transfer.succeeded",
    "realtime.call.transfer.failed",
    *(f"realtime.call.outbound.{outcome}" for outcome in OUTBOUND_OUTCOMES),
)


def expand(patterns: Iterable[str]) -> frozenset[str]:
    """The event types a list of names stands for: each a type of EVENT_TYPES, a prefix
    ending in `.*` (`realtime.call.transfer.*`: each type under it), or `*` (all).
    ValueError names a pattern that stands for no type (a typo would mean an endpoint
    that silently never hears of it)."""
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern == "*":
            matched = set(EVENT_TYPES)
        elif pattern.endswith(".*"):
            prefix = pattern[:-1]
            matched = {t for t in EVENT_TYPES if t.startswith(prefix)}
        else:
            matched = {pattern} & set(EVENT_TYPES)
        if not matched:
            raise ValueError(f"{pattern!r} is no webhook event type; the types are "
                             + ", ".join(EVENT_TYPES) + " (or PREFIX.*, or *)")
        chosen |= matched
    return frozenset(chosen)
