"""SRTP with SDES keys against a real phone: baresip's srtp module (``mediaenc=srtp-mand``,
RTP/SAVP) calls the gateway over UDP signalling (``srtp_over_cleartext`` on: the lab case).

- echo: what baresip hears back, and the gateway's recording of the caller, correlate
  above 0.9 with what baresip sent; a tap on ``lo`` finds none of that audio's G.711 in
  any datagram of the SRTP call, and finds it in a cleartext call to the same gateway
  (the check can fail);
- agent: the built-in agent greets an SRTP caller and the caller hears it;
- bad input: tampered, replayed and wrong-key packets sent as the caller (a spoofed
  source) to a live SRTP call are dropped and counted by reason, on the call's record
  and on /metrics, and the call goes on;
- the call's record (timeline, store) and the gateway's log hold no key.

baresip sends its first RTCP packet (an APP "PING"/"PONG" to open NAT bindings) before
its SRTP is set up, in clear: the gateway drops it as rtcp_srtp_auth, as it should.
"""

from __future__ import annotations

import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pylibsrtp
import pytest

from sipbridge.media.g711 import ulaw_encode
from sipbridge.media.rtp import build_rtp, parse_rtp
from tests.integration.callrecords import api_get, call_record, wait_first_call, wait_record
from tests.integration.capture import Seen, can_capture, capture, spoof_udp
from tests.integration.gateway import Gateway
from tests.integration.interop import sip_entries
from tests.integration.peers import PHONE_RATE, Baresip, BaresipCall, make_speech_wav, xcorr_delay
from tests.integration.test_interop_phones import gateway_recording

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

KEY = "sk-srtp-test"
SPEECH = "Please hold while I connect you to the sales team."
CALL_SECONDS = 4.5
MIN_CORRELATION = 0.9
SRTP = {"srtp": "optional", "srtp_over_cleartext": True, "api_key": [KEY]}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    return path, make_speech_wav(path, SPEECH)


def base(gw: Gateway) -> str:
    return f"http://127.0.0.1:{gw.http_port}/v1"


WINDOW = 24  # octets: 3 ms of G.711, as good as unique in speech


