"""Warm transfers through the call manager (calls.warm_runner), sans-IO: the harness's
caller, and the person's phone a second UA wired to the gateway; every path ends with no
leg, no dialog and no RTP port left."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from sipbridge import trace
from sipbridge.api.app import create_app
from sipbridge.calls.call import Call, CallError, CallState, TransferJob, Trunk
from sipbridge.calls.events import CallEvent, TransferStepped
from sipbridge.calls.transfer_machine import TransferTimers
from sipbridge.calls.warm_runner import PERSON_BYE_GRACE, supports_replaces
from sipbridge.config import ConfigError, load_config
from sipbridge.media.hold import HoldAudio, hold_tone
from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.events import CallEnded, Event, IncomingCall
from sipbridge.sip.message import Request, response_to
from sipbridge.sip.ua import UaConfig, UserAgent
from tests.unit.apifakes import Control, Store
from tests.unit.callharness import OFFER, Harness, answered_app_call, notify

PERSON = Address("udp", "127.0.0.1", 5070)
GATEWAY = Address("udp", "127.0.0.1", 5060)
TARGET = "sip:alex@127.0.0.1:5070"
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\n")
TIMERS = TransferTimers(refer_timeout=4, notify_timeout=10, ring_timeout=20, brief_timeout=30)


class Person:
    """The person's phone: a UA at 5070 that the gateway's messages to 5070 reach."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.ua = UserAgent(UaConfig(host="127.0.0.1", port=5070), AccessGuard(["127.0.0.0/8"]))
        self.events: list[Event] = []
        self.inbox: list[bytes] = []
        wire = h.driver.wire

        class Relay:
            def send(_, data: bytes, dest: Address) -> None:
                if dest.port == 5070:
                    self.inbox.append(data)
                else:
                    wire.send(data, dest)

            def drop(_, source: Address) -> None:
                pass

        h.driver.wire = Relay()

    def run(self) -> None:
        moved = True
        while moved:
            inbox, self.inbox = self.inbox, []
            for data in inbox:
                self.ua.receive(data, GATEWAY, self.h.now)
            out = self.ua.outgoing()
            for data, _ in out:
                self.h.send(data, PERSON)
            self.events += self.ua.events()
            moved = bool(inbox or out)

    def leg(self) -> str:
        self.run()
        calls = [e for e in self.events if isinstance(e, IncomingCall)]
        assert calls, "the person's phone got no call"
        return calls[-1].leg_id

    def do(self, action: str, *args: object) -> None:
        getattr(self.ua, action)(self.leg(), *args, self.h.now)
        self.run()


@pytest.fixture
def setup() -> Iterator[tuple[Harness, Call, Person]]:
    h, call = answered_app_call()
    person = Person(h)
    yield h, call, person
    h.loop.close()


def steps_of(h: Harness, job: TransferJob) -> list[str]:
    return [s.status for s in job.machine.steps]


def warm(h: Harness, call: Call, person: Person, **kwargs: object) -> TransferJob:
    job = h.manager.refer(call.id, TARGET, mode="warm", brief="A caller about an invoice",
                          timers=TIMERS, **kwargs)  # type: ignore[arg-type]
    person.run()
    return job


def answered(h: Harness, call: Call, person: Person, **kwargs: object) -> TransferJob:
    job = warm(h, call, person, **kwargs)
    person.do("ring")
    person.do("answer", SDP)
    assert job.status == "briefing", steps_of(h, job)
    return job


def clean(h: Harness, person: Person, call: Call) -> None:
    """No warm leg, no dialog of it, no port of it left; the hold audio off."""
    person.run()
    assert h.media.pool.in_use == (1 if call.state is CallState.ACTIVE else 0)
    h.advance(40)  # transactions end
    person.run()
    assert f"{call.id}:warm" not in h.media.sessions
    assert f"{call.id}:warm" not in h.media._pending
    warm = h.manager.transfers.warm
    assert not warm._legs and not warm._holds and not warm._refers and not warm._graces
    caller = h.media.sessions.get(call.id)
    assert caller is None or not isinstance(caller.on_audio, HoldAudio)


