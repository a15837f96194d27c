"""One blind transfer's state machine: the outcome matrix on a fake clock, and a property test
that every sequence of events ends in a final state in bounded time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.calls.transfer_machine import (
    NO_SUBSCRIPTION,
    STATES,
    Transfer,
    TransferStep,
    TransferTimers,
)
from sipbridge.records import TransferState
from sipbridge.sip.subscription import SipFrag, SubscriptionState

T0 = 1000.0
TARGET = "sip:+15551234567@carrier.example"
_T = TypeVar("_T")
ACTIVE = SubscriptionState("active", None, 60, None)
TERMINATED = SubscriptionState("terminated", "noresource", None, None)


def frag(status: int, reason: str) -> SipFrag:
    return SipFrag(status, reason, ())


def started(timers: TransferTimers | None = None) -> Transfer:
    transfer = Transfer("tr-1", TARGET, T0, timers or TransferTimers())
    transfer.sent(T0, cseq=3)
    return transfer


def outcome(transfer: Transfer) -> tuple[str, int | None, str | None, float]:
    """(status, sip_status, reason, time of the final step)."""
    assert transfer.final
    assert transfer.deadline is None
    last = transfer.steps[-1]
    assert last.final
    assert (last.status, last.sip_status, last.reason) == (
        transfer.status, transfer.sip_status, transfer.reason,
    )
    return transfer.status, transfer.sip_status, transfer.reason, last.at


def statuses(transfer: Transfer) -> list[str]:
    return [step.status for step in transfer.steps]


def test_new_transfer() -> None:
    transfer = Transfer("tr-1", TARGET, T0)
    assert (transfer.status, transfer.final, transfer.requested_at) == ("requested", False, T0)
    assert transfer.steps == [TransferStep(T0, "requested", None, None, False)]
    assert transfer.refer_cseq is None
    assert transfer.deadline == T0 + 8.0  # a REFER never sent still times out
    assert transfer.sent(T0 + 0.01, cseq=3) == [TransferStep(T0 + 0.01, "sent", None, None, False)]
    assert transfer.refer_cseq == 3
    assert transfer.deadline == T0 + 0.01 + 8.0
    assert transfer.sent(T0 + 0.02, cseq=4) == []  # only once


# 1
def test_succeeded() -> None:
    transfer = started()
    transfer.response(202, T0 + 0.1, reason="Accepted")
    assert transfer.status == "accepted"
    assert not transfer.final
    assert transfer.deadline == T0 + 0.1 + 30.0
    transfer.notify(frag(100, "Trying"), ACTIVE, T0 + 0.2, cseq=1)
    assert (transfer.status, transfer.sip_status) == ("progress", 100)
    transfer.notify(frag(200, "OK"), TERMINATED, T0 + 5.0, cseq=2)
    assert outcome(transfer) == ("succeeded", 200, "OK", T0 + 5.0)
    assert statuses(transfer) == ["requested", "sent", "accepted", "progress", "succeeded"]
    assert transfer.notify_count == 2


# 2
def test_failed() -> None:
    transfer = started()
    transfer.response(202, T0 + 0.1)
    assert transfer.reason == "Accepted"  # the phrase filled in for an empty reason
    transfer.notify(frag(180, "Ringing"), ACTIVE, T0 + 0.5, cseq=1)
    transfer.notify(frag(486, "Busy Here"), TERMINATED, T0 + 3.0, cseq=2)
    assert outcome(transfer) == ("failed", 486, "Busy Here", T0 + 3.0)
    assert statuses(transfer) == ["requested", "sent", "accepted", "progress", "failed"]


# 3
@pytest.mark.parametrize(
    ("code", "reason"),
    [(405, "Method Not Allowed"), (501, "Not Implemented"), (403, "Forbidden"), (603, "Decline"),
     (488, "Not Acceptable Here"), (302, "Moved Temporarily")],
)
def test_rejected(code: int, reason: str) -> None:
    transfer = started()
    assert transfer.response(100, T0 + 0.05) == []  # provisional: ignored
    steps = transfer.response(code, T0 + 0.1, reason=reason)
    assert steps == [TransferStep(T0 + 0.1, "rejected", code, reason, True)]
    assert outcome(transfer) == ("rejected", code, reason, T0 + 0.1)


def test_rejected_reason_defaults_to_the_phrase() -> None:
    transfer = started()
    transfer.response(603, T0 + 0.1)
    assert outcome(transfer) == ("rejected", 603, "Decline", T0 + 0.1)


# 4
def test_no_answer_times_out_at_refer_timeout() -> None:
    transfer = started()
    assert transfer.handle_timer(T0 + 7.999) == []
    assert transfer.deadline == T0 + 8.0
    transfer.handle_timer(T0 + 8.0)
    assert outcome(transfer) == ("timed_out", None, "no answer to REFER within 8 s", T0 + 8.0)


def test_transaction_timeout() -> None:
    transfer = started()
    transfer.no_response(T0 + 5.0)
    assert outcome(transfer) == (
        "timed_out", None, "no answer to REFER (transaction timeout)", T0 + 5.0,
    )


def test_unsent_refer_times_out() -> None:
    transfer = Transfer("tr-1", TARGET, T0, TransferTimers(refer_timeout=2.5))
    transfer.handle_timer(T0 + 2.5)
    assert outcome(transfer) == ("timed_out", None, "the REFER was never sent", T0 + 2.5)


def test_a_held_refer_gets_its_whole_timer_once_sent() -> None:
    transfer = Transfer("tr-1", TARGET, T0, TransferTimers(refer_timeout=2.5), hold=5.0,
                        reason="waiting for the agent's words")
    assert transfer.deadline == T0 + 7.5  # the hold, then the REFER's own bound
    assert transfer.handle_timer(T0 + 4.0) == []
    transfer.sent(T0 + 4.0, cseq=2)
    assert transfer.deadline == T0 + 6.5
    never = Transfer("tr-2", TARGET, T0, TransferTimers(refer_timeout=2.5), hold=5.0)
    never.handle_timer(T0 + 7.5)  # whatever held it never let it go: still bounded
    assert outcome(never) == ("timed_out", None, "the REFER was never sent", T0 + 7.5)


# 5
def test_accepted_then_silence_is_unconfirmed() -> None:
    transfer = started()
    transfer.response(202, T0 + 0.2)
    assert transfer.handle_timer(T0 + 8.0) == []  # the REFER timer no longer runs
    assert transfer.deadline == T0 + 30.2
    transfer.handle_timer(T0 + 30.2)
    assert outcome(transfer) == (
        "unconfirmed", 202, "no final NOTIFY within 30 s of the 202 (no progress reported)",
        T0 + 30.2,
    )


def test_progress_then_silence_is_unconfirmed_with_the_last_status() -> None:
    transfer = started()
    transfer.response(202, T0 + 0.2)
    transfer.notify(frag(180, "Ringing"), ACTIVE, T0 + 1.0, cseq=1)
    assert transfer.deadline == T0 + 30.2  # progress does not extend the wait
    transfer.handle_timer(T0 + 30.2)
    assert outcome(transfer) == (
        "unconfirmed", 180, "no final NOTIFY within 30 s of the 202 (last: 180 Ringing)", T0 + 30.2,
    )


# 6
@pytest.mark.parametrize("method", ["local_end", "cancel"])
@pytest.mark.parametrize("answered", [False, True])
def test_local_end_cancels(method: str, answered: bool) -> None:
    transfer = started()
    if answered:
        transfer.response(202, T0 + 0.1)
        transfer.notify(frag(180, "Ringing"), ACTIVE, T0 + 0.5, cseq=1)
    getattr(transfer, method)(T0 + 2.0, "the caller hung up")
    assert outcome(transfer) == (
        "cancelled", 180 if answered else None, "the caller hung up", T0 + 2.0,
    )


# 7
def test_notify_before_202() -> None:
    transfer = started()
    transfer.notify(frag(100, "Trying"), ACTIVE, T0 + 0.1, cseq=1)
    assert (transfer.status, transfer.sip_status) == ("progress", 100)
    assert transfer.deadline == T0 + 0.1 + 30.0  # implicitly accepted: the NOTIFY wait runs
    assert transfer.response(202, T0 + 0.2) == []  # the late 202 does not move it back
    assert transfer.status == "progress"
    transfer.notify(frag(200, "OK"), TERMINATED, T0 + 4.0, cseq=2)
    assert outcome(transfer) == ("succeeded", 200, "OK", T0 + 4.0)
    assert statuses(transfer) == ["requested", "sent", "progress", "succeeded"]
    assert transfer.response(202, T0 + 4.1) == []


def test_bodiless_notify_before_202_accepts() -> None:
    transfer = started()
    steps = transfer.notify(None, SubscriptionState("pending"), T0 + 0.1, cseq=1)
    assert [s.status for s in steps] == ["accepted"]
    assert transfer.response(202, T0 + 0.2) == []
    transfer.handle_timer(T0 + 30.1)
    assert outcome(transfer) == (
        "unconfirmed", None,
        "no final NOTIFY within 30 s of the first NOTIFY (no progress reported)", T0 + 30.1,
    )


def test_final_notify_before_202() -> None:
    transfer = started()
    transfer.notify(frag(200, "OK"), TERMINATED, T0 + 0.1, cseq=1)
    assert outcome(transfer) == ("succeeded", 200, "OK", T0 + 0.1)
    assert transfer.response(202, T0 + 0.2) == []


def test_failure_response_after_early_notify_still_rejects() -> None:
    transfer = started()
    transfer.notify(frag(100, "Trying"), ACTIVE, T0 + 0.1, cseq=1)
    transfer.response(403, T0 + 0.2, reason="Forbidden")
    assert outcome(transfer) == ("rejected", 403, "Forbidden", T0 + 0.2)


# 8
def test_retransmitted_notify_counted_once() -> None:
    transfer = started()
    transfer.response(202, T0 + 0.1)
    assert len(transfer.notify(frag(180, "Ringing"), ACTIVE, T0 + 0.5, cseq=7)) == 1
    assert transfer.notify(frag(180, "Ringing"), ACTIVE, T0 + 1.0, cseq=7) == []
    assert transfer.notify(frag(180, "Ringing"), ACTIVE, T0 + 2.0, cseq=7) == []
    assert transfer.notify_count == 1
    assert statuses(transfer) == ["requested", "sent", "accepted", "progress"]
    # A new NOTIFY with a code already reported is counted but adds no step.
    assert transfer.notify(frag(180, "Ringing"), ACTIVE, T0 + 2.5, cseq=8) == []
    assert transfer.notify_count == 2
    # Each new provisional code is a step.
    steps = transfer.notify(frag(183, "Progress"), ACTIVE, T0 + 3, cseq=9)
    assert [s.sip_status for s in steps] == [
        183
    ]
    transfer.notify(frag(200, "OK"), TERMINATED, T0 + 4.0, cseq=10)
    assert transfer.notify(frag(200, "OK"), TERMINATED, T0 + 4.5, cseq=10) == []
    assert transfer.notify_count == 4
    assert outcome(transfer) == ("succeeded", 200, "OK", T0 + 4.0)


# 9
def test_terminated_with_provisional_frag_decides_at_once() -> None:
    transfer = started()
    transfer.response(202, T0 + 0.1)
    transfer.notify(frag(100, "Trying"), ACTIVE, T0 + 0.2, cseq=1)
    steps = transfer.notify(frag(180, "Ringing"), TERMINATED, T0 + 6.0, cseq=2)
    assert [s.status for s in steps] == ["progress", "unconfirmed"]
    assert outcome(transfer) == (
        "unconfirmed", 180, "the subscription ended without a final status (last: 180 Ringing)",
        T0 + 6.0,
    )


def test_terminated_without_body_decides_at_once() -> None:
    transfer = started()
    transfer.response(202, T0 + 0.1)
    transfer.notify(None, SubscriptionState("terminated", "timeout"), T0 + 2.0, cseq=1)
    assert outcome(transfer) == (
        "unconfirmed", 202, "the subscription ended without a final status (no progress reported)",
        T0 + 2.0,
    )


@pytest.mark.parametrize("sub_reason", ["timeout", "noresource", "rejected", None])
@pytest.mark.parametrize(("code", "expected"), [(200, "succeeded"), (503, "failed")])
def test_terminated_with_final_frag_the_frag_decides(
    sub_reason: str | None, code: int, expected: str
) -> None:
    transfer = started()
    transfer.response(202, T0 + 0.1)
    sub = SubscriptionState("terminated", sub_reason)
    transfer.notify(frag(code, "Whatever"), sub, T0 + 2.0, cseq=1)
    assert outcome(transfer) == (expected, code, "Whatever", T0 + 2.0)


# 10
def test_refer_sub_false_is_final_accepted() -> None:
    transfer = started()
    steps = transfer.response(202, T0 + 0.3, refer_sub=False)
    assert steps == [TransferStep(T0 + 0.3, "accepted", 202, NO_SUBSCRIPTION, True)]
    assert outcome(transfer) == ("accepted", 202, NO_SUBSCRIPTION, T0 + 0.3)
    assert transfer.notify(frag(200, "OK"), TERMINATED, T0 + 1.0, cseq=1) == []
    assert transfer.peer_bye(T0 + 2.0) == []


# 11
def test_peer_bye_after_202_is_unconfirmed_by_default() -> None:
    transfer = started()
    transfer.response(202, T0 + 0.1)
    transfer.peer_bye(T0 + 0.4)
    assert outcome(transfer) == (
        "unconfirmed", 202, "the peer ended the call without reporting the transfer", T0 + 0.4,
    )


def test_peer_bye_after_202_configured_as_success() -> None:
    transfer = started(TransferTimers(bye_after_accept="succeeded"))
    transfer.response(202, T0 + 0.1)
    transfer.peer_bye(T0 + 0.4)
    status, sip_status, reason, at = outcome(transfer)
    assert (status, sip_status, at) == ("succeeded", 202, T0 + 0.4)
    assert reason is not None
    assert reason.startswith("the peer ended the call without reporting the transfer")


@pytest.mark.parametrize("bye_after_accept", ["unconfirmed", "succeeded"])
def test_peer_bye_during_progress_is_the_caller_hanging_up(bye_after_accept: str) -> None:
    transfer = started(TransferTimers(bye_after_accept=bye_after_accept))
    transfer.response(202, T0 + 0.1)
    transfer.notify(frag(180, "Ringing"), ACTIVE, T0 + 0.2, cseq=1)
    transfer.peer_bye(T0 + 0.4)
    assert outcome(transfer) == (
        "cancelled", 180, "the caller hung up during the transfer (last: 180 Ringing)",
        T0 + 0.4,
    )


def test_peer_bye_after_success_changes_nothing() -> None:
    transfer = started()
    transfer.response(202, T0 + 0.1)
    transfer.notify(frag(200, "OK"), TERMINATED, T0 + 1.0, cseq=1)
    assert transfer.peer_bye(T0 + 1.1) == []
    assert outcome(transfer) == ("succeeded", 200, "OK", T0 + 1.0)


# 12
@pytest.mark.parametrize("sent", [True, False])
def test_peer_bye_before_any_answer_cancels(sent: bool) -> None:
    transfer = started() if sent else Transfer("tr-1", TARGET, T0)
    transfer.peer_bye(T0 + 1.0)
    reason = ("the call ended before the carrier answered the REFER" if sent
              else "the call ended before the REFER was sent")
    assert outcome(transfer) == ("cancelled", None, reason, T0 + 1.0)


def test_a_held_transfer_says_why_it_waits() -> None:
    transfer = Transfer("tr-1", TARGET, T0, reason="waiting for the agent's words")
    assert transfer.steps[0].to_dict(0.0)["reason"] == "waiting for the agent's words"
    assert transfer.to_dict()["status"] == "requested"
    assert transfer.sent(T0 + 2.0, cseq=2)[0].reason is None


def test_final_state_is_sticky() -> None:
    transfer = started()
    transfer.response(486, T0 + 0.1)
    before = (transfer.to_dict(), transfer.notify_count)
    assert transfer.response(202, T0 + 1) == []
    assert transfer.notify(frag(200, "OK"), TERMINATED, T0 + 2, cseq=1) == []
    assert transfer.no_response(T0 + 3) == []
    assert transfer.handle_timer(T0 + 100) == []
    assert transfer.peer_bye(T0 + 4) == []
    assert transfer.local_end(T0 + 5, "x") == []
    assert transfer.cancel(T0 + 6, "x") == []
    assert transfer.sent(T0 + 7, cseq=9) == []
    assert (transfer.to_dict(), transfer.notify_count) == before


def test_to_dict() -> None:
    transfer = started()
    transfer.response(202, T0 + 0.1)
    transfer.notify(frag(200, "OK"), TERMINATED, T0 + 1.0, cseq=1)
    assert transfer.to_dict() == {
        "id": "tr-1",
        "target_uri": TARGET,
        "status": "succeeded",
        "final": True,
        "sip_status": 200,
        "reason": "OK",
        "requested_at": T0,
        "steps": [
            {"at": T0, "status": "requested", "sip_status": None, "reason": None, "final": False},
            {"at": T0, "status": "sent", "sip_status": None, "reason": None, "final": False},
            {"at": T0 + 0.1, "status": "accepted", "sip_status": 202, "reason": "Accepted",
             "final": False},
            {"at": T0 + 1.0, "status": "succeeded", "sip_status": 200, "reason": "OK",
             "final": True},
        ],
    }


def test_records_are_in_unix_time_the_machine_keeps_its_clock() -> None:
    epoch = 1.7e9  # Unix time minus the clock's time, as the owner saw it
    transfer = Transfer("tr-1", TARGET, T0, TransferTimers(), epoch=epoch)
    transfer.sent(T0, cseq=3)
    transfer.response(202, T0 + 0.1)
    record = transfer.to_dict()
    assert record["requested_at"] == T0 + epoch
    assert record["steps"] == [step.to_dict(epoch) for step in transfer.steps]
    assert [s["at"] for s in record["steps"]] == [T0 + epoch, T0 + epoch, T0 + 0.1 + epoch]
    # timers and steps stay on the injected clock
    assert transfer.requested_at == T0 and transfer.steps[-1].at == T0 + 0.1
    assert transfer.deadline == T0 + 0.1 + 30.0
    assert transfer.handle_timer(T0 + 30.0) == [] and not transfer.final
    assert transfer.handle_timer(T0 + 30.2)[0].status == "unconfirmed"


def test_clock_never_runs_backwards() -> None:
    transfer = started()
    transfer.response(202, T0 + 5.0)
    transfer.notify(frag(180, "Ringing"), ACTIVE, T0 + 4.0, cseq=1)  # an earlier `now`
    assert transfer.steps[-1].at == T0 + 5.0


@pytest.mark.parametrize(
    "kwargs",
    [{"refer_timeout": 0}, {"notify_timeout": -1}, {"refer_timeout": float("inf")},
     {"notify_timeout": float("nan")}, {"bye_after_accept": "failed"}],
)
def test_timers_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TransferTimers(**kwargs)  # type: ignore[arg-type]


# The property: whatever happens, a final state by the bound, and nothing after it.

@dataclass(frozen=True, slots=True)
class Ev:
    kind: str
    dt: float
    code: int | None = None
    cseq: int = 1
    sub: SubscriptionState | None = None
    flag: bool = True


def _weighted(*choices: tuple[int, st.SearchStrategy[_T]]) -> st.SearchStrategy[_T]:
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


# Mostly short gaps, so that several events fall inside one timer; sometimes long ones.
_DT = _weighted(
    (4, st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0])), (1, st.floats(0, 3)), (1, st.floats(0, 40))
)
_RESPONSE = st.builds(
    Ev, st.just("response"), _DT,
    code=st.sampled_from([180, 200, 202, 202, 202, 202, 403, 405, 486, 501, 603]),
    flag=st.sampled_from([True, True, True, False]),
)
# NOTIFYs that leave the transfer running, and any NOTIFY at all.
_PROGRESS_NOTIFY = st.builds(
    Ev, st.just("notify"), _DT,
    code=st.sampled_from([None, 100, 180, 181, 182, 183]),
    cseq=st.integers(1, 8),
    sub=st.sampled_from([None, ACTIVE, SubscriptionState("pending")]),
)
_NOTIFY = st.builds(
    Ev, st.just("notify"), _DT,
    code=st.sampled_from([None, 100, 180, 183, 200, 202, 486, 603]),
    cseq=st.integers(1, 8),
    sub=st.sampled_from(
        [None, ACTIVE, TERMINATED, SubscriptionState("terminated", "timeout"),
         SubscriptionState("terminated", "rejected")]
    ),
)
_OTHER = st.builds(
    Ev, st.sampled_from(["no_response", "bye", "local_end", "cancel", "timer", "timer"]), _DT
)
# Weighted so that most events leave the transfer running: otherwise nearly every sequence
# ends after an event or two, before progress and the timers are exercised.
_EVENT = _weighted(
    (1, st.builds(Ev, st.just("sent"), _DT, cseq=st.integers(1, 3))),
    (2, _RESPONSE),
    (5, _PROGRESS_NOTIFY),
    (1, _NOTIFY),
    (1, _OTHER),
)


def _apply(transfer: Transfer, ev: Ev, now: float) -> list[TransferStep]:
    if ev.kind == "sent":
        return transfer.sent(now, ev.cseq)
    if ev.kind == "response":
        assert ev.code is not None
        return transfer.response(ev.code, now, refer_sub=ev.flag)
    if ev.kind == "no_response":
        return transfer.no_response(now)
    if ev.kind == "notify":
        sipfrag = None if ev.code is None else frag(ev.code, "")
        return transfer.notify(sipfrag, ev.sub, now, cseq=ev.cseq)
    if ev.kind == "bye":
        return transfer.peer_bye(now)
    if ev.kind == "timer":
        return transfer.handle_timer(now)
    return getattr(transfer, ev.kind)(now, "ended")  # type: ignore[no-any-return]


@settings(max_examples=400, deadline=None)
@given(
    events=st.lists(_EVENT, max_size=25),
    refer_timeout=st.sampled_from([0.5, 8.0, 32.0]),
    notify_timeout=st.sampled_from([1.0, 30.0, 7.5]),
    bye_after_accept=st.sampled_from(["unconfirmed", "succeeded"]),
    sent_first=st.booleans(),
)
def test_every_transfer_ends_in_bounded_time(
    events: list[Ev], refer_timeout: float, notify_timeout: float, bye_after_accept: str,
    sent_first: bool,
) -> None:
    timers = TransferTimers(refer_timeout, notify_timeout, bye_after_accept)
    transfer = Transfer("tr-p", TARGET, T0, timers)
    clock = T0
    start = T0  # when the REFER timer last started: creation, or `sent` while still requested
    if sent_first:
        events = [Ev("sent", 0.0), *events]
    frozen: TransferState | None = None

    def step(now: float, call: Ev | None) -> None:
        nonlocal frozen, start
        was = (transfer.status, transfer.final, len(transfer.steps))
        deadline = transfer.deadline
        out = transfer.handle_timer(now) if call is None else _apply(transfer, call, now)
        assert transfer.steps[was[2]:] == out
        assert all(s.at == now for s in out)
        assert transfer.status in STATES
        if out:
            assert out[-1].status == transfer.status
            assert out[-1].final == transfer.final
            assert not any(s.final for s in out[:-1])
        if call is not None and call.kind == "sent" and was[0] == "requested":
            start = now
        elif was[0] in ("accepted", "progress") and transfer.deadline is not None:
            assert transfer.deadline == deadline  # the NOTIFY wait, once started, never moves
        if frozen is not None:
            assert out == []
            assert transfer.to_dict() == frozen
        elif transfer.final:
            frozen = transfer.to_dict()

    for ev in events:
        clock += ev.dt
        # An event loop fires due timers before later events.
        while transfer.deadline is not None and transfer.deadline <= clock:
            step(transfer.deadline, None)
        step(clock, ev)
    while transfer.deadline is not None:
        step(transfer.deadline, None)

    assert transfer.final
    final_at = transfer.steps[-1].at
    assert final_at <= start + refer_timeout + notify_timeout
    if sent_first:
        assert final_at <= transfer.requested_at + refer_timeout + notify_timeout
    times = [s.at for s in transfer.steps]
    assert times == sorted(times)
    assert [s.final for s in transfer.steps].count(True) == 1
    assert transfer.steps[0].status == "requested"
