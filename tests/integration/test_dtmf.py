"""DTMF digits as RFC 4733 telephone-events, from SIPp and from baresip.

sipbridge reports each digit it receives on stderr as
``sipbridge: call <rtc_id> dtmf <digit> <duration_ms>ms``. Two callers press
keys at it:

- SIPp, ``uac_dtmf.xml``: 1, 2, 3, # replayed from the RFC 2833 captures
  Debian's sip-tester ships (payload type 101). Their duration field ends at
  2240 (280 ms at 8000 Hz) although their packets span 140 ms; either is a
  plausible report.
- baresip, ``sndcode`` one digit at a time: each event's duration field ends
  at 1440 (180 ms) and its packets, end packets included, span about 220 ms.

The first two tests check the callers themselves against an RTP sink (SIPp
as the called party with ``uas_sink.xml``, its media sent to a port the test
reads), so a failure of the last two is the gateway's.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.integration.peers import Baresip, RtpSink, SippUas, telephone_events
from tests.polling import until

if TYPE_CHECKING:
    from tests.integration.gateway import Gateway
    from tests.integration.sipp import SippResult

pytestmark = pytest.mark.integration

PCAPS = Path("/usr/share/sip-tester")
SIPP_DIGITS = "123#"  # as uac_dtmf.xml plays them
SIPP_PCAPS = [PCAPS / f"dtmf_2833_{'pound' if d == '#' else d}.pcap" for d in SIPP_DIGITS]
SIPP_EVENT_MS = 280.0  # the captures' final duration field, 2240 / 8 kHz
SIPP_DURATION_MS = (100, 320)  # plausible reports: the field (280) or the packets' span (140)
BARESIP_DIGITS = "159*0#"
BARESIP_EVENT_MS = 180.0
BARESIP_DURATION_MS = (100, 260)  # the field (180) or the packets' span (~220)
TELEPHONE_EVENT_PT = 101  # what uac_dtmf.xml, the captures and baresip all use
DTMF_LINE = re.compile(
    r"sipbridge[.\w]*: call (?P<call>\S+) dtmf (?P<digit>[0-9A-D*#]) (?P<ms>\d+)ms"
)


def raw_udp_socket_allowed() -> bool:
    """SIPp replays captures through a raw socket: root or CAP_NET_RAW."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except PermissionError:
        return False
    return True


needs_sipp = pytest.mark.skipif(
    shutil.which("sipp") is None, reason="sipp is not installed (scripts/setup.sh does)"
)
needs_pcap_play = pytest.mark.skipif(
    not all(p.is_file() for p in SIPP_PCAPS) or not raw_udp_socket_allowed(),
    reason=f"SIPp's DTMF captures ({PCAPS}) or a raw socket (root or CAP_NET_RAW) are missing",
)
needs_baresip = pytest.mark.skipif(
    shutil.which("baresip") is None, reason="baresip is not installed (scripts/setup.sh does)"
)


def logged_digits(gw: Gateway, count: int, what: str,
                  timeout: float = 3.0) -> list[re.Match[str]]:
    """The gateway's DTMF log lines, once there are ``count`` of them; fails naming ``what``
    and the lines there are when there are fewer after ``timeout``."""
    return until(what, lambda: list(DTMF_LINE.finditer(gw.log())),
                 lambda found: len(found) >= count, timeout)


def assert_digits_logged(
    gw: Gateway, digits: str, duration_ms: tuple[int, int], context: str
) -> None:
    found = logged_digits(gw, len(digits), f"the digits {digits} in the gateway's log ({context})")
    log = f"{context}\n--- gateway log ---\n{gw.log()[-4000:]}"
    assert "".join(m["digit"] for m in found) == digits, log
    assert len({m["call"] for m in found}) == 1, f"digits reported for several calls\n{log}"
    low, high = duration_ms
    assert all(low <= int(m["ms"]) <= high for m in found), (
        f"durations {[int(m['ms']) for m in found]} ms not within {low}-{high} ms\n{log}"
    )


# --- the callers themselves ---------------------------------------------------------


@needs_sipp
@needs_pcap_play
def test_sipp_scenario_sends_the_digits(sipp: Callable[..., SippResult], tmp_path: Path) -> None:
    with RtpSink() as sink:
        keys = {"sink_port": str(sink.port)}
        with SippUas(tmp_path / "uas", "uas_sink.xml", rtp_echo=False, keys=keys) as uas:
            result = sipp(uas.address, "uac_dtmf.xml")
            assert uas.wait(5.0) == 0, uas.output()
    assert result.ok, result.describe()
    events = telephone_events(sink.packets, TELEPHONE_EVENT_PT)
    assert "".join(e.digit for e in events) == SIPP_DIGITS, events
    for e in events:
        assert e.ended and e.packets == 10 and e.duration_ms == SIPP_EVENT_MS, e
        assert 100 <= e.span_ms <= 200, e


@needs_sipp
@needs_baresip
def test_baresip_sends_the_digits(tmp_path: Path) -> None:
    with RtpSink() as sink:
        keys = {"sink_port": str(sink.port)}
        with (
            SippUas(tmp_path / "uas", "uas_sink.xml", rtp_echo=False, keys=keys) as uas,
            Baresip(tmp_path / "baresip") as ua,
        ):
            call = ua.call(f"sip:dtmf@{uas.address}", np.zeros(800), 3.0, dtmf=BARESIP_DIGITS)
            assert uas.wait(5.0) == 0, uas.output()
    assert call.established and call.dtmf_sent == BARESIP_DIGITS, call
    events = telephone_events(sink.packets, TELEPHONE_EVENT_PT)
    assert "".join(e.digit for e in events) == BARESIP_DIGITS, events
    for e in events:
        assert e.ended and e.duration_ms == BARESIP_EVENT_MS, e


# --- the gateway ---------------------------------------------------------------------


@needs_pcap_play
def test_gateway_reports_sipp_digits(
    start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult]
) -> None:
    gw = start_gateway(auto_answer="echo")
    result = sipp(gw, "uac_dtmf.xml")
    assert result.ok, result.describe()
    assert_digits_logged(gw, SIPP_DIGITS, SIPP_DURATION_MS, result.describe())


@needs_baresip
def test_gateway_reports_baresip_digits(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = start_gateway(auto_answer="echo")
    with Baresip(tmp_path / "baresip") as ua:
        call = ua.call(f"sip:dtmf@{gw.address}", np.zeros(800), 3.0, dtmf=BARESIP_DIGITS)
        log = ua.log()
    context = f"{call}\n--- baresip ---\n{log[-3000:]}"
    assert call.established, context
    assert_digits_logged(gw, BARESIP_DIGITS, BARESIP_DURATION_MS, context)
