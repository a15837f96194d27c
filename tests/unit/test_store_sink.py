"""The store sink with a loop's `call_soon`: a turn's writes reach a real store at once,
each call's record once per turn (the last), and what is stored is the call as it ended,
as when every change is written at once."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sipbridge.calls.call import Call, CallState
from sipbridge.calls.events import CallEvent, Changed
from sipbridge.calls.sinks import StoreSink
from sipbridge.records import CallRecord, MediaFigures
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

    # Answered at once: the call is recorded once in the INVITE's turn, active, either way.
    assert turns == [["active"], [], ["ended"]]
    assert got is not None
    timeline = got.pop("timeline")
    assert got == as_stored(call.to_dict(timeline=False))
    assert timeline == as_stored(list(call.timeline))
    assert got["state"] == "ended"
    assert len(timeline) >= 6


@pytest.mark.parametrize("defer", [True, False])
def test_a_call_that_changes_twice_in_a_turn_is_handed_over_once(
    tmp_path: Path, defer: bool
) -> None:
    """With a defer, only the turn's last record of a call reaches the store (at the place
    of its first); without one, each change is written as it happens."""
    store = SqliteStore(tmp_path / "calls.db")
    upserted: list[tuple[str, str]] = []
    upsert = store.upsert_call

    def spy(record: CallRecord) -> None:
        upserted.append((record["id"], record["state"]))
        upsert(record)

    store.upsert_call = spy  # type: ignore[method-assign]
    scheduled: list[Callable[[], None]] = []
    sink = StoreSink(store, None, defer=scheduled.append if defer else None)
    one = Call(id="rtc_1", leg_id="l1", caller="sip:a@b", callee="sip:c@d", created_at=1.0)
    two = Call(id="rtc_2", leg_id="l2", caller="sip:a@b", callee="sip:c@d", created_at=2.0)
    sink.observe(Changed(one))
    sink.observe(Changed(two))
    one.state = CallState.ACTIVE
    sink.observe(Changed(one))
    for hand_over in scheduled:
        hand_over()
    assert len(scheduled) == (1 if defer else 0)
    assert upserted == ([("rtc_1", "active"), ("rtc_2", "ringing")] if defer else
                        [("rtc_1", "ringing"), ("rtc_2", "ringing"), ("rtc_1", "active")])
    assert store.flush()
    got = store.get_call("rtc_1")
    store.close()
    assert got is not None and got["state"] == "active"


def test_the_record_is_made_at_the_hand_over_not_at_each_change(tmp_path: Path) -> None:
    """A live call's record asks its media session for figures: changes before a
    hand-over cost nothing, and the one record stored is the call as it is then."""
    store = SqliteStore(tmp_path / "calls.db")
    scheduled: list[Callable[[], None]] = []
    sink = StoreSink(store, None, defer=scheduled.append)
    asked: list[int] = []

    def figures() -> MediaFigures:
        asked.append(1)
        return {"packets_in": len(asked)}  # type: ignore[typeddict-item]

    call = Call(id="rtc_live", leg_id="l1", caller="sip:a@b", callee="sip:c@d",
                created_at=1.0)
    call.media_live = figures
    for state in (CallState.RINGING, CallState.ACTIVE, CallState.ACTIVE):
        call.state = state
        sink.observe(Changed(call))
    assert asked == []  # nothing made yet
    call.end_reason = "after the last change"
    (hand_over,) = scheduled
    hand_over()
    assert asked == [1]  # one record, made now
    assert store.flush()
    got = store.get_call("rtc_live")
    store.close()
    assert got is not None
    assert got["state"] == "active" and got["end_reason"] == "after the last change"
    assert dict(got["media"] or {}) == {"packets_in": 1}


def test_a_call_written_to_the_store_is_freed_without_the_garbage_collector(
        tmp_path: Path) -> None:
    """The timeline's sink does not hold the call: a call that holds its timeline would
    otherwise be a cycle, left to the collector (and to its pauses) after every call. Nor
    does anything else the call made form a cycle (a closure does, compiled: its
    environment holds the function)."""
    store = SqliteStore(tmp_path / "calls.db")
    sink = StoreSink(store, None)
    call = Call(id="rtc_gc", leg_id="leg", caller="sip:a@127.0.0.1",
                callee="sip:b@127.0.0.1", created_at=1.0, sip_call_id="call-gc")
    sink.observe(Changed(call))
    call.timeline.append({"at": 1.0, "kind": "sip", "line": "INVITE"})
    assert call.timeline.sink is not None
    gc.collect()
    gc.disable()
    try:
        del call  # its last reference: freed now, unless a cycle holds it
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        store.close()
    assert left == [], "left to the garbage collector"


def test_only_changes_reach_the_store_sink(tmp_path: Path) -> None:
    """The timeline's entries reach the store through the timeline's sink: of the events,
    the store sink takes only `Changed`, and the fan-out does not call it for the others."""
    from sipbridge.calls.events import CallEvents, Ended, Noted

    store = SqliteStore(tmp_path / "calls.db")
    sink = StoreSink(store, None)
    seen: list[CallEvent] = []

    class Spy:  # the sink, as the fan-out sees it (a compiled sink's methods are fixed)
        wants = sink.wants

        def observe(self, event: CallEvent) -> None:
            seen.append(event)
            sink.observe(event)

    events = CallEvents()
    events.subscribe(Spy())
    call = Call(id="rtc_1", leg_id="l1", caller="sip:a@b", callee="sip:c@d", created_at=1.0)
    events.emit(Changed(call))
    events.emit(Noted(call, {"at": 2.0, "kind": "api", "n": 1}))
    events.emit(Ended(call))
    assert [type(e) for e in seen] == [Changed]
    assert store.flush()
    got = store.get_call("rtc_1")
    store.close()
    assert got is not None and [e["kind"] for e in got["timeline"]] == ["api"]
