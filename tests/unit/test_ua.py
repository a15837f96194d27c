"""The UA core driven with bytes, as a SIPp UAC would send them, on a fake clock.

Each test feeds request text to `UserAgent.receive`, parses what comes out of
`outgoing()` and checks the events. Nothing sleeps: `Phone.advance` fires the
UA's timers at their deadlines. Every phone checks at teardown that no message
hit the catch-all in `receive` (`stats["internal_errors"]`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.auth import DigestServer, authorization, choose_challenge, parse_challenge
from sipbridge.sip.events import (
    CallConfirmed,
    CallEnded,
    EndReason,
    IncomingCall,
    InDialogRequest,
    ReInvite,
    RequestOutcome,
)
from sipbridge.sip.message import Headers, Request, Response, parse_message
from sipbridge.sip.transaction import TimerConfig
from sipbridge.sip.ua import LegState
from tests.unit.sipphone import (
    ANSWER,
    OFFER,
    RURI,
    TIMERS,
    UAC,
    Phone,
    ack_2xx,
    in_dialog,
    sip,
    to_of,
)

UAC_TCP = Address("tcp", "127.0.0.1", 40123)
STRANGER = Address("udp", "192.0.2.10", 5061)
REALM = "gw.test"


@pytest.fixture
def make_phone() -> Iterator[Callable[..., Phone]]:
    phones: list[Phone] = []

    def make(guard: AccessGuard | None = None, timers: TimerConfig = TIMERS) -> Phone:
        phone = Phone(guard, timers)
        phones.append(phone)
        return phone

    yield make
    for phone in phones:
        assert phone.ua.stats["internal_errors"] == 0, "an exception reached receive()"


@pytest.fixture
def phone(make_phone: Callable[..., Phone]) -> Phone:
    return make_phone()


# --- a call: INVITE, ring, answer, ACK -----------------------------------------


def test_invite_gets_100_trying_at_once_and_an_incoming_call(phone: Phone) -> None:
    phone.receive(sip("INVITE", body=OFFER))
    sent = phone.one()
    assert sent.status == 100 and sent.addr == UAC and sent.at == 0.0
    assert sent.msg.to.tag is None  # 100 from the UAS core carries no tag
    assert sent.msg.headers.get("Via") == "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-inv-1"
    assert sent.msg.call_id == "call-1@127.0.0.1"
    assert str(sent.msg.cseq) == "1 INVITE"
    [event] = phone.take_events()
    assert isinstance(event, IncomingCall)
    assert event.source == UAC and event.username is None
    assert event.request.body == OFFER
    leg = phone.ua.leg(event.leg_id)
    assert leg is not None and leg.state is LegState.INCOMING
    assert phone.ua.stats["calls_in"] == 1


def statuses(out: list[tuple[bytes, Address]]) -> list[int]:
    responses = [parse_message(data) for data, _ in out]
    return [r.status for r in responses if isinstance(r, Response)]


def test_an_invite_answered_in_the_same_turn_gets_no_100(phone: Phone) -> None:
    phone.ua.receive(sip("INVITE", body=OFFER), UAC, 0.0)
    [event] = phone.ua.events()
    assert isinstance(event, IncomingCall)
    phone.ua.ring(event.leg_id, 0.0)  # the TU rings before this turn's messages go out
    assert statuses(phone.ua.outgoing()) == [180]
    # ... and a retransmitted INVITE gets the 180 again, not a 100
    phone.ua.receive(sip("INVITE", body=OFFER), UAC, 0.1)
    assert statuses(phone.ua.outgoing()) == [180]
    assert phone.ua.stats["answered_100"] == 0


def test_an_invite_left_unanswered_in_its_turn_gets_100_once(phone: Phone) -> None:
    phone.ua.receive(sip("INVITE", body=OFFER), UAC, 0.0)
    phone.ua.events()
    assert statuses(phone.ua.outgoing()) == [100]
    assert phone.ua.outgoing() == []  # not again at the next turn
    phone.ua.receive(sip("INVITE", body=OFFER), UAC, 0.5)  # a retransmission: the 100 again
    assert statuses(phone.ua.outgoing()) == [100]


def test_ring_sends_180_with_to_tag_and_contact(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.ring(leg, phone.now)
    phone.collect()
    ringing = phone.one()
    assert ringing.status == 180 and ringing.addr == UAC
    assert ringing.msg.to.tag == leg
    [contact] = ringing.msg.contacts
    assert str(contact.uri) == "sip:sipbridge@127.0.0.1:5060"


def test_answer_200_retransmitted_until_ack_then_confirmed(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.ring(leg, 0.0)
    phone.collect()
    phone.take()
    phone.ua.answer(leg, ANSWER, 0.0)
    phone.collect()
    ok = phone.one()
    assert ok.status == 200 and ok.msg.body == ANSWER
    assert ok.msg.headers.get("Content-Type") == "application/sdp"
    assert ok.msg.to.tag == leg
    assert ok.msg.contacts and "INVITE" in ok.msg.headers.get_all("Allow")
    phone.advance(4.0)
    resent = phone.take()
    assert [s.at for s in resent] == [0.5, 1.5, 3.5]  # 13.3.1.4: T1, 2T1, 4T1 ...
    assert all(s.data == ok.data and s.addr == UAC for s in resent)
    assert isinstance(ok.msg, Response)
    phone.receive(ack_2xx(ok.msg))
    assert phone.take_events() == [CallConfirmed(leg, b"")]
    assert phone.ua.leg(leg).state is LegState.CONFIRMED  # type: ignore[union-attr]
    phone.advance(100.0)
    assert phone.take() == []  # no more 200s, and no BYE
    assert phone.take_events() == []
    assert phone.ua.held["server_transactions"] == 0  # the INVITE transaction ended (Timer L)
    phone.receive(ack_2xx(ok.msg))  # a retransmitted ACK changes nothing
    assert phone.take_events() == [] and phone.take() == []


def test_ack_with_late_offer_answer_body_is_handed_up(phone: Phone) -> None:
    phone.receive(sip("INVITE"))  # no SDP: late offer
    [event] = phone.take_events()
    phone.take()
    phone.ua.answer(event.leg_id, ANSWER, 0.0)
    phone.collect()
    ok = phone.one().msg
    assert isinstance(ok, Response)
    ack = sip("ACK", branch="z9hG4bK-ack", to=to_of(ok), contact=False, body=OFFER)
    phone.receive(ack)
    assert phone.take_events() == [CallConfirmed(event.leg_id, OFFER)]


def test_no_ack_sends_bye_after_64_t1_and_ends_the_call(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.answer(leg, ANSWER, 0.0)
    phone.collect()
    ok = phone.take()[0]
    phone.advance(31.9)
    assert len(phone.take()) == 10  # 0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5
    assert phone.take_events() == []
    phone.advance(32.0)
    bye = phone.one()
    assert bye.at == 32.0 and bye.method == "BYE" and bye.addr == UAC
    msg = bye.msg
    assert isinstance(msg, Request)
    assert str(msg.uri) == "sip:sipp@127.0.0.1:5061"  # the remote target (Contact)
    assert msg.from_.tag == leg and msg.to.tag == "uac-tag"
    assert msg.call_id == ok.msg.call_id
    assert msg.cseq.method == "BYE"
    assert (msg.top_via.branch or "").startswith("z9hG4bK")
    assert msg.top_via.branch != ok.msg.top_via.branch
    [ended] = phone.take_events()
    assert ended == CallEnded(leg, EndReason.NO_ACK)
    assert phone.ua.leg(leg) is None


def test_retransmitted_invite_is_absorbed(phone: Phone) -> None:
    invite = sip("INVITE", body=OFFER)
    leg = phone.call()
    phone.receive(invite)
    assert phone.ua.stats["retransmissions_absorbed"] == 1
    assert phone.one().status == 100  # the last provisional again
    assert phone.take_events() == []
    phone.ua.ring(leg, 0.0)
    phone.collect()
    phone.take()
    phone.receive(invite)
    assert phone.one().status == 180
    assert phone.ua.stats["retransmissions_absorbed"] == 2
    assert phone.ua.stats["calls_in"] == 1 and phone.ua.held["legs"] == 1


def test_cancel_while_ringing(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.ring(leg, 0.0)
    phone.collect()
    phone.take()
    phone.now = 1.0
    phone.receive(sip("CANCEL", contact=False))
    sent = phone.take()
    assert [(s.status, s.msg.cseq.method) for s in sent] == [(200, "CANCEL"), (487, "INVITE")]
    ok_cancel, terminated = sent
    assert terminated.msg.to.tag == leg
    assert ok_cancel.msg.to.tag == leg  # RFC 3261 9.2: the same To tag in both
    assert all(s.addr == UAC for s in sent)
    assert phone.take_events() == [CallEnded(leg, EndReason.CANCELLED, 487)]
    assert phone.ua.leg(leg) is None
    # The ACK for the 487 (same branch as the INVITE) is absorbed by the transaction.
    assert isinstance(terminated.msg, Response)
    phone.receive(sip("ACK", to=to_of(terminated.msg), contact=False))
    assert phone.take() == [] and phone.take_events() == []
    assert phone.ua.stats["dropped_stray_ack"] == 0
    assert phone.ua.server_transactions == []  # Confirmed: only its values are left
    [settled] = phone.ua.settled_transactions
    assert settled.absorbs_ack and settled.resend is not None
    assert settled.resend.startswith(b"SIP/2.0 487 ")
    phone.advance(100.0)
    assert phone.take() == []  # no 487 retransmissions once ACKed
    assert phone.empty()


def test_cancel_without_ack_retransmits_487_and_then_gives_up(phone: Phone) -> None:
    phone.call()
    phone.receive(sip("CANCEL", contact=False))
    phone.take()
    phone.advance(100.0)
    sent = phone.take()
    assert [s.at for s in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert {s.status for s in sent} == {487}
    assert phone.empty()


def test_cancel_for_unknown_transaction_gets_481(phone: Phone) -> None:
    phone.receive(sip("CANCEL", contact=False))
    sent = phone.one()
    assert sent.status == 481 and sent.msg.cseq.method == "CANCEL"
    assert phone.take_events() == [] and phone.empty()


def test_cancel_after_answer_changes_nothing(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.answer(leg, ANSWER, 0.0)
    phone.collect()
    phone.take()
    phone.receive(sip("CANCEL", contact=False))
    assert [s.status for s in phone.take()] == [200]
    assert phone.take_events() == []
    assert phone.ua.leg(leg).state is LegState.ANSWERED  # type: ignore[union-attr]


def test_bye_ends_the_call(phone: Phone) -> None:
    leg, ok = phone.answered_call()
    phone.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye-1", contact=False))
    sent = phone.one()
    assert sent.status == 200 and sent.msg.cseq.method == "BYE" and sent.addr == UAC
    assert phone.take_events() == [CallEnded(leg, EndReason.REMOTE_BYE)]
    assert phone.ua.held["legs"] == phone.ua.held["dialogs"] == 0
    # A retransmitted BYE hits the transaction: the 200 again, no second event.
    phone.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye-1", contact=False))
    assert phone.one().status == 200
    assert phone.take_events() == []
    phone.advance(100.0)
    assert phone.empty()


def test_a_finished_call_leaves_only_untracked_values_until_its_transactions_end(
        phone: Phone) -> None:
    leg, ok = phone.answered_call()
    phone.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye-1", contact=False))
    phone.take()
    assert phone.take_events() == [CallEnded(leg, EndReason.REMOTE_BYE)]
    # The INVITE's (Accepted, ACKed) and the BYE's (Completed) are settled: no transaction
    # object is left, only plain values that the garbage collector does not walk.
    assert phone.ua.server_transactions == []
    assert phone.ua.held["server_transactions"] == 2
    settled = sorted(phone.ua.settled_transactions, key=lambda s: s.end_at)
    assert [s.absorbs_ack for s in settled] == [False, False]
    assert [s.owner for s in settled] == [leg, ""]
    assert {s.resend is None for s in settled} == {True, False}  # the INVITE's 2xx: none
    gc.collect()
    assert not any(gc.is_tracked(v) for v in phone.ua._settled.values())
    assert not any(gc.is_tracked(k) for k in phone.ua._settled)
    # A retransmitted INVITE is absorbed; a CANCEL for it gets 200 with the call's tag
    phone.receive(sip("INVITE", body=OFFER))
    assert phone.take() == [] and phone.take_events() == []
    phone.receive(sip("CANCEL", contact=False))
    cancelled = phone.one()
    assert cancelled.status == 200 and cancelled.msg.to.tag == leg
    assert phone.take_events() == []
    # Both end with their timers (64*T1), and a BYE after that finds nothing
    phone.advance(phone.now + 32.0)
    assert phone.empty() and phone.ua.deadline is None
    phone.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye-1", contact=False))
    assert phone.one().status == 481


def test_bye_for_unknown_dialog_gets_481_and_no_state(phone: Phone) -> None:
    to = "To: <sip:agent@127.0.0.1:5060>;tag=nosuch"
    phone.receive(sip("BYE", to=to, cseq=2, branch="z9hG4bK-x", contact=False))
    assert phone.one().status == 481
    assert phone.take_events() == [] and phone.empty()
    # without a To tag: still 481, still nothing stored
    phone.receive(sip("BYE", cseq=2, branch="z9hG4bK-y", contact=False))
    assert phone.one().status == 481
    assert phone.empty()


def test_bye_before_answer_gets_200_and_the_invite_487(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.ring(leg, 0.0)
    phone.collect()
    ringing = phone.take()[0].msg
    assert isinstance(ringing, Response)
    phone.receive(in_dialog("BYE", ringing, 2, "z9hG4bK-bye", contact=False))
    assert sorted((s.status, s.msg.cseq.method) for s in phone.take()) == [
        (200, "BYE"), (487, "INVITE")
    ]
    assert phone.take_events() == [CallEnded(leg, EndReason.REMOTE_BYE)]


def test_bye_before_the_ack_stops_the_200_retransmissions(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.answer(leg, ANSWER, phone.now)
    phone.collect()
    ok = phone.one().msg
    assert isinstance(ok, Response)
    phone.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye-early", contact=False))
    assert phone.one().status == 200
    assert phone.take_events() == [CallEnded(leg, EndReason.REMOTE_BYE)]
    phone.advance(40.0)
    assert phone.take() == []  # the 200 to the INVITE is not resent, no BYE of ours
    assert phone.empty()


def test_unknown_in_dialog_method_retransmitted_gets_the_same_501(phone: Phone) -> None:
    _, ok = phone.answered_call()
    for _ in range(2):
        phone.receive(in_dialog("FOO", ok, 2, "z9hG4bK-foo"))
        assert phone.one().status == 501


def test_in_dialog_cseq_out_of_order_gets_500(phone: Phone) -> None:
    leg, ok = phone.answered_call()
    phone.receive(in_dialog("INFO", ok, 5, "z9hG4bK-i5"))
    assert phone.one().status == 200
    phone.take_events()
    phone.receive(in_dialog("INFO", ok, 4, "z9hG4bK-i4"))
    assert phone.one().status == 500
    assert phone.take_events() == []
    assert phone.ua.leg(leg) is not None


# --- re-INVITE ------------------------------------------------------------------


def test_reinvite_is_handed_up_and_answered_with_respond(phone: Phone) -> None:
    leg, ok = phone.answered_call()
    phone.receive(in_dialog("INVITE", ok, 2, "z9hG4bK-re-1", body=OFFER))
    assert phone.take() == []  # the TU answers it
    [event] = phone.take_events()
    assert isinstance(event, ReInvite) and event.leg_id == leg
    assert event.request.body == OFFER
    phone.ua.respond(leg, event.request, 200, phone.now, body=ANSWER)
    phone.collect()
    reok = phone.one()
    assert reok.status == 200 and reok.msg.cseq.seq == 2 and reok.msg.body == ANSWER
    assert reok.msg.to.tag == leg and reok.msg.contacts
    assert reok.msg.headers.get("Content-Type") == "application/sdp"


@pytest.mark.parametrize("ack_branch", ["z9hG4bK-re-ack", "z9hG4bK-re-1"],
                         ids=["new-branch", "invite-branch"])
def test_reinvite_2xx_stops_on_ack_and_the_call_survives(phone: Phone, ack_branch: str) -> None:
    leg, ok = phone.answered_call()
    phone.now = 1.0
    phone.receive(in_dialog("INVITE", ok, 2, "z9hG4bK-re-1", body=OFFER))
    [event] = phone.take_events()
    assert isinstance(event, ReInvite)
    phone.ua.respond(leg, event.request, 200, phone.now, body=ANSWER)
    phone.collect()
    reok = phone.one().msg
    assert isinstance(reok, Response)
    phone.now = 1.2
    phone.receive(ack_2xx(reok, branch=ack_branch, cseq=2))
    assert phone.take_events() == []  # not a CallConfirmed: the call already was
    phone.advance(200.0)
    # RFC 3261 13.3.1.4: the ACK stops the 2xx; the call must not be torn down.
    assert phone.take() == []
    assert phone.take_events() == []
    assert phone.ua.leg(leg).state is LegState.CONFIRMED  # type: ignore[union-attr]


def test_reinvite_2xx_never_acked_ends_the_call(phone: Phone) -> None:
    leg, ok = phone.answered_call()
    phone.receive(in_dialog("INVITE", ok, 2, "z9hG4bK-re-1", body=OFFER))
    [event] = phone.take_events()
    phone.ua.respond(leg, event.request, 200, phone.now, body=ANSWER)  # type: ignore[union-attr]
    phone.collect()
    phone.take()
    phone.advance(32.0)
    sent = phone.take()
    assert [s.status for s in sent[:-1]] == [200] * 10
    assert sent[-1].method == "BYE" and sent[-1].at == 32.0
    assert phone.take_events() == [CallEnded(leg, EndReason.NO_ACK)]


def test_second_reinvite_while_one_is_pending(phone: Phone) -> None:
    leg, ok = phone.answered_call()
    phone.receive(in_dialog("INVITE", ok, 2, "z9hG4bK-re-1", body=OFFER))
    [first] = phone.take_events()
    phone.receive(in_dialog("INVITE", ok, 3, "z9hG4bK-re-2", body=OFFER))
    sent = phone.one()
    # RFC 3261 14.2: a second INVITE before the final response to the first gets
    # 500 with a Retry-After of 0 to 10 seconds.
    assert sent.status == 500 and sent.msg.cseq.seq == 3
    retry = sent.msg.headers.get("Retry-After")
    assert retry is not None and 0 <= int(retry) <= 10
    assert phone.take_events() == []
    # The first is still answerable; a third after it completes is accepted.
    phone.ua.respond(leg, first.request, 200, phone.now, body=ANSWER)  # type: ignore[union-attr]
    phone.collect()
    reok = phone.one().msg
    assert isinstance(reok, Response)
    phone.receive(ack_2xx(reok, branch="z9hG4bK-re-ack", cseq=2))
    phone.receive(in_dialog("INVITE", ok, 4, "z9hG4bK-re-3", body=OFFER))
    [third] = phone.take_events()
    assert isinstance(third, ReInvite) and third.request.cseq.seq == 4


def test_reinvite_after_2xx_before_its_ack_gets_491(phone: Phone) -> None:
    leg, ok = phone.answered_call()
    phone.receive(in_dialog("INVITE", ok, 2, "z9hG4bK-re-1", body=OFFER))
    [first] = phone.take_events()
    phone.ua.respond(leg, first.request, 200, phone.now, body=ANSWER)  # type: ignore[union-attr]
    phone.collect()
    phone.take()
    phone.receive(in_dialog("INVITE", ok, 3, "z9hG4bK-re-2", body=OFFER))
    assert [s.status for s in phone.take()] == [491]
    assert phone.take_events() == []


def test_rejected_reinvite_frees_the_dialog_for_the_next(phone: Phone) -> None:
    leg, ok = phone.answered_call()
    phone.receive(in_dialog("INVITE", ok, 2, "z9hG4bK-re-1", body=OFFER))
    [first] = phone.take_events()
    phone.ua.respond(leg, first.request, 488, phone.now)  # type: ignore[union-attr]
    phone.collect()
    assert [s.status for s in phone.take()] == [488]
    phone.receive(in_dialog("INVITE", ok, 3, "z9hG4bK-re-2", body=OFFER))
    [second] = phone.take_events()
    assert isinstance(second, ReInvite) and second.request.cseq.seq == 3
    assert phone.ua.leg(leg).state is LegState.CONFIRMED  # type: ignore[union-attr]


def test_reinvite_while_our_reinvite_is_pending_gets_491(phone: Phone) -> None:
    leg, ok = phone.answered_call()
    ours = phone.ua.send_request(leg, "INVITE", phone.now, body=ANSWER)
    phone.collect()
    assert phone.one().method == "INVITE" and ours.method == "INVITE"
    phone.receive(in_dialog("INVITE", ok, 2, "z9hG4bK-re-1", body=OFFER))
    sent = phone.one()
    assert sent.status == 491 and sent.msg.cseq.seq == 2  # RFC 3261 14.2 glare
    assert sent.msg.to.tag == leg
    assert phone.take_events() == []
    # The ACK for the 491 is absorbed by its transaction.
    assert isinstance(sent.msg, Response)
    phone.receive(in_dialog("ACK", sent.msg, 2, "z9hG4bK-re-1", contact=False))
    assert phone.take() == [] and phone.ua.stats["dropped_stray_ack"] == 0


def test_reinvite_before_the_ack_gets_491(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.answer(leg, ANSWER, 0.0)
    phone.collect()
    ok = phone.take()[0].msg
    assert isinstance(ok, Response)
    phone.receive(in_dialog("INVITE", ok, 2, "z9hG4bK-re-1", body=OFFER))
    assert [s.status for s in phone.take()] == [491]


def test_our_reinvite_2xx_is_acked_and_reported(phone: Phone) -> None:
    leg, _ok = phone.answered_call()
    request = phone.ua.send_request(leg, "INVITE", phone.now, body=ANSWER)
    phone.collect()
    sent = phone.one()
    assert sent.addr == UAC and sent.msg.cseq.seq == 2
    assert sent.msg.headers.get("Contact")  # a target refresh carries Contact
    text = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {sent.msg.headers.get('Via')}\r\n"
        f"From: {sent.msg.headers.get('From')}\r\n"
        f"To: {sent.msg.headers.get('To')}\r\n"
        f"Call-ID: {sent.msg.call_id}\r\n"
        "CSeq: 2 INVITE\r\n"
        "Contact: <sip:sipp@127.0.0.1:5099>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    phone.receive(text)
    ack = phone.one()
    # The 2xx moved the remote target (a target refresh): the ACK goes there.
    assert ack.method == "ACK" and ack.addr == Address("udp", "127.0.0.1", 5099)
    assert str(ack.msg.cseq) == "2 ACK"
    assert isinstance(ack.msg, Request)
    assert str(ack.msg.uri) == "sip:sipp@127.0.0.1:5099"  # the refreshed target
    # RFC 3261 8.1.1.7: the ACK for a 2xx is a new transaction with a new branch.
    assert ack.msg.top_via.branch != sent.msg.top_via.branch
    [outcome] = phone.take_events()
    assert isinstance(outcome, RequestOutcome) and outcome.final
    assert outcome.request is request and outcome.response is not None
    assert outcome.response.status == 200
    # A 2xx retransmission is ACKed again, with the same ACK, and not reported twice.
    phone.receive(text)
    again = phone.one()
    assert again.method == "ACK" and again.data == ack.data
    assert phone.take_events() == []


# --- other in-dialog and out-of-dialog requests -----------------------------------


@pytest.mark.parametrize("method", ["INFO", "OPTIONS"])
def test_in_dialog_info_and_options_get_200(phone: Phone, method: str) -> None:
    leg, ok = phone.answered_call()
    phone.receive(in_dialog(method, ok, 2, "z9hG4bK-i1"))
    sent = phone.one()
    assert sent.status == 200 and sent.msg.cseq.method == method
    [event] = phone.take_events()
    assert isinstance(event, InDialogRequest) and event.answered and event.leg_id == leg


def test_in_dialog_refer_is_left_to_the_tu(phone: Phone) -> None:
    leg, ok = phone.answered_call()
    phone.receive(in_dialog("REFER", ok, 2, "z9hG4bK-r1",
                            headers=["Refer-To: <sip:other@127.0.0.1>"]))
    assert phone.take() == []
    [event] = phone.take_events()
    assert isinstance(event, InDialogRequest) and not event.answered
    phone.ua.respond(leg, event.request, 403, phone.now)
    phone.collect()
    assert phone.one().status == 403


def test_in_dialog_register_gets_405_and_foo_501(phone: Phone) -> None:
    _, ok = phone.answered_call()
    phone.receive(in_dialog("REGISTER", ok, 2, "z9hG4bK-r1"))
    sent = phone.one()
    assert sent.status == 405 and sent.msg.headers.get("Allow")
    phone.receive(in_dialog("FOO", ok, 3, "z9hG4bK-r2"))
    assert phone.one().status == 501


def test_out_of_dialog_options_is_answered_statelessly(phone: Phone) -> None:
    phone.receive(sip("OPTIONS", branch="z9hG4bK-opt"))
    sent = phone.one()
    assert sent.status == 200 and sent.addr == UAC
    h = sent.msg.headers
    assert "INVITE" in h.get_all("Allow") and "BYE" in h.get_all("Allow")
    assert h.get_all("Accept") == ["application/sdp"]
    assert h.get("Supported") is not None
    assert phone.take_events() == []
    assert phone.empty()  # no transaction stored
    assert phone.ua.deadline is None


def test_options_with_max_forwards_zero_is_still_answered(phone: Phone) -> None:
    data = sip("OPTIONS").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    phone.receive(data)
    assert phone.one().status == 200


def test_register_gets_405_with_allow(phone: Phone) -> None:
    phone.receive(sip("REGISTER", uri="sip:127.0.0.1"))
    sent = phone.one()
    assert sent.status == 405
    assert "INVITE" in sent.msg.headers.get_all("Allow")
    assert "REGISTER" not in sent.msg.headers.get_all("Allow")
    assert phone.empty()


def test_unknown_method_gets_501(phone: Phone) -> None:
    phone.receive(sip("FOO"))
    sent = phone.one()
    assert sent.status == 501 and sent.msg.cseq.method == "FOO"
    assert phone.empty()


def test_unsupported_require_gets_420(phone: Phone) -> None:
    phone.receive(sip("INVITE", body=OFFER, headers=["Require: foo, norefersub"]))
    sent = phone.one()
    assert sent.status == 420
    assert sent.msg.headers.get_all("Unsupported") == ["foo"]
    assert phone.take_events() == [] and phone.empty()


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_sips_request_uri_over_plain_transport_gets_416(
        phone: Phone, method: str, transport: str) -> None:
    body = OFFER if method == "INVITE" else b""
    phone.receive(sip(method, body=body, uri="sips:agent@127.0.0.1:5060", transport=transport),
                  Address(transport.lower(), "127.0.0.1", 5061))
    sent = phone.one()
    assert sent.status == 416
    assert phone.take_events() == [] and phone.empty()


def test_sips_request_uri_over_tls_is_served(phone: Phone) -> None:
    phone.receive(sip("OPTIONS", uri="sips:agent@127.0.0.1:5060", transport="TLS"),
                  Address("tls", "127.0.0.1", 5061))
    assert phone.one().status == 200


def test_supported_require_is_accepted(phone: Phone) -> None:
    phone.receive(sip("INVITE", body=OFFER, headers=["Require: norefersub"]))
    assert phone.one().status == 100
    assert isinstance(phone.take_events()[0], IncomingCall)


@pytest.mark.parametrize("data, status", [
    pytest.param(sip("INVITE").replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), 483,
                 id="max-forwards-0"),
    pytest.param(sip("INVITE", cseq_method="BYE"), 400, id="cseq-method"),
    # RFC 3261 8.1.1.8: an INVITE must carry a Contact.
    pytest.param(sip("INVITE", contact=False), 400, id="no-contact"),
    pytest.param(sip("INVITE", headers=["Record-Route: <sip:p1.example.com;lr"]), 400,
                 id="bad-record-route"),
    pytest.param(sip("INVITE", headers=["From: <sip:x@y>"]), 400, id="two-from"),
    pytest.param(sip("INVITE", uri="http://example.com/"), 416, id="uri-scheme"),
    pytest.param(sip("INVITE").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505,
                 id="version"),
])
def test_bad_requests_get_their_status_and_leave_no_state(
    phone: Phone, data: bytes, status: int
) -> None:
    phone.receive(data)
    sent = phone.one()
    assert sent.status == status and sent.addr == UAC
    assert phone.take_events() == [] and phone.empty()


# --- access control ---------------------------------------------------------------


def test_source_outside_the_allow_list_gets_403_and_nothing_is_stored(phone: Phone) -> None:
    phone.receive(sip("INVITE", body=OFFER, host="192.0.2.10"), STRANGER)
    sent = phone.one()
    assert sent.status == 403 and sent.addr == STRANGER
    assert phone.take_events() == []
    held = phone.ua.held
    assert held["server_transactions"] == held["legs"] == held["dialogs"] == 0
    assert phone.ua.deadline is None
    assert phone.ua.stats["refused_403"] == 1
    phone.receive(sip("OPTIONS", host="192.0.2.10"), STRANGER)
    assert phone.one().status == 403


def test_ipv4_mapped_source_is_matched_against_ipv4_networks(phone: Phone) -> None:
    mapped = Address("udp", "::ffff:127.0.0.1", 5061)
    phone.receive(sip("OPTIONS", host="[::ffff:127.0.0.1]"), mapped)
    assert phone.one().status == 200


def digest_phone(make_phone: Callable[..., Phone]) -> Phone:
    server = DigestServer(REALM, {"alice": "wonderland"}, secret=b"s" * 32)
    return make_phone(AccessGuard(["127.0.0.0/8"], digest=server))


def challenge_for(phone: Phone) -> list[str]:
    phone.receive(sip("INVITE", body=OFFER, host="192.0.2.10"), STRANGER)
    sent = phone.one()
    assert sent.status == 401 and sent.addr == STRANGER
    return sent.msg.headers.get_all("WWW-Authenticate")


def test_digest_no_authorization_gets_401_with_sha256_and_md5(
    make_phone: Callable[..., Phone],
) -> None:
    phone = digest_phone(make_phone)
    values = challenge_for(phone)
    assert [parse_challenge(v).algorithm for v in values] == ["SHA-256", "MD5"]
    assert all(parse_challenge(v).realm == REALM for v in values)
    assert phone.take_events() == [] and phone.empty()


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_digest_correct_authorization_lets_the_call_in(
    make_phone: Callable[..., Phone], algorithm: str
) -> None:
    phone = digest_phone(make_phone)
    values = challenge_for(phone)
    chal = next(parse_challenge(v) for v in values if parse_challenge(v).algorithm == algorithm)
    auth = authorization(chal, method="INVITE", uri=RURI, username="alice",
                         password="wonderland", cnonce="abc123")
    phone.now = 1.0
    phone.receive(sip("INVITE", body=OFFER, host="192.0.2.10", cseq=2, branch="z9hG4bK-2",
                      headers=[f"Authorization: {auth}"]), STRANGER)
    assert phone.one().status == 100
    [event] = phone.take_events()
    assert isinstance(event, IncomingCall) and event.username == "alice"
    assert event.source == STRANGER


def test_digest_wrong_password_gets_403(make_phone: Callable[..., Phone]) -> None:
    phone = digest_phone(make_phone)
    chal = choose_challenge(challenge_for(phone))
    auth = authorization(chal, method="INVITE", uri=RURI, username="alice",
                         password="nope", cnonce="abc123")
    phone.receive(sip("INVITE", body=OFFER, host="192.0.2.10", cseq=2, branch="z9hG4bK-2",
                      headers=[f"Authorization: {auth}"]), STRANGER)
    assert phone.one().status == 403
    assert phone.take_events() == [] and phone.empty()


@pytest.mark.parametrize(
    ("digest_uri", "status"),
    [("sip:127.0.0.1:5060", 100), ("sip:other@127.0.0.1:5060", 100),
     ("sip:agent@elsewhere.test", 403), ("sip:127.0.0.1:5999", 403)],
)
def test_digest_uri_must_name_the_request_uri_host(
    make_phone: Callable[..., Phone], digest_uri: str, status: int
) -> None:
    phone = digest_phone(make_phone)
    chal = choose_challenge(challenge_for(phone))
    auth = authorization(chal, method="INVITE", uri=digest_uri, username="alice",
                         password="wonderland", cnonce="abc123")
    phone.receive(sip("INVITE", body=OFFER, host="192.0.2.10", cseq=2, branch="z9hG4bK-2",
                      headers=[f"Authorization: {auth}"]), STRANGER)
    assert phone.one().status == status


def test_allowed_source_needs_no_digest(make_phone: Callable[..., Phone]) -> None:
    phone = digest_phone(make_phone)
    phone.call()


# --- where responses go -------------------------------------------------------------


def test_rport_response_goes_to_the_source_port(phone: Phone) -> None:
    nat = Address("udp", "127.0.0.1", 40000)
    via = "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-nat;rport"
    phone.receive(sip("INVITE", body=OFFER, via=via), nat)
    sent = phone.one()
    assert sent.addr == nat
    top = sent.msg.top_via
    assert top.rport == 40000 and top.received == "127.0.0.1"
    assert top.branch == "z9hG4bK-nat"
    # The dialog's requests follow the same flow.
    [event] = phone.take_events()
    assert isinstance(event, IncomingCall)
    phone.ua.answer(event.leg_id, ANSWER, 0.0)
    phone.collect()
    ok = phone.one()
    assert ok.addr == nat and ok.msg.top_via.rport == 40000
    phone.advance(0.5)
    assert phone.one().addr == nat  # and so do the 2xx retransmissions


def test_without_rport_response_goes_to_received_host_and_via_port(phone: Phone) -> None:
    source = Address("udp", "127.0.0.2", 40000)
    phone.receive(sip("OPTIONS", host="127.0.0.1", port=5070), source)
    sent = phone.one()
    # RFC 3261 18.2.2: received= when sent-by differs, to the sent-by port
    assert sent.addr == Address("udp", "127.0.0.2", 5070)
    assert sent.msg.top_via.received == "127.0.0.2"
    assert sent.msg.top_via.rport is None


def test_tcp_responses_go_back_on_the_same_connection(phone: Phone) -> None:
    leg = phone.call(UAC_TCP, transport="TCP")
    phone.ua.answer(leg, ANSWER, 0.0)
    phone.collect()
    ok = phone.one()
    assert ok.addr == UAC_TCP
    assert "transport=tcp" in ok.msg.headers.get("Contact")  # type: ignore[operator]
    assert isinstance(ok.msg, Response)
    phone.receive(ack_2xx(ok.msg, transport="TCP"), UAC_TCP)
    assert phone.take_events() == [CallConfirmed(leg, b"")]
    phone.ua.hangup(leg, phone.now)
    phone.collect()
    bye = phone.one()
    assert bye.method == "BYE" and bye.addr == UAC_TCP
    assert bye.msg.top_via.transport == "TCP"
    phone.advance(100.0)
    assert all(s.method != "BYE" for s in phone.take())  # no BYE retransmission on TCP


def test_tcp_options_answered_to_the_same_address(phone: Phone) -> None:
    phone.receive(sip("OPTIONS", transport="TCP", port=5099), UAC_TCP)
    assert phone.one().addr == UAC_TCP


# --- hanging up ---------------------------------------------------------------------


def test_hangup_after_ack_sends_bye_and_reports_its_200(phone: Phone) -> None:
    leg, _ok = phone.answered_call()
    phone.ua.hangup(leg, phone.now)
    phone.collect()
    bye = phone.one()
    assert bye.method == "BYE" and bye.addr == UAC
    msg = bye.msg
    assert isinstance(msg, Request)
    assert msg.from_.tag == leg and msg.to.tag == "uac-tag" and msg.cseq.seq == 2
    assert phone.take_events() == [CallEnded(leg, EndReason.LOCAL_BYE)]
    text = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {msg.headers.get('Via')}\r\n"
        f"From: {msg.headers.get('From')}\r\n"
        f"To: {msg.headers.get('To')}\r\n"
        f"Call-ID: {msg.call_id}\r\n"
        "CSeq: 2 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    phone.now = 0.3
    phone.receive(text)
    [outcome] = phone.take_events()
    assert isinstance(outcome, RequestOutcome)
    assert outcome.leg_id == leg and outcome.final and not outcome.timed_out
    assert outcome.request.method == "BYE" and outcome.response is not None
    assert outcome.response.status == 200
    phone.advance(100.0)
    assert phone.take() == []  # no BYE retransmissions after the 200
    phone.receive(text)  # a late retransmission of the 200 is dropped
    assert phone.take_events() == []
    assert phone.empty()


def test_hangup_bye_retransmitted_and_times_out(phone: Phone) -> None:
    leg, _ = phone.answered_call()
    phone.ua.hangup(leg, phone.now)
    phone.collect()
    phone.take()
    phone.take_events()
    phone.advance(100.0)
    assert len(phone.take()) == 10  # Timer E up to T2 until Timer F
    [outcome] = phone.take_events()
    assert isinstance(outcome, RequestOutcome) and outcome.timed_out and outcome.final
    assert outcome.response is None and outcome.leg_id == leg


def test_hangup_before_ack_waits_for_the_ack(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.answer(leg, ANSWER, 0.0)
    phone.collect()
    ok = phone.take()[0].msg
    assert isinstance(ok, Response)
    phone.ua.hangup(leg, 0.1)
    phone.collect()
    assert phone.take() == [] and phone.take_events() == []  # RFC 3261 15.1.1
    phone.now = 0.2
    phone.receive(ack_2xx(ok))
    assert phone.one().method == "BYE"
    assert phone.take_events() == [CallConfirmed(leg, b""), CallEnded(leg, EndReason.LOCAL_BYE)]


def test_hangup_before_answer_rejects_with_480(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.hangup(leg, 0.0)
    phone.collect()
    assert phone.one().status == 480
    [ended] = phone.take_events()
    assert ended.reason is EndReason.REJECTED and ended.status == 480  # type: ignore[union-attr]
    phone.ua.hangup(leg, 0.0)  # a second hangup is a no-op
    phone.collect()
    assert phone.take() == []


def test_reject_sends_final_and_ends_the_leg(phone: Phone) -> None:
    leg = phone.call()
    phone.ua.reject(leg, 486, 0.0)
    phone.collect()
    sent = phone.one()
    assert sent.status == 486 and sent.msg.to.tag == leg
    assert phone.take_events() == [CallEnded(leg, EndReason.REJECTED, 486, "Busy Here")]
    with pytest.raises(RuntimeError):
        phone.ua.answer(leg, ANSWER, 0.0)


def test_send_request_on_unknown_leg_raises(phone: Phone) -> None:
    with pytest.raises(KeyError):
        phone.ua.send_request("nosuch", "INFO", 0.0)


def test_send_info_in_dialog(phone: Phone) -> None:
    leg, _ = phone.answered_call()
    extra = Headers([("Content-Type", "application/dtmf-relay")])
    request = phone.ua.send_request(leg, "INFO", phone.now, headers=extra, body=b"Signal=5\r\n")
    phone.collect()
    sent = phone.one()
    assert sent.method == "INFO" and sent.msg.body == b"Signal=5\r\n"
    assert sent.msg.headers.get("Content-Type") == "application/dtmf-relay"
    assert sent.msg.cseq.seq == 2 and request.cseq.seq == 2


# --- what a peer can throw at receive() ----------------------------------------------


def test_malformed_via_is_answered_400_to_the_source(phone: Phone) -> None:
    source = Address("udp", "127.0.0.1", 40001)
    phone.receive(sip("INVITE", via="Via: SIP/2.0/UDP"), source)
    sent = phone.one()
    assert sent.status == 400 and sent.addr == source
    assert phone.empty()


def test_request_without_via_is_dropped(phone: Phone) -> None:
    data = b"\r\n".join(line for line in sip("INVITE").split(b"\r\n")
                         if not line.startswith(b"Via"))
    phone.receive(data)
    assert phone.take() == [] and phone.empty()
    assert phone.ua.stats["dropped_no_via"] == 1


def test_garbage_and_stray_messages_are_counted_and_dropped(phone: Phone) -> None:
    phone.receive(b"\x00\x01 not sip at all")
    phone.receive(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n"
                  b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\n"
                  b"CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n")
    phone.receive(sip("ACK", to="To: <sip:a@b>;tag=zz", contact=False))
    assert phone.take() == []
    stats = phone.ua.stats
    assert stats["dropped_unparseable"] == 1
    assert stats["dropped_stray_response"] == 1
    assert stats["dropped_stray_ack"] == 1
    assert phone.empty()


def test_oversize_request_gets_513(make_phone: Callable[..., Phone]) -> None:
    phone = make_phone()
    big = sip("INVITE", body=b"x" * 70_000)
    phone.receive(big)
    sent = phone.one()
    assert sent.status == 513 and phone.empty()


MUTATIONS = [
    b"", b"\r\n", b":", b";", b"<", b">", b"\"", b",", b" ", b"\x00", b"\xff", b"0",
    b"tag=", b"branch=", b"sip:", b"SIP/2.0", b"z9hG4bK", b";lr", b"Via: x\r\n",
    b"Record-Route: <bad\r\n", b"Record-Route: <sip:p.example.com;lr>\r\n",
    b"CSeq: 99999999999 INVITE\r\n", b"Contact: *\r\n", b"To: x\r\n", b"Require: \r\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "FOO"]),
    cuts=st.lists(
        st.tuples(st.integers(min_value=0, max_value=400), st.sampled_from(MUTATIONS),
                  st.integers(min_value=0, max_value=8)),
        max_size=4,
    ),
    in_dialog_state=st.booleans(),
)
def test_receive_never_raises_and_never_hits_internal_errors(
    method: str, cuts: list[tuple[int, bytes, int]], in_dialog_state: bool
) -> None:
    phone = Phone()
    to = None
    if in_dialog_state:
        _, ok = phone.answered_call()
        to = to_of(ok)
    data = bytearray(sip(method, to=to, cseq=5, branch="z9hG4bK-fz", body=OFFER))
    for at, insert, drop in cuts:
        at = min(at, len(data))
        data[at:at + drop] = insert
    phone.ua.receive(bytes(data), UAC, phone.now)
    phone.ua.handle_timer(phone.now + 100.0)
    for out, _ in phone.ua.outgoing():
        parse_message(out)  # everything we send parses
    assert phone.ua.stats["internal_errors"] == 0


def test_bad_version_with_a_bad_via_still_gets_505_at_the_source(phone: Phone) -> None:
    """RFC 4475 badvers: SIP/7.0 in the start line and in the Via."""
    data = (
        b"OPTIONS sip:t.watson@192.0.2.1 SIP/7.0\r\n"
        b"Via: SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\r\n"
        b"Max-Forwards: 70\r\nFrom: A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe\r\n"
        b"To: T. Watson <sip:t.watson@example.org>\r\nCall-ID: badvers.31417@c.example.com\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    phone.receive(data)
    sent = phone.one()
    assert sent.status == 505 and sent.addr == UAC
    assert phone.empty()


def test_draining_refuses_new_calls_and_options_and_lets_calls_go_on(phone: Phone) -> None:
    leg, ok = phone.answered_call()
    phone.take_events()
    phone.ua.draining = True
    phone.ua.drain_retry_after = 45
    for method, branch in (("OPTIONS", "z9hG4bK-d-opt"), ("INVITE", "z9hG4bK-d-inv")):
        phone.receive(sip(method, branch=branch, call_id=f"drain-{method}@127.0.0.1",
                          body=OFFER if method == "INVITE" else b""))
        sent = phone.one()
        assert isinstance(sent.msg, Response) and sent.status == 503
        assert sent.msg.reason == "Service Unavailable (draining)"
        assert sent.msg.headers.get("Retry-After") == "45"
    assert phone.take_events() == []  # no call for the refused INVITE
    assert phone.ua.stats["refused_draining"] == 2
    # The call under way goes on: its BYE is answered and ends it.
    phone.receive(in_dialog("BYE", ok, 2, "z9hG4bK-d-bye", contact=False))
    assert phone.one().status == 200
    assert phone.take_events() == [CallEnded(leg, EndReason.REMOTE_BYE)]
    phone.ua.draining = False
    phone.receive(sip("OPTIONS", branch="z9hG4bK-d-opt2"))
    assert phone.one().status == 200
