"""Sending DTMF on a call, over a real UA core, SIP driver and CallManager with a fake
clock: RFC 4733 into the call's media session, SIP INFO one digit at a time (the next
after the previous one's final response and its tone's time), sends queued in order,
what ends them (an error response, the call's end), and the API route's every bad-input
path (400 naming the parameter, 404, 409), none of which sends anything."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.api.callevents import SidebandSink
from sipbridge.calls.call import Call
from sipbridge.media.dtmf import parse_event
from sipbridge.media.rtp import parse_rtp
from sipbridge.sip.message import Request
from sipbridge.trace import step
from tests.unit.apifakes import Control, Store
from tests.unit.callharness import OFFER, Harness, ack, answered_app_call, app_call, invite


def answer(h: Harness, request: Request, status: int = 200) -> None:
    """The carrier's response to an in-dialog request the gateway sent."""
    via = request.headers.get("Via")
    h.send(f"SIP/2.0 {status} Whatever\nVia: {via}\nFrom: {request.headers.get('From')}\n"
           f"To: {request.headers.get('To')}\nCall-ID: {request.call_id}\n"
           f"CSeq: {request.cseq.seq} {request.method}\nContent-Length: 0\n\n")


def infos(h: Harness) -> list[Request]:
    """The INFO requests sent, each once (UDP retransmissions left out)."""
    seen: dict[int, Request] = {}
    for r in h.requests:
        if r.method == "INFO":
            seen.setdefault(r.cseq.seq, r)
    return list(seen.values())


def outs(call: Call) -> list[tuple[object, object, object]]:
    return [(e["digits"], e["method"], e["status"]) for e in call.timeline
            if e["kind"] == "dtmf" and e.get("direction") == "out"]


def test_info_sends_one_digit_at_a_time_after_each_final_response() -> None:
    h, call = answered_app_call()
    done: list[str] = []
    send = h.manager.send_dtmf(call.id, "1*#", duration_ms=160, gap_ms=40, method="info",
                               on_done=lambda s: done.append(s.status))
    assert send.status == "sending" and len(infos(h)) == 1
    first = infos(h)[0]
    assert first.headers.get("Content-Type") == "application/dtmf-relay"
    assert first.body == b"Signal=1\r\nDuration=160\r\n"
    h.advance(1.0)
    assert len(infos(h)) == 1  # nothing more until the answer
    answer(h, first, 100)  # a provisional response is not the final one
    h.advance(1.0)
    assert len(infos(h)) == 1
    answer(h, first)
    assert len(infos(h)) == 1  # the tone's time and the gap already passed: at once...
    h.advance(0.0)
    assert [r.body for r in infos(h)] == [b"Signal=1\r\nDuration=160\r\n",
                                          b"Signal=*\r\nDuration=160\r\n"]
    answer(h, infos(h)[1])
    h.advance(0.1)  # ...else when the previous tone plus the gap has passed (0.2 s)
    assert len(infos(h)) == 2
    h.advance(0.1)
    assert infos(h)[2].body == b"Signal=#\r\nDuration=160\r\n"
    assert len({r.cseq.seq for r in infos(h)}) == 3
    answer(h, infos(h)[2])
    assert send.status == "sent" and send.sent == 3 and done == ["sent"]
    assert outs(call) == [("1*#", "info", "queued"), ("1*#", "info", "sending"),
                          ("1*#", "info", "sent")]


def test_an_error_response_to_an_info_fails_the_send_and_stops_it() -> None:
    h, call = answered_app_call()
    send = h.manager.send_dtmf(call.id, "12", method="info")
    answer(h, infos(h)[0], 415)
    h.advance(5.0)
    assert len(infos(h)) == 1
    assert send.status == "failed" and "415" in (send.reason or "") and send.sent == 0


def test_sends_run_in_order_and_the_call_end_fails_the_rest() -> None:
    h, call = answered_app_call()
    first = h.manager.send_dtmf(call.id, "1", method="info")
    second = h.manager.send_dtmf(call.id, "2", method="info")
    assert second.status == "queued" and len(infos(h)) == 1
    answer(h, infos(h)[0])
    assert first.status == "sent" and second.status == "sending"
    assert infos(h)[1].body.startswith(b"Signal=2")
    h.manager.hangup(call.id)
    h.send(f"SIP/2.0 200 OK\nVia: {h.requests[-1].headers.get('Via')}\n"
           f"From: {h.requests[-1].headers.get('From')}\nTo: {h.requests[-1].headers.get('To')}\n"
           f"Call-ID: call-1\nCSeq: {h.requests[-1].cseq.seq} BYE\nContent-Length: 0\n\n")
    assert call.state.value == "ended"
    assert second.status == "failed" and second.reason == "the call ended"
    assert not h.manager.dtmf.queues and not h.manager.dtmf.legs


def test_rfc4733_goes_into_the_calls_media_stream() -> None:
    h, call = answered_app_call()
    session = h.media.sessions[call.id]
    peer = _listen(session)
    send = h.manager.send_dtmf(call.id, "9", duration_ms=40, gap_ms=0)
    assert send.method == "rfc4733" and send.status == "sending"
    for k in range(4):
        session.tick(k * 0.02)
    packets = [parse_rtp(peer.recvfrom(2048)[0]) for _ in range(4)]
    assert [p.payload_type for p in packets] == [101] * 4
    assert [parse_event(p.payload).event for p in packets] == [9] * 4
    assert send.status == "sent" and send.sent == 1
    assert not infos(h)
    peer.close()


def _listen(session: Any) -> Any:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    session._remote = sock.getsockname()
    return sock


