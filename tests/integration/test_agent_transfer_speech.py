"""Transfers the caller hears.

The agent's confirmation is played out before the REFER: baresip calls
`sipbridge serve --auto-answer agent --transfer-to URI` and, after the greeting, asks for
a human. The built-in model says "Sure, I'll transfer you now." and calls its transfer
tool in the same response. A phone puts the call on hold when the REFER comes, so the
REFER must leave only once those words were sent: what the caller's baresip recorded
(its decoded audio) must hold the whole confirmation, ended before the gateway sent the
REFER.

One clock: baresip's recording starts with the gateway's first RTP packet, which leaves
one 20 ms tick after the answer (the gateway sends from the answer on, silence
included), and the answer and the REFER are on the call's timeline in Unix time.

Asked again while the transfer is pending, the agent does not say it failed: SIPp is the
carrier, slow to report the outcome, and the caller's voice comes from the test
(rtpcaller.py); the second request starts nothing (one REFER) and the model is told the
transfer is in progress, so it asks the caller to hold.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sipbridge.calls.tool import tool_definition
from tests.integration.callrecords import wait_first_call, wait_record
from tests.integration.gateway import Gateway
from tests.integration.peers import (
    PHONE_RATE,
    Baresip,
    BaresipCall,
    frame_levels_dbfs,
    make_speech_wav,
    read_wav,
)
from tests.integration.rtpcaller import RtpCaller
from tests.integration.sipp import SCENARIOS, run_sipp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("espeak-ng") is None,
                       reason="espeak-ng is needed (scripts/setup.sh installs it)"),
]
needs_baresip = pytest.mark.skipif(shutil.which("baresip") is None,
                                   reason="baresip is needed (scripts/setup.sh installs it)")
needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="SIPp is needed (scripts/setup.sh installs it)")

KEY = "sk-agent-test"
REQUEST = "Hello. Can you please transfer me to a human?"
NUMBER = "+61420351259"
LEAD_S = 5.0  # the caller's silence before asking (the greeting is said meanwhile)
VOICED_DBFS = -45.0
FRAME_S = 0.020


def voiced_span(samples: np.ndarray, rate: int, after_s: float = 0.0) -> tuple[float, float]:
    """Start and end (seconds into `samples`) of the sound after `after_s`; a gap of
    silence longer than 0.5 s ends it; (after_s, after_s) when there is none."""
    levels = frame_levels_dbfs(samples, rate)
    frames = [k for k in np.flatnonzero(levels > VOICED_DBFS) if k * FRAME_S >= after_s]
    if not frames:
        return after_s, after_s
    end = frames[0]
    for k in frames[1:]:
        if (k - end) * FRAME_S > 0.5:
            break
        end = k
    return frames[0] * FRAME_S, (end + 1) * FRAME_S


def caller_recording(call: BaresipCall, dumps: Path) -> np.ndarray:
    """What the caller's baresip decoded in its call with the gateway. Following the
    REFER it made a second call (to the human), recorded beside it: the longer one."""
    recordings = [read_wav(path)[0] for path in [call.received_path,
                                                 *dumps.glob("dump-*-dec*.wav")]]
    return max(recordings, key=len)


def confirmation_length() -> float:
    """How long the built-in model's confirmation sounds, as it speaks it (its default
    voice: the natural one when installed; its length varies by a few per cent a time)."""
    from sipbridge.localmodel.policy import Policy
    from sipbridge.localmodel.tts import Speech, spoken

    reply = Policy.load().respond(REQUEST, [tool_definition({"human": "sip:x"})])
    assert reply.tool_call is not None, "the built-in policy no longer transfers on REQUEST"
    start, end = voiced_span(spoken(reply.text, Speech()), 24000)
    return end - start


@needs_baresip
def test_the_caller_hears_the_confirmation_before_the_refer(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    pytest.importorskip("sipbridge.localmodel.server")
    expected = confirmation_length()
    with Baresip(tmp_path / "human", user=NUMBER, answermode="auto") as human:
        # the human's phone answers the transferred call and hangs up 1 s later: only the
        # caller's call with the gateway is measured
        since = human.prepare(np.zeros(PHONE_RATE // 2, np.int16), 1)
        gateway = start_gateway(auto_answer="agent", api_key=[KEY],
                                transfer_to=f"sip:{NUMBER}@{human.address}",
                                transfer_notify_timeout=15)
        base = f"http://127.0.0.1:{gateway.http_port}/v1"
        request = make_speech_wav(tmp_path / "request.wav", REQUEST)
        caller_audio = np.concatenate([np.zeros(int(LEAD_S * PHONE_RATE), np.int16), request])
        with Baresip(tmp_path / "caller") as caller:
            placed: dict[str, Any] = {}
            thread = threading.Thread(target=lambda: placed.update(
                call=caller.call(f"sip:agent@{gateway.address}", caller_audio, 25)), daemon=True)
            thread.start()
            call_id = wait_first_call(base, KEY, 10)
            record = wait_record(base, KEY, call_id, lambda r: r["state"] == "ended", "ended",
                                 40, interval=0.1)
            thread.join(30)
        human.answered(since, 10)
    assert "call" in placed, "baresip's call did not finish"
    assert record["state"] == "ended", f"the call did not end within 40 s: {record}"
    timeline = record["timeline"]
    transfer = record["transfers"][0]
    assert transfer["status"] == "succeeded" and record["end_reason"] == "transferred", transfer
    refers = [e for e in timeline
              if e["kind"] == "sip" and e["dir"] == "out" and e["line"].startswith("REFER ")]
    assert len(refers) == 1, [e.get("line") for e in timeline]
    refer_s = refers[0]["at"] - record["answered_at"] - FRAME_S  # on the recording's axis

    heard = caller_recording(placed["call"], caller.dumps)
    asked_s = LEAD_S + len(request) / PHONE_RATE  # the agent answers after this
    start, end = voiced_span(heard, PHONE_RATE, after_s=asked_s)
    said = [(e["role"], e["text"]) for e in timeline if e["kind"] == "transcript"]
    where = (f"confirmation heard {start:.2f}-{end:.2f} s ({end - start:.2f} s of "
             f"{expected:.2f} s), REFER at {refer_s:.2f} s; said: {said}")
    assert end - start >= 0.9 * expected, f"the caller missed part of it: {where}"
    assert end <= refer_s, f"the REFER left while the agent was speaking: {where}"
    # It did wait for the words, and not for the limit: the wait is on the timeline.
    waits = [e for e in timeline if e["kind"] == "agent" and e["status"] == "speech_wait"]
    assert [w["outcome"] for w in waits] == ["played"], waits
    steps = [s["status"] for s in transfer["steps"]]
    assert steps[:2] == ["requested", "sent"], steps
    assert "waiting for the agent's words" in (transfer["steps"][0]["reason"] or "")
    assert refer_s - end < 1.0, f"the REFER waited too long after the words: {where}"


class PendingCarrier(RtpCaller):
    """SIPp as a carrier that reports the transfer's outcome `hold_ms` after its 202."""

    def _place(self) -> None:
        text = (SCENARIOS / "agent_transfer_pending.xml").read_text()
        path = self.workdir / "pending.xml"
        path.write_text(text.replace("__RTP_PORT__", str(self.sink.port))
                        .replace("__PENDING__", str(self.hold_ms)))
        self.result = run_sipp(self.gateway.address, path, self.workdir / "sipp", timeout=90)