def test_the_person_answers_and_the_caller_is_bridged_after_the_decision(setup: tuple[
        Harness, Call, Person]) -> None:
    h, call, person = setup
    job = warm(h, call, person)
    invite = next(e for e in person.events if isinstance(e, IncomingCall)).request
    assert str(invite.uri).endswith("@127.0.0.1:5070") and invite.body.startswith(b"v=0")
    assert job.mode == "warm" and job.warm is not None
    assert job.warm.brief == "A caller about an invoice"
    caller = h.media.sessions[call.id]
    assert isinstance(caller.on_audio, HoldAudio)  # the caller is on hold while dialing
    person.do("ring")
    person.do("answer", SDP)
    assert steps_of(h, job) == ["requested", "dialing", "ringing", "answered", "briefing"]
    person_media = h.media.sessions[job.warm.media_key]
    h.manager.warm_decision(call.id, job.id, True, "the person takes the call")
    assert steps_of(h, job)[-2:] == ["connecting", "connected"]
    assert job.warm.how == "bridge" and job.machine.reason == "connected by bridge"
    assert caller.on_audio is not None and not isinstance(caller.on_audio, HoldAudio)
    assert person_media.on_audio is not None  # each side's audio goes to the other
    with pytest.raises(CallError):  # decided already
        h.manager.warm_decision(call.id, job.id, False, "")
    # The person hangs up: so does the gateway, and the call ends.
    person.do("hangup")
    assert call.state is CallState.ENDED and call.end_reason == "bridge_ended"
    clean(h, person, call)
    assert h.ua.held["legs"] == 0 and h.ua.held["dialogs"] == 0
    assert h.media.pool.in_use == 0  # the caller's port and the person's returned


def test_the_caller_hanging_up_after_the_bridge_ends_the_persons_call(setup: tuple[
        Harness, Call, Person]) -> None:
    h, call, person = setup
    job = answered(h, call, person)
    h.manager.warm_decision(call.id, job.id, True, "ok")
    h.manager.hangup(call.id)
    person.run()
    assert any(isinstance(e, CallEnded) for e in person.events)
    clean(h, person, call)
    assert job.status == "connected"


def test_no_decision_by_brief_timeout_connects(setup: tuple[Harness, Call, Person]) -> None:
    h, call, person = setup
    job = answered(h, call, person)
    h.advance(29)
    assert job.status == "briefing"
    h.advance(1.5)
    assert steps_of(h, job)[-2:] == ["connecting", "connected"]
    assert job.machine.steps[-2].reason == "no decision within 30 s of the answer: connecting"


def test_declined_brings_the_caller_back(setup: tuple[Harness, Call, Person]) -> None:
    h, call, person = setup
    job = answered(h, call, person)
    h.manager.warm_decision(call.id, job.id, False, "not my department")
    assert job.status == "returned" and job.machine.reason == "declined: not my department"
    person.run()
    assert any(isinstance(e, CallEnded) for e in person.events)  # our BYE
    assert call.state is CallState.ACTIVE
    assert h.media.sessions[call.id].on_audio is None  # hold off, for the agent to take
    clean(h, person, call)


def test_no_answer_cancels_at_ring_timeout(setup: tuple[Harness, Call, Person]) -> None:
    h, call, person = setup
    job = warm(h, call, person)
    person.do("ring")
    h.advance(20)
    person.run()
    assert steps_of(h, job) == ["requested", "dialing", "ringing", "returned"]
    assert (job.machine.reason or "").startswith("no_answer:")
    assert call.state is CallState.ACTIVE
    clean(h, person, call)


@pytest.mark.parametrize(("code", "prefix"), [(486, "busy"), (600, "busy"),
                                              (603, "declined"), (404, "rejected 404")])
def test_refused(setup: tuple[Harness, Call, Person], code: int, prefix: str) -> None:
    h, call, person = setup
    job = warm(h, call, person)
    person.do("reject", code)
    assert job.status == "returned" and (job.machine.reason or "").startswith(prefix + ":")
    assert job.machine.sip_status == code
    clean(h, person, call)


def test_the_person_hangs_up_during_the_brief(setup: tuple[Harness, Call, Person]) -> None:
    h, call, person = setup
    job = answered(h, call, person)
    person.do("hangup")
    assert job.machine.reason == "hung_up: the person hung up during the brief"
    assert call.state is CallState.ACTIVE
    clean(h, person, call)


def test_a_bad_sdp_answer_returns_and_hangs_up(setup: tuple[Harness, Call, Person]) -> None:
    h, call, person = setup
    job = warm(h, call, person)
    person.do("answer", b"v=0\r\nnonsense\r\n")
    assert job.status == "returned" and (job.machine.reason or "").startswith("failed: bad SDP")
    clean(h, person, call)


