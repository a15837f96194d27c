"""Calls the UA places (RFC 3261 13.2): two sans-IO UAs wired back to back, one calling
the other, with a fake clock; digest answered once; CANCEL before the answer; BYE."""

from __future__ import annotations

from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.auth import DigestServer
from sipbridge.sip.events import (
    CallConfirmed,
    CallEnded,
    EndReason,
    Event,
    IncomingCall,
    OutgoingAnswered,
    OutgoingProgress,
)
from sipbridge.sip.message import Request, parse_message
from sipbridge.sip.ua import LegState, UaConfig, UserAgent

GATEWAY = Address("udp", "127.0.0.1", 5060)
TARGET = Address("udp", "127.0.0.1", 5070)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" \
      b"m=audio 4000 RTP/AVP 0\r\n"


class Pair:
    """The gateway's UA calling a target UA; `run` moves datagrams until both are quiet."""

    def __init__(self, target_guard: AccessGuard | None = None) -> None:
        self.now = 0.0
        self.gw = UserAgent(UaConfig(host="127.0.0.1", port=5060), AccessGuard(["127.0.0.0/8"]))
        self.target = UserAgent(UaConfig(host="127.0.0.1", port=5070),
                                target_guard or AccessGuard(["127.0.0.0/8"]))
        self.gw_events: list[Event] = []
        self.target_events: list[Event] = []
        self.wire: list[str] = []  # start lines, in order

    def run(self) -> None:
        moved = True
        while moved:
            moved = False
            for data, _ in self.gw.outgoing():
                self.wire.append("> " + data.split(b"\r\n", 1)[0].decode())
                self.target.receive(data, GATEWAY, self.now)
                moved = True
            for data, _ in self.target.outgoing():
                self.wire.append("< " + data.split(b"\r\n", 1)[0].decode())
                self.gw.receive(data, TARGET, self.now)
                moved = True
            self.gw_events += self.gw.events()
            self.target_events += self.target.events()

    def call(self, **kwargs: object) -> str:
        leg = self.gw.invite("sip:human@127.0.0.1:5070", TARGET, self.now, body=SDP,
                             from_uri="sip:+15551230000@127.0.0.1", **kwargs)  # type: ignore[arg-type]
        self.run()
        return leg

    def incoming(self) -> IncomingCall:
        calls = [e for e in self.target_events if isinstance(e, IncomingCall)]
        assert calls, self.wire
        return calls[-1]


def test_an_outgoing_call_is_answered_acked_and_hung_up() -> None:
    p = Pair()
    leg = p.call(headers=[("Referred-By", "<sip:agent@127.0.0.1>")])
    incoming = p.incoming()
    assert incoming.request.headers.get("Referred-By") == "<sip:agent@127.0.0.1>"
    assert incoming.request.body == SDP
    p.target.ring(incoming.leg_id, p.now)
    p.run()
    assert any(isinstance(e, OutgoingProgress) and e.response.status == 180
               for e in p.gw_events)
    p.target.answer(incoming.leg_id, SDP, p.now)
    p.run()
    answered = [e for e in p.gw_events if isinstance(e, OutgoingAnswered)]
    assert len(answered) == 1 and answered[0].response.body == SDP
    assert any(isinstance(e, CallConfirmed) for e in p.target_events)  # our ACK arrived
    leg_state = p.gw.leg(leg)
    assert leg_state is not None and leg_state.state is LegState.CONFIRMED
    p.gw.hangup(leg, p.now)
    p.run()
    assert [e.reason for e in p.target_events if isinstance(e, CallEnded)] == [
        EndReason.REMOTE_BYE]
    assert p.wire[-2:] == ["> BYE sip:sipbridge@127.0.0.1:5070 SIP/2.0", "< SIP/2.0 200 OK"]


