"""The store sink with a loop's `call_soon`: a turn's writes reach a real store at once,
each call's record once per turn (the last), and what is stored is the call as it ended,
as when every change is written at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sipbridge.calls.call import Call
from sipbridge.calls.events import CallEvent, Changed
from sipbridge.calls.sinks import StoreSink
from sipbridge.records import CallRecord
from sipbridge.store import SqliteStore
from tests.unit.callharness import OFFER, Harness, ack, invite


def bye(to_tag: str) -> str:
    return (
        "BYE sip:sipbridge@127.0.0.1 SIP/2.0\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKbye\n"
        f"From: <sip:carrier@127.0.0.1>;tag=c1\nTo: <sip:bot@127.0.0.1>;tag={to_tag}\n"
        "Call-ID: call-1\nCSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n"
    )


class Calls:
    """Each call that changed."""

    def __init__(self) -> None:
        self.seen: dict[str, Call] = {}

    def observe(self, event: CallEvent) -> None:
        if isinstance(event, Changed):
            self.seen[event.call.id] = event.call


def as_stored(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


@pytest.mark.parametrize("defer", [True, False])
def test_the_store_has_the_call_as_it_ended(tmp_path: Path, defer: bool) -> None:
    """An auto-answered call (INVITE, ACK, BYE: a loop turn each) through a StoreSink into
    a SQLite store."""
    store = SqliteStore(tmp_path / "calls.db")
    upserted: list[str] = []
    upsert = store.upsert_call

    def spy(record: CallRecord) -> None:
        upserted.append(record["state"])
        upsert(record)

    store.upsert_call = spy  # type: ignore[method-assign]
    scheduled: list[Callable[[], None]] = []
    h = Harness(auto_answer="silence")
    h.events.subscribe(StoreSink(store, None, defer=scheduled.append if defer else None))
    calls = Calls()
    h.events.subscribe(calls)
    turns: list[list[str]] = []

    def turn(message: str) -> None:
        h.send(message)
        assert len(scheduled) == (1 if defer else 0)  # one hand-over asked for
        if defer:
            assert upserted == []  # nothing before the hand-over
        for hand_over in scheduled:
            hand_over()
        scheduled.clear()
        turns.append(upserted[:])
        upserted.clear()

    turn(invite(OFFER.format(direction="sendrecv")))
    to_tag = next(r.to.tag for r in h.sent if r.status == 200) or ""
    turn(ack(to_tag))
    turn(bye(to_tag))
    assert store.flush()
    [call] = calls.seen.values()
    got = store.get_call(call.id)
    store.close()

    # Answered at once: ringing and active in the INVITE's turn, only active handed over.
    assert turns == ([["active"], [], ["ended"]] if defer
                     else [["ringing", "active"], [], ["ended"]])
    assert got is not None
    timeline = got.pop("timeline")
    assert got == as_stored(call.to_dict(timeline=False))
    assert timeline == as_stored(list(call.timeline))
    assert got["state"] == "ended"
    assert len(timeline) >= 6
