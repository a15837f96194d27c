"""Barge-in with the built-in model: the caller speaks over the agent's greeting, and
the agent's audio must stop within 200 ms of the caller's first word.

The gateway answers with `--auto-answer agent`, its policy giving a long greeting.
SIPp places the call; the caller's RTP is sent from the test (rtpcaller.py), so the
time of the caller's first spoken frame and the arrival of the agent's last packet
are on one clock. The path measured: the caller's packets through the gateway to the
model, its voice activity detection, `input_audio_buffer.speech_started` back, the
gateway dropping the queued audio, the packets already on the way.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.gateway import Gateway
from tests.integration.peers import make_speech_wav
from tests.integration.rtpcaller import RtpCaller, voiced

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sipp") is None,
                       reason="espeak-ng and SIPp are needed (scripts/setup.sh installs them)"),
]

KEY = "sk-barge-in"
LONG_GREETING = (
    "Hello, and thank you for calling the Acme support line. Our opening hours are "
    "nine to five, Monday to Friday. Please listen carefully, as our menu options "
    "have changed recently, and we would like to tell you about all of them."
)
MAX_STOP = 0.200  # seconds from the caller's first word to the agent's last sound


def test_caller_speech_stops_the_agent_within_200_ms(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    pytest.importorskip("sipbridge.localmodel.server")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"greeting: {LONG_GREETING}\nfallback: Sorry?\nintents: []\n")
    gateway = start_gateway(auto_answer="agent", agent_policy=str(policy), api_key=[KEY],
                            media_timeout=0)
    speech = make_speech_wav(tmp_path / "interrupt.wav", "Excuse me, I have a question.")
    with RtpCaller(gateway, tmp_path, hold_ms=9000, api_key=KEY) as caller:
        caller.answered()
        first, _ = caller.speak(speech, lead_s=3.0, tail_s=1.0)
    assert caller.result is not None and caller.result.ok, caller.result
    before = voiced(caller.sink, 0.0, first)
    assert before and before[-1] - before[0] > 1.5, "the agent was not speaking before"
    after = voiced(caller.sink, first, first + 1.5)  # its answer to the question comes later
    stopped = (after[-1] - first) if after else 0.0
    assert stopped < MAX_STOP, f"agent audio went on {stopped * 1000:.0f} ms after barge-in"