def test_the_target_hangs_up() -> None:
    p = Pair()
    leg = p.call()
    p.target.answer(p.incoming().leg_id, SDP, p.now)
    p.run()
    p.target.hangup(p.incoming().leg_id, p.now)
    p.run()
    ended = [e for e in p.gw_events if isinstance(e, CallEnded)]
    assert [(e.leg_id, e.reason) for e in ended] == [(leg, EndReason.REMOTE_BYE)]


def test_a_refused_call_ends_with_its_status_and_is_acked() -> None:
    p = Pair()
    leg = p.call()
    p.target.reject(p.incoming().leg_id, 486, p.now)
    p.run()
    ended = [e for e in p.gw_events if isinstance(e, CallEnded)]
    assert [(e.leg_id, e.reason, e.status) for e in ended] == [
        (leg, EndReason.REJECTED, 486)]
    assert p.wire[-1].startswith("> ACK ")  # 17.1.1.3, by the transaction


def test_digest_is_answered_once_with_the_credentials() -> None:
    digest = DigestServer("trunk", {"gw": "s3cret"}, algorithms=["SHA-256", "MD5"])
    p = Pair(AccessGuard([], digest))
    p.call(credentials=("gw", "s3cret"))
    incoming = p.incoming()
    assert incoming.username == "gw"
    assert [w for w in p.wire if "INVITE" in w or "401" in w][:3] == [
        "> INVITE sip:human@127.0.0.1:5070 SIP/2.0", "< SIP/2.0 401 Unauthorized",
        "> INVITE sip:human@127.0.0.1:5070 SIP/2.0"]
    q = Pair(AccessGuard([], digest))
    leg = q.call(credentials=("gw", "wrong"))
    ended = [e for e in q.gw_events if isinstance(e, CallEnded)]
    assert [(e.leg_id, e.status) for e in ended] == [(leg, 403)]  # a wrong password: refused
    assert sum("> INVITE" in w for w in q.wire) == 2


def test_cancel_before_the_answer() -> None:
    p = Pair()
    leg = p.call()
    p.target.ring(p.incoming().leg_id, p.now)
    p.run()
    p.gw.hangup(leg, p.now)
    p.run()
    assert [e.reason for e in p.target_events if isinstance(e, CallEnded)] == [
        EndReason.CANCELLED]
    ended = [e for e in p.gw_events if isinstance(e, CallEnded)]
    assert [(e.reason, e.status) for e in ended] == [(EndReason.CANCELLED, 487)]
    cancel = next(w for w in p.wire if "CANCEL" in w)
    assert cancel == "> CANCEL sip:human@127.0.0.1:5070 SIP/2.0"


def test_no_answer_at_all_ends_the_leg_with_408() -> None:
    p = Pair()
    leg = p.gw.invite("sip:human@127.0.0.1:5070", TARGET, 0.0, body=SDP,
                      from_uri="sip:gw@127.0.0.1")
    p.gw.outgoing()  # lost on the way
    now = 0.0
    while p.gw.deadline is not None and now < 100:
        now = p.gw.deadline
        p.gw.handle_timer(now)
        p.gw.outgoing()
    ended = [e for e in p.gw.events() if isinstance(e, CallEnded)]
    assert [(e.leg_id, e.status) for e in ended] == [(leg, 408)]
    assert 31 <= now <= 33  # Timer B: 64 * T1


def test_the_invite_is_well_formed() -> None:
    p = Pair()
    p.gw.invite("sip:human@127.0.0.1:5070", TARGET, 0.0, body=SDP, from_uri="sip:gw@127.0.0.1")
    [(data, dest)] = p.gw.outgoing()
    request = parse_message(data)
    assert isinstance(request, Request) and dest == TARGET
    request.validate()
    assert request.from_.tag and not request.to.tag and request.cseq.seq == 1
    assert request.headers.get("Content-Type") == "application/sdp"
    assert request.headers.get("Contact") == "<sip:sipbridge@127.0.0.1:5060>"
