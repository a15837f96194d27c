"""The warm transfer's state machine (calls.warm): every path, its bounds, its records."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sipbridge.calls.transfer_machine import TransferStep, TransferTimers
from sipbridge.calls.warm import (
    CONNECT_MARGIN,
    FINAL_STATES,
    STATES,
    WarmTransfer,
)

TIMERS = TransferTimers(refer_timeout=4, notify_timeout=10, ring_timeout=20, brief_timeout=30)


def briefing() -> WarmTransfer:
    w = WarmTransfer("xfer_1", "sip:alex@127.0.0.1", 0.0, TIMERS)
    w.dial(1.0)
    w.ringing(2.0, 180)
    w.answered(3.0)
    return w


def statuses(w: WarmTransfer) -> list[str]:
    return [s.status for s in w.steps]


def test_the_whole_way_to_connected() -> None:
    w = briefing()
    assert w.deadline == 33.0  # brief_timeout from the answer
    w.decide(10.0, True, "the person takes the call")
    assert w.deadline == 10.0 + 4 + 10 + CONNECT_MARGIN
    steps = w.connected(11.0, "bridge")
    assert statuses(w) == ["requested", "dialing", "ringing", "answered", "briefing",
                           "connecting", "connected"]
    assert steps[0].final and w.final and w.deadline is None
    assert (w.reason, w.sip_status) == ("connected by bridge", 200)


def test_dialing_counts_the_ring_timeout() -> None:
    w = WarmTransfer("x", "tel:+1555", 0.0, TIMERS, reason="waiting", hold=5.0)
    assert w.deadline == 25.0 and w.reason == "waiting"
    w.dial(2.0)
    assert w.deadline == 22.0
    assert w.handle_timer(21.9) == []
    (step,) = w.handle_timer(22.0)
    assert (step.status, step.final) == ("returned", True)
    assert step.reason == "no_answer: the person did not answer within 20 s"


def test_never_dialed_fails_in_time() -> None:
    w = WarmTransfer("x", "tel:+1555", 0.0, TIMERS)
    (step,) = w.handle_timer(20.0)
    assert step.status == "returned" and step.reason == "failed: the person was never dialed"


def test_no_decision_by_brief_timeout_connects() -> None:
    w = briefing()
    (step,) = w.handle_timer(33.0)
    assert step.status == "connecting" and not step.final
    assert step.reason == "no decision within 30 s of the answer: connecting"


def test_connecting_is_bounded() -> None:
    w = briefing()
    w.decide(5.0, True, "")
    (step,) = w.handle_timer(5.0 + 14 + CONNECT_MARGIN)
    assert step.status == "returned" and (step.reason or "").startswith("failed: not connected")


def test_declined() -> None:
    w = briefing()
    (step,) = w.decide(5.0, False, "the person is busy with another customer")
    assert step.status == "returned" and step.final
    assert step.reason == "declined: the person is busy with another customer"


@pytest.mark.parametrize(("code", "reason"), [
    (486, "busy: 486 Busy Here"), (600, "busy: 600 Busy Everywhere"),
    (603, "declined: the person refused the call (603 Decline)"),
    (480, "no_answer: 480 Temporarily Unavailable"),
    (404, "rejected 404: Not Found"), (500, "rejected 500: Server Internal Error"),
])
def test_refused_before_the_answer(code: int, reason: str) -> None:
    w = WarmTransfer("x", "tel:+1555", 0.0, TIMERS)
    w.dial(0.5)
    (step,) = w.person_ended(1.0, code)
    assert (step.status, step.sip_status, step.reason) == ("returned", code, reason)


@pytest.mark.parametrize(("decided", "where"), [(False, "during the brief"),
                                                 (True, "while connecting")])
def test_the_person_hangs_up(decided: bool, where: str) -> None:
    w = briefing()
    if decided:
        w.decide(4.0, True, "")
    (step,) = w.person_ended(5.0, None)
    assert step.status == "returned" and step.reason == f"hung_up: the person hung up {where}"


def test_a_failure_returns() -> None:
    w = WarmTransfer("x", "tel:+1555", 0.0, TIMERS)
    w.dial(0.5)
    (step,) = w.fail(1.0, "bad SDP answer: no audio")
    assert step.reason == "failed: bad SDP answer: no audio"


@pytest.mark.parametrize("at", range(6))
def test_the_call_ending_cancels_at_any_step(at: int) -> None:
    w = WarmTransfer("x", "tel:+1555", 0.0, TIMERS)
    moves: list[Callable[[], list[TransferStep]]] = [
        lambda: w.dial(1.0), lambda: w.ringing(1.5, 183), lambda: w.answered(2.0),
        lambda: w.decide(3.0, True, ""), lambda: w.connected(4.0, "replaces")]
    for move in moves[:at]:
        move()
    steps = w.local_end(5.0, "the caller's call ended")
    if at == 5:  # connected: final already
        assert steps == [] and w.status == "connected"
    else:
        assert [s.status for s in steps] == ["cancelled"] and w.final


def test_final_states_are_sticky_and_out_of_order_events_change_nothing() -> None:
    w = WarmTransfer("x", "tel:+1555", 0.0, TIMERS)
    assert w.ringing(1.0, 180) == [] and w.answered(1.0) == []
    assert w.decide(1.0, True, "") == [] and w.connected(1.0, "bridge") == []
    assert w.person_ended(1.0, 486) == []  # never dialed
    w.dial(1.0)
    w.person_ended(2.0, 486)
    later: list[Callable[[], list[TransferStep]]] = [
        lambda: w.dial(3.0), lambda: w.answered(3.0), lambda: w.fail(3.0, "x"),
        lambda: w.local_end(3.0, "x"), lambda: w.handle_timer(1e9)]
    for call in later:
        assert call() == []
    assert statuses(w) == ["requested", "dialing", "returned"]


def test_records_are_in_unix_time_and_the_clock_never_runs_backwards() -> None:
    w = WarmTransfer("xfer_9", "tel:+1555", 100.0, TIMERS, epoch=1_700_000_000.0)
    w.dial(101.0)
    w.ringing(99.0, 180)  # an earlier `now` counts as the last step's time
    record = w.to_dict()
    assert record["requested_at"] == 1_700_000_100.0
    assert [s["at"] for s in record["steps"]] == [1_700_000_100.0, 1_700_000_101.0,
                                                  1_700_000_101.0]
    assert record["status"] == "ringing" and record["target_uri"] == "tel:+1555"
    assert set(STATES) >= FINAL_STATES
