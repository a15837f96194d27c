"""Real phones against the gateway: linphone 5.1 (belle-sip, Debian's linphone-cli) and
baresip 1.0 (libre), each as it comes, nothing tuned to the gateway.

- Echo: linphone calls ``auto_answer = "echo"`` and hears its own speech back (the
  correlation check of test_media_echo.py, on what linphone recorded).
- Agent with a transfer: the phone calls ``--auto-answer agent --transfer-to`` a human's
  phone (baresip answering), waits through the greeting and asks "Can you please transfer
  me to a human?". The built-in model says "Sure, I'll transfer you now." and transfers;
  the phone follows the REFER to the human. Then:

  - the transfer's outcome (``GET /v1/realtime/calls/{id}``) is ``succeeded``; linphone's
    final NOTIFY carries ``Subscription-State: terminated;reason=reason=noresource``,
    which must not cost the outcome (every NOTIFY is answered 200);
  - the gateway leaves the call with its BYE after the success, and sends one REFER only;
  - the caller heard the whole confirmation before the REFER took the call away
    (linphone puts the call on hold with a ``sendonly`` re-INVITE as soon as the REFER
    arrives, and stops hearing it; baresip keeps listening until the gateway's BYE).
    The words come from the call's timeline and are spoken again with the built-in
    model's espeak-ng voice (checked on the greeting); the whole sentence must be in the
    gateway's stereo recording (``recordings``, which starts at the answer) ending before
    the REFER on the gateway's clock, and in what the phone recorded; for linphone also
    on linphone's own clock (its log: when its recording started, when the REFER
    arrived, when it sent the ``sendonly`` re-INVITE).

Every expectation is checked before the test fails, so a failure lists all that broke.
"""

from __future__ import annotations

import shutil
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.callrecords import wait_first_call
from tests.integration.gateway import Gateway
from tests.integration.interop import (
    Checks,
    describe_sip,
    poll_record,
    sip_entries,
    transfer_steps,
)
from tests.integration.linphone import Linphone
from tests.integration.peers import (
    PHONE_RATE,
    Baresip,
    BaresipCall,
    find_whole,
    make_speech_wav,
    pieces_found,
    read_wav,
    write_wav,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("espeak-ng") is None,
                       reason="espeak-ng is not installed (scripts/setup.sh installs it)"),
]
needs_linphone = pytest.mark.skipif(
    shutil.which("linphonec") is None,
    reason="linphonec is not installed (Debian package linphone-cli; scripts/setup.sh)")
needs_baresip = pytest.mark.skipif(
    shutil.which("baresip") is None, reason="baresip is not installed (scripts/setup.sh)")

KEY = "sk-interop-test"
NUMBER = "+61420351258"
ECHO_SPEECH = "Please hold while I connect you to the sales team."
REQUEST = "Hello. Can you please transfer me to a human?"
GREETING_WAIT = 3.5  # seconds of silence from the caller while the agent greets
CALL_SECONDS = 40.0  # what the caller's audio file lasts (the test ends the call before)
MIN_CORRELATION = 0.9  # echo: as in test_media_echo.py, for each quarter second
MAX_ECHO_DELAY = 0.250  # echo: the gateway's 150 ms budget plus linphone's 60 ms jitter buffer
G711 = ["PCMU", "PCMA"]  # these checks compare waveforms at 8 kHz
MIN_HEARD = 0.8  # the confirmation found whole in the caller's recording
CLOCK_SLACK = 0.06  # a recording's 20 ms frames against timeline times: a few frames


@pytest.fixture(scope="module")
def echo_speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return make_speech_wav(tmp_path_factory.mktemp("speech") / "echo.wav", ECHO_SPEECH)


