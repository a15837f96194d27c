"""Secure trunking as carriers run it: SIP over TLS and SRTP together, `srtp = "required"`.

baresip calls the gateway's echo over TLS with ``mediaenc=srtp-mand`` (SDES keys in the
SDP, which now crosses the wire inside TLS). A tap on ``lo`` during the call shows that
neither an SRTP key (``inline:``) nor the caller's audio crosses it in clear, while it
does see the TLS records and the SRTP packets; the caller hears itself and the
gateway's recording matches what it said. A caller over the same TLS port that offers
plain RTP gets 488 with a Warning that says SRTP is required.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.integration.callrecords import api_get, call_record
from tests.integration.capture import can_capture, capture
from tests.integration.gateway import Gateway
from tests.integration.interop import sip_entries
from tests.integration.peers import PHONE_RATE, Baresip, echo_missing, make_speech_wav, needs_phones
from tests.integration.test_interop_phones import gateway_recording
from tests.integration.test_sip_tls import free_tcp_port, tls_config, tls_port
from tests.integration.test_srtp import ON_A_BUSY_MACHINE, RTP_PORTS, g711_windows, in_clear
from tests.tlscerts import make_ca

pytestmark = [
    pytest.mark.integration,
    needs_phones,
]

KEY = "sk-secure-trunk"
SPEECH = "Your order has shipped and will arrive on Tuesday."
CALL_SECONDS = 4.5


def media_port(sdp_text: str) -> int:
    match = re.search(r"^m=audio (\d+) ", sdp_text, re.MULTILINE)
    assert match, sdp_text
    return int(match.group(1))


def test_tls_and_srtp_leave_no_key_and_no_audio_in_clear_on_the_wire(
    start_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    if not can_capture():
        pytest.skip("capturing on lo needs root")
    ca = make_ca(tmp_path / "ca")
    sent = make_speech_wav(tmp_path / "speech.wav", SPEECH)
    port = free_tcp_port()
    gw = start_gateway(auto_answer="echo", srtp="required", api_key=[KEY],
                       recordings=str(tmp_path / "rec"), **ON_A_BUSY_MACHINE,
                       **tls_config(ca, port))
    target = f"sip:echo@127.0.0.1:{tls_port(gw)};transport=tls"
    # The tap takes the TLS port and the gateway's media ports (a range of its own).
    with Baresip(tmp_path / "caller", tls_ca=ca.cert, mediaenc="srtp-mand") as ua, \
            capture([tls_port(gw), *RTP_PORTS]) as seen:
        call = ua.call(target, sent, CALL_SECONDS)
        log = ua.log()
    context = f"{call}\n--- baresip ---\n{log[-3000:]}\n--- gateway ---\n{gw.log()[-3000:]}"
    assert call.established, context
    # Piece by piece, as test_srtp.py checks it (the jitter buffer's 20 ms steps).
    missing = echo_missing(sent, call.received, call.rate)
    assert not missing, f"the caller's echo: {missing}\n{context}"
    recorded, _ = gateway_recording(tmp_path / "rec")
    missing = echo_missing(sent, recorded, PHONE_RATE)
    assert not missing, f"the gateway's recording: {missing}\n{context}"

    calls = api_get(f"http://127.0.0.1:{gw.http_port}/v1", KEY, "/realtime/calls")["data"]
    record = call_record(f"http://127.0.0.1:{gw.http_port}/v1", KEY, str(calls[0]["id"]))
    invite = sip_entries(record, direction="in", method="INVITE")[0]["text"]
    ok = sip_entries(record, direction="out", status=200)[0]["text"]
    # What this call put on the wire: its signalling (to and from the TLS port) and its
    # media (to and from either side's RTP and RTCP ports); other tests may share lo.
    ports = {tls_port(gw)} | {p + k for p in (media_port(invite), media_port(ok))
                              for k in (0, 1)}
    ours = [s for s in seen if s.payload and (s.source_port in ports or s.dest_port in ports)]
    signalling = [s for s in ours if s.transport == "tcp"]
    assert len(signalling) >= 4, "the tap saw no TLS signalling"
    assert all(s.payload[0] in (0x14, 0x15, 0x16, 0x17) for s in signalling), \
        "something other than TLS records crossed the TLS port"
    assert not [s for s in ours if b"inline:" in s.payload], "an SRTP key crossed lo in clear"
    rtp = [s for s in ours if s.transport == "udp" and s.payload[:1] == b"\x80"]
    assert len(rtp) > 300, f"only {len(rtp)} RTP datagrams seen on lo"
    assert in_clear(ours, g711_windows(sent)) == 0, "the caller's audio crossed lo in clear"

    assert record["media"]["srtp"] is True
    assert "SIP/2.0/TLS" in invite and "RTP/SAVP" in invite
    assert "inline:<redacted>" in invite


def test_a_clear_rtp_offer_over_tls_gets_488_when_srtp_is_required(
    start_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    ca = make_ca(tmp_path / "ca")
    gw = start_gateway(auto_answer="echo", srtp="required", api_key=[KEY],
                       **tls_config(ca, free_tcp_port()))
    target = f"sip:echo@127.0.0.1:{tls_port(gw)};transport=tls"
    with Baresip(tmp_path / "caller", tls_ca=ca.cert) as ua:
        call = ua.call(target, np.zeros(PHONE_RATE, np.int16), 2.0)
        log = ua.log()
    assert not call.established, f"{call}\n{log[-2000:]}"
    assert "488" in log, log[-2000:]
    calls = api_get(f"http://127.0.0.1:{gw.http_port}/v1", KEY, "/realtime/calls")["data"]
    record = call_record(f"http://127.0.0.1:{gw.http_port}/v1", KEY, str(calls[0]["id"]))
    refusal = sip_entries(record, direction="out", status=488)[0]["text"]
    assert "Warning:" in refusal and "SRTP required" in refusal, refusal