def test_a_call_without_telephone_event_refuses_rfc4733_but_takes_info() -> None:
    h = Harness(auto_answer="silence")
    no_events = OFFER.replace(" 101", "").replace("a=rtpmap:101 telephone-event/8000\r\n", "")
    h.send(invite(no_events.replace("a=fmtp:101 0-16\r\n", "").format(direction="sendrecv")))
    h.send(ack(h.sent[-1].to.tag or ""))
    call = next(iter(h.manager.calls.values()))
    assert call.audio is not None and call.audio.telephone_event_pt is None
    with pytest.raises(Exception, match="no telephone-event") as info:
        h.manager.send_dtmf(call.id, "1")
    assert getattr(info.value, "kind", None) == "conflict"
    assert not any(e["kind"] == "dtmf" for e in call.timeline)
    call.dtmf_method = "info"  # a trunk's choice: INFO for its calls
    assert h.manager.send_dtmf(call.id, "1").method == "info" and len(infos(h)) == 1


# ---- the API ---------------------------------------------------------------------


def client(h: Harness) -> TestClient:
    return TestClient(create_app(Control(calls=h.manager, store=Store()), []))


def test_the_route_sends_and_answers_the_send() -> None:
    h, call = answered_app_call()
    r = client(h).post(f"/v1/realtime/calls/{call.id}/dtmf",
                       json={"digits": "4a", "method": "info", "duration_ms": 80})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["digits"] == "4A" and body["method"] == "info" and body["status"] == "sending"
    assert body["duration_ms"] == 80 and body["id"].startswith("dtmf_")
    assert infos(h)[0].body == b"Signal=4\r\nDuration=80\r\n"


@pytest.mark.parametrize(("body", "param"), [
    ({"digits": "12E"}, "digits"),
    ({"digits": ""}, "digits"),
    ({"digits": "1" * 65}, "digits"),
    ({"digits": "1 2"}, "digits"),
    ({"digits": 12}, "digits"),
    ({}, "digits"),
    ({"digits": "1", "duration_ms": 39}, "duration_ms"),
    ({"digits": "1", "duration_ms": 1001}, "duration_ms"),
    ({"digits": "1", "duration_ms": "100"}, "duration_ms"),
    ({"digits": "1", "gap_ms": -1}, "gap_ms"),
    ({"digits": "1", "gap_ms": 5001}, "gap_ms"),
    ({"digits": "1", "method": "sms"}, "method"),
    ({"digits": "1", "volume": 3}, "volume"),
])
def test_bad_input_is_400_naming_the_parameter_and_sends_nothing(
    body: dict[str, Any], param: str
) -> None:
    h, call = answered_app_call()
    before = len(h.requests)
    r = client(h).post(f"/v1/realtime/calls/{call.id}/dtmf", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert len(h.requests) == before and not h.manager.dtmf.queues
    assert not any(e["kind"] == "dtmf" for e in call.timeline)


def test_unknown_ringing_and_ended_calls() -> None:
    h, call = app_call()
    c = client(h)
    r = c.post("/v1/realtime/calls/rtc_nope/dtmf", json={"digits": "1"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = c.post(f"/v1/realtime/calls/{call.id}/dtmf", json={"digits": "1"})
    assert r.status_code == 409 and "ringing" in r.json()["error"]["message"]
    h.manager.reject(call.id, 486)
    r = c.post(f"/v1/realtime/calls/{call.id}/dtmf", json={"digits": "1"})
    assert r.status_code == 409 and "ended" in r.json()["error"]["message"]
    assert not infos(h) and not h.manager.dtmf.queues


def test_a_full_queue_is_409() -> None:
    h, call = answered_app_call()
    c = client(h)
    for _ in range(8):
        assert c.post(f"/v1/realtime/calls/{call.id}/dtmf",
                      json={"digits": "1", "method": "info"}).status_code == 200
    r = c.post(f"/v1/realtime/calls/{call.id}/dtmf", json={"digits": "1", "method": "info"})
    assert r.status_code == 409 and "queued" in r.json()["error"]["message"]


def test_the_configured_method_is_each_new_calls() -> None:
    h = Harness(auto_answer="silence")
    h.manager.policy = dataclasses.replace(h.manager.policy, dtmf_method="info")
    h.send(invite(OFFER.format(direction="sendrecv")))
    call = next(iter(h.manager.calls.values()))
    assert call.dtmf_method == "info"
    assert h.manager.send_dtmf(call.id, "5").method == "info"
    assert h.manager.send_dtmf(call.id, "5", method="rfc4733").method == "rfc4733"


def test_the_trace_shows_a_send_and_a_failure() -> None:
    h, call = answered_app_call()
    h.manager.send_dtmf(call.id, "12", method="info")
    answer(h, infos(h)[0], 403)
    rows = [step(e, 0.0) for e in call.timeline if e["kind"] == "dtmf"]
    assert rows[-1].text.startswith("dtmf out 12 (info) failed: INFO answered 403")
    assert rows[-1].failing and not rows[0].failing


class Hubs:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, call_id: str, event: dict[str, Any]) -> None:
        self.published.append({"call": call_id, **event})

    def close(self, call_id: str) -> None:
        pass


def test_each_step_goes_to_the_sideband() -> None:
    h, call = answered_app_call()
    hubs = Hubs()
    h.events.subscribe(SidebandSink(hubs))  # type: ignore[arg-type]
    send = h.manager.send_dtmf(call.id, "7", method="info")
    answer(h, infos(h)[0])
    got = [e for e in hubs.published if e["type"] == "call.dtmf.updated"]
    assert [(e["status"], e["dtmf_id"], e["digits"], e["method"], e["call"]) for e in got] == [
        (status, send.id, "7", "info", call.id) for status in ("queued", "sending", "sent")]
    assert got[-1]["sent"] == 1 and got[-1]["reason"] is None