@pytest.mark.parametrize("answered_first", [False, True])
def test_the_caller_hanging_up_cancels(setup: tuple[Harness, Call, Person],
                                       answered_first: bool) -> None:
    h, call, person = setup
    job = answered(h, call, person) if answered_first else warm(h, call, person)
    h.send(f"BYE sip:sipbridge@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;"
           f"branch=z9hG4bKbye\nFrom: <sip:carrier@127.0.0.1>;tag=c1\nTo: <sip:bot@127.0.0."
           f"1>;tag={h.sent[-1].to.tag}\nCall-ID: call-1\nCSeq: 9 BYE\nMax-Forwards: 70\n"
           f"Content-Length: 0\n\n")
    assert call.state is CallState.ENDED
    assert job.status == "cancelled"
    person.run()
    assert any(isinstance(e, CallEnded) for e in person.events)  # CANCEL or BYE
    clean(h, person, call)


def test_no_route_without_a_trunk_returns_at_once(setup: tuple[Harness, Call, Person]
                                                  ) -> None:
    h, call, person = setup
    job = h.manager.refer(call.id, "tel:+14155550123", mode="warm", brief="x")
    assert steps_of(h, job) == ["requested", "returned"]
    assert job.machine.reason == "failed: no outbound trunk configured to dial a tel: number"
    job = h.manager.refer(call.id, "sip:alex@pbx.example.com", mode="warm")
    assert (job.machine.reason or "").startswith("failed: no trunk configured, and pbx.example.com")
    assert not [r for r in h.requests if r.method == "INVITE"]
    clean(h, person, call)


def test_a_warm_transfer_on_a_transferring_call_is_refused(setup: tuple[
        Harness, Call, Person]) -> None:
    h, call, person = setup
    warm(h, call, person)
    with pytest.raises(CallError) as exc:
        h.manager.refer(call.id, TARGET, mode="warm")
    assert exc.value.kind == "conflict"
    assert len(call.transfers) == 1
    with pytest.raises(CallError) as exc:
        h.manager.warm_decision(call.id, call.transfers[0].id, True, "")  # still dialing
    assert exc.value.kind == "conflict"
    with pytest.raises(CallError) as exc:
        h.manager.warm_decision(call.id, "xfer_nope", True, "")
    assert exc.value.kind == "not_found"


def test_every_step_is_reported_in_order(setup: tuple[Harness, Call, Person]) -> None:
    h, call, person = setup
    seen: list[str] = []

    class Steps:
        def observe(self, event: CallEvent) -> None:
            if isinstance(event, TransferStepped) and event.step is not None:
                seen.append(event.step.status)

    h.events.subscribe(Steps())
    job = answered(h, call, person)
    h.manager.warm_decision(call.id, job.id, True, "ok")
    assert seen == ["requested", "dialing", "ringing", "answered", "briefing", "connecting",
                    "connected"]
    entries = [e["status"] for e in call.timeline if e["kind"] == "transfer"]
    assert entries == seen
    assert job.to_dict()["mode"] == "warm"


# ---- connecting by REFER with Replaces ------------------------------------------------


def replaces_call(setup: tuple[Harness, Call, Person]) -> tuple[TransferJob, Request]:
    h, call, person = setup
    call.sip_headers.append(("Supported", "replaces, timer"))
    job = answered(h, call, person)
    h.manager.warm_decision(call.id, job.id, True, "ok")
    refer = [r for r in h.requests if r.method == "REFER"][-1]
    return job, refer


def test_replaces_refer_names_the_persons_dialog(setup: tuple[Harness, Call, Person]
                                                 ) -> None:
    h, _call, _person = setup
    job, refer = replaces_call(setup)
    assert job.status == "connecting"
    refer_to = refer.headers.get("Refer-To") or ""
    uri, _, query = refer_to.strip("<>").partition("?Replaces=")
    dialog = h.ua.leg(job.warm.leg_id or "").dialog  # type: ignore[union-attr]
    assert uri == str(dialog.remote_target)
    assert unquote(query) == (f"{dialog.call_id};to-tag={dialog.remote_tag};"
                              f"from-tag={dialog.local_tag}")
    assert "%3Bto-tag%3D" in query


