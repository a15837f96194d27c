"""POST /v1/realtime/calls and DELETE /v1/realtime/calls/{id} on a real call manager over
the fake clock: the record comes back at once, the INVITE is sent; each bad input is a 4xx
in OpenAI's error shape naming its parameter, and nothing is sent; past the limits, 429
with Retry-After."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.api.callevents import SidebandSink
from sipbridge.calls.trunks import Trunks
from sipbridge.metrics import Metrics
from tests.unit.apifakes import Control, Store
from tests.unit.callharness import Harness
from tests.unit.test_outbound import answer, harness


def client(**policy: object) -> tuple[TestClient, Harness]:
    h, _ = harness(**policy)
    control = Control(calls=h.manager, store=Store(), metrics=Metrics(lambda: 0))
    return TestClient(create_app(control, [])), h


def post(c: TestClient, **sipbridge: Any) -> Any:
    return c.post("/v1/realtime/calls", json={
        "type": "realtime", "instructions": "Say hello.", "sipbridge": sipbridge})


def test_post_places_the_call_and_returns_its_record() -> None:
    c, h = client()
    r = post(c, to="tel:+14155550123", headers={"X-Campaign": "7"}, greet=False)
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["direction"] == "outbound" and record["state"] == "ringing"
    assert record["outbound"]["status"] == "dialing"
    invite = h.requests[-1]
    assert invite.method == "INVITE" and invite.headers.get("X-Campaign") == "7"
    call = h.manager.calls[record["id"]]
    assert call.session is not None and call.session["instructions"] == "Say hello."
    assert call.options["greet"] is False
    got = c.get(f"/v1/realtime/calls/{call.id}").json()
    assert got["outbound"]["status"] == "dialing"
    answer(h, invite, 180)
    assert c.delete(f"/v1/realtime/calls/{call.id}").status_code == 200
    assert h.requests[-1].method == "CANCEL"


@pytest.mark.parametrize(("options", "param"), [
    ({}, "sipbridge.to"),
    ({"to": "mailto:bob@example.com"}, "sipbridge.to"),
    ({"to": "tel:555"}, "sipbridge.to"),
    ({"to": "sip:bob@example.com>"}, "sipbridge.to"),
    ({"to": "tel:+1555", "trunk": "nope"}, "sipbridge.trunk"),
    ({"to": "tel:+1555", "trunk": 7}, "sipbridge.trunk"),
    ({"to": "tel:+1555", "ring_timeout": 0}, "sipbridge.ring_timeout"),
    ({"to": "tel:+1555", "ring_timeout": 601}, "sipbridge.ring_timeout"),
    ({"to": "tel:+1555", "ring_timeout": "30"}, "sipbridge.ring_timeout"),
    ({"to": "tel:+1555", "headers": {"X-A": "a\r\nB: c"}}, "sipbridge.headers"),
    ({"to": "tel:+1555", "headers": {"Bad Name": "x"}}, "sipbridge.headers"),
    ({"to": "tel:+1555", "headers": {"Call-ID": "x"}}, "sipbridge.headers"),
    ({"to": "tel:+1555", "from": "a b"}, "sipbridge.from"),
    ({"to": "tel:+1555", "from": "mailto:x"}, "sipbridge.from"),
    ({"to": "tel:+1555", "greet": "no"}, "sipbridge.greet"),
    ({"to": "tel:+1555", "transfer_fallback": "juggle"}, "sipbridge.transfer_fallback"),
    ({"to": "tel:+1555", "transfer_targets": {"x": "mailto:x"}},
     "sipbridge.transfer_targets.x"),
])
def test_bad_input_is_a_400_naming_the_parameter_and_sends_nothing(
        options: dict[str, Any], param: str) -> None:
    c, h = client()
    r = post(c, **options)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]
    assert h.requests == [] and h.manager.calls == {} and h.media.pool.in_use == 0


def test_a_bad_session_field_is_a_400_too() -> None:
    c, h = client()
    r = c.post("/v1/realtime/calls", json={"type": "realtime", "voice": 7,
                                           "sipbridge": {"to": "tel:+1555"}})
    assert r.status_code == 400 and r.json()["error"]["param"]
    assert h.requests == []


def test_past_the_concurrent_limit_is_429_with_retry_after() -> None:
    c, h = client(max_calls=1, calls_per_second=100.0)
    assert post(c, to="tel:+1555").status_code == 200
    r = post(c, to="tel:+1556")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(h.manager.calls) == 1 and len(
        [q for q in h.requests if q.method == "INVITE"]) == 1


def test_past_the_rate_is_429() -> None:
    c, h = client(max_calls=10, calls_per_second=1.0)
    assert post(c, to="tel:+1555").status_code == 200
    r = post(c, to="tel:+1556")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert h.media.pool.in_use == 1


def test_delete_unknown_call_is_404() -> None:
    c, _ = client()
    r = c.delete("/v1/realtime/calls/rtc_nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_no_trunk_configured_is_a_400_on_the_trunk() -> None:
    c, h = client()
    h.manager.outbound.trunks = Trunks()
    r = post(c, to="tel:+1555")
    assert r.status_code == 400 and r.json()["error"]["param"] == "sipbridge.trunk"
    assert "No default trunk" in r.json()["error"]["message"] and h.requests == []


def test_the_sideband_is_open_from_the_start_and_hangup_cancels_a_ringing_call() -> None:
    h, _ = harness()
    control = Control(calls=h.manager, store=Store(), metrics=Metrics(lambda: 0))
    h.events.subscribe(SidebandSink(control.sideband))  # as the gateway does
    c = TestClient(create_app(control, []))
    record = post(c, to="tel:+14155550123").json()
    assert record["id"] in control.sideband.sessions  # the sideband takes clients now
    answer(h, h.requests[-1], 183)
    assert c.post(f"/v1/realtime/calls/{record['id']}/hangup").status_code == 200
    cancel = h.requests[-1]
    assert cancel.method == "CANCEL"
    answer(h, cancel, 200)
    invite = next(r for r in h.requests if r.method == "INVITE")
    answer(h, invite, 487)
    got = c.get(f"/v1/realtime/calls/{record['id']}").json()
    assert got["state"] == "ended" and got["outbound"]["status"] == "cancelled"
    assert record["id"] not in control.sideband.sessions  # let go at the end


def test_an_outbound_call_offers_send_dtmf_unless_told_not_to() -> None:
    c, h = client()
    names = []
    for options in ({}, {"send_dtmf": False}):
        r = post(c, to="tel:+14155550123", **options)
        assert r.status_code == 200, r.text
        session = h.manager.calls[r.json()["id"]].session
        assert session is not None
        tools = session.get("tools")
        assert isinstance(tools, list | None)
        names.append([t["name"] for t in tools or []])
    assert names == [["send_dtmf"], []]
    r = post(c, to="tel:+14155550123", send_dtmf="yes")
    assert r.status_code == 400 and r.json()["error"]["param"] == "sipbridge.send_dtmf"
