"""CallManager over a real UA core and the SIP driver, with a fake clock: answer by
policy."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

import pytest

from sipbridge.audiostream import Direction
from sipbridge.calls.call import Call, CallError, CallState
from sipbridge.calls.events import CallEvent, CallEvents, Incoming
from sipbridge.calls.manager import AnswerPolicy, CallManager
from sipbridge.calls.tool import tool_definition, tool_output
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.driver import SipDriver
from sipbridge.sip.events import CallEnded, EndReason, Event
from sipbridge.sip.message import Request, Response, parse_message, response_to
from sipbridge.sip.sdp import parse_sdp
from sipbridge.sip.ua import UaConfig, UserAgent

PEER = Address("udp", "127.0.0.1", 5062)
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na={direction}\r\n"
)


class FakeTimer:
    def __init__(self, at: float, callback: Callable[[], object]) -> None:
        self.at = at
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Harness:
    """A CallManager on the SIP driver, over a fake clock (the harness is the driver's
    clock, and its wire: what the driver sends is parsed and kept, requests and
    responses apart)."""

    incoming: list[Call]

    def __init__(self, *, auto_answer: str | None = "silence", ring_time: float = 0.0,
                 reject_code: int = 480, app: bool = False, max_calls: int | None = None,
                 max_calls_per_source: int | None = None) -> None:
        self.now = 0.0
        self.incoming = []
        self.timers: list[FakeTimer] = []
        self.ua = UserAgent(UaConfig(host="127.0.0.1", port=5060), AccessGuard(["127.0.0.0/8"]))
        # A loop that never runs: media sockets are bound and registered, ticks never fire.
        self.loop = asyncio.new_event_loop()
        self.media = MediaEngine(MediaConfig(ports=(20000, 20100)), self.loop)
        self.driver = SipDriver(self.ua, _Wire(self), self)
        self.events = CallEvents()
        self.events.subscribe(self)
        self.manager = CallManager(
            self.driver, self.events,
            AnswerPolicy(auto_answer=auto_answer, ring_time=ring_time, reject_code=reject_code,
                         ask_app=app, accept_timeout=20.0, accept_timeout_code=408,
                         max_calls=max_calls, max_calls_per_source=max_calls_per_source),
            media=self.media, media_host=lambda peer: "127.0.0.1", bind_host="127.0.0.1",
        )
        self.driver.attach(Watched(self.manager, self))
        self.sent: list[Response] = []
        self.requests: list[Request] = []
        self.ended: list[CallEnded] = []

    # The driver's clock.
    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in list(self.timers):
            if timer.at <= self.now and not timer.cancelled:
                self.timers.remove(timer)
                timer.callback()

    def send(self, text: str | bytes, source: Address = PEER) -> None:
        """A message from `source` to the gateway."""
        data = text if isinstance(text, bytes) else text.replace("\n", "\r\n").encode()
        self.driver.receive(data, source)

    def observe(self, event: CallEvent) -> None:
        if isinstance(event, Incoming):
            self.incoming.append(event.call)

    def statuses(self) -> list[int]:
        return [r.status for r in self.sent]


class _Wire:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    def send(self, data: bytes, dest: Address) -> None:
        msg = parse_message(data)
        if isinstance(msg, Response):
            self.harness.sent.append(msg)
        else:
            self.harness.requests.append(msg)

    def drop(self, source: Address) -> None:
        pass


class Watched:
    """The manager as the driver's upper, each ended leg noted."""

    def __init__(self, manager: CallManager, harness: Harness) -> None:
        self.manager = manager
        self.harness = harness

    def handle(self, event: Event) -> None:
        if isinstance(event, CallEnded):
            self.harness.ended.append(event)
        self.manager.handle(event)

    def trace(self, data: bytes, peer: Address, direction: str, *, early: bool = False
              ) -> bool:
        return self.manager.trace(data, peer, direction, early=early)

    def unsent(self, data: bytes, dest: Address, reason: str) -> None:
        self.manager.unsent(data, dest, reason)


