"""Transfers between real phones: baresip is the carrier side and the human's phone.

- The carrier honours REFER: baresip (the caller's side) takes the REFER, calls the
  target, another baresip that answers, and reports it in NOTIFYs: the transfer
  succeeds and the gateway ends its leg.
- The `bridge` fallback: the carrier cannot reach the target (baresip reports "500 Call
  Error" for a tel: URI), so the gateway dials the target itself through its trunk and
  joins the two calls' audio. Each phone speaks an espeak-ng sentence; each must hear
  the other's (each voiced quarter second found at a correlation above 0.9, as
  in test_interop_phones's echo).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.appside import App, start_app
from tests.integration.gateway import Gateway
from tests.integration.peers import (
    PHONE_RATE,
    Baresip,
    BaresipCall,
    make_speech_wav,
    needs_phones,
    pieces_found,
    read_wav,
    xcorr_delay,
)

pytestmark = [
    pytest.mark.integration,
    needs_phones,
]

NUMBER = "+61420351258"
app_side = contextlib.contextmanager(start_app)
CALLER_SPEECH = "Hello. Can you please transfer me to a human?"
HUMAN_SPEECH = "Good morning, this is Alex from the support team."
MIN_CORRELATION = 0.9  # each voiced quarter second of what one phone said, in the other's
MAX_SLIP = 0.1  # seconds the pieces' delays may spread (frames a jitter buffer dropped)


@pytest.fixture
def human(tmp_path: Path) -> Iterator[Baresip]:
    """The human's phone: answers every call, says HUMAN_SPEECH."""
    with Baresip(tmp_path / "human", user=NUMBER, answermode="auto") as phone:
        yield phone


@pytest.fixture
def speech(tmp_path: Path) -> dict[str, np.ndarray]:
    return {
        "caller": make_speech_wav(tmp_path / "caller.wav", CALLER_SPEECH),
        "human": make_speech_wav(tmp_path / "human.wav", HUMAN_SPEECH),
    }


def call_in_background(caller: Baresip, uri: str, samples: np.ndarray,
                       seconds: float) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["call"] = caller.call(uri, samples, seconds)
        except Exception as exc:  # noqa: BLE001 (reported by the test thread)
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def finished(thread: threading.Thread, result: dict[str, Any]) -> BaresipCall:
    thread.join(60)
    if "error" in result:
        raise result["error"]
    call: BaresipCall = result["call"]
    return call


def test_the_carrier_transfers_the_caller_to_the_human(
    start_gateway: Callable[..., Gateway], tmp_path: Path, human: Baresip,
    speech: dict[str, np.ndarray],
) -> None:
    with app_side(start_gateway, tmp_path, transfer_notify_timeout=15) as app:
        transferred(app, human, speech)


def transferred(app: App, human: Baresip, speech: dict[str, np.ndarray]) -> None:
    since = human.prepare(speech["human"], 8)
    with Baresip(app.tmp / "caller") as caller:
        thread, result = call_in_background(
            caller, f"sip:agent@{app.gateway.address}", speech["caller"], 10)
        call_id = app.incoming().data.call_id
        app.client.realtime.calls.accept(call_id, type="realtime")
        app.wait_for(call_id, lambda r: r["state"] == "active", "active")
        app.client.realtime.calls.refer(call_id, target_uri=f"sip:{NUMBER}@{human.address}")
        record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended", timeout=20)
        finished(thread, result)  # the call with the gateway is over ...
        time.sleep(4.5)  # ... and the caller talks with the human on the carrier's new call
        caller_log = caller.log()
    human_call = human.answered(since, 20)
    transfer = record["transfers"][0]
    assert transfer["status"] == "succeeded", (record, caller_log[-3000:])
    assert transfer["sip_status"] == 200
    assert record["end_reason"] == "transferred"
    assert human_call.established  # the carrier (baresip) really called the human
    # The caller and the human talked: each heard the other's sentence.
    heard = [read_wav(path)[0] for path in (*caller.workdir.glob("call*-received.wav"),
                                            *caller.dumps.glob("dump-*-dec.wav"))]
    caller_heard = max(xcorr_delay(speech["human"], x, PHONE_RATE)[0] for x in heard)
    human_heard, _ = xcorr_delay(speech["caller"], human_call.received, PHONE_RATE)
    assert caller_heard > MIN_CORRELATION, f"the caller heard the human at {caller_heard:.3f}"
    assert human_heard > MIN_CORRELATION, f"the human heard the caller at {human_heard:.3f}"


def test_the_bridge_fallback_joins_caller_and_human(
    start_gateway: Callable[..., Gateway], tmp_path: Path, human: Baresip,
    speech: dict[str, np.ndarray],
) -> None:
    with app_side(start_gateway, tmp_path, transfer_fallback="bridge",
                  trunk={"address": human.address, "from_uri": "sip:gateway@127.0.0.1"}) as app:
        bridged(app, human, speech)


def bridged(app: App, human: Baresip, speech: dict[str, np.ndarray]) -> None:
    since = human.prepare(np.concatenate([np.zeros(PHONE_RATE // 2, np.int16),
                                          speech["human"]]), 8)
    # The caller speaks once the bridge is up: 3 s after the answer.
    caller_audio = np.concatenate([np.zeros(3 * PHONE_RATE, np.int16), speech["caller"]])
    with Baresip(app.tmp / "caller") as caller:
        thread, result = call_in_background(
            caller, f"sip:agent@{app.gateway.address}", caller_audio, 9)
        call_id = app.incoming().data.call_id
        app.client.realtime.calls.accept(call_id, type="realtime")
        app.wait_for(call_id, lambda r: r["state"] == "active", "active")
        app.client.realtime.calls.refer(call_id, target_uri=f"tel:{NUMBER}")
        bridged = app.wait_for(call_id, lambda r: bool(r["transfers"]) and (
            r["transfers"][0]["fallback"] or {}).get("status") == "answered",
            "bridged to the fallback (answered)", timeout=10)
        caller_call = finished(thread, result)
    human_call = human.answered(since, 20)
    transfer = bridged["transfers"][0]
    assert (transfer["status"], transfer["sip_status"]) == ("failed", 500), transfer
    assert transfer["fallback"]["target_uri"] == f"sip:{NUMBER}@127.0.0.1"
    assert human_call.established
    for who, said, heard in (("caller", speech["human"], caller_call.received),
                             ("human", speech["caller"], human_call.received)):
        pieces = pieces_found(said, heard, PHONE_RATE)
        delays = [delay for score, delay in pieces if score > MIN_CORRELATION]
        report = ", ".join(f"{score:.3f}@{delay * 1000:.0f}ms" for score, delay in pieces)
        assert len(delays) >= 0.8 * len(pieces) > 0, f"the {who} heard (piece@delay): {report}"
        # one voice, in order: a frame or two a jitter buffer drops, never a jump
        assert max(delays) - min(delays) <= MAX_SLIP, f"the {who} heard (piece@delay): {report}"
    record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended")
    assert record["transfers"][0]["fallback"]["status"] in ("ended", "answered")