def g711_windows(sent: np.ndarray) -> set[bytes]:
    """Every WINDOW-octet run of the caller's voiced audio in PCMU, as it would be in
    RTP payloads in clear (at any alignment to the packets)."""
    encoded = ulaw_encode(sent)
    loud = np.abs(sent.astype(np.int32)) > 2000
    return {encoded[i:i + WINDOW] for i in range(len(encoded) - WINDOW)
            if loud[i:i + WINDOW].sum() > WINDOW // 2}


def in_clear(seen: list[Seen], windows: set[bytes]) -> int:
    """How many RTP-looking datagrams on the wire carry some of the caller's audio."""
    return sum(any(s.payload[i:i + WINDOW] in windows
                   for i in range(12, len(s.payload) - WINDOW + 1))
               for s in seen if s.transport == "udp" and s.payload[:1] == b"\x80")


def no_key_anywhere(gw: Gateway, record: dict[str, Any]) -> None:
    """Neither side's SDES key in the record (timeline, store) nor in the gateway's log;
    the SIP messages are on the timeline, their keys redacted."""
    texts = [str(e.get("text", "")) for e in sip_entries(record)]
    assert any("a=crypto:" in t for t in texts), "no SDP with a=crypto on the timeline"
    assert all("inline:<redacted>" in t for t in texts if "a=crypto:" in t)
    dumped = repr(record) + gw.log()
    assert not re.search(r"inline:(?!<redacted>)", dumped), "a key reached the record or log"


def test_srtp_echo_is_heard_and_nothing_is_in_clear_on_the_wire(
    start_gateway: Callable[..., Gateway], speech: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    if not can_capture():
        pytest.skip("capturing on lo needs root")
    wav, sent = speech
    gw = start_gateway(auto_answer="echo", recordings=str(tmp_path / "rec"), **SRTP)
    windows = g711_windows(sent)
    with Baresip(tmp_path / "srtp", mediaenc="srtp-mand") as ua, capture() as seen:
        call = ua.call(f"sip:echo@{gw.address}", wav, CALL_SECONDS)
        log = ua.log()
    context = f"{call}\n--- baresip ---\n{log[-3000:]}\n--- gateway ---\n{gw.log()[-3000:]}"
    assert call.established, context
    peak, delay = xcorr_delay(sent, call.received, call.rate)
    assert peak > MIN_CORRELATION, f"correlation {peak:.4f} at {delay * 1000:.1f} ms\n{context}"
    recorded, _ = gateway_recording(tmp_path / "rec")
    assert xcorr_delay(sent, recorded, PHONE_RATE)[0] > MIN_CORRELATION, context
    rtp = [s for s in seen if s.transport == "udp" and s.payload[:1] == b"\x80"]
    assert len(rtp) > 300, f"{len(rtp)} RTP datagrams seen on lo"
    assert in_clear(seen, windows) == 0, "the caller's audio crossed lo in clear"
    record = call_record(base(gw), KEY, _only_call(gw))
    assert record["media"]["srtp"] is True
    no_key_anywhere(gw, record)
    # The control: the same audio in a cleartext call is found on the wire.
    with Baresip(tmp_path / "clear") as ua, capture() as seen_clear:
        plain = ua.call(f"sip:echo@{gw.address}", wav, CALL_SECONDS)
    assert plain.established
    assert in_clear(seen_clear, windows) > 50, "the check finds audio in clear"


def _only_call(gw: Gateway) -> str:
    calls = api_get(base(gw), KEY, "/realtime/calls")["data"]
    assert calls, "the gateway lists no call"
    return str(calls[0]["id"])


def test_an_srtp_caller_hears_the_agent_greet(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    pytest.importorskip("sipbridge.localmodel.server")
    gw = start_gateway(auto_answer="agent", recordings=str(tmp_path / "rec"), **SRTP)
    with Baresip(tmp_path / "srtp", mediaenc="srtp-mand") as ua:
        call = ua.call(f"sip:agent@{gw.address}", np.zeros(PHONE_RATE, np.int16), 6.0)
        log = ua.log()
    context = f"{call}\n--- baresip ---\n{log[-3000:]}\n--- gateway ---\n{gw.log()[-3000:]}"
    assert call.established, context
    record = call_record(base(gw), KEY, _only_call(gw))
    greeting = next((str(e.get("text")) for e in record.get("timeline", [])
                     if e.get("kind") == "transcript" and e.get("role") == "agent"), None)
    assert greeting, f"the agent said nothing\n{context}"
    assert record["media"]["srtp"] is True
    heard = call.received.astype(np.float64)
    loud = heard.size and np.sqrt(np.mean(heard ** 2))
    assert loud > 300, f"baresip heard silence (rms {loud})\n{context}"
    no_key_anywhere(gw, record)


def _port(text: str) -> int:
    match = re.search(r"^m=audio (\d+) ", text, re.MULTILINE)
    assert match, text
    return int(match.group(1))


def test_bad_srtp_packets_are_dropped_and_counted_and_the_call_goes_on(
    start_gateway: Callable[..., Gateway], speech: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    if not can_capture():
        pytest.skip("spoofing the caller's address needs root")
    wav, sent = speech
    gw = start_gateway(auto_answer="echo", **SRTP)
    result: dict[str, BaresipCall] = {}
    with Baresip(tmp_path / "srtp", mediaenc="srtp-mand") as ua, capture() as seen:
        caller = threading.Thread(target=lambda: result.update(
            call=ua.call(f"sip:echo@{gw.address}", wav, CALL_SECONDS)))
        caller.start()
        call_id = wait_first_call(base(gw), KEY, 10)
        record = wait_record(base(gw), KEY, call_id,
                             lambda r: (r.get("media") or {}).get("packets_in", 0) > 20,
                             "receives RTP")
        invite = sip_entries(record, direction="in", method="INVITE")[0]["text"]
        ok = sip_entries(record, direction="out", status=200)[0]["text"]
        theirs, ours = ("127.0.0.1", _port(invite)), ("127.0.0.1", _port(ok))
        captured = [s.payload for s in list(seen) if s.transport == "udp"
                    and s.source_port == theirs[1] and s.dest_port == ours[1]]
        assert len(captured) > 5, "no SRTP from the caller on the wire"
        real = captured[-1]
        ssrc, seq = parse_rtp(real).ssrc, parse_rtp(real).sequence
        # Replays of what the caller sent, a tampered copy, and a stranger's key.
        for old in captured[-4:-1]:
            spoof_udp(old, theirs, ours)
        # Tampered: a later sequence number under the old tag (libsrtp checks the
        # replay window first, so an altered copy of a received index is a replay).
        ahead = ((seq + 100) & 0xFFFF).to_bytes(2, "big")
        spoof_udp(real[:2] + ahead + real[4:], theirs, ours)
        stranger = pylibsrtp.Session(pylibsrtp.Policy(
            key=secrets.token_bytes(30),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        for k in range(3):
            forged = build_rtp(0, (seq + 40 + k) & 0xFFFF, 0, ssrc, b"\xff" * 160)
            spoof_udp(stranger.protect(forged), theirs, ours)
        caller.join(CALL_SECONDS + 15)
    call = result.get("call")
    assert call is not None and call.established, gw.log()[-3000:]
    peak, _ = xcorr_delay(sent, call.received, call.rate)
    assert peak > MIN_CORRELATION, f"the call did not go on: correlation {peak:.3f}"
    record = wait_record(base(gw), KEY, call_id, lambda r: r["state"] == "ended", "ends")
    dropped = record["media"]["dropped"]
    assert dropped.get("srtp_replay", 0) >= 3 and dropped.get("srtp_auth", 0) >= 4, dropped
    _check_metrics(gw)


def _check_metrics(gw: Gateway) -> None:
    deadline = time.monotonic() + 5
    while True:
        text = httpx.get(f"http://127.0.0.1:{gw.http_port}/metrics", timeout=5,
                         headers={"Authorization": f"Bearer {KEY}"}).text
        auth = re.search(r'sipbridge_srtp_packets_dropped_total\{reason="auth"\} (\S+)', text)
        if auth and float(auth.group(1)) >= 4 and "sipbridge_srtp_calls_total 1.0" in text:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"SRTP drops not on /metrics:\n{text[-2000:]}")
        time.sleep(0.1)
