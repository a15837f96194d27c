"""A whole call with the default agent: no application, the built-in local model.

`sipbridge serve --auto-answer agent --transfer-to URI`: baresip calls and, after the
greeting, says (espeak-ng) "Hello. Can you please transfer me to a human?". The local
model greets, transcribes the request, and calls the transfer tool; the gateway sends
REFER to the carrier side (the caller's baresip, which follows it to the human's
baresip), and the transfer succeeds. A sideband client sees the transcript, the
function call and the transfer events, in that order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import websockets

from tests.integration.callrecords import wait_first_call, wait_record
from tests.integration.gateway import Gateway
from tests.integration.peers import PHONE_RATE, Baresip, make_speech_wav, needs_phones

pytestmark = [
    pytest.mark.integration,
    needs_phones,
]

KEY = "sk-agent-test"
REQUEST = "Hello. Can you please transfer me to a human?"
NUMBER = "+61420351258"


def test_the_default_agent_greets_listens_and_transfers(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    pytest.importorskip("sipbridge.localmodel.server")
    with Baresip(tmp_path / "human", user=NUMBER, answermode="auto") as human:
        since = human.prepare(np.zeros(PHONE_RATE, np.int16), 3)
        gateway = start_gateway(auto_answer="agent", api_key=[KEY],
                                transfer_to=f"sip:{NUMBER}@{human.address}",
                                transfer_notify_timeout=15)
        base = f"http://127.0.0.1:{gateway.http_port}/v1"
        request = make_speech_wav(tmp_path / "request.wav", REQUEST)
        caller_audio = np.concatenate([np.zeros(5 * PHONE_RATE, np.int16), request])
        events: list[dict[str, Any]] = []
        with Baresip(tmp_path / "caller") as caller:
            placed: dict[str, Any] = {}
            thread = threading.Thread(target=lambda: placed.update(
                call=caller.call(f"sip:agent@{gateway.address}", caller_audio, 20)), daemon=True)
            thread.start()
            call_id = wait_first_call(base, KEY, 10)
            watcher = threading.Thread(target=watch, args=(base, call_id, events), daemon=True)
            watcher.start()
            record = wait_record(base, KEY, call_id, lambda r: r["state"] == "ended", "ended",
                                 40, interval=0.1)
            thread.join(30)
            watcher.join(10)
        human_call = human.answered(since, 10)
    kinds = [e["type"] for e in events]
    transcripts = [e["transcript"] for e in events
                   if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert any("human" in t.lower() for t in transcripts), (transcripts, kinds)
    calls = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert calls and calls[0]["name"] == "transfer_call", kinds
    updates = [e for e in events if e["type"] == "call.transfer.updated"]
    assert updates and updates[-1]["status"] == "succeeded", updates
    first_transcript = kinds.index("conversation.item.input_audio_transcription.completed")
    assert first_transcript < kinds.index("response.function_call_arguments.done") \
        < kinds.index("call.transfer.updated")
    transfer = record["transfers"][0]
    assert transfer["status"] == "succeeded" and transfer["target_uri"].startswith(f"sip:{NUMBER}")
    assert transfer["requested_by"] == "agent"
    assert record["end_reason"] == "transferred"
    assert human_call.established
    # the words said are on the call's timeline too (for the trace and the dashboard)
    said = [(e["role"], e["text"]) for e in record["timeline"] if e["kind"] == "transcript"]
    assert said[0][0] == "agent" and any(role == "caller" and "human" in text.lower()
                                         for role, text in said), said
    assert any(e["kind"] == "agent" and e.get("name") == "transfer_call"
               for e in record["timeline"])


def watch(base: str, call_id: str, events: list[dict[str, Any]]) -> None:
    """A sideband client (the official SDK) keeping every event until the call ends."""
    client = openai.OpenAI(api_key=KEY, base_url=base)
    with client.realtime.connect(call_id=call_id) as conn:
        try:
            while True:
                events.append(json.loads(conn.recv_bytes()))
        except websockets.exceptions.ConnectionClosed:
            pass