def test_replaces_succeeds_and_the_gateway_leaves(setup: tuple[Harness, Call, Person]
                                                  ) -> None:
    h, call, person = setup
    job, refer = replaces_call(setup)
    h.send(response_to(refer, 202).to_bytes())
    assert notify(h, "refer", "SIP/2.0 200 OK", cseq=3, state="terminated") == 200
    assert job.status == "connected" and job.warm is not None and job.warm.how == "replaces"
    assert call.state is CallState.ENDED and call.end_reason == "transferred"
    # The person's UA did not end our leg: the gateway does after a grace period.
    h.advance(PERSON_BYE_GRACE + 0.1)
    person.run()
    assert any(isinstance(e, CallEnded) for e in person.events)
    clean(h, person, call)


@pytest.mark.parametrize("how", ["rejected", "failed"])
def test_replaces_failing_bridges_instead(setup: tuple[Harness, Call, Person],
                                         how: str) -> None:
    h, call, _person = setup
    job, refer = replaces_call(setup)
    if how == "rejected":
        h.send(response_to(refer, 501).to_bytes())
    else:
        h.send(response_to(refer, 202).to_bytes())
        notify(h, "refer", "SIP/2.0 503 Service Unavailable", cseq=3, state="terminated")
    assert job.status == "connected" and job.warm is not None and job.warm.how == "bridge"
    assert call.state is CallState.ACTIVE
    assert any(e["kind"] == "replaces" for e in call.timeline)


def test_replaces_unanswered_bridges_at_refer_timeout(setup: tuple[Harness, Call, Person]
                                                      ) -> None:
    h, _call, _person = setup
    job, _ = replaces_call(setup)
    h.advance(4.1)
    assert job.status == "connected" and job.warm is not None and job.warm.how == "bridge"


def test_connect_bridge_forced_sends_no_refer(setup: tuple[Harness, Call, Person]) -> None:
    h, call, person = setup
    call.sip_headers.append(("Supported", "replaces"))
    job = answered(h, call, person, connect="bridge")
    h.manager.warm_decision(call.id, job.id, True, "ok")
    assert not [r for r in h.requests if r.method == "REFER"]
    assert job.warm is not None and job.warm.how == "bridge"


def test_supports_replaces_reads_the_invite() -> None:
    call = Call("c", "l", "a", "b", 0.0, sip_headers=[("k", "100rel, Replaces")])
    assert supports_replaces(call)
    assert not supports_replaces(Call("c", "l", "a", "b", 0.0,
                                      sip_headers=[("Supported", "replaces-not")]))


def test_hold_audio_keeps_the_playout_a_little_ahead(setup: tuple[Harness, Call, Person]
                                                     ) -> None:
    h, call, _ = setup
    caller = h.media.sessions[call.id]
    tone = hold_tone()
    assert 900 < abs(tone).max() < 1100  # about -30 dBFS
    hold = HoldAudio(caller, tone)
    hold.install()
    for _ in range(5):
        assert caller.on_audio is not None
        caller.on_audio(tone[:160])
        assert 40 <= caller.queued_ms <= 60
    hold.remove()
    assert caller.on_audio is None and caller.queued_ms == 0


assert OFFER  # the caller's offer the harness sends


# ---- the API: POST /v1/realtime/calls/{id}/refer with "sipbridge": {"mode": "warm"} -----


def api(h: Harness) -> TestClient:
    return TestClient(create_app(Control(calls=h.manager, store=Store()), []))


def test_the_api_starts_a_warm_transfer_with_its_timeouts(setup: tuple[
        Harness, Call, Person]) -> None:
    h, call, person = setup
    response = api(h).post(f"/v1/realtime/calls/{call.id}/refer", json={
        "target_uri": TARGET, "sipbridge": {"mode": "warm", "brief": "Invoice 42",
                                            "ring_timeout": 5, "brief_timeout": 7,
                                            "connect": "bridge"}})
    assert response.status_code == 200, response.text
    (job,) = call.transfers
    assert job.mode == "warm" and job.warm is not None and job.warm.brief == "Invoice 42"
    assert job.warm.connect == "bridge" and job.machine.timers.ring_timeout == 5
    assert job.machine.timers.brief_timeout == 7
    assert job.status == "dialing"
    h.advance(5)
    assert job.status == "returned"
    clean(h, person, call)


def test_per_request_timeouts_apply_to_blind_transfers(setup: tuple[
        Harness, Call, Person]) -> None:
    h, call, _ = setup
    response = api(h).post(f"/v1/realtime/calls/{call.id}/refer", json={
        "target_uri": "tel:+14155550123", "sipbridge": {"refer_timeout": 2}})
    assert response.status_code == 200, response.text
    assert call.transfers[0].mode == "blind"
    h.advance(2)
    assert call.transfers[0].status == "timed_out"


