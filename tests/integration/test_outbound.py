"""Outbound calls placed through the gateway's API, with SIPp as the trunk: busy (486),
no answer (180 forever: our CANCEL at ring_timeout, which SIPp sees), a trunk that asks
for digest credentials (401, then 200), and a trunk answering an unusable SDP (failed,
and the leg ended with BYE); `sipbridge call` against the gateway process; and baresip
as the callee, hearing the built-in agent's greeting."""

from __future__ import annotations

import shutil
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.callrecords import wait_record
from tests.integration.gateway import Gateway
from tests.integration.peers import PHONE_RATE, Baresip, SippUas, needs_phones, xcorr_delay

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is needed"),
]

KEY = "sk-outbound-test"


def gateway(start: Callable[..., Gateway], uas: SippUas, **config: Any) -> Gateway:
    return start(api_key=[KEY], agent_url="",
                 trunk={"address": uas.address, "pai": "<tel:+15550001>",
                        "headers": {"X-Account": "42"}},
                 trunks={"secure": {"address": uas.address, "username": "trunkuser",
                                    "password": "trunkpass",
                                    "from_uri": "sip:+15550001@trunk.test"}},
                 **config)


def place(gw: Gateway, **options: Any) -> dict[str, Any]:
    response = httpx.post(f"http://127.0.0.1:{gw.http_port}/v1/realtime/calls",
                          headers={"Authorization": f"Bearer {KEY}"},
                          json={"type": "realtime", "sipbridge": options}, timeout=10)
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def outcome(gw: Gateway, call_id: str, status: str, within: float = 15) -> dict[str, Any]:
    base = f"http://127.0.0.1:{gw.http_port}/v1"
    return wait_record(base, KEY, call_id,
                       lambda r: r["state"] == "ended" and r["outbound"]["status"] == status,
                       f"ended {status}", within)


def metric_line(gw: Gateway, outcome: str) -> str:
    text = httpx.get(f"http://127.0.0.1:{gw.http_port}/metrics",
                     headers={"Authorization": f"Bearer {KEY}"}, timeout=5).text
    return next((line for line in text.splitlines()
                 if line.startswith(f'sipbridge_outbound_calls_total{{outcome="{outcome}"}}')),
                "")


