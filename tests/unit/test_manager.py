"""CallManager over a real UA core and the SIP driver, with a fake clock: answer by
policy."""

from __future__ import annotations

import json
import re

import pytest

from sipbridge.audiostream import Direction
from sipbridge.calls.call import Call, CallError, CallState
from sipbridge.calls.events import Changed
from sipbridge.calls.tool import tool_definition, tool_output
from sipbridge.sip.events import EndReason
from sipbridge.sip.message import response_to
from sipbridge.sip.sdp import parse_sdp
from tests.unit.callharness import (
    OFFER,
    Harness,
    ack,
    answered_app_call,
    app_call,
    invite,
    notify,
)


def test_auto_answer_silence_answers_with_sdp() -> None:
    h = Harness()
    h.send(invite(OFFER.format(direction="sendrecv")))
    assert h.statuses() == [200]  # answered at once: no 100 Trying nor 180 before the 200
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
    assert h.statuses() == [503]
    assert h.ended[0].reason is EndReason.REJECTED
    assert h.manager.calls == {}
    assert h.media.pool.in_use == 0 and h.media.sessions == {}  # its RTP port was freed


def test_no_common_codec_gets_488_with_a_warning() -> None:
    h = Harness()
    g729 = OFFER.format(direction="sendrecv").replace("RTP/AVP 0 8 101", "RTP/AVP 18")
    h.send(invite(g729))
    assert h.statuses() == [488]
    assert "codec" in (h.sent[-1].headers.get("Warning") or "")


def test_non_sdp_body_gets_415() -> None:
    h = Harness()
    h.send(invite("hello", content_type="text/plain"))
    assert h.statuses() == [415]
    assert h.sent[-1].headers.get("Accept") == "application/sdp"


def test_ring_time_delays_the_answer_and_cancel_stops_it() -> None:
    h = Harness(ring_time=3.0)
    h.send(invite(OFFER.format(direction="sendrecv")))
    assert h.statuses() == [180]
    h.advance(2.0)
    assert h.statuses() == [180]
    h.advance(1.5)
    assert h.statuses() == [180, 200]

    h2 = Harness(ring_time=3.0)
    h2.send(invite(OFFER.format(direction="sendrecv")))
    h2.send(
        "CANCEL sip:bot@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKb1\n"
        "From: <sip:carrier@127.0.0.1>;tag=c1\nTo: <sip:bot@127.0.0.1>\nCall-ID: call-1\n"
        "CSeq: 1 CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n"
    )
    assert sorted(h2.statuses()[1:]) == [200, 487]
    h2.advance(5.0)
    assert 200 not in h2.statuses()[1:] or h2.statuses().count(200) == 1  # only the CANCEL's
    assert h2.ended[0].reason is EndReason.CANCELLED


def test_late_offer_puts_our_offer_in_200_and_reads_the_answer_from_ack() -> None:
    h = Harness()
    h.send(invite(""))
    ok = h.sent[-1]
    assert ok.status == 200
    offer = parse_sdp(ok.body)
    assert [c.name for c in offer.media[0].codecs][:4] == ["opus", "G722", "PCMU", "PCMA"]
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


def test_application_calls_ring_until_accepted() -> None:
    h, call = app_call()
    names = [n for n, _ in call.sip_headers]
    assert names[:2] == ["Via", "From"] and ("X-Case", "42") in call.sip_headers
    assert "Authorization" not in names  # never shown to the application
    h.manager.accept(call.id, {"type": "realtime"})
    assert h.statuses() == [180, 200] and call.state is CallState.ACTIVE
    assert call.id in h.media.sessions
    with pytest.raises(CallError) as err:
        h.manager.accept(call.id, {"type": "realtime"})
    assert err.value.kind == "conflict" and "already accepted" in err.value.message
    h.send(ack(h.sent[-1].to.tag or ""))  # the 200 is not retransmitted
    h.advance(30)  # the accept timer was cancelled: nothing more is sent
    assert h.statuses() == [180, 200]


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
    assert h2.statuses() == [180]
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
    refer = [r for r in h.requests if r.method == "REFER"][-1]
    h.send(response_to(refer, 603).to_bytes())  # the carrier declines it
    assert job.status == "rejected"
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
    assert "'reason=reason=noresource' read as reason=noresource" in str(warnings[0]["detail"])
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


class _Records:
    """The call's state each time its record changes (what the store is given)."""

    def __init__(self) -> None:
        self.states: list[str] = []

    def observe(self, event: object) -> None:
        if isinstance(event, Changed):
            self.states.append(event.call.state.value)


def test_a_call_answered_at_once_is_recorded_answered_a_ringing_or_refused_one_ringing() -> None:
    cases = [({}, invite(OFFER.format(direction="sendrecv")), ["active"]),
             ({"ring_time": 3.0}, invite(OFFER.format(direction="sendrecv")), ["ringing"]),
             ({}, invite("hello", content_type="text/plain"), ["ringing"]),
             ({}, invite(OFFER.format(direction="sendrecv").replace("RTP/AVP 0 8 101",
                                                                    "RTP/AVP 18")), ["ringing"]),
             ({"auto_answer": None, "app": True}, invite(OFFER.format(direction="sendrecv")),
              ["ringing"])]
    for how, request, states in cases:
        h = Harness(**how)  # type: ignore[arg-type]
        records = _Records()
        h.events.subscribe(records)
        h.send(request)
        # Refused calls end when the caller's ACK comes: their record says so once more.
        assert records.states[:1] == states and records.states[1:] in ([], ["ended"]), how


def test_each_call_gets_the_same_answer_but_for_its_port_and_session() -> None:
    h = Harness()
    bodies = []
    for n in range(3):
        h.send(invite(OFFER.format(direction="sendrecv"), branch=f"b{n}")
               .replace("Call-ID: call-1", f"Call-ID: call-{n}"))
        bodies.append(h.sent[-1].body)
    calls = list(h.manager.calls.values())
    assert len(calls) == 3 and len(h.manager.answers) == 1
    for call, body in zip(calls, bodies, strict=True):
        sdp = parse_sdp(body)
        assert sdp.media[0].port == call.rtp_port
        assert sdp.origin.session_id == hash(call.id) & 0x7FFFFFFF
        assert body == bodies[0].replace(b"%d" % calls[0].rtp_port, b"%d" % call.rtp_port
                                         ).replace(b"%d" % (hash(calls[0].id) & 0x7FFFFFFF),
                                                   b"%d" % (hash(call.id) & 0x7FFFFFFF))