@needs_sipp
def test_asking_again_while_the_transfer_is_pending_is_not_a_failure(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    pytest.importorskip("sipbridge.localmodel.server")
    from sipbridge.localmodel.policy import Policy

    tool_results = Policy.load().tool_results
    gateway = start_gateway(auto_answer="agent", api_key=[KEY], media_timeout=0,
                            transfer_to="sip:frontdesk@127.0.0.1:5999",
                            transfer_notify_timeout=30)
    base = f"http://127.0.0.1:{gateway.http_port}/v1"
    request = make_speech_wav(tmp_path / "request.wav", REQUEST)
    # The carrier reports the outcome 9 s after its 202: the second request (3.2 s of speech
    # from 0.3 s after the progress) is heard and answered about 4.6 s after it.
    with PendingCarrier(gateway, tmp_path, hold_ms=9000, api_key=KEY) as caller:
        call_id = str(caller.answered()["id"])
        caller.speak(request, lead_s=3.5, tail_s=0.5)
        pending = wait_record(base, KEY, call_id, lambda r: bool(r["transfers"]) and r[
            "transfers"][0]["status"] == "progress", "transferring (progress)", 20, interval=0.1)
        assert pending["transfers"], "the agent did not transfer"
        assert pending["transfers"][0]["status"] == "progress", pending["transfers"]
        caller.speak(request, lead_s=0.3, tail_s=0.5)  # asked again: the carrier is slow
        record = wait_record(base, KEY, call_id, lambda r: r["state"] == "ended", "ended", 30,
                             interval=0.1)
    assert record["state"] == "ended", f"the call did not end within 30 s: {record}"
    assert caller.result is not None, "the caller's SIPp never finished"
    assert caller.result.ok, caller.result.describe()
    timeline = record["timeline"]
    said = [(e["role"], e["text"]) for e in timeline if e["kind"] == "transcript"]
    calls = [e for e in timeline if e["kind"] == "agent" and e["status"] == "function_call"]
    assert len(calls) == 2, said  # the model asked twice ...
    refers = [e for e in timeline
              if e["kind"] == "sip" and e["dir"] == "out" and e["line"].startswith("REFER ")]
    assert len(refers) == 1 and len(record["transfers"]) == 1, said  # ... one transfer
    first_ask = next(i for i, (role, _) in enumerate(said) if role == "caller")
    after = [text for role, text in said[first_ask + 1:] if role == "agent"]
    assert tool_results["pending"] in after, said  # "please hold", not "it failed"
    assert tool_results["failed"] not in after, said
    assert record["transfers"][0]["status"] == "succeeded", record["transfers"]
    assert record["end_reason"] == "transferred"