def test_busy(start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    with SippUas(tmp_path / "uas", "uas_busy.xml", rtp_echo=False) as uas:
        gw = gateway(start_gateway, uas)
        call = place(gw, to="tel:+14155550123")
        assert call["outbound"]["status"] == "dialing" and call["direction"] == "outbound"
        record = outcome(gw, call["id"], "busy")
        assert uas.wait(5) == 0, uas.output()
    invite = (tmp_path / "uas" / "messages.log").read_text()
    assert "P-Asserted-Identity: <tel:+15550001>" in invite and "X-Account: 42" in invite
    assert record["outbound"]["sip_status"] == 486 and record["end_reason"] == "busy"
    steps = [e["status"] for e in record["timeline"] if e["kind"] == "outbound"]
    assert steps == ["dialing", "busy"], steps
    assert metric_line(gw, "busy").endswith(" 1.0")


def test_no_answer_is_cancelled_at_the_ring_timeout(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    with SippUas(tmp_path / "uas", "uas_ring_forever.xml", rtp_echo=False) as uas:
        gw = gateway(start_gateway, uas)
        call = place(gw, to="tel:+14155550123", ring_timeout=2)
        base = f"http://127.0.0.1:{gw.http_port}/v1"
        wait_record(base, KEY, call["id"], lambda r: r["outbound"]["status"] == "ringing",
                    "ringing", 5)
        record = outcome(gw, call["id"], "no_answer", 10)
        assert uas.wait(5) == 0, uas.output()  # it saw our CANCEL, sent 487, got the ACK
    assert record["outbound"]["reason"] == "ring timeout"
    ringing = next(e for e in record["timeline"]
                   if e["kind"] == "outbound" and e["status"] == "ringing")
    assert 1.8 <= record["ended_at"] - ringing["at"] <= 4.0
    sent = [e["line"] for e in record["timeline"] if e["kind"] == "sip" and e["dir"] == "out"]
    assert any(line.startswith("CANCEL ") for line in sent), sent


def test_digest_challenge_is_answered_and_the_call_is_answered(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    with SippUas(tmp_path / "uas", "uas_digest.xml") as uas:
        gw = gateway(start_gateway, uas)
        call = place(gw, to="sip:service@127.0.0.1", trunk="secure", **{"from": "+15557777"})
        base = f"http://127.0.0.1:{gw.http_port}/v1"
        record = wait_record(base, KEY, call["id"],
                             lambda r: r["outbound"]["status"] == "answered", "answered", 10)
        assert record["state"] == "active" and record["sip"]["from"].startswith(
            "sip:+15557777@trunk.test")
        response = httpx.delete(f"{base}/realtime/calls/{call['id']}",
                                headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
        assert response.status_code == 200
        record = wait_record(base, KEY, call["id"], lambda r: r["state"] == "ended",
                             "ended", 10)
        assert uas.wait(5) == 0, uas.output()
    assert record["end_reason"] == "hangup" and record["outbound"]["sip_status"] == 200


def test_an_unusable_sdp_answer_fails_and_the_leg_is_ended(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    with SippUas(tmp_path / "uas", "uas_garbage_sdp.xml", rtp_echo=False) as uas:
        gw = gateway(start_gateway, uas)
        call = place(gw, to="tel:+14155550123")
        record = outcome(gw, call["id"], "failed")
        assert uas.wait(5) == 0, uas.output()  # it got our ACK and BYE
    assert record["outbound"]["reason"].startswith("bad SDP answer"), record["outbound"]
    assert record["media"] is None
    assert gw.metric("sipbridge_calls_active", KEY) == 0


def test_sipbridge_call_cli(start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    with SippUas(tmp_path / "uas", "uas_busy.xml", rtp_echo=False) as uas:
        gw = gateway(start_gateway, uas)
        busy = subprocess.run(
            [sys.executable, "-m", "sipbridge", "call", "tel:+14155550123",
             "--http", f"127.0.0.1:{gw.http_port}", "--api-key", KEY],
            capture_output=True, text=True, timeout=30)
        assert uas.wait(5) == 0, uas.output()
    lines = busy.stdout.split()
    assert busy.returncode == 1, (busy.stdout, busy.stderr)
    assert lines[0].startswith("rtc_") and "busy" in lines, busy.stdout
    with SippUas(tmp_path / "uas2", "uas_digest.xml") as uas:
        gw = gateway(start_gateway, uas)
        answered = subprocess.run(
            [sys.executable, "-m", "sipbridge", "call", "sip:service@127.0.0.1",
             "--trunk", "secure", "--http", f"127.0.0.1:{gw.http_port}", "--api-key", KEY],
            capture_output=True, text=True, timeout=30)
        assert answered.returncode == 0, (answered.stdout, answered.stderr)
        assert answered.stdout.split()[1:] == ["dialing", "answered", "200"], answered.stdout
        call_id = answered.stdout.split()[0]
        httpx.delete(f"http://127.0.0.1:{gw.http_port}/v1/realtime/calls/{call_id}",
                     headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
        assert uas.wait(5) == 0, uas.output()
    refused = subprocess.run(
        [sys.executable, "-m", "sipbridge", "call", "tel:555", "--http",
         f"127.0.0.1:{gw.http_port}", "--api-key", KEY],
        capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "sipbridge.to" in refused.stderr, refused.stderr


@needs_phones
def test_the_callee_hears_the_built_in_agents_greeting(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    """baresip answers the gateway's call and records what it hears: the built-in agent's
    greeting, the same audio as the agent channel of the gateway's stereo recording."""
    pytest.importorskip("sipbridge.localmodel.server")
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    with Baresip(tmp_path / "callee", user="callee", answermode="auto") as callee:
        since = callee.prepare(np.zeros(PHONE_RATE, np.int16), 8)
        gw = start_gateway(api_key=[KEY], trunk={"address": callee.address},
                           recordings=str(recordings))
        call = place(gw, to=f"sip:callee@{callee.address}")
        base = f"http://127.0.0.1:{gw.http_port}/v1"
        wait_record(base, KEY, call["id"], lambda r: r["outbound"]["status"] == "answered",
                    "answered", 15)
        heard = callee.answered(since, 20)  # its 8 s played, baresip hangs up
        record = wait_record(base, KEY, call["id"], lambda r: r["state"] == "ended",
                             "ended", 10)
    assert heard.established, heard
    [wav] = recordings.glob("*.wav")
    with wave.open(str(wav), "rb") as w:
        rate = w.getframerate()
        agent = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)[:, 1]
    assert rate == heard.rate == PHONE_RATE
    assert np.count_nonzero(np.abs(agent) > 500) > PHONE_RATE  # a second of speech at least
    score, delay = xcorr_delay(agent, heard.received, rate)
    assert score > 0.9, (score, delay)  # what the callee heard is the agent's greeting
    agent_said = [e for e in record["timeline"] if e["kind"] == "transcript"
                  and e.get("role") == "agent"]
    assert record["direction"] == "outbound" and agent_said, [
        e["kind"] for e in record["timeline"]]


def test_early_media_flows_before_the_answer(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    """A 183 with SDP starts the call's media: two seconds of RTP both ways (SIPp echoes
    ours) before the 200, on the recording; the 200's SDP takes over the same session."""
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    with SippUas(tmp_path / "uas", "uas_early_media.xml") as uas:
        gw = gateway(start_gateway, uas, recordings=str(recordings))
        call = place(gw, to="tel:+14155550123")
        base = f"http://127.0.0.1:{gw.http_port}/v1"
        ringing = wait_record(base, KEY, call["id"],
                              lambda r: r["outbound"]["status"] == "ringing", "ringing", 5)
        assert ringing["sip"]["codec"] == "PCMU"  # the 183's answer is in use already
        answered = wait_record(base, KEY, call["id"],
                               lambda r: r["outbound"]["status"] == "answered", "answered", 5)
        early = answered["media"]["packets_in"]
        httpx.delete(f"{base}/realtime/calls/{call['id']}",
                     headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
        record = wait_record(base, KEY, call["id"], lambda r: r["state"] == "ended",
                             "ended", 10)
        assert uas.wait(5) == 0, uas.output()
    assert early >= 50, answered["media"]  # a second or more of it before the answer
    [wav] = recordings.glob("*.wav")
    with wave.open(str(wav), "rb") as w:
        assert w.getnframes() / w.getframerate() >= 1.5  # the early media is recorded
    assert record["media"]["packets_in"] >= early