@pytest.fixture(scope="module")
def caller_audio(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Silence through the greeting, then the request, then silence to the end."""
    request = make_speech_wav(tmp_path_factory.mktemp("speech") / "request.wav", REQUEST)
    audio = np.zeros(int(CALL_SECONDS * PHONE_RATE), np.int16)
    start = int(GREETING_WAIT * PHONE_RATE)
    audio[start:start + request.size] = request
    return audio


# --- echo ----------------------------------------------------------------------------


@needs_linphone
def test_linphone_hears_itself_from_the_echo(
    start_gateway: Callable[..., Gateway], echo_speech: np.ndarray, tmp_path: Path
) -> None:
    # G.711: the pieces' 0.9 threshold is G.711's fidelity (linphone offers opus first,
    # and two Opus generations keep the words, not the waveform: test_wideband.py).
    gateway = start_gateway(auto_answer="echo", codecs=G711)
    with Linphone(tmp_path / "linphone") as phone:
        phone.play(echo_speech, 10)
        mark = phone.mark()
        call = phone.call(f"sip:echo@{gateway.address}")
        phone.wait_connected(call, 5, since=mark)
        time.sleep(echo_speech.size / PHONE_RATE + 1.3)
        phone.terminate_call(call)
        reason = phone.wait_ended(call, 5, since=mark)
        heard, rate, _ = phone.heard()
        context = f"ended: {reason}\n{phone.output()}"
    assert rate == PHONE_RATE, context
    assert heard.size > 0.8 * echo_speech.size, f"heard {heard.size} samples\n{context}"
    # Piece by piece: linphone's jitter buffer sometimes drops 10 ms of what it plays
    # about a second in (the gateway's own recording of such a call shows a steady echo),
    # which would smear one correlation over the whole recording.
    pieces = pieces_found(echo_speech, heard, rate)
    found = [score for score, _ in pieces]
    delays = [delay for score, delay in pieces if score > MIN_CORRELATION]
    report = ", ".join(f"{score:.3f}@{delay * 1000:.0f}ms" for score, delay in pieces)
    assert sum(score > MIN_CORRELATION for score in found) >= 0.8 * len(found), (
        f"pieces heard back (correlation@delay): {report}\n{context}")
    # the recording starts with the stream, a few ms before the first packet is sent
    assert delays and all(0.0 <= d < MAX_ECHO_DELAY for d in delays), (
        f"echo late: {report}\n{context}")
    assert max(delays) - min(delays) <= 0.030, f"the echo's delay wandered: {report}\n{context}"


# --- agent with a transfer -----------------------------------------------------------


@dataclass
class Agent:
    gateway: Gateway
    human: Baresip
    since: int  # the human's event index before the call

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}/v1"


@pytest.fixture
def agent(start_gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[Agent]:
    """The gateway answering with the built-in agent, transferring to a baresip that
    answers (the human), recording each call in stereo."""
    pytest.importorskip("sipbridge.localmodel.server")
    if shutil.which("baresip") is None:
        pytest.skip("baresip is not installed (scripts/setup.sh)")
    with Baresip(tmp_path / "human", user=NUMBER, answermode="auto") as human:
        since = human.prepare(np.zeros(PHONE_RATE, np.int16), CALL_SECONDS)
        gateway = start_gateway(auto_answer="agent", api_key=[KEY],
                                transfer_to=f"sip:{NUMBER}@{human.address}",
                                transfer_notify_timeout=5,
                                recordings=str(tmp_path / "recordings"), codecs=G711,
                                # the same words are the same samples: found in recordings
                                agent_voice_engine="espeak")
        yield Agent(gateway, human, since)


def gateway_recording(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The caller's and the agent's channels of the one call recorded in `directory`."""
    files = sorted(directory.glob("*.wav"))
    if len(files) != 1:
        raise AssertionError(f"expected one recording in {directory}, found {files}")
    with wave.open(str(files[0])) as w:
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    return stereo[:, 0].copy(), stereo[:, 1].copy()


def agent_words(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """The agent's greeting, and what it said first after the caller asked for a human."""
    said = [(e.get("role"), str(e.get("text", ""))) for e in record.get("timeline", [])
            if e.get("kind") == "transcript"]
    greeting = next((text for role, text in said if role == "agent"), None)
    asked = next((i for i, (role, text) in enumerate(said)
                  if role == "caller" and "human" in text.lower()), None)
    reply = None if asked is None else next(
        (text for role, text in said[asked + 1:] if role == "agent"), None)
    return greeting, reply


def spoken(text: str) -> np.ndarray:
    """`text` as the built-in model says it with espeak-ng (en-us), clause by clause, at
    the phone's 8 kHz."""
    from sipbridge.localmodel import tts
    from sipbridge.media.resample import resample

    pcm: np.ndarray = resample(tts.spoken(text), tts.RATE, PHONE_RATE)
    return pcm


def check_transfer(checks: Checks, record: dict[str, Any], human_call: BaresipCall | None
                   ) -> dict[str, float]:
    """The outcome, the gateway's BYE after the success, one REFER; the times (Unix) of
    the REFER and of the success, for the checks that follow."""
    transfers = record.get("transfers") or []
    t = transfers[0] if transfers else {}
    checks.that(t.get("status") == "succeeded", "the transfer's outcome is succeeded",
                t.get("status"), t.get("reason"), transfer_steps(record))
    refers = sip_entries(record, direction="out", method="REFER")
    checks.that(len(refers) == 1, "the gateway sent one REFER", len(refers))
    checks.that(len(transfers) == 1, "one transfer was started", len(transfers))
    answers = sip_entries(record, direction="out", cseq="NOTIFY")
    checks.that(bool(answers) and all(str(e["line"]).startswith("SIP/2.0 200") for e in answers),
                "the gateway answered every NOTIFY 200", [e["line"] for e in answers])
    ok_notify = [e for e in sip_entries(record, direction="in", method="NOTIFY")
                 if "SIP/2.0 200" in str(e.get("text", "")).split("\r\n\r\n", 1)[-1]]
    succeeded_at = float(ok_notify[0]["at"]) if ok_notify else float("inf")
    byes = [e for e in sip_entries(record, direction="out", method="BYE")
            if float(e["at"]) >= succeeded_at]
    checks.that(bool(byes), "the gateway sent its BYE after the final NOTIFY (it left the call)",
                [e["line"] for e in sip_entries(record, direction="out", method="BYE")])
    checks.that(record.get("end_reason") == "transferred", "the call ended as transferred",
                record.get("state"), record.get("end_reason"))
    checks.that(human_call is not None and human_call.established,
                "the caller reached the human's phone",
                human_call.close_reason if human_call else "no call")
    return {"refer": float(refers[0]["at"]) if refers else float("nan"),
            "answered": float(record.get("answered_at") or 0.0)}


@dataclass
class Said:
    """The confirmation as the test speaks it, and where the gateway's recording has it."""

    pcm: np.ndarray
    start: float  # seconds into the gateway's recording (0: the answer)

    @property
    def seconds(self) -> float:
        return self.pcm.size / PHONE_RATE


def check_said(checks: Checks, record: dict[str, Any], recordings: Path,
               times: dict[str, float]) -> Said | None:
    """The gateway played the whole confirmation, and finished it before the REFER."""
    greeting, reply = agent_words(record)
    if not checks.that(greeting is not None and reply is not None,
                       "the agent greeted, then answered the request (timeline transcripts)",
                       greeting, reply):
        return None
    assert greeting is not None and reply is not None
    _, agent = gateway_recording(recordings)
    score, _ = find_whole(spoken(greeting), agent, PHONE_RATE)
    checks.that(score >= MIN_HEARD, "the test's espeak-ng copy of the agent's voice matches "
                "the greeting the gateway played (the premise of the next checks)",
                f"{score:.2f}")
    said = spoken(reply)
    score, start = find_whole(said, agent, PHONE_RATE)
    if not checks.that(score >= MIN_HEARD,
                       f"the gateway played the whole confirmation {reply!r} before the call "
                       "ended (its recording)", f"best match {score:.2f} at {start:.2f} s"):
        return Said(said, start)
    ends_at = times["answered"] + start + said.size / PHONE_RATE
    checks.that(ends_at <= times["refer"] + CLOCK_SLACK,
                "the agent's confirmation ended before the REFER was sent (gateway's clock)",
                f"it ends {ends_at - times['refer']:+.3f} s after the REFER "
                f"({said.size / PHONE_RATE:.2f} s of speech)")
    return Said(said, start)


def check_heard(checks: Checks, said: Said | None, heard: np.ndarray, rate: int) -> float | None:
    """The caller's recording holds the whole confirmation: where it starts (seconds)."""
    if said is None:
        return None
    score, offset = find_whole(said.pcm, heard, rate)
    checks.that(score >= MIN_HEARD,
                "the caller's recording holds the whole confirmation",
                f"best match {score:.2f} at {offset:.2f} s of {heard.size / rate:.2f} s heard")
    return offset if score >= MIN_HEARD else None


@needs_linphone
def test_linphone_caller_is_transferred_by_the_agent(
    agent: Agent, caller_audio: np.ndarray, tmp_path: Path
) -> None:
    checks = Checks()
    with Linphone(tmp_path / "caller") as phone:
        phone.play(caller_audio, CALL_SECONDS)
        mark = phone.mark()
        call = phone.call(f"sip:agent@{agent.gateway.address}")
        phone.wait_connected(call, 10, since=mark)
        call_id = wait_first_call(agent.base, KEY, 5)
        record, _ = poll_record(agent.base, KEY, call_id,
                                lambda r: bool(r["transfers"]) and r["transfers"][0]["final"], 25)
        poll_record(agent.base, KEY, call_id, lambda r: r["state"] == "ended", 5)
        time.sleep(0.5)  # let linphone log the last answers
        messages = phone.sip_messages()
        console = phone.output()
        phone.stop()  # hangs up what is left (the call with the human, a call on hold)
        heard, rate, opened = phone.heard()
    record, _ = poll_record(agent.base, KEY, call_id, lambda r: r["state"] == "ended", 5)
    human_call = agent.human.answered(agent.since, 5)

    # the premise: linphone's final NOTIFY is the malformed one
    notifies = [m for m in messages if m.sent and m.method == "NOTIFY"]
    states = [m.header("Subscription-State") for m in notifies]
    checks.that("terminated;reason=reason=noresource" in states,
                "linphone reported the end of the transfer with its malformed "
                "Subscription-State (the premise of this test)", states)
    answers = [m.status for m in messages if not m.sent and m.cseq_method == "NOTIFY"]
    checks.that(bool(answers) and all(s == 200 for s in answers),
                "linphone got 200 for each of its NOTIFYs", answers)
    times = check_transfer(checks, record, human_call)
    refers = [m for m in messages if not m.sent and m.method == "REFER"]
    checks.that(len(refers) == 1, "linphone received one REFER", len(refers))
    sip_call_id = record["sip"]["call_id"]
    byes = [m for m in messages if not m.sent and m.method == "BYE"
            and m.header("Call-ID") == sip_call_id]
    checks.that(bool(byes), "linphone received the gateway's BYE for the first call")

    said = check_said(checks, record, tmp_path / "recordings", times)
    offset = check_heard(checks, said, heard, rate)
    holds = [m for m in messages if m.sent and m.method == "INVITE"
             and m.header("Call-ID") == sip_call_id and "a=sendonly" in m.body]
    if offset is not None and said is not None and refers:
        # the first stream (the call with the agent) opened the recording: sample 0
        heard_until = opened[0] + offset + said.seconds
        checks.that(heard_until <= refers[0].at + CLOCK_SLACK,
                    "linphone heard the end of the confirmation before the REFER came "
                    "(linphone's clock)", f"{heard_until - refers[0].at:+.3f} s")
        if holds:
            checks.that(heard_until <= holds[0].at + CLOCK_SLACK,
                        "linphone heard the end of the confirmation before it put the call "
                        "on hold", f"{heard_until - holds[0].at:+.3f} s")
    checks.verify(f"--- gateway timeline ---\n{describe_sip(record)}\n"
                  f"--- linphone ---\n{console}")


@needs_baresip
def test_baresip_caller_is_transferred_by_the_agent(
    agent: Agent, caller_audio: np.ndarray, tmp_path: Path
) -> None:
    checks = Checks()
    with Baresip(tmp_path / "caller") as phone:
        write_wav(phone.play_path, caller_audio, PHONE_RATE)
        start = len(phone.events)
        phone.command("dial", f"sip:agent@{agent.gateway.address}")
        answered = phone.wait_event(["CALL_ESTABLISHED", "CALL_CLOSED"], 10, since=start)
        assert answered is not None and answered["type"] == "CALL_ESTABLISHED", phone.log()[-3000:]
        call_id = wait_first_call(agent.base, KEY, 5)
        record, _ = poll_record(agent.base, KEY, call_id,
                                lambda r: bool(r["transfers"]) and r["transfers"][0]["final"], 25)
        poll_record(agent.base, KEY, call_id, lambda r: r["state"] == "ended", 5)
        phone.wait_event(["(none: read what has come)"], 0.5, since=start)
        transferred = [e for e in phone.events[start:] if e.get("type") == "TRANSFER"]
        log = phone.log()
    # baresip has quit: its sndfile dumps are closed; the first decoded one is the first call
    dumps = sorted(phone.dumps.glob("dump-*-dec.wav"))
    record, _ = poll_record(agent.base, KEY, call_id, lambda r: r["state"] == "ended", 5)
    human_call = agent.human.answered(agent.since, 5)

    checks.that(len(transferred) == 1, "baresip followed one REFER",
                [e.get("param") for e in transferred])
    times = check_transfer(checks, record, human_call)
    said = check_said(checks, record, tmp_path / "recordings", times)
    if checks.that(bool(dumps), "baresip recorded the first call"):
        heard, rate = read_wav(dumps[0])
        check_heard(checks, said, heard, rate)
    checks.verify(f"--- gateway timeline ---\n{describe_sip(record)}\n"
                  f"--- baresip ---\n{log[-3000:]}")