def test_the_calls_timeouts_from_accept_sit_under_the_requests(setup: tuple[
        Harness, Call, Person]) -> None:
    h, call, person = setup
    call.options = {"ring_timeout": 4, "brief_timeout": 9}
    response = api(h).post(f"/v1/realtime/calls/{call.id}/refer", json={
        "target_uri": TARGET, "sipbridge": {"mode": "warm", "ring_timeout": 3}})
    assert response.status_code == 200, response.text
    timers = call.transfers[0].machine.timers
    assert (timers.ring_timeout, timers.brief_timeout) == (3, 9)
    h.advance(3)
    assert call.transfers[0].status == "returned"
    clean(h, person, call)


@pytest.mark.parametrize(("options", "param"), [
    ({"mode": "attended"}, "sipbridge.mode"),
    ({"mode": "warm", "brief": ""}, "sipbridge.brief"),
    ({"brief": "hello"}, "sipbridge.brief"),  # blind
    ({"mode": "warm", "ring_timeout": 0}, "sipbridge.ring_timeout"),
    ({"mode": "warm", "brief_timeout": "soon"}, "sipbridge.brief_timeout"),
    ({"mode": "warm", "refer_timeout": 1000}, "sipbridge.refer_timeout"),
    ({"mode": "warm", "connect": "teleport"}, "sipbridge.connect"),
    ({"connect": "bridge"}, "sipbridge.connect"),  # blind
])
def test_bad_warm_options_are_400_naming_the_parameter(
        setup: tuple[Harness, Call, Person], options: dict[str, object], param: str) -> None:
    h, call, person = setup
    response = api(h).post(f"/v1/realtime/calls/{call.id}/refer",
                           json={"target_uri": TARGET, "sipbridge": options})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert not call.transfers and not person.inbox and not h.manager.transfers.warm._legs


def test_a_warm_transfer_on_a_busy_or_ringing_call_is_409(setup: tuple[
        Harness, Call, Person]) -> None:
    h, call, person = setup
    client = api(h)
    body = {"target_uri": TARGET, "sipbridge": {"mode": "warm"}}
    assert client.post(f"/v1/realtime/calls/{call.id}/refer", json=body).status_code == 200
    person.run()
    invites = len(person.events)
    response = client.post(f"/v1/realtime/calls/{call.id}/refer", json=body)
    assert response.status_code == 409 and response.json()["error"]["type"]
    person.run()
    assert len(person.events) == invites and len(call.transfers) == 1  # nothing sent
    h.manager.hangup(call.id)
    response = client.post(f"/v1/realtime/calls/{call.id}/refer", json=body)
    assert response.status_code == 409
    clean(h, person, call)


def test_the_trace_shows_the_warm_steps_in_order(setup: tuple[Harness, Call, Person]) -> None:
    h, call, person = setup
    job = answered(h, call, person)
    h.manager.warm_decision(call.id, job.id, False, "not today")
    rows = [row for row in trace.steps(call.to_dict()) if row.kind == "transfer"]
    assert [row.text.split()[1] for row in rows] == [
        "requested", "dialing", "ringing", "answered", "briefing", "returned"]
    assert rows[-1].text.endswith("(declined: not today)") and rows[-1].failing
    assert not any(row.failing for row in rows[:-1])
    # the person's call is on the ladder too: our INVITE, their 180 and 200, our BYE
    lines = [row.text for row in trace.steps(call.to_dict()) if row.kind == "sip"]
    assert any(line.startswith("INVITE sip:alex@") for line in lines)
    assert any(line.startswith("BYE sip:") for line in lines)


def test_a_person_that_never_responds(setup: tuple[Harness, Call, Person]) -> None:
    h, call, person = setup
    job = h.manager.refer(call.id, TARGET, mode="warm", timers=TIMERS)
    person.inbox.clear()  # the INVITE is lost, and every retransmission
    h.driver.wire = type("Lost", (), {"send": lambda *_: None, "drop": lambda *_: None})()
    h.advance(20)
    assert job.status == "returned" and (job.machine.reason or "").startswith("no_answer")
    h.advance(40)  # the INVITE's transaction times out (Timer B): the leg is gone
    assert not h.manager.transfers.warm._legs
    assert h.ua.held["legs"] == 1  # the caller's
    assert h.media.pool.in_use == 1