def invite(body: str = "", content_type: str = "application/sdp", branch: str = "b1",
           cseq: int = 1, to_tag: str = "") -> str:
    body = body.replace("\r\n", "\n")
    ctype = f"Content-Type: {content_type}\n" if body else ""
    to = f"<sip:bot@127.0.0.1>{';tag=' + to_tag if to_tag else ''}"
    return (
        f"INVITE sip:bot@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{branch}\n"
        f"From: <sip:carrier@127.0.0.1>;tag=c1\nTo: {to}\nCall-ID: call-1\n"
        f"CSeq: {cseq} INVITE\nContact: <sip:carrier@127.0.0.1:5062>\nMax-Forwards: 70\n"
        f"{ctype}Content-Length: {len(body.replace(chr(10), chr(13) + chr(10)))}\n\n{body}"
    )


def ack(to_tag: str, body: str = "", cseq: int = 1, branch: str = "a1") -> str:
    body = body.replace("\r\n", "\n")
    ctype = "Content-Type: application/sdp\n" if body else ""
    return (
        f"ACK sip:sipbridge@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{branch}\n"
        f"From: <sip:carrier@127.0.0.1>;tag=c1\nTo: <sip:bot@127.0.0.1>;tag={to_tag}\n"
        f"Call-ID: call-1\nCSeq: {cseq} ACK\nMax-Forwards: 70\n"
        f"{ctype}Content-Length: {len(body.replace(chr(10), chr(13) + chr(10)))}\n\n{body}"
    )


def test_auto_answer_silence_answers_with_sdp() -> None:
    h = Harness()
    h.send(invite(OFFER.format(direction="sendrecv")))
    assert h.statuses() == [100, 180, 200]
    answer = parse_sdp(h.sent[-1].body)
    call = next(iter(h.manager.calls.values()))
    assert answer.media[0].port == call.rtp_port and 20000 <= call.rtp_port < 20100
    assert call.id in h.media.sessions  # RTP started with the 200
    assert [c.name for c in answer.media[0].codecs] == ["PCMU", "telephone-event"]
    assert call.id.startswith("rtc_") and call.state is CallState.ACTIVE  # answered
    assert call.answered_at is not None
    h.send(ack(h.sent[-1].to.tag or ""))
    assert call.state is CallState.ACTIVE
    h.send(ack(h.sent[-1].to.tag or "").replace("ACK sip", "BYE sip").replace("1 ACK", "2 BYE"))
    assert h.media.sessions == {} and h.media.pool.in_use == 0  # port freed at the end


def test_without_application_calls_are_refused_with_the_configured_code() -> None:
    h = Harness(auto_answer=None, reject_code=503)
    h.send(invite(OFFER.format(direction="sendrecv")))
    assert h.statuses() == [100, 503]
    assert h.ended[0].reason is EndReason.REJECTED
    assert h.manager.calls == {}
    assert h.media.pool.in_use == 0 and h.media.sessions == {}  # its RTP port was freed


def test_no_common_codec_gets_488_with_a_warning() -> None:
    h = Harness()
    g729 = OFFER.format(direction="sendrecv").replace("RTP/AVP 0 8 101", "RTP/AVP 18")
    h.send(invite(g729))
    assert h.statuses() == [100, 488]
    assert "codec" in (h.sent[-1].headers.get("Warning") or "")


def test_non_sdp_body_gets_415() -> None:
    h = Harness()
    h.send(invite("hello", content_type="text/plain"))
    assert h.statuses() == [100, 415]
    assert h.sent[-1].headers.get("Accept") == "application/sdp"


def test_ring_time_delays_the_answer_and_cancel_stops_it() -> None:
    h = Harness(ring_time=3.0)
    h.send(invite(OFFER.format(direction="sendrecv")))
    assert h.statuses() == [100, 180]
    h.advance(2.0)
    assert h.statuses() == [100, 180]
    h.advance(1.5)
    assert h.statuses() == [100, 180, 200]

    h2 = Harness(ring_time=3.0)
    h2.send(invite(OFFER.format(direction="sendrecv")))
    h2.send(
        "CANCEL sip:bot@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKb1\n"
        "From: <sip:carrier@127.0.0.1>;tag=c1\nTo: <sip:bot@127.0.0.1>\nCall-ID: call-1\n"
        "CSeq: 1 CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n"
    )
    assert sorted(h2.statuses()[2:]) == [200, 487]
    h2.advance(5.0)
    assert 200 not in h2.statuses()[2:] or h2.statuses().count(200) == 1  # only the CANCEL's
    assert h2.ended[0].reason is EndReason.CANCELLED


