"""Outbound calls on the calls plane, sans-IO over the fake clock: each outcome, the ring
timeout's CANCEL, cancel while ringing, limits, early media; after every outcome no leg
or transaction is left and the RTP port is back in the pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sipbridge.agent.bridge import AgentBridge
from sipbridge.agent.lifecycle import Agents
from sipbridge.api.callevents import SidebandSink, WebhookSink
from sipbridge.calls.call import Call, CallError, CallState, Trunk
from sipbridge.calls.events import CallEvent, MediaStarted, Noted
from sipbridge.calls.outbound import Outbound, OutboundLimit, OutboundPolicy, from_uri
from sipbridge.calls.sinks import MetricsSink
from sipbridge.calls.trunks import Trunks, trunk_from_registration
from sipbridge.config import ConfigError, RegistrationConfig, load_config
from sipbridge.metrics import Metrics
from sipbridge.realtime.sideband import SidebandHubs
from sipbridge.sip.address import Address
from sipbridge.sip.message import Request, response_to
from sipbridge.webhookevents import EVENT_TYPES
from tests.unit.callharness import Harness

TRUNK = Address("udp", "127.0.0.1", 5070)
ANSWER = (
    "v=0\r\no=- 9 9 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 7000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na=sendrecv\r\n"
)


class Outcomes:
    """The outbound timeline entries and the calls whose media started."""

    def __init__(self) -> None:
        self.steps: list[dict[str, object]] = []
        self.media: list[Call] = []

    def observe(self, event: CallEvent) -> None:
        if isinstance(event, Noted) and event.entry["kind"] == "outbound":
            self.steps.append(event.entry)
        elif isinstance(event, MediaStarted):
            self.media.append(event.call)

    def statuses(self) -> list[object]:
        return [s["status"] for s in self.steps]


def harness(**policy: object) -> tuple[Harness, Outcomes]:
    h = Harness()
    trunks = Trunks([
        Trunk(TRUNK, "sip:+15550001@trunk.example", "trunk.example", name="default",
              pai="<tel:+15550001>", headers=(("X-Account", "42"),)),
        Trunk(TRUNK, "sip:gw@other.example", "other.example", ("user", "pw"), name="other",
              dtmf="info"),
    ])
    h.manager.outbound = Outbound(h.manager, OutboundPolicy(trunks, **policy))  # type: ignore[arg-type]
    seen = Outcomes()
    h.events.subscribe(seen)
    return h, seen


def place(h: Harness, to: str = "tel:+14155550123", **how: object) -> tuple[Call, Request]:
    call = h.manager.place(to, {"type": "realtime"}, {}, **how)
    invite = h.requests[-1]
    assert invite.method == "INVITE"
    return call, invite


def answer(h: Harness, invite: Request, status: int, body: str = "",
           to_tag: str = "t1", **headers: str) -> None:
    extra = [("Contact", "<sip:peer@127.0.0.1:5070>"), *headers.items()]
    if body:
        extra.append(("Content-Type", "application/sdp"))
    response = response_to(invite, status, to_tag=to_tag, headers=extra,
                           body=body.encode())
    h.send(response.to_bytes(), TRUNK)


def clean(h: Harness) -> None:
    """After the call: no SIP state once its transactions expire, the port is free."""
    h.advance(40.0)
    assert h.media.pool.in_use == 0 and h.media.sessions == {}
    assert h.ua.held == {"server_transactions": 0, "client_transactions": 0, "legs": 0,
                         "dialogs": 0, "incoming_call_ids": 0}
    assert h.manager.outbound.live == 0 and h.manager.calls == {}


def test_answered_call_starts_its_media_and_is_an_ordinary_call() -> None:
    h, seen = harness()
    call, invite = place(h)
    assert str(invite.uri) == "sip:+14155550123@trunk.example"
    assert invite.headers.get("P-Asserted-Identity") == "<tel:+15550001>"
    assert invite.headers.get("X-Account") == "42"
    assert call.direction == "outbound" and call.state is CallState.RINGING
    answer(h, invite, 180)
    answer(h, invite, 200, ANSWER)
    assert seen.statuses() == ["dialing", "ringing", "answered"]
    assert seen.steps[-1]["final"] is True and seen.steps[-1]["sip_status"] == 200
    assert call.to_dict()["state"] == "active" and seen.media == [call]
    assert h.requests[-1].method == "ACK"
    record = call.to_dict()
    assert record["direction"] == "outbound"
    assert record["outbound"] == {"status": "answered", "sip_status": 200, "reason": None,
                                  "trunk": "default", "to": "tel:+14155550123"}
    h.manager.hangup(call.id)
    assert h.requests[-1].method == "BYE"
    answer(h, h.requests[-1], 200)
    assert call.to_dict()["state"] == "ended" and call.end_reason == "hangup"
    clean(h)


@pytest.mark.parametrize(("status", "outcome"), [
    (486, "busy"), (600, "busy"), (480, "no_answer"), (408, "no_answer"),
    (404, "rejected"), (503, "rejected"), (302, "rejected"),
])
def test_final_failure_statuses_become_outcomes(status: int, outcome: str) -> None:
    h, seen = harness()
    call, invite = place(h)
    answer(h, invite, 183)
    answer(h, invite, status)
    assert seen.statuses() == ["dialing", "ringing", outcome]
    assert call.outbound is not None and call.outbound["sip_status"] == status
    assert call.state is CallState.ENDED and call.end_reason == outcome
    assert call.final_status == status and seen.media == []
    clean(h)


def test_ring_timeout_cancels_and_is_no_answer() -> None:
    h, seen = harness()
    call, invite = place(h, ring_timeout=5.0)
    answer(h, invite, 180)
    h.advance(4.9)
    assert not any(r.method == "CANCEL" for r in h.requests)
    h.advance(0.2)
    cancel = h.requests[-1]
    assert cancel.method == "CANCEL"
    answer(h, cancel, 200)
    answer(h, invite, 487)
    assert seen.statuses() == ["dialing", "ringing", "no_answer"]
    assert call.outbound is not None and call.outbound["reason"] == "ring timeout"
    clean(h)


def test_default_ring_timeout_is_the_policys() -> None:
    h, _ = harness(ring_timeout=12.0)
    _, invite = place(h)
    answer(h, invite, 100)
    h.advance(11.0)
    assert not any(r.method == "CANCEL" for r in h.requests)
    h.advance(1.5)
    assert h.requests[-1].method == "CANCEL"


def test_hangup_while_ringing_cancels() -> None:
    h, seen = harness()
    call, invite = place(h)
    answer(h, invite, 180)
    h.manager.hangup(call.id)
    cancel = h.requests[-1]
    assert cancel.method == "CANCEL" and call.final_status is None
    answer(h, cancel, 200)
    answer(h, invite, 487)
    assert seen.statuses() == ["dialing", "ringing", "cancelled"]
    assert call.end_reason == "cancelled"
    clean(h)


def test_answer_crossing_our_cancel_is_ended_with_bye_and_stays_cancelled() -> None:
    h, seen = harness()
    call, invite = place(h)
    h.manager.hangup(call.id)
    answer(h, invite, 200, ANSWER)
    assert [r.method for r in h.requests][-2:] == ["ACK", "BYE"]
    answer(h, h.requests[-1], 200)
    assert seen.statuses() == ["dialing", "cancelled"] and seen.media == []
    clean(h)


def test_bad_sdp_answer_fails_with_a_bye() -> None:
    h, seen = harness()
    call, invite = place(h)
    answer(h, invite, 200, "v=0\r\nnonsense\r\n")
    assert h.requests[-1].method == "BYE"
    answer(h, h.requests[-1], 200)
    assert seen.statuses() == ["dialing", "failed"]
    assert call.outbound is not None and str(call.outbound["reason"]).startswith(
        "bad SDP answer")
    assert seen.media == []
    clean(h)


def test_no_response_at_all_is_no_answer_after_timer_b() -> None:
    h, seen = harness()
    call, _ = place(h, ring_timeout=600.0)
    h.advance(33.0)
    assert seen.statuses() == ["dialing", "no_answer"] and call.final_status == 408
    clean(h)


def test_transport_error_fails() -> None:
    h, seen = harness()
    call, invite = place(h)
    h.driver.send_failed(invite.to_bytes(), TRUNK, "connection refused")
    assert seen.statuses() == ["dialing", "failed"]
    assert call.outbound is not None
    assert call.outbound["reason"] == "transport error: connection refused"
    clean(h)


def test_early_media_starts_before_the_answer_and_the_answer_updates_it() -> None:
    h, seen = harness()
    call, invite = place(h)
    answer(h, invite, 183, ANSWER)
    session = h.media.sessions[call.id]
    assert seen.media == [] and call.state is CallState.RINGING
    answer(h, invite, 200, ANSWER.replace("7000", "7002"))
    assert h.media.sessions[call.id] is session and seen.media == [call]
    assert session.audio.remote_port == 7002
    h.manager.hangup(call.id)
    answer(h, h.requests[-1], 200)
    clean(h)


def test_early_media_then_rejected_frees_the_port() -> None:
    h, seen = harness()
    _, invite = place(h)
    answer(h, invite, 183, ANSWER)
    answer(h, invite, 486)
    assert seen.statuses() == ["dialing", "ringing", "busy"]
    clean(h)


def test_digest_challenge_is_answered_with_the_trunks_credentials() -> None:
    h, seen = harness()
    call, invite = place(h, trunk="other")
    assert call.dtmf_method == "info"
    answer(h, invite, 401, **{"WWW-Authenticate":
                              'Digest realm="trunk", nonce="abc", algorithm=MD5'})
    retry = h.requests[-1]
    assert retry.method == "INVITE" and "username=\"user\"" in (
        retry.headers.get("Authorization") or "")
    answer(h, retry, 200, ANSWER)
    assert seen.statuses() == ["dialing", "answered"]
    h.manager.hangup(call.id)
    answer(h, h.requests[-1], 200)
    clean(h)


def test_unknown_trunk_sends_nothing() -> None:
    h, _ = harness()
    with pytest.raises(CallError):
        h.manager.place("tel:+1555", {}, {}, trunk="nope")
    assert h.requests == [] and h.media.pool.in_use == 0 and h.manager.calls == {}


def test_concurrent_limit() -> None:
    h, _ = harness(max_calls=2, calls_per_second=100.0)
    place(h)
    place(h)
    sent = len(h.requests)
    with pytest.raises(OutboundLimit) as exc:
        h.manager.place("tel:+1555", {}, {})
    assert exc.value.status == 429 and exc.value.retry_after >= 1
    assert len(h.requests) == sent and h.media.pool.in_use == 2


def test_rate_limit_is_a_token_bucket() -> None:
    h, _ = harness(max_calls=100, calls_per_second=2.0)
    _, invite = place(h)
    place(h)
    with pytest.raises(OutboundLimit) as exc:
        h.manager.place("tel:+1555", {}, {})
    assert exc.value.retry_after == 1 and h.media.pool.in_use == 2
    h.advance(0.5)
    place(h)  # one token back after half a second
    answer(h, invite, 486)
    assert h.manager.outbound.live == 2


def test_from_override() -> None:
    trunk = Trunk(TRUNK, "sip:+15550001@trunk.example", "trunk.example")
    assert from_uri(trunk, None) == "sip:+15550001@trunk.example"
    assert from_uri(trunk, "+15559999") == "sip:+15559999@trunk.example"
    assert from_uri(trunk, "tel:+15559999") == "sip:+15559999@trunk.example"
    assert from_uri(trunk, "sip:me@mine.example") == "sip:me@mine.example"


def test_body_from_and_headers_go_on_the_invite() -> None:
    h, _ = harness()
    _, invite = place(h, "sip:alice@127.0.0.1:5090", from_="+15558888",
                      headers=[("X-Campaign", "7")])
    assert str(invite.uri) == "sip:alice@127.0.0.1:5090"
    assert str(invite.from_.uri) == "sip:+15558888@trunk.example"
    assert invite.headers.get("X-Campaign") == "7"


def test_a_registration_is_a_trunk() -> None:
    r = RegistrationConfig.model_validate({
        "name": "acme", "registrar": "sip:127.0.0.1:5099",
        "aor": "sip:+15551234@acme.example", "password": "pw"})
    trunk = trunk_from_registration(r)
    assert trunk.name == "acme" and trunk.address == Address("udp", "127.0.0.1", 5099)
    assert trunk.from_uri == "sip:+15551234@acme.example"
    assert trunk.credentials == ("+15551234", "pw") and trunk.domain == "acme.example"


class Sender:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any], on_attempt: object = None) -> object:
        self.sent.append(event)
        return object()


class Hubs(SidebandHubs):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[dict[str, Any]] = []

    def publish(self, call_id: str, event: dict[str, Any]) -> None:
        self.published.append(event)


def test_each_change_is_a_sideband_event_the_outcome_a_webhook_and_a_metric() -> None:
    h, _ = harness()
    sender, hubs, metrics = Sender(), Hubs(), Metrics(lambda: 0)
    h.events.subscribe(SidebandSink(hubs))
    h.events.subscribe(WebhookSink([(sender, frozenset(EVENT_TYPES))],  # type: ignore[list-item]
                                   h.events, metrics))
    h.events.subscribe(MetricsSink(metrics))
    call, invite = place(h)
    answer(h, invite, 180)
    answer(h, invite, 486)
    updates = [e for e in hubs.published if e["type"] == "call.outbound.updated"]
    assert [(e["status"], e["final"]) for e in updates] == [
        ("dialing", False), ("ringing", False), ("busy", True)]
    assert updates[-1]["sip_status"] == 486 and updates[-1]["call_id"] == call.id
    assert [e["type"] for e in sender.sent] == ["realtime.call.outbound.busy"]
    assert sender.sent[0]["data"]["call_id"] == call.id
    assert metrics.outbound.labels("busy")._value.get() == 1


def test_trunks_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "sipbridge.toml"
    path.write_text(
        '[trunk]\naddress = "127.0.0.1:5070"\nfrom_uri = "sip:+15550001@carrier.example"\n'
        'pai = "<tel:+15550001>"\n\n'
        '[trunks.backup]\naddress = "127.0.0.1:5080"\ntransport = "tcp"\ndtmf = "info"\n'
        'username = "u"\npassword = "p"\nheaders = { X-Account = "42" }\n\n'
        '[[registration]]\nname = "acme"\nregistrar = "127.0.0.1:5099"\n'
        'aor = "sip:+15551234@acme.example"\npassword = "pw"\n')
    config = load_config(path)
    trunks = Trunks.from_config(config)
    assert sorted(trunks) == ["acme", "backup", "default"]
    assert trunks.default is not None and trunks.default.pai == "<tel:+15550001>"
    backup = trunks["backup"]
    assert backup.address == Address("tcp", "127.0.0.1", 5080) and backup.dtmf == "info"
    assert backup.headers == (("X-Account", "42"),) and backup.credentials == ("u", "p")
    assert trunks["acme"].from_uri == "sip:+15551234@acme.example"
    assert config.outbound_max_calls == 50 and config.outbound_calls_per_second == 10
    assert config.outbound_ring_timeout == 30


@pytest.mark.parametrize("table", [
    'dtmf = "tones"', 'headers = { "Bad Name" = "x" }', 'headers = { X-A = "a\\r\\nB: c" }',
    'headers = { Call-ID = "x" }', 'headers = { f = "<sip:x@y>" }',
])
def test_a_bad_trunk_is_a_config_error(tmp_path: Path, table: str) -> None:
    path = tmp_path / "sipbridge.toml"
    path.write_text(f'[trunks.bad]\naddress = "127.0.0.1:5070"\n{table}\n')
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize(("options", "greet"), [({}, True), ({"greet": False}, False)])
def test_the_agent_joins_an_answered_call_with_its_session_and_greets_unless_told(
        monkeypatch: pytest.MonkeyPatch, options: dict[str, object], greet: bool) -> None:
    monkeypatch.setattr(AgentBridge, "start", lambda self: None)
    h, _ = harness()
    config = load_config(store="off", http="off", auto_answer="agent")
    agents = Agents(config, "ws://127.0.0.1:9/v1/realtime", h.manager, h.events,
                    SidebandHubs(), Metrics(lambda: 0), h.media, None)
    h.events.subscribe(agents)
    call = h.manager.place("tel:+14155550123", {"type": "realtime", "instructions": "Hi."},
                           options)
    answer(h, h.requests[-1], 200, ANSWER)
    bridge = agents.bridges[call.id]
    assert bridge.greet is greet
    assert call.session == {"type": "realtime", "instructions": "Hi."}  # not the default's


def test_an_answered_outbound_call_can_be_transferred() -> None:
    h, _ = harness()
    call, invite = place(h)
    answer(h, invite, 200, ANSWER)
    job = h.manager.refer(call.id, "tel:+14155550100")
    refer = h.requests[-1]
    assert refer.method == "REFER" and refer.call_id == invite.call_id
    assert refer.headers.get("Refer-To") == "<tel:+14155550100>" and job.status == "sent"


def test_each_endpoint_gets_the_types_it_asked_for_the_same_event_to_each() -> None:
    h, _ = harness()
    every, incoming_only, busy = Sender(), Sender(), Sender()
    endpoints: list[Any] = [
        (every, frozenset(EVENT_TYPES)), (incoming_only, frozenset({"realtime.call.incoming"})),
        (busy, frozenset({"realtime.call.outbound.busy"}))]
    h.events.subscribe(WebhookSink(endpoints, h.events, Metrics(lambda: 0)))
    call, invite = place(h)
    answer(h, invite, 486)
    assert incoming_only.sent == []
    assert [e["type"] for e in every.sent] == ["realtime.call.outbound.busy"]
    assert busy.sent == every.sent and busy.sent[0] is every.sent[0]  # one event, one id
    assert len(call.webhooks) == 2  # a delivery per endpoint on the call's record
