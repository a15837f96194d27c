"""Digits sent through the API (`POST /v1/realtime/calls/{id}/dtmf`) reach real peers in
order: a baresip phone reports each RFC 4733 digit it receives (its ctrl_tcp
``CALL_DTMF_START`` events), SIPp's call has its media captured here (the events read
back from the RTP stream: order, durations, end packets, one SSRC with the voice), and a
SIPp caller checks the SIP INFO bodies it receives one by one (``uac_info_dtmf.xml``).
A model (a scripted Realtime server) that calls the ``send_dtmf`` tool gets its keys
pressed on the call and the function output back once they are out."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from sipbridge.demo.baresip import Baresip, BaresipCall
from tests.integration.appside import KEY, start_app
from tests.integration.callrecords import wait_first_call, wait_record
from tests.integration.gateway import Gateway
from tests.integration.interop import sip_entries
from tests.integration.peers import telephone_events
from tests.integration.rtpcaller import RtpCaller
from tests.integration.sipp import SippResult
from tests.integration.test_agent_bridge import ReplayModel
from tests.polling import until

pytestmark = pytest.mark.integration

PT = 101

needs_baresip = pytest.mark.skipif(shutil.which("baresip") is None,
                                   reason="baresip is not installed (scripts/setup.sh does)")
needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="sipp is not installed (scripts/setup.sh does)")


def base(gw: Gateway) -> str:
    return f"http://127.0.0.1:{gw.http_port}/v1"


def post_dtmf(gw: Gateway, call_id: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base(gw)}/realtime/calls/{call_id}/dtmf", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=10)


def sent(gw: Gateway, call_id: str, dtmf_id: str) -> dict[str, Any]:
    """The call's record once the send `dtmf_id` is on its timeline as sent."""
    return wait_record(base(gw), KEY, call_id, lambda r: any(
        e["kind"] == "dtmf" and e.get("dtmf_id") == dtmf_id and e["status"] == "sent"
        for e in r["timeline"]), f"sending DTMF {dtmf_id}")


@needs_baresip
@pytest.mark.parametrize(("codec", "srtp", "method"), [
    ("PCMU", False, "rfc4733"), ("opus", False, "rfc4733"), ("PCMU", True, "rfc4733"),
    ("PCMU", False, "info")])
def test_baresip_hears_the_digits_in_order(start_gateway: Callable[..., Gateway],
                                           tmp_path: Path, codec: str, srtp: bool,
                                           method: str) -> None:
    """On opus the events count the 48 kHz clock, as the stream's timestamps do; on an
    SRTP call they are protected like the voice (baresip drops what does not check);
    baresip takes application/dtmf-relay INFO too."""
    secure = {"srtp": "required", "srtp_over_cleartext": True} if srtp else {}
    gw = start_gateway(auto_answer="silence", api_key=[KEY], **secure)
    digits = "159*0#A"
    with Baresip(tmp_path / "baresip", codec=codec,
                 mediaenc="srtp-mand" if srtp else None) as ua:
        calls: list[BaresipCall] = []
        phone = threading.Thread(target=lambda: calls.append(
            ua.call(f"sip:dtmf@{gw.address}", np.zeros(800), 4.0)), daemon=True)
        phone.start()
        call_id = wait_first_call(base(gw), KEY, 10.0)
        r = post_dtmf(gw, call_id, {"digits": digits, "duration_ms": 100, "gap_ms": 100,
                                    "method": method})
        assert r.status_code == 200, r.text
        assert r.json()["method"] == method
        record = sent(gw, call_id, r.json()["id"])
        phone.join(15.0)
        events = list(ua.events)
        log = ua.log()
    assert calls and calls[0].established, log[-3000:]
    heard = "".join(str(e.get("param")) for e in events if e.get("type") == "CALL_DTMF_START")
    assert heard == digits, f"{events}\n--- baresip ---\n{log[-3000:]}"
    ends = [e for e in events if e.get("type") == "CALL_DTMF_END"]
    assert len(ends) == len(digits), events
    assert str(record["sip"]["codec"]).lower() == codec.lower(), record["sip"]
    assert record["media"]["srtp"] is srtp, record["media"]
    outs = [e for e in record["timeline"] if e["kind"] == "dtmf"]
    assert [(e["direction"], e["status"]) for e in outs] == [
        ("out", "queued"), ("out", "sending"), ("out", "sent")]
    assert {e["digits"] for e in outs} == {digits} and {e["method"] for e in outs} == {method}