def test_late_offer_puts_our_offer_in_200_and_reads_the_answer_from_ack() -> None:
    h = Harness()
    h.send(invite(""))
    ok = h.sent[-1]
    assert ok.status == 200
    offer = parse_sdp(ok.body)
    assert [c.name for c in offer.media[0].codecs][:2] == ["PCMU", "PCMA"]
    answer = OFFER.format(direction="sendrecv").replace("RTP/AVP 0 8 101", "RTP/AVP 8 101")
    h.send(ack(ok.to.tag or "", answer))
    call = next(iter(h.manager.calls.values()))
    assert call.audio is not None and call.audio.codec.name == "PCMA"
    assert call.audio.remote_port == 6000


def test_reinvite_hold_and_resume() -> None:
    h = Harness()
    h.send(invite(OFFER.format(direction="sendrecv")))
    tag = h.sent[-1].to.tag or ""
    h.send(ack(tag))
    call = next(iter(h.manager.calls.values()))
    h.send(invite(OFFER.format(direction="sendonly"), branch="b2", cseq=2, to_tag=tag))
    held = parse_sdp(h.sent[-1].body)
    assert h.sent[-1].status == 200 and held.media[0].direction is Direction.RECVONLY
    assert call.on_hold
    h.send(ack(tag, cseq=2, branch="a2"))
    h.send(invite(OFFER.format(direction="sendrecv"), branch="b3", cseq=3, to_tag=tag))
    resumed = parse_sdp(h.sent[-1].body)
    assert resumed.media[0].direction is Direction.SENDRECV and not call.on_hold
    assert resumed.media[0].port == held.media[0].port  # same stream, same port
    assert resumed.origin.session_version > held.origin.session_version  # RFC 3264 8


def app_call() -> tuple[Harness, Call]:
    h = Harness(auto_answer=None, app=True)
    h.send(invite(OFFER.format(direction="sendrecv")).replace(
        "Max-Forwards: 70\n", "Max-Forwards: 70\nAuthorization: Digest secret\nX-Case: 42\n"))
    assert h.statuses() == [100, 180] and len(h.incoming) == 1
    return h, h.incoming[0]


def test_application_calls_ring_until_accepted() -> None:
    h, call = app_call()
    names = [n for n, _ in call.sip_headers]
    assert names[:2] == ["Via", "From"] and ("X-Case", "42") in call.sip_headers
    assert "Authorization" not in names  # never shown to the application
    h.manager.accept(call.id, {"type": "realtime"})
    assert h.statuses() == [100, 180, 200] and call.state is CallState.ACTIVE
    assert call.id in h.media.sessions
    with pytest.raises(CallError) as err:
        h.manager.accept(call.id, {"type": "realtime"})
    assert err.value.kind == "conflict" and "already accepted" in err.value.message
    h.send(ack(h.sent[-1].to.tag or ""))  # the 200 is not retransmitted
    h.advance(30)  # the accept timer was cancelled: nothing more is sent
    assert h.statuses() == [100, 180, 200]


def test_application_reject_and_the_accept_timeout() -> None:
    h, call = app_call()
    h.manager.reject(call.id, 486)
    assert h.statuses()[-1] == 486 and call.state is CallState.ENDED
    assert h.manager.get(call.id) is call  # still known after the end ...
    with pytest.raises(CallError) as err:
        h.manager.hangup(call.id)
    assert err.value.kind == "conflict" and "ended" in err.value.message  # ... and final
    h2, call2 = app_call()
    h2.advance(19.9)
    assert h2.statuses() == [100, 180]
    h2.advance(0.2)
    assert h2.statuses()[-1] == 408 and call2.end_reason == "accept_timeout"
    with pytest.raises(CallError) as err:
        h2.manager.get("rtc_nope")
    assert err.value.kind == "not_found"


