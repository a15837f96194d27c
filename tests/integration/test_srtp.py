"""SRTP with SDES keys against a real phone: baresip's srtp module (``mediaenc=srtp-mand``,
RTP/SAVP) calls the gateway over UDP signalling (``srtp_over_cleartext`` on: the lab case).

- echo: what baresip hears back, and the gateway's recording of the caller, hold what
  baresip sent, piece by piece (``echo_missing``: on a loaded machine a jitter buffer,
  the gateway's or baresip's, may take up or give back a 20 ms frame mid-call, which one
  correlation over the whole call would take for a broken echo); a tap on ``lo`` finds none of that
  audio's G.711 in any datagram of the SRTP call, and finds it in a cleartext call to
  the same gateway (the check can fail);
- agent: the built-in agent greets an SRTP caller and the caller hears it;
- bad input: tampered, replayed and wrong-key packets sent as the caller (a spoofed
  source) to a live SRTP call are dropped and counted by reason, on the call's record
  and on /metrics, and the call goes on;
- the call's record (timeline, store) and the gateway's log hold no key.

The tap (capture.py) takes only the gateway's media ports (``RTP_PORTS``, a range no
other process on the machine uses) in the kernel, and fails the test if it lost a
packet; of what it takes, a check counts only the call's own RTP and RTCP ports.

``rtcp_srtp_auth=1`` on the SRTP call's record is baresip, and harmless: it sends its
first and last RTCP in clear. The first, an APP "PING"/"PONG" to open NAT bindings, goes
before its SRTP is set up (it sends it again under SRTCP just after); the last, a BYE
with an SDES CNAME, goes as it tears the call down, after its SIP BYE, when the gateway
has ended the call and no longer counts it. Neither carries audio or a key; the gateway
drops the first as rtcp_srtp_auth, as it should.
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

from sipbridge.media.g711 import alaw_encode, ulaw_decode, ulaw_encode
from sipbridge.media.rtp import build_rtp, parse_rtp
from tests.integration.callrecords import api_get, call_record, wait_first_call, wait_record
from tests.integration.capture import Seen, can_capture, capture, spoof_udp
from tests.integration.gateway import Gateway
from tests.integration.interop import sip_entries
from tests.integration.peers import (
    PHONE_RATE,
    Baresip,
    BaresipCall,
    echo_missing,
    make_speech_wav,
    xcorr_delay,
)
from tests.integration.test_interop_phones import gateway_recording

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

KEY = "sk-srtp-test"
SPEECH = "Please hold while I connect you to the sales team."
OTHER_SPEECH = "The weather tomorrow will be cold and windy, with rain in the evening."
CALL_SECONDS = 4.5
# The gateway's media ports, apart from every other process's (the kernel hands out
# 32768-60999 to sockets bound to port 0, other gateways take 10000-20000): the tap on lo
# takes only these ports, which are this test's calls and nothing else.
RTP_PORTS = range(61000, 65536)
# The gateway as these tests run it on a busy machine: its media on RTP_PORTS, and no
# overload control (when the machine is loaded its SIP datagrams wait in the socket past
# the bound and it rightly answers a new call 503: test_overload.py's subject, not SRTP's).
ON_A_BUSY_MACHINE = {"rtp_ports": f"{RTP_PORTS.start}-{RTP_PORTS.stop - 1}",
                     "overload": {"enabled": False}}
SRTP = {"srtp": "optional", "srtp_over_cleartext": True, "api_key": [KEY],
        **ON_A_BUSY_MACHINE}


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


def call_media(seen: list[Seen], record: dict[str, Any]) -> list[Seen]:
    """The datagrams of one call's media: to or from the gateway's RTP or RTCP port."""
    port = int(record["sip"]["rtp_port"])
    return [s for s in seen if s.transport == "udp"
            and ({s.source_port, s.dest_port} & {port, port + 1})]


def no_key_anywhere(gw: Gateway, record: dict[str, Any]) -> None:
    """Neither side's SDES key in the record (timeline, store) nor in the gateway's log;
    the SIP messages are on the timeline, their keys redacted."""
    texts = [str(e.get("text", "")) for e in sip_entries(record)]
    assert any("a=crypto:" in t for t in texts), "no SDP with a=crypto on the timeline"
    assert all("inline:<redacted>" in t for t in texts if "a=crypto:" in t)
    dumped = repr(record) + gw.log()
    assert not re.search(r"inline:(?!<redacted>)", dumped), "a key reached the record or log"


def stepped(samples: np.ndarray, steps: list[float]) -> np.ndarray:
    """``samples`` as a jitter buffer under load plays them: at each of ``steps`` (s,
    on a 20 ms frame's edge) a frame of silence taken up (positive) or one given back
    (negative: that frame is not played)."""
    frame = PHONE_RATE // 50
    out = samples
    for at in sorted(steps, key=abs, reverse=True):
        i = round(abs(at) * 50) * frame
        gap = np.zeros(frame, samples.dtype)
        out = np.concatenate([out[:i], gap, out[i:]] if at > 0 else [out[:i], out[i + frame:]])
    return out


def test_echo_missing_tells_a_stepped_echo_from_a_missing_or_garbled_one(
    speech: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """What the echo checks make of this test's speech, without any process: the echo
    as the gateway plays it on a loaded machine (its jitter buffer taking up a 20 ms
    frame and giving one back later) passes, though one correlation over the whole call
    says it is not the speech; an echo that is absent or garbled does not pass."""
    _, sent = speech
    steps = stepped(sent, [0.6, -2.2])
    assert xcorr_delay(sent, steps, PHONE_RATE)[0] < 0.9
    for heard in (sent, steps, stepped(sent, [0.4, 1.0, -1.6, 2.0, -2.6]),
                  np.concatenate([np.zeros(PHONE_RATE // 10, np.int16), steps])):
        assert echo_missing(sent, heard, PHONE_RATE) == ""
    frames = sent[: sent.size // 320 * 320].reshape(-1, 2, 160)
    lost = sent[: frames.size].reshape(-1, 160).copy()
    lost[::3] = 0
    garbled = {
        "silence": np.zeros_like(sent),
        "noise": np.random.default_rng(7).normal(0, 3000, sent.size).astype(np.int16),
        "another sentence": make_speech_wav(tmp_path / "other.wav", OTHER_SPEECH),
        "A-law heard as u-law": ulaw_decode(alaw_encode(sent)),
        "20 ms frames swapped in pairs": frames[:, ::-1].ravel(),
        "played backwards": sent[::-1].copy(),
        "a third of the frames lost": lost.ravel(),
    }
    for name, heard in garbled.items():
        assert echo_missing(sent, heard, PHONE_RATE), f"{name} passed for the echo"


def test_srtp_echo_is_heard_and_nothing_is_in_clear_on_the_wire(
    start_gateway: Callable[..., Gateway], speech: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    if not can_capture():
        pytest.skip("capturing on lo needs root")
    wav, sent = speech
    gw = start_gateway(auto_answer="echo", recordings=str(tmp_path / "rec"), **SRTP)
    windows = g711_windows(sent)
    with Baresip(tmp_path / "srtp", mediaenc="srtp-mand") as ua, capture(RTP_PORTS) as seen:
        call = ua.call(f"sip:echo@{gw.address}", wav, CALL_SECONDS)
        log = ua.log()
    context = f"{call}\n--- baresip ---\n{log[-3000:]}\n--- gateway ---\n{gw.log()[-3000:]}"
    assert call.established, context
    missing = echo_missing(sent, call.received, call.rate)
    assert not missing, f"baresip's echo: {missing}\n{context}"
    recorded, _ = gateway_recording(tmp_path / "rec")
    missing = echo_missing(sent, recorded, PHONE_RATE)
    assert not missing, f"the gateway's recording: {missing}\n{context}"
    record = call_record(base(gw), KEY, _newest_call(gw))
    media = call_media(seen, record)
    rtp = [s for s in media if s.payload[:1] == b"\x80"]
    assert len(rtp) > 300, f"{len(rtp)} RTP datagrams of the call seen on lo"
    assert in_clear(media, windows) == 0, "the caller's audio crossed lo in clear"
    assert record["media"]["srtp"] is True
    no_key_anywhere(gw, record)
    # The control: the same audio in a cleartext call is found on the wire.
    with Baresip(tmp_path / "clear") as ua, capture(RTP_PORTS) as seen_clear:
        plain = ua.call(f"sip:echo@{gw.address}", wav, CALL_SECONDS)
    assert plain.established
    clear_record = call_record(base(gw), KEY, _newest_call(gw))
    assert clear_record["id"] != record["id"] and clear_record["media"]["srtp"] is False
    assert in_clear(call_media(seen_clear, clear_record), windows) > 50, \
        "the check finds audio in clear"


def _newest_call(gw: Gateway) -> str:
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
    record = call_record(base(gw), KEY, _newest_call(gw))
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
    with Baresip(tmp_path / "srtp", mediaenc="srtp-mand") as ua, capture(RTP_PORTS) as seen:
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
    missing = echo_missing(sent, call.received, call.rate)
    assert not missing, f"the call did not go on: {missing}"
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
