"""Warm (attended) transfers between real phones: baresip calls the gateway (the caller),
the application asks for a warm transfer over the API, and the gateway dials the person
(another baresip, or SIPp) straight at its address.

- The person answers; with no decision before `brief_timeout`, the gateway connects the
  two: the caller and the person hear each other (each voiced quarter second of what one
  phone said found in the other's recording at a correlation above 0.9).
- The person does not answer (ring_timeout: the gateway CANCELs), is busy (SIPp answering
  486), or hangs up during the brief: the caller is back with the agent (the transfer
  `returned`, the call still up, the hold audio off), the steps in order on the timeline,
  and nothing of the person's call left in the gateway.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.appside import App, start_app
from tests.integration.gateway import Gateway
from tests.integration.peers import (
    PHONE_RATE,
    Baresip,
    SippUas,
    make_speech_wav,
    needs_phones,
    pieces_found,
)
from tests.integration.test_transfer_e2e import (
    MAX_SLIP,
    MIN_CORRELATION,
    call_in_background,
    finished,
)

pytestmark = [
    pytest.mark.integration,
    needs_phones,
]

NUMBER = "+61420351258"
app_side = contextlib.contextmanager(start_app)
CALLER_SPEECH = "Hello. Can you please transfer me to a human?"
PERSON_SPEECH = "Good morning, this is Alex from the support team."


def statuses(record: dict[str, Any]) -> list[str]:
    return [s["status"] for s in record["transfers"][0]["steps"]]


def transfer_webhook(app: App) -> dict[str, Any]:
    """The next webhook (signature checked with the SDK) as a dict."""
    hook = app.webhook()
    return hook if isinstance(hook, dict) else hook.model_dump()


def refer_warm(app: App, call_id: str, target: str, **options: Any) -> None:
    app.client.realtime.calls.refer(call_id, target_uri=target, extra_body={
        "sipbridge": {"mode": "warm", "brief": "A caller about an invoice", **options}})


def caller_answered(app: App, caller: Baresip, audio: np.ndarray, seconds: float
                    ) -> tuple[str, Any, Any]:
    thread, result = call_in_background(caller, f"sip:agent@{app.gateway.address}", audio,
                                        seconds)
    call_id = app.incoming().data.call_id
    app.client.realtime.calls.accept(call_id, type="realtime")
    app.wait_for(call_id, lambda r: r["state"] == "active", "active")
    return call_id, thread, result


@pytest.fixture
def speech(tmp_path: Path) -> dict[str, np.ndarray]:
    return {
        "caller": make_speech_wav(tmp_path / "caller.wav", CALLER_SPEECH),
        "person": make_speech_wav(tmp_path / "person.wav", PERSON_SPEECH),
    }


def test_the_person_answers_and_after_the_brief_caller_and_person_talk(
    start_gateway: Callable[..., Gateway], tmp_path: Path, speech: dict[str, np.ndarray],
) -> None:
    with (app_side(start_gateway, tmp_path, transfer_brief_timeout=2) as app,
          Baresip(tmp_path / "person", user=NUMBER, answermode="auto") as person):
        # Connected ~2 s after the answer: each side speaks from 3.5 s after its start.
        since = person.prepare(np.concatenate([np.zeros(int(3.5 * PHONE_RATE), np.int16),
                                               speech["person"]]), 10)
        caller_audio = np.concatenate([np.zeros(5 * PHONE_RATE, np.int16), speech["caller"]])
        with Baresip(app.tmp / "caller") as caller:
            call_id, thread, result = caller_answered(app, caller, caller_audio, 10)
            refer_warm(app, call_id, f"sip:{NUMBER}@{person.address}")
            connected = app.wait_for(call_id, lambda r: r["transfers"][0]["final"],
                                     "the warm transfer's outcome", timeout=15)
            caller_call = finished(thread, result)
            webhook = transfer_webhook(app)
        person_call = person.answered(since, 20)
        assert webhook["type"] == "realtime.call.transfer.succeeded", webhook
        assert (webhook["data"]["status"], webhook["data"]["mode"]) == ("connected", "warm")
        record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended")
    transfer = connected["transfers"][0]
    assert transfer["mode"] == "warm"
    assert statuses(connected) == ["requested", "dialing", "ringing", "answered", "briefing",
                                   "connecting", "connected"], transfer
    assert transfer["steps"][-2]["reason"] == ("no decision within 2 s of the answer: "
                                               "connecting")
    assert transfer["reason"] == "connected by bridge"  # baresip's INVITE has no Replaces
    assert person_call.established
    for who, said, heard in (("caller", speech["person"], caller_call.received),
                             ("person", speech["caller"], person_call.received)):
        pieces = pieces_found(said, heard, PHONE_RATE)
        delays = [delay for score, delay in pieces if score > MIN_CORRELATION]
        report = ", ".join(f"{score:.3f}@{delay * 1000:.0f}ms" for score, delay in pieces)
        assert len(delays) >= 0.8 * len(pieces) > 0, f"the {who} heard (piece@delay): {report}"
        assert max(delays) - min(delays) <= MAX_SLIP, f"the {who} heard (piece@delay): {report}"
    # The caller heard the hold beep (440 Hz) while the person was dialed and briefed.
    held = caller_call.received[:int(2 * PHONE_RATE)].astype(np.float64)
    assert np.abs(held).max() > 300, "no hold audio"
    spectrum = np.abs(np.fft.rfft(held))
    assert abs(np.argmax(spectrum) * PHONE_RATE / len(held) - 440) < 10
    # The caller hung up: the gateway hung up the person too, and the call ended.
    assert record["end_reason"] in ("remote_bye", "bridge_ended"), record["end_reason"]
    kinds = [e["kind"] for e in record["timeline"] if e["kind"] == "transfer"]
    assert len(kinds) == 7


def test_the_person_does_not_answer(
    start_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    with (app_side(start_gateway, tmp_path) as app,
          Baresip(tmp_path / "person", user=NUMBER) as person,  # rings, never answers
          Baresip(app.tmp / "caller") as caller):
        call_id, thread, result = caller_answered(app, caller, np.zeros(8000, np.int16),
                                                  6)
        started = time.monotonic()
        refer_warm(app, call_id, f"sip:{NUMBER}@{person.address}", ring_timeout=2)
        record = app.wait_for(call_id, lambda r: r["transfers"][0]["final"],
                              "the warm transfer's outcome", timeout=10)
        assert time.monotonic() - started < 4
        assert app.record(call_id)["state"] == "active"  # the caller is still there
        assert person.wait_event(["CALL_CLOSED"], 5) is not None  # our CANCEL
        finished(thread, result)
    assert statuses(record) == ["requested", "dialing", "ringing", "returned"]
    assert record["transfers"][0]["reason"].startswith("no_answer: ")


def test_the_person_is_busy(
    start_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    with (app_side(start_gateway, tmp_path) as app,
          SippUas(tmp_path / "busy", "uas_busy.xml", rtp_echo=False) as busy,
          Baresip(app.tmp / "caller") as caller):
        call_id, thread, result = caller_answered(app, caller, np.zeros(8000, np.int16),
                                                  4)
        refer_warm(app, call_id, f"sip:{NUMBER}@{busy.address}")
        record = app.wait_for(call_id, lambda r: r["transfers"][0]["final"],
                              "the warm transfer's outcome", timeout=10)
        assert record["state"] == "active"
        finished(thread, result)
        webhook = transfer_webhook(app)
    assert webhook["type"] == "realtime.call.transfer.failed", webhook
    assert webhook["data"]["reason"] == "busy: 486 Busy Here"
    transfer = record["transfers"][0]
    assert statuses(record) == ["requested", "dialing", "returned"]
    assert (transfer["sip_status"], transfer["reason"]) == (486, "busy: 486 Busy Here")


def test_the_person_hangs_up_during_the_brief(
    start_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    with (app_side(start_gateway, tmp_path) as app,
          Baresip(tmp_path / "person", user=NUMBER, answermode="auto") as person):
        since = person.prepare(np.zeros(8000, np.int16), 10)
        with Baresip(app.tmp / "caller") as caller:
            call_id, thread, result = caller_answered(app, caller, np.zeros(8000, np.int16),
                                                      6)
            refer_warm(app, call_id, f"sip:{NUMBER}@{person.address}")
            app.wait_for(call_id, lambda r: statuses(r)[-1] == "briefing", "briefing")
            assert person.wait_event(["CALL_ESTABLISHED"], 5, since=since) is not None
            person.command("hangup")
            record = app.wait_for(call_id, lambda r: r["transfers"][0]["final"],
                                  "the warm transfer's outcome", timeout=10)
            assert record["state"] == "active"
            finished(thread, result)
    assert statuses(record) == ["requested", "dialing", "ringing", "answered", "briefing",
                                "returned"]
    assert record["transfers"][0]["reason"] == "hung_up: the person hung up during the brief"


def test_a_caller_that_supports_replaces_is_referred_to_the_persons_call(
    start_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    with (app_side(start_gateway, tmp_path, transfer_brief_timeout=1) as app,
          Baresip(tmp_path / "person", user=NUMBER, answermode="auto") as person):
        since = person.prepare(np.zeros(8000, np.int16), 20)
        sipp = app.call("warm_replaces.xml")
        call_id = app.incoming().data.call_id
        app.client.realtime.calls.accept(call_id, type="realtime")
        app.wait_for(call_id, lambda r: r["state"] == "active", "active")
        refer_warm(app, call_id, f"sip:{NUMBER}@{person.address}")
        record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended", timeout=15)
        verdict = sipp.result(timeout=20)
        # Nobody came with an INVITE with Replaces: the gateway ends the person's call.
        person_call = person.answered(since, 10)
    transfer = record["transfers"][0]
    assert verdict.returncode == 0, verdict.output + verdict.errors
    assert statuses(record) == ["requested", "dialing", "ringing", "answered", "briefing",
                                "connecting", "connected"], transfer
    assert (transfer["reason"], transfer["sip_status"]) == ("connected by replaces", 200)
    assert record["end_reason"] == "transferred"
    assert person_call.established and person_call.close_reason
    replaces = [e["status"] for e in record["timeline"] if e["kind"] == "replaces"]
    assert replaces == ["sent", "accepted", "succeeded"]


def test_a_person_answering_an_unusable_sdp_is_hung_up_and_the_caller_returns(
    start_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    with (app_side(start_gateway, tmp_path) as app,
          SippUas(tmp_path / "garbage", "uas_bad_sdp.xml", rtp_echo=False) as garbage,
          Baresip(app.tmp / "caller") as caller):
        call_id, thread, result = caller_answered(app, caller, np.zeros(8000, np.int16), 4)
        refer_warm(app, call_id, f"sip:{NUMBER}@{garbage.address}")
        record = app.wait_for(call_id, lambda r: r["transfers"][0]["final"],
                              "the warm transfer's outcome", timeout=10)
        assert record["state"] == "active"
        # SIPp got our ACK and our BYE, and answered it: the person's call is over.
        assert garbage.wait(10) == 0, garbage.output()
        finished(thread, result)
    transfer = record["transfers"][0]
    assert statuses(record) == ["requested", "dialing", "returned"]
    assert transfer["reason"].startswith("failed: bad SDP answer"), transfer