def test_refer_needs_an_answered_call_and_sends_refer_in_the_dialog() -> None:
    h, call = app_call()
    with pytest.raises(CallError) as err:
        h.manager.refer(call.id, "tel:+61420351258")
    assert err.value.kind == "conflict" and "not been accepted" in err.value.message
    h.manager.accept(call.id, {"type": "realtime"})
    h.send(ack(h.sent[-1].to.tag or ""))
    transfer = h.manager.refer(call.id, "tel:+61420351258")
    refer = h.requests[-1]
    assert refer.method == "REFER" and refer.headers.get("Refer-To") == "<tel:+61420351258>"
    assert refer.headers.get("Referred-By") == "<sip:bot@127.0.0.1>"
    assert transfer.status == "sent"
    with pytest.raises(CallError) as err:
        h.manager.refer(call.id, "tel:+1555")
    assert err.value.kind == "conflict" and "in progress" in err.value.message


def answered_app_call() -> tuple[Harness, Call]:
    h, call = app_call()
    h.manager.accept(call.id, {"type": "realtime"},
                     {"transfer_targets": {"sales": "tel:+14155550123",
                                           "support": "sip:support@127.0.0.1:5090"}})
    h.send(ack(h.sent[-1].to.tag or ""))
    return h, call


def test_the_transfer_tool_refers_to_the_declared_target() -> None:
    h, call = answered_app_call()
    run = h.manager.run_transfer_tool(call.id, '{"target": "support", "reason": "x"}')
    job = run.job
    assert job is not None and run.started and run.problem == ""
    assert h.requests[-1].headers.get("Refer-To") == "<sip:support@127.0.0.1:5090>"
    output = json.loads(tool_output(job.machine))
    assert output["status"] == "sent" and "under way" in output["instructions"]
    # the model asked, not the application: no API step on the timeline
    assert job.to_dict()["requested_by"] == "agent"
    assert not [e for e in call.timeline if e["kind"] == "api" and e["action"] == "refer"]
    # One transfer at a time: asked again, the one under way is the answer, not an error.
    again = h.manager.run_transfer_tool(call.id, '{"target": "sales"}')
    assert again.job is job and not again.started and len(call.transfers) == 1
    assert [r.method for r in h.requests].count("REFER") == 1
    output = json.loads(again.output())
    assert output["status"] == "in_progress" and output["transfer_id"] == job.id
    assert "already in progress" in output["instructions"]
    # Once it has an outcome, a request names its target again.
    h.manager.transfers._steps(call, job, job.machine.response(603, h.now))
    bad = h.manager.run_transfer_tool(call.id, '{"target": "billing"}')
    assert bad.job is None and "unknown target 'billing'" in bad.problem
    assert "sales" in bad.problem and json.loads(bad.output())["status"] == "error"


def test_a_held_transfer_tool_sends_its_refer_later() -> None:
    h, call = answered_app_call()
    run = h.manager.run_transfer_tool(call.id, '{"target": "support"}', held="words first")
    job = run.job
    assert job is not None and run.started and job.status == "requested"
    assert not [r for r in h.requests if r.method == "REFER"]
    steps = [e for e in call.timeline if e["kind"] == "transfer"]
    assert [(e["status"], e["reason"]) for e in steps] == [("requested", "words first")]
    assert h.manager.send_held(call.id, job)
    assert h.requests[-1].method == "REFER" and job.status == "sent"
    assert not h.manager.send_held(call.id, job)  # once
    assert [r.method for r in h.requests].count("REFER") == 1


def test_tool_definition_lists_the_targets() -> None:
    tool = tool_definition({"sales": "tel:+1", "a_team": "sip:a@b"})
    assert tool["name"] == "transfer_call" and tool["type"] == "function"
    assert tool["parameters"]["properties"]["target"]["enum"] == ["a_team", "sales"]


def notify(h: Harness, event: str, body: str = "SIP/2.0 200 OK", cseq: int = 2,
           state: str = "active;expires=60") -> int:
    """The carrier's NOTIFY in the call's dialog; the status the gateway answered."""
    to_tag = next(r.to.tag for r in h.sent if r.status == 200)
    content = f"{body}\n"
    h.send(
        f"NOTIFY sip:sipbridge@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKn{cseq}\n"
        f"From: <sip:carrier@127.0.0.1>;tag=c1\nTo: <sip:bot@127.0.0.1>;tag={to_tag}\n"
        f"Call-ID: call-1\nCSeq: {cseq} NOTIFY\nMax-Forwards: 70\nEvent: {event}\n"
        f"Subscription-State: {state}\nContent-Type: message/sipfrag\n"
        f"Content-Length: {len(content) + 1}\n\n{content}"
    )
    return h.sent[-1].status


