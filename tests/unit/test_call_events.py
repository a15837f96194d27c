"""The calls plane's events over a real UA core and CallManager: what happens to a call
reaches every observer that wants it as typed records, each once it is on the call's
timeline, and the store sink sees the record and every timeline entry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from sipbridge.agent.lifecycle import Agents
from sipbridge.api.callevents import SidebandSink
from sipbridge.calls.call import Call
from sipbridge.calls.events import (
    CallEvent,
    CallEvents,
    Changed,
    Digit,
    Ended,
    Incoming,
    MediaStarted,
    Noted,
    OutboundNoted,
    TransferStepped,
    note,
)
from sipbridge.calls.sinks import MetricsSink, StoreSink
from sipbridge.callstats import CallStats, Percentiles
from sipbridge.records import CallRecord
from tests.unit.callharness import OFFER, Harness, ack, answered_app_call, invite, notify


class Seen:
    """Each event, its type, and how long the call's timeline was when it came."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.all: list[CallEvent] = []

    def observe(self, event: CallEvent) -> None:
        self.all.append(event)
        self.events.append((type(event).__name__, len(event.call.timeline)))


class Store:
    """A `sipbridge.store.Store` that keeps each record it is given and each entry's call and
    kind; the sink only writes, so what it would read or maintain does nothing."""

    label = "memory"
    retention_days: float | None = None
    write_errors = 0
    dropped = 0

    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self.entries: list[tuple[str, str]] = []

    def upsert_call(self, record: CallRecord) -> None:
        self.records.append(record.copy())

    def add_event(self, call_id: str, at: float, kind: str, data: Mapping[str, object]
                  ) -> None:
        self.entries.append((call_id, kind))

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def mark_unfinished(self, reason: str = "gateway_restarted") -> int:
        return 0

    def purge(self, now: float | None = None) -> int:
        return 0

    def get_call(self, call_id: str) -> CallRecord | None:
        return None

    def list_calls(self, *, state: str | None = None, since: float | None = None,
                   until: float | None = None, caller: str | None = None,
                   transfer_status: str | None = None, limit: int = 100,
                   ) -> list[CallRecord]:
        return []

    def call_stats(self, since: float, until: float | None = None) -> CallStats:
        return CallStats(since, since if until is None else until, {}, {}, Percentiles(0), {})

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_an_app_call_goes_out_as_events_in_order() -> None:
    h = Harness(auto_answer=None, app=True)
    seen = Seen()
    h.events.subscribe(seen)
    store = Store()
    h.events.subscribe(StoreSink(store, None))
    h.send(invite(OFFER.format(direction="sendrecv")))
    call = h.incoming[0]
    h.manager.accept(call.id, {"type": "realtime"})
    h.send(ack(h.sent[-1].to.tag or ""))
    kinds = [kind for kind, _ in seen.events]
    assert kinds[:2] == ["Changed", "Incoming"]
    assert "MediaStarted" in kinds and kinds.count("Changed") >= 2  # created, answered
    # Every event that is a timeline entry is on the timeline before any other sink sees it.
    timeline = [e["kind"] for e in call.timeline]
    noted = [n for kind, n in seen.events if kind == "Noted"]
    assert noted and all(0 < n <= len(timeline) for n in noted)
    assert "api" in timeline and "sip" in timeline
    # The store has the record as it changed, and each timeline entry as it was added.
    assert [r["state"] for r in store.records][-1] == "active"
    assert [kind for _, kind in store.entries] == timeline


def test_a_transfer_goes_out_as_steps_and_its_record_as_changes() -> None:
    h, call = answered_app_call()
    seen = Seen()
    h.events.subscribe(seen)
    events = seen.all
    job = h.manager.refer(call.id, "tel:+14155550123")
    steps = [e for e in events if isinstance(e, TransferStepped)]
    assert [e.step.status for e in steps if e.step is not None] == ["requested", "sent"]
    assert all(e.job is job for e in steps)
    assert any(isinstance(e, Changed) for e in events)
    assert any(isinstance(e, Noted) and e.entry["kind"] == "api" for e in events)
    assert notify(h, "refer", "SIP/2.0 200 OK", cseq=2) == 200
    final = [e for e in events if isinstance(e, TransferStepped)][-1]
    assert final.step is not None and final.step.status == "succeeded" and final.step.final
    assert not any(isinstance(e, Incoming | MediaStarted) for e in events)
    # The caller is with the target: the gateway leaves, and the call's end is an event.
    assert h.requests[-1].method == "BYE"
    ended = [e for e in events if isinstance(e, Ended)]
    assert len(ended) == 1 and ended[0].call.end_reason == "transferred"


