"""The official `openai` SDK drives sipbridge unchanged; SIPp plays the carrier.

The application side is what an OpenAI Realtime SIP app does: it receives the
`realtime.call.incoming` webhook (checked with `client.webhooks.unwrap`), then
accepts, rejects, refers or hangs up with `client.realtime.calls.*`, and opens the
sideband with `client.realtime.connect(call_id=...)`. Only `base_url` differs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
from openai.types.realtime import RealtimeFunctionTool, RealtimeSessionCreateRequest

from tests.integration.appside import (
    KEY,
    SECRET,
    App,
    WebhookSink,
    accept_then_hang_up,
    refused_scenario,
    start_app,
)
from tests.integration.gateway import Gateway
from tests.integration.sipp import run_sipp

pytestmark = pytest.mark.integration

@pytest.fixture
def app(start_gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[App]:
    yield from start_app(start_gateway, tmp_path)


def test_webhook_accept_sideband_and_refer(app: App) -> None:
    sipp = app.call("app_refer.xml", timeout=40, recv_timeout=20)
    event = app.incoming()
    call_id = event.data.call_id
    assert call_id.startswith("rtc_")
    names = [h.name for h in event.data.sip_headers]
    assert names[:3] == ["Via", "From", "To"] and "Call-ID" in names
    assert {"name": "X-Account", "value": "acme-42"} in [h.model_dump() for h in
                                                         event.data.sip_headers]
    assert event.data.sip_media_security == "rtp"
    assert app.record(call_id)["state"] == "ringing"  # the caller hears ringing meanwhile

    app.client.realtime.calls.accept(
        call_id, type="realtime", model="gpt-realtime",
        instructions="You answer the phone for Acme.",
        extra_body={"sipbridge": {"transfer_targets": {"human": "tel:+61420351258"}}})
    record = app.wait_for(call_id, lambda r: r["state"] == "active", "active")
    assert record["state"] == "active" and record["sip"]["codec"] == "PCMU"

    with app.client.realtime.connect(call_id=call_id) as conn, \
            app.client.realtime.connect(call_id=call_id) as watcher:
        created = conn.recv()
        assert created.type == "session.created"
        assert isinstance(created.session, RealtimeSessionCreateRequest)
        assert created.session.instructions == "You answer the phone for Acme."
        [tool] = created.session.tools or []  # the built-in transfer tool, for the target
        assert isinstance(tool, RealtimeFunctionTool) and tool.name == "transfer_call"
        assert isinstance(tool.parameters, dict)
        assert tool.parameters["properties"]["target"]["enum"] == ["human"]
        assert watcher.recv().type == "session.created"
        conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
        updated = conn.recv()
        assert updated.type == "session.updated"
        assert isinstance(updated.session, RealtimeSessionCreateRequest)
        assert updated.session.instructions == "Be brief."
        seen = watcher.recv()  # every sideband client of the call sees the update
        assert seen.type == "session.updated" and seen.event_id == updated.event_id
        conn.send({"type": "session.update", "event_id": "evt_no_type",  # type: ignore[arg-type]
                   "session": {"instructions": "no type"}})
        error = conn.recv()
        assert error.type == "error"
        assert error.error.param == "session.type" and error.error.event_id == "evt_no_type"
        assert "type" in error.error.message and "realtime" in error.error.message

    wrong = openai.OpenAI(api_key="sk-wrong", base_url=app.base_url, max_retries=0)
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused, \
            wrong.realtime.connect(call_id=call_id):
        pass
    assert refused.value.response.status_code == 403  # the handshake is refused
    wrong.close()

    app.client.realtime.calls.refer(call_id, target_uri="tel:+61420351258")
    result = sipp.result(timeout=60)
    assert result.ok, result.describe()
    assert "Refer-To: <tel:+61420351258>" in result.messages
    record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended")
    assert record["end_reason"] == "transferred"
    [transfer] = record["transfers"]
    assert transfer["status"] == "succeeded" and transfer["sip_status"] == 200
    assert transfer["target_uri"] == "tel:+61420351258"
    assert record["webhooks"][0]["outcome"] == "delivered"


def test_reject_sends_the_status_and_603_by_default(app: App) -> None:
    cases: tuple[tuple[int, dict[str, Any]], ...] = ((486, {"status_code": 486}), (603, {}))
    for code, kwargs in cases:
        sipp = app.call(refused_scenario(app.tmp, code))
        call_id = app.incoming().data.call_id
        app.client.realtime.calls.reject(call_id, **kwargs)
        result = sipp.result(timeout=60)
        assert result.ok, result.describe()
        record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended")
        assert record["sip"]["final_status"] == code and record["end_reason"] == "rejected"


def test_hangup_sends_bye(app: App) -> None:
    accept_then_hang_up(app)


def test_wrong_state_unknown_calls_and_bad_input_get_openai_errors(app: App) -> None:
    client = app.client
    with pytest.raises(openai.NotFoundError) as nf:
        client.realtime.calls.accept("rtc_nosuchcall", type="realtime")
    assert "rtc_nosuchcall" in nf.value.message
    sipp = app.call("uac_wait_bye.xml")
    call_id = app.incoming().data.call_id
    with pytest.raises(openai.ConflictError):
        client.realtime.calls.refer(call_id, target_uri="tel:+61420351258")  # before accept
    with pytest.raises(openai.BadRequestError) as bad:
        client.realtime.calls.accept(call_id, type="realtime",
                                     extra_body={"voice_of_doom": True})
    assert bad.value.body["param"] == "voice_of_doom"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.realtime.calls.accept(call_id, type="realtime", extra_body={
            "sipbridge": {"transfer_targets": {"human": "mailto:someone"}}})
    assert bad.value.body["param"] == "sipbridge.transfer_targets.human"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.realtime.calls.refer(call_id, target_uri="http://example.invalid/")
    assert bad.value.body["param"] == "target_uri"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.realtime.calls.accept(call_id, type="realtime", extra_body={
            "sipbridge": {"transfer_fallback": "teleport"}})
    assert bad.value.body["param"] == "sipbridge.transfer_fallback"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.realtime.calls.accept(call_id, type="realtime", extra_body={
            "sipbridge": {"transfer_targets": {"human": {
                "uri": "tel:+61420351258", "mode": "warm", "ring_timeout": -1}}}})
    assert bad.value.body["param"] == (  # type: ignore[index]
        "sipbridge.transfer_targets.human.ring_timeout")
    with pytest.raises(openai.BadRequestError) as bad:
        client.realtime.calls.accept(call_id, type="realtime", extra_body={
            "sipbridge": {"brief_timeout": 0}})
    assert bad.value.body["param"] == "sipbridge.brief_timeout"  # type: ignore[index]
    assert app.record(call_id)["state"] == "ringing"  # none of it touched the call
    wrong = openai.OpenAI(api_key="sk-wrong", base_url=app.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.realtime.calls.accept(call_id, type="realtime")
    wrong.close()
    client.realtime.calls.accept(call_id, type="realtime")
    with pytest.raises(openai.ConflictError) as twice:
        client.realtime.calls.accept(call_id, type="realtime")
    assert "already accepted" in twice.value.message
    raw = httpx.post(f"{app.base_url}/realtime/calls/{call_id}/refer", content=b"{not json",
                     headers={"Authorization": f"Bearer {KEY}",
                              "Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    huge = httpx.post(f"{app.base_url}/realtime/calls/{call_id}/accept",
                      content=json.dumps({"type": "realtime", "instructions": "x" * (2 << 20)}),
                      headers={"Authorization": f"Bearer {KEY}",
                               "Content-Type": "application/json"})
    assert huge.status_code == 413 and "error" in huge.json()
    chunked = httpx.post(f"{app.base_url}/realtime/calls/{call_id}/accept",  # no length
                         content=(b"x" * (64 << 10) for _ in range(160)),  # 10 MB
                         headers={"Authorization": f"Bearer {KEY}",
                                  "Content-Type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    assert chunked.json()["error"]["code"] == "request_too_large"
    for options, param in (({"fallback": "teleport"}, "sipbridge.fallback"),
                           ({"headers": {"X-Evil": "a\r\nBYE: x"}}, "sipbridge.headers"),
                           ({"headers": {"Bad Name": "x"}}, "sipbridge.headers")):
        with pytest.raises(openai.BadRequestError) as bad:
            client.realtime.calls.refer(call_id, target_uri="tel:+61420351258",
                                        extra_body={"sipbridge": options})
        assert bad.value.body["param"] == param  # type: ignore[index]
    assert app.record(call_id)["transfers"] == []  # nothing was sent for any of them
    client.realtime.calls.hangup(call_id)
    assert sipp.result(timeout=60).ok
    with pytest.raises(openai.ConflictError) as ended:
        client.realtime.calls.hangup(call_id)
    assert "ended" in ended.value.message


def test_a_call_nobody_accepts_ends_with_the_configured_code(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    sink = WebhookSink()
    try:
        gateway = start_gateway(webhook_url=sink.url, webhook_secret=SECRET, api_key=[KEY],
                                accept_timeout=1.5, accept_timeout_code=480)
        started = time.monotonic()
        result = run_sipp(gateway.address, refused_scenario(tmp_path, 480), tmp_path / "sipp")
        assert result.ok, result.describe()
        assert 1.4 < time.monotonic() - started < 8
        sink.next()  # the webhook went out all the same
    finally:
        sink.close()


def test_a_webhook_endpoint_that_is_down_leaves_the_call_to_the_timeout(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = start_gateway(webhook_url="http://127.0.0.1:9/down", webhook_secret=SECRET,
                            api_key=[KEY], accept_timeout=2, webhook_timeout=0.5)
    result = run_sipp(gateway.address, refused_scenario(tmp_path, 480), tmp_path / "sipp")
    assert result.ok, result.describe()
    calls = httpx.get(f"http://127.0.0.1:{gateway.http_port}/v1/realtime/calls",
                      headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    [call] = calls
    assert call["end_reason"] == "accept_timeout"
    attempts = call["webhooks"][0]["attempts"]
    assert attempts and attempts[0]["status_code"] is None and attempts[0]["error"]