def test_a_decision_taken_as_briefing_is_reported_connects(setup: tuple[
        Harness, Call, Person]) -> None:
    """An observer of the steps (no agent on the call) decides at `briefing` itself."""
    h, call, person = setup

    class NoAgent:
        def observe(self, event: CallEvent) -> None:
            if isinstance(event, TransferStepped) and event.step is not None \
                    and event.step.status == "briefing":
                h.manager.warm_decision(event.call.id, event.job.id, True,
                                        "no agent to brief the person")

    h.events.subscribe(NoAgent())
    job = warm(h, call, person)
    person.do("answer", SDP)
    assert steps_of(h, job) == ["requested", "dialing", "answered", "briefing", "connecting",
                                "connected"]
    assert job.machine.steps[-2].reason == "no agent to brief the person"
    assert job.cancel_timer is None  # nothing left to time
    h.advance(100)
    assert job.status == "connected" and call.state is CallState.ACTIVE


@pytest.mark.parametrize("bye_after_accept", ["unconfirmed", "succeeded"])
def test_the_caller_hanging_up_after_accepting_replaces_leaves_the_person_to_it(
        setup: tuple[Harness, Call, Person], bye_after_accept: str) -> None:
    h, call, person = setup
    job, refer = replaces_call(setup)
    job.machine.timers = TransferTimers(4, 10, bye_after_accept, 20, 30)
    h.send(response_to(refer, 202).to_bytes())
    h.send(f"BYE sip:sipbridge@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;"
           f"branch=z9hG4bKbye\nFrom: <sip:carrier@127.0.0.1>;tag=c1\nTo: <sip:bot@127.0.0."
           f"1>;tag={h.sent[-1].to.tag}\nCall-ID: call-1\nCSeq: 9 BYE\n"
           f"Max-Forwards: 70\nContent-Length: 0\n\n")
    person.run()
    assert call.state is CallState.ENDED
    assert job.status == ("connected" if bye_after_accept == "succeeded" else "cancelled")
    assert not any(isinstance(e, CallEnded) for e in person.events)  # left to be replaced
    h.advance(PERSON_BYE_GRACE + 0.1)
    person.run()
    assert any(isinstance(e, CallEnded) for e in person.events)  # then ended by us
    clean(h, person, call)


def test_tel_and_sip_targets_go_through_the_trunk_when_there_is_one(setup: tuple[
        Harness, Call, Person]) -> None:
    h, call, person = setup
    h.manager.transfers.trunk = Trunk(PERSON, "sip:+15559870000@trunk.example.com",
                                      "trunk.example.com")
    job = h.manager.refer(call.id, "tel:+14155550123;phone-context=x", mode="warm")
    person.run()
    invite = next(e for e in person.events if isinstance(e, IncomingCall)).request
    assert str(invite.uri) == "sip:+14155550123@trunk.example.com"
    assert str(invite.from_.uri) == "sip:+15559870000@trunk.example.com"
    assert job.status == "dialing"
    person.do("reject", 603)
    assert (job.machine.reason or "").startswith("declined:")
    job = h.manager.refer(call.id, "sip:alex@pbx.example.com", mode="warm")
    person.run()
    invites = [e.request for e in person.events if isinstance(e, IncomingCall)]
    assert str(invites[-1].uri) == "sip:alex@pbx.example.com"  # by the trunk: no lookup
    person.do("reject", 486)
    clean(h, person, call)


def test_hold_audio_and_warm_connect_config(tmp_path: Path) -> None:
    good = tmp_path / "hold.wav"
    with wave.open(str(good), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    config = load_config(None, transfer_hold_audio=str(good), transfer_warm_connect="bridge")
    assert config.transfer_hold_audio == good and config.transfer_warm_connect == "bridge"
    coarse = tmp_path / "coarse.wav"
    with wave.open(str(coarse), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 800)
    for path, says in ((tmp_path / "missing.wav", "cannot read"),
                       (coarse, "16-bit PCM WAV"), (tmp_path, "cannot read")):
        with pytest.raises(ConfigError) as info:
            load_config(None, transfer_hold_audio=str(path))
        assert "transfer_hold_audio" in str(info.value) and says in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(None, transfer_warm_connect="teleport")
    assert "transfer_warm_connect" in str(info.value)