def _app_call_into(store: Store, defer: list[object] | None) -> list[int]:
    """An app call (INVITE, accept, ACK) with a StoreSink on `store`, handing over each
    turn's writes when `defer` is given: how many hand-overs each turn asked for."""
    h = Harness(auto_answer=None, app=True)
    sink = StoreSink(store, None, defer=None if defer is None else defer.append)
    h.events.subscribe(sink)
    asked: list[int] = []
    handed = [0, 0]  # records and entries the store had after the last hand-over

    def turn_ends() -> None:
        if defer is not None:
            asked.append(len(defer))
            assert [len(store.records), len(store.entries)] == handed  # none during the turn
            defer.clear()
            sink.hand_over()
            handed[:] = [len(store.records), len(store.entries)]

    h.send(invite(OFFER.format(direction="sendrecv")))
    turn_ends()
    call = h.incoming[0]
    h.manager.accept(call.id, {"type": "realtime"})
    turn_ends()
    h.send(ack(h.sent[-1].to.tag or ""))
    turn_ends()
    return asked


def test_with_a_defer_the_store_gets_a_turns_writes_at_once_in_order() -> None:
    direct, batched = Store(), Store()
    _app_call_into(direct, None)
    asked = _app_call_into(batched, [])
    assert asked == [1, 1, 1]  # one hand-over per turn, however many writes
    assert len(direct.entries) > 3 and len(direct.records) >= 2
    # The same records (as they were when written) and entries, in the same order.
    def shape(store: Store) -> tuple[list[object], list[str]]:
        return [r["state"] for r in store.records], [kind for _, kind in store.entries]

    assert shape(batched) == shape(direct)


class Wants(Seen):
    """`Seen` that names the event types it takes."""

    def __init__(self, *wants: type) -> None:
        super().__init__()
        self.wants = wants


def test_an_observer_gets_only_the_types_it_wants_and_one_without_wants_gets_all() -> None:
    events = CallEvents()
    digits, everything, ends = Wants(Digit), Seen(), Wants(Ended, Changed)
    for observer in (digits, everything, ends):
        events.subscribe(observer)
    call = Call(id="rtc_1", leg_id="leg1", caller="sip:a@b", callee="sip:c@d", created_at=0.0)
    sent: list[CallEvent] = [Changed(call), note(call, "sip", line="INVITE"),
                             Digit(call, "5", 100), Ended(call), Digit(call, "#", 80)]
    for event in sent:
        events.emit(event)
    assert everything.all == sent
    assert digits.all == [sent[2], sent[4]]
    assert ends.all == [sent[0], sent[3]]
    # The timeline (first, always) took its entries before anyone else saw them.
    assert [e["kind"] for e in call.timeline] == ["sip", "dtmf", "dtmf"]
    assert digits.events == [("Digit", 2), ("Digit", 3)]
    # A later subscriber is routed too, from its subscription on.
    late = Wants(Noted)
    events.subscribe(late)
    events.emit(Digit(call, "1", 60))
    events.emit(note(call, "api", action="hangup"))
    assert [type(e) for e in late.all] == [Noted] and len(digits.all) == 3
    # A subtype goes to those who want its base: an outbound call's progress is a timeline
    # entry; only the outbound notes go to those who want them.
    outbound = Wants(OutboundNoted)
    events.subscribe(outbound)
    progress = OutboundNoted(call, {"kind": "outbound", "status": "ringing", "final": False})
    events.emit(note(call, "warning", detail="x"))
    events.emit(progress)
    assert outbound.all == [progress] and late.all[-1] is progress
    assert call.timeline[-1] is progress.entry


def test_the_agents_and_the_sinks_do_not_take_every_timeline_entry() -> None:
    h, call = answered_app_call()
    agents, metrics, sideband = (Wants(*Agents.wants), Wants(*MetricsSink.wants),
                                 Wants(*SidebandSink.wants))
    for observer in (agents, metrics, sideband):
        h.events.subscribe(observer)
    h.manager.note(call.id, "sideband", status="connected")
    h.send(ack(h.sent[-1].to.tag or "").replace("ACK sip", "BYE sip").replace("1 ACK", "2 BYE"))
    assert call.state.value == "ended"
    kinds = [type(e).__name__ for e in agents.all]
    assert kinds == ["Ended"]  # no timeline entry, no record change reaches the agents
    assert "Changed" in [type(e).__name__ for e in metrics.all]
    assert [type(e).__name__ for e in sideband.all] == ["Ended"]  # no inbound call's entry