def test_notify_without_a_transfer_or_for_another_package() -> None:
    h, call = answered_app_call()
    assert notify(h, "refer") == 481  # no transfer: no subscription of ours
    h.manager.refer(call.id, "tel:+14155550123")
    assert notify(h, "presence", cseq=3) == 489  # not REFER's event package
    assert notify(h, "refer", "garbage", cseq=4) == 400
    assert call.transfers[0].status == "sent"  # the broken NOTIFY changed nothing
    assert notify(h, "refer", "SIP/2.0 180 Ringing", cseq=5) == 200
    assert call.transfers[0].status == "progress"
    assert call.state is CallState.ACTIVE


def referred_call() -> tuple[Harness, Call]:
    """An answered call whose REFER the carrier accepted with 202."""
    h, call = answered_app_call()
    h.manager.refer(call.id, "tel:+14155550123")
    refer = h.requests[-1]
    assert refer.method == "REFER"
    h.send(response_to(refer, 202).to_bytes())
    assert call.transfers[0].status == "accepted"
    return h, call


def test_linphones_final_notify_with_a_doubled_reason_is_a_success() -> None:
    # liblinphone 5.1 (src/sal/call-op.cpp, notifyReferState) sets the reason to
    # "reason=noresource", and belle-sip writes "reason=" before it once more.
    h, call = referred_call()
    assert notify(h, "refer", "SIP/2.0 100 Trying", cseq=2, state="active") == 200
    assert notify(h, "refer", "SIP/2.0 200 Ok", cseq=3,
                  state="terminated;reason=reason=noresource") == 200
    job = call.transfers[0]
    assert (job.status, job.machine.sip_status) == ("succeeded", 200)
    warnings = [e for e in call.timeline if e["kind"] == "warning"]
    assert len(warnings) == 1  # one entry for the NOTIFY with a problem, none for the good one
    assert warnings[0]["transfer_id"] == job.id
    assert "'reason=reason=noresource' read as reason=noresource" in warnings[0]["detail"]
    assert isinstance(warnings[0]["at"], float)
    assert h.requests[-1].method == "BYE"  # the gateway leaves the call after the success
    assert call.end_reason == "transferred"


@pytest.mark.parametrize(
    ("state", "body", "why"),
    [
        ("act@ve;expires=60", "SIP/2.0 200 OK", "no readable value in Subscription-State"),
        (";reason=noresource", "SIP/2.0 200 OK", "no readable value in Subscription-State"),
        ("terminated;reason=noresource", "200 OK", "no status line"),
        ("terminated;reason=noresource", "NOTIFY sip:a@b SIP/2.0", "request line"),
        ("terminated;reason=noresource", "SIP/2.0 2OO OK", "invalid status code"),
    ],
)
def test_a_notify_that_cannot_be_understood_is_refused_with_a_warning(
        state: str, body: str, why: str) -> None:
    h, call = referred_call()
    assert notify(h, "refer", body, cseq=2, state=state) == 400
    warning = h.sent[-1].headers.get("Warning") or ""
    assert warning.startswith('399 sipbridge "') and why in warning
    assert call.transfers[0].status == "accepted"  # nothing taken from it
    assert not [e for e in call.timeline if e["kind"] == "warning"]
    assert notify(h, "refer", "SIP/2.0 200 OK", cseq=3,
                  state="terminated;reason=noresource") == 200
    assert call.transfers[0].status == "succeeded"


def test_the_warning_header_of_a_refusal_is_one_quoted_string() -> None:
    h, _ = referred_call()
    assert notify(h, "refer", 'say "hi" \\ 200', cseq=2) == 400
    code, agent, text = (h.sent[-1].headers.get("Warning") or "").split(" ", 2)
    assert (code, agent) == ("399", "sipbridge")
    assert re.fullmatch(r'"(?:[^"\\]|\\.)*"', text)  # RFC 3261 25.1 quoted-string
    assert '\\"hi\\"' in text
