"""The transfer matrix: SIPp plays a carrier that answers REFER in every way carriers do,
the official `openai` SDK plays the application, and each transfer must reach its
outcome within the configured bound, with the steps on the sideband, the outcome as a
signed webhook, and the right SIP messages on the wire.

Bounds configured here: REFER unanswered -> timed_out after 2 s; 202 without a final
NOTIFY -> unconfirmed after 3 s.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.integration.appside import KEY, App, start_app
from tests.integration.gateway import Gateway
from tests.integration.sipp import SCENARIOS

pytestmark = pytest.mark.integration

REFER_TIMEOUT = 2.0
NOTIFY_TIMEOUT = 3.0
TARGET = "tel:+61420351258"


@pytest.fixture
def app(start_gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[App]:
    yield from start_app(start_gateway, tmp_path, transfer_refer_timeout=REFER_TIMEOUT,
                         transfer_notify_timeout=NOTIFY_TIMEOUT, transfer_fallback="announce")


class Sideband:
    """A sideband client that keeps every event of the call until the call ends."""

    def __init__(self, app: App, call_id: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self._manager = app.client.realtime.connect(call_id=call_id)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.opened.wait(10), f"the sideband of call {call_id} did not open within 10 s"

    def _run(self) -> None:
        with self._manager as conn:
            self.opened.set()
            try:
                while True:
                    self.events.append(json.loads(conn.recv_bytes()))
            except websockets.exceptions.ConnectionClosed:
                pass

    def transfer_statuses(self) -> list[str]:
        self._thread.join(15)
        return [e["status"] for e in self.events if e["type"] == "call.transfer.updated"]


@dataclass
class Outcome:
    record: dict[str, Any]
    transfer: dict[str, Any]
    took: float  # seconds from the refer request to the final outcome
    sideband: list[str]
    webhook: dict[str, Any]
    messages: str


def transfer(app: App, scenario: str, **placeholders: object) -> Outcome:
    """Place a call with `scenario`, accept it, refer it, and collect everything."""
    path = app.tmp / f"{Path(scenario).stem}-{time.monotonic_ns()}.xml"
    text = (SCENARIOS / scenario).read_text()
    for name, value in placeholders.items():
        text = text.replace(f"__{name.upper()}__", str(value))
    path.write_text(text)
    sipp = app.call(path, timeout=40, recv_timeout=20)
    call_id = app.incoming().data.call_id
    app.client.realtime.calls.accept(call_id, type="realtime", instructions="Acme front desk")
    app.wait_for(call_id, lambda r: r["state"] == "active", "active")
    sideband = Sideband(app, call_id)
    started = time.monotonic()
    app.client.realtime.calls.refer(call_id, target_uri=TARGET, extra_body={
        "sipbridge": {"headers": {"X-Ticket": "42"}}})
    record = app.wait_for(call_id, lambda r: bool(r["transfers"]) and r["transfers"][0]["final"],
                          "with a final transfer outcome", timeout=15)
    took = time.monotonic() - started
    result = sipp.result(timeout=60)
    assert result.ok, result.describe()
    record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended")
    hook = app.webhook()  # signature checked with the SDK
    webhook: dict[str, Any] = hook if isinstance(hook, dict) else hook.model_dump()
    assert webhook["type"].startswith("realtime.call.transfer.")
    calls = httpx.get(f"{app.base_url}/realtime/calls",
                      headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    assert [c["id"] for c in calls if c["state"] != "ended"] == []  # nothing left behind
    return Outcome(record, record["transfers"][0], took, sideband.transfer_statuses(),
                   webhook, result.messages)


def steps(outcome: Outcome) -> list[str]:
    return [s["status"] for s in outcome.transfer["steps"]]


def test_1_notify_200_succeeds_and_the_gateway_ends_its_leg(app: App) -> None:
    o = transfer(app, "transfer_success.xml")
    assert o.transfer["status"] == "succeeded" and o.transfer["sip_status"] == 200
    assert steps(o) == ["requested", "sent", "accepted", "progress", "succeeded"]
    assert o.took < 2.0
    assert o.record["end_reason"] == "transferred"
    assert o.sideband == steps(o)[:len(o.sideband)] and o.sideband[-1] == "succeeded"
    assert o.webhook["type"] == "realtime.call.transfer.succeeded"
    assert o.webhook["data"]["transfer_id"] == o.transfer["id"]
    assert "Refer-To: <tel:+61420351258>" in o.messages
    assert "X-Ticket: 42" in o.messages  # the application's extra headers ride on the REFER
    assert "BYE sip:" in o.messages  # our BYE, after the final NOTIFY
    assert o.transfer["fallback"] is None
    assert o.transfer["requested_by"] == "app"


def test_2_notify_486_fails_and_the_fallback_runs(app: App) -> None:
    o = transfer(app, "transfer_busy.xml")
    assert (o.transfer["status"], o.transfer["sip_status"]) == ("failed", 486)
    assert o.transfer["reason"] == "Busy Here"
    assert steps(o) == ["requested", "sent", "accepted", "progress", "failed"]
    assert o.took < 2.0
    assert o.transfer["fallback"] == {"mode": "announce", "status": "announced"}
    assert o.webhook["type"] == "realtime.call.transfer.failed"
    assert o.webhook["data"]["sip_status"] == 486
    assert o.record["end_reason"] == "remote_bye"  # the call stayed up: the caller hung up


@pytest.mark.parametrize(("code", "reason"), [(405, "Method Not Allowed"),
                                              (501, "Not Implemented"), (403, "Forbidden")])
def test_3_refer_refused_is_rejected_at_once(app: App, code: int, reason: str) -> None:
    o = transfer(app, "transfer_rejected.xml", code=code, reason=reason)
    assert (o.transfer["status"], o.transfer["sip_status"]) == ("rejected", code)
    assert steps(o) == ["requested", "sent", "rejected"]
    assert o.took < 1.0
    assert o.transfer["fallback"]["mode"] == "announce"
    assert o.webhook["data"]["status"] == "rejected"


def test_4_refer_never_answered_times_out_within_the_bound(app: App) -> None:
    o = transfer(app, "transfer_no_answer.xml", wait=int((REFER_TIMEOUT + 2) * 1000))
    assert o.transfer["status"] == "timed_out" and o.transfer["sip_status"] is None
    assert REFER_TIMEOUT - 0.1 <= o.took < REFER_TIMEOUT + 1.0
    assert o.messages.count("REFER sip:") >= 2  # UDP retransmissions went out meanwhile
    assert o.webhook["data"]["status"] == "timed_out"


def test_5_202_then_no_notify_is_unconfirmed_within_the_bound(app: App) -> None:
    o = transfer(app, "transfer_no_notify.xml", wait=int((NOTIFY_TIMEOUT + 2) * 1000))
    assert (o.transfer["status"], o.transfer["sip_status"]) == ("unconfirmed", 202)
    assert "no final NOTIFY" in o.transfer["reason"]
    assert NOTIFY_TIMEOUT - 0.1 <= o.took < NOTIFY_TIMEOUT + 1.0
    assert o.transfer["fallback"]["mode"] == "announce"


def test_6_caller_hangs_up_during_the_transfer_cancels_it(app: App) -> None:
    o = transfer(app, "transfer_caller_hangs_up.xml")
    assert o.transfer["status"] == "cancelled"
    assert "hung up" in o.transfer["reason"]
    assert o.transfer["fallback"] is None  # nobody left to fall back for
    assert o.record["end_reason"] == "remote_bye"


def test_7_a_notify_that_cannot_be_understood_is_refused_and_the_transfer_goes_on(
        app: App) -> None:
    o = transfer(app, "transfer_bad_notify.xml")
    assert "SIP/2.0 400" in o.messages
    assert 'Warning: 399 sipbridge "sipfrag has no status line' in o.messages
    assert o.transfer["status"] == "succeeded"
    assert steps(o) == ["requested", "sent", "accepted", "progress", "succeeded"]
    assert not [e for e in o.record["timeline"] if e["kind"] == "warning"]


def test_8_linphones_malformed_final_notify_is_a_success(app: App) -> None:
    # liblinphone 5.1: "Subscription-State: terminated;reason=reason=noresource" with the
    # sipfrag "SIP/2.0 200 Ok" (src/sal/call-op.cpp).
    o = transfer(app, "transfer_linphone_notify.xml")
    assert "SIP/2.0 400" not in o.messages  # both NOTIFYs answered 200
    assert (o.transfer["status"], o.transfer["sip_status"]) == ("succeeded", 200)
    assert steps(o) == ["requested", "sent", "accepted", "progress", "succeeded"]
    assert o.took < 2.0  # at once, not after the 3 s NOTIFY bound
    assert o.record["end_reason"] == "transferred"
    assert "BYE sip:" in o.messages  # the gateway left the call
    assert o.transfer["fallback"] is None  # no "the transfer didn't go through"
    assert o.webhook["type"] == "realtime.call.transfer.succeeded"
    warnings = [e for e in o.record["timeline"] if e["kind"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["transfer_id"] == o.transfer["id"]
    assert "read as reason=noresource" in warnings[0]["detail"]


def test_notify_before_202_is_taken(app: App) -> None:
    o = transfer(app, "transfer_notify_first.xml")
    assert o.transfer["status"] == "succeeded"
    assert "SIP/2.0 481" not in o.messages  # the early NOTIFY was not refused


def test_bye_right_after_202_is_unconfirmed(app: App) -> None:
    o = transfer(app, "transfer_bye_after_202.xml")
    assert o.transfer["status"] == "unconfirmed"
    assert o.transfer["reason"] == "the peer ended the call without reporting the transfer"
    assert o.took < 1.0