@needs_sipp
def test_sipp_call_carries_the_events_in_its_rtp_stream(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    gw = start_gateway(auto_answer="silence", api_key=[KEY])
    digits = "2468#"
    with RtpCaller(gw, tmp_path, 3000, KEY, telephone_event=PT) as caller:
        call = caller.answered()
        r = post_dtmf(gw, call["id"], {"digits": digits, "duration_ms": 120, "gap_ms": 80})
        assert r.status_code == 200, r.text
        sent(gw, call["id"], r.json()["id"])
        packets = list(caller.sink.packets)
    assert caller.result is not None and caller.result.ok, caller.result
    events = telephone_events(packets, PT)
    assert "".join(e.digit for e in events) == digits, events
    for e in events:
        # 120 ms: updates at 20..100 ms, then the end (960 units) three times.
        assert e.ended and e.duration_ms == 120.0 and e.packets == 8, e
    ours = [p for p in packets if p.payload_type in (0, PT)]
    assert len({p.ssrc for p in ours}) == 1  # one stream: the voice's SSRC
    seqs = [p.sequence for p in ours]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), seqs
    markers = [p for p in ours if p.payload_type == PT and p.marker]
    assert len(markers) == len(digits)


@needs_sipp
def test_sipp_receives_the_info_digits_in_order(
        start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult]) -> None:
    gw = start_gateway(auto_answer="silence", api_key=[KEY])
    results: list[SippResult] = []
    caller = threading.Thread(target=lambda: results.append(sipp(gw, "uac_info_dtmf.xml")),
                              daemon=True)
    caller.start()
    call_id = wait_first_call(base(gw), KEY, 10.0)
    # Bad input first: refused naming the field, and nothing reaches SIPp (an INFO it
    # does not expect, or a wrong digit, fails its scenario).
    for body, param in (({"digits": "12E", "method": "info"}, "digits"),
                        ({"digits": "1", "method": "info", "duration_ms": 5}, "duration_ms"),
                        ({"digits": "1", "method": "fax"}, "method")):
        bad = post_dtmf(gw, call_id, body)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, bad.text
    assert post_dtmf(gw, "rtc_unknown", {"digits": "1"}).status_code == 404
    r = post_dtmf(gw, call_id, {"digits": "19*#", "duration_ms": 120, "gap_ms": 60,
                                "method": "info"})
    assert r.status_code == 200, r.text
    record = sent(gw, call_id, r.json()["id"])
    caller.join(30.0)
    assert results and results[0].ok, results[0].describe() if results else "no SIPp result"
    # Each INFO went once its predecessor had its 200: four out, four answers in.
    assert len(sip_entries(record, direction="out", method="INFO")) == 4, record["timeline"]
    assert len(sip_entries(record, direction="in", status=200, cseq="INFO")) == 4


@needs_sipp
def test_a_call_without_telephone_event_refuses_rfc4733(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    gw = start_gateway(auto_answer="silence", api_key=[KEY])
    with RtpCaller(gw, tmp_path, 1500, KEY) as caller:  # offers PCMU alone
        call = caller.answered()
        r = post_dtmf(gw, call["id"], {"digits": "1"})
        assert r.status_code == 409, r.text
        assert "telephone-event" in r.json()["error"]["message"]
        packets = list(caller.sink.packets)
    assert caller.result is not None and caller.result.ok, caller.result
    assert packets and {p.payload_type for p in packets} == {0}


class PressingModel(ReplayModel):
    """A model that presses keys: once the session is set up, it calls send_dtmf."""

    pressed = False

    async def _send(self, ws: Any, event: dict[str, Any]) -> None:
        await super()._send(ws, event)
        if event["type"] == "session.updated" and not self.pressed:
            self.pressed = True
            await super()._send(ws, {
                "type": "response.function_call_arguments.done", "response_id": "resp_k",
                "item_id": "item_k", "output_index": 0, "call_id": "call_keys",
                "name": "send_dtmf", "arguments": json.dumps({"digits": "42#"})})


@needs_sipp
def test_the_models_send_dtmf_tool_presses_keys_and_hears_back(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    with PressingModel(0.2) as model:
        app_side = start_app(start_gateway, tmp_path, agent_url=model.url, media_timeout=0)
        app = next(app_side)
        try:
            with RtpCaller(app.gateway, tmp_path, 3000, KEY, telephone_event=PT) as caller:
                call_id = app.incoming().data.call_id
                app.client.realtime.calls.accept(call_id, type="realtime",
                                                 extra_body={"sipbridge": {"send_dtmf": True}})
                record = app.wait_for(call_id, lambda r: any(
                    e["kind"] == "dtmf" and e.get("status") == "sent"
                    for e in r["timeline"]), "the agent's keys sent")
                outputs = until("the function output at the model", lambda: [
                    e for e in model.received if e["type"] == "conversation.item.create"],
                    bool, 5.0)
                packets = list(caller.sink.packets)
        finally:
            next(app_side, None)
    sent_entry = [e for e in record["timeline"] if e["kind"] == "dtmf"][-1]
    assert sent_entry["requested_by"] == "agent" and sent_entry["digits"] == "42#"
    assert "".join(e.digit for e in telephone_events(packets, PT)) == "42#"
    item = outputs[0]["item"]
    assert item["type"] == "function_call_output" and item["call_id"] == "call_keys"
    assert json.loads(item["output"]) == {"status": "sent", "digits": "42#",
                                          "method": "rfc4733"}
    assert caller.result is not None and caller.result.ok, caller.result
