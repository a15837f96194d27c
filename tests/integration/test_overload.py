"""Overload control in a running gateway: with a tiny rate bound, new calls from SIPp get
503 + Retry-After at once, while a call in progress keeps its media both ways and
ends with its BYE, OPTIONS are answered, and /metrics counts the refusals."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from sipbridge.media.rtp import build_rtp, parse_rtp
from tests.integration.gateway import Gateway
from tests.integration.probe import LOOPBACK
from tests.integration.sipp import SippResult
from tests.polling import until

pytestmark = pytest.mark.integration

REFUSED = 10  # new calls SIPp places while the one call is in progress
WAIT = 5.0  # seconds for any one answer


class RawCall:
    """One call placed over UDP by hand, so the test holds it open while SIPp calls."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((LOOPBACK, 0))
        self.sip.settimeout(WAIT)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((LOOPBACK, 0))
        self.rtp.settimeout(0.05)
        self.port = self.sip.getsockname()[1]
        self.call_id = f"{uuid.uuid4().hex}@{LOOPBACK}"
        self.tag = uuid.uuid4().hex[:10]
        self.to = ""
        self.media: tuple[str, int] | None = None

    def request(self, method: str, cseq: int, *, to: str | None = None,
                body: bytes = b"", branch: str | None = None) -> bytes:
        branch = branch or "z9hG4bK" + uuid.uuid4().hex
        head = (
            f"{method} sip:agent@{self.gw.address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:caller@{LOOPBACK}>;tag={self.tag}\r\n"
            f"To: {to or f'<sip:agent@{self.gw.address}>'}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:caller@{LOOPBACK}:{self.port}>\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def final(self, method: str) -> bytes:
        """The next final response to `method` (provisional ones skipped)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            data, _ = self.sip.recvfrom(65535)
            if re.search(rb"\r\nCSeq: *\d+ " + method.encode(), data) and \
                    not data.startswith(b"SIP/2.0 1"):
                return data
        raise AssertionError(f"no final response to {method} within {WAIT} s")

    def place(self) -> None:
        sdp = (f"v=0\r\no=caller 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\n"
               f"t=0 0\r\nm=audio {self.rtp.getsockname()[1]} RTP/AVP 0\r\n"
               "a=rtpmap:0 PCMU/8000\r\n").encode()
        self.sip.sendto(self.request("INVITE", 1, body=sdp), (self.gw.host, self.gw.port))
        ok = self.final("INVITE")
        assert ok.startswith(b"SIP/2.0 200"), ok[:200]
        to = re.search(rb"\r\nTo: *([^\r\n]+)", ok)
        port = re.search(rb"\r\nm=audio (\d+) ", ok)
        assert to is not None and port is not None, ok
        self.to = to.group(1).decode()
        self.media = (LOOPBACK, int(port.group(1)))
        self.sip.sendto(self.request("ACK", 1, to=self.to), (self.gw.host, self.gw.port))

    def echo_round(self, packets: int, seq0: int) -> int:
        """Send `packets` RTP packets at 20 ms; how many came back (echo mode)."""
        assert self.media is not None
        back = 0
        for n in range(packets):
            self.rtp.sendto(build_rtp(0, seq0 + n, (seq0 + n) * 160, 0x1234, b"\xff" * 160),
                            self.media)
            end = time.monotonic() + 0.02
            while time.monotonic() < end:
                try:
                    data, _ = self.rtp.recvfrom(2048)
                except TimeoutError:
                    continue
                if parse_rtp(data).payload_type == 0:
                    back += 1
        return back

    def bye(self) -> bytes:
        self.sip.sendto(self.request("BYE", 2, to=self.to), (self.gw.host, self.gw.port))
        return self.final("BYE")

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()


def test_new_calls_get_503_while_a_call_in_progress_keeps_its_media(
        start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult]) -> None:
    # One new call per 50 s: the first takes the only token, every later one is refused.
    gw = start_gateway(auto_answer="echo", media_timeout=0,
                       overload={"max_rate": 0.02, "retry_after": 7})
    call = RawCall(gw)
    try:
        call.place()
        assert call.echo_round(25, 0) >= 20  # echoed before the refusals ...
        result: list[SippResult] = []
        flood = threading.Thread(target=lambda: result.append(sipp(
            gw, "overloaded_503.xml", calls=REFUSED, rate=20, timeout=30)))
        flood.start()
        during = call.echo_round(50, 100)  # ... while SIPp is refused ...
        flood.join(60)
        assert result, "SIPp did not finish"
        sipp_run = result[0]
        assert (sipp_run.returncode, sipp_run.successful, sipp_run.failed) == \
            (0, REFUSED, 0), sipp_run.describe()
        assert "Retry-After: 7" in sipp_run.messages, sipp_run.messages[-3000:]
        assert during >= 40, f"{during} of 50 RTP packets echoed while refusing calls"
        assert call.echo_round(25, 200) >= 20  # ... and after
        status = gw.options(timeout=2)
        assert status is not None and status.startswith("SIP/2.0 200"), status
        assert gw.metric("sipbridge_overload_rejected_total") == REFUSED
        assert gw.metric("sipbridge_overload_active") == 1  # no token for 50 s
        assert gw.metric("sipbridge_calls_active") == 1
        assert call.bye().startswith(b"SIP/2.0 200")
    finally:
        call.close()
    until("no call active after the BYE", lambda: gw.metric("sipbridge_calls_active"),
          lambda active: active == 0, WAIT, interval=0.1)
    log = gw.log()
    assert "Traceback" not in log
    # Refusals are counted, not logged one by one.
    assert log.count("overloaded") <= 2, log


def test_queue_delay_sheds_a_burst_and_recovers(
        start_gateway: Callable[..., Gateway]) -> None:
    """Datagrams held in the socket past the bound (the loop stopped reading them: a
    burst of INVITEs sent while the process is stopped) get 503 once read; OPTIONS in
    the same burst are answered; after the burst new calls are taken again."""
    gw = start_gateway(auto_answer="silence", overload={"queue_delay_ms": 100})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(WAIT)
        port = s.getsockname()[1]

        def invite(n: int) -> bytes:
            return (
                f"INVITE sip:agent@{gw.address} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK-burst-{n};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:c@{LOOPBACK}>;tag=t{n}\r\n"
                f"To: <sip:agent@{gw.address}>\r\nCall-ID: burst-{n}@{LOOPBACK}\r\n"
                f"CSeq: 1 INVITE\r\nContact: <sip:c@{LOOPBACK}:{port}>\r\n"
                f"Content-Length: 0\r\n\r\n").encode()

        gw.process.send_signal(19)  # SIGSTOP: the datagrams wait in the socket
        try:
            for n in range(5):
                s.sendto(invite(n), (gw.host, gw.port))
            s.sendto(invite(99).replace(b"INVITE", b"OPTIONS"), (gw.host, gw.port))
            time.sleep(0.5)
        finally:
            gw.process.send_signal(18)  # SIGCONT
        finals: dict[str, bytes] = {}
        deadline = time.monotonic() + WAIT
        while len(finals) < 6 and time.monotonic() < deadline:
            data, _ = s.recvfrom(65535)
            if data.startswith(b"SIP/2.0 1"):
                continue
            cid = re.search(rb"\r\nCall-ID: *burst-(\d+)", data)
            assert cid is not None, data
            finals[cid.group(1).decode()] = data
        assert sorted(finals) == ["0", "1", "2", "3", "4", "99"], finals
        for n in range(5):
            assert finals[str(n)].startswith(b"SIP/2.0 503 "), finals[str(n)][:100]
            assert b"\r\nRetry-After: 2\r\n" in finals[str(n)]
        assert finals["99"].startswith(b"SIP/2.0 200")
        # Read at once, the next INVITE is a call again (rung and answered).
        time.sleep(0.2)
        s.sendto(invite(7), (gw.host, gw.port))
        while True:
            data, _ = s.recvfrom(65535)
            if not data.startswith(b"SIP/2.0 1"):
                break
        assert data.startswith(b"SIP/2.0 200"), data[:100]
    assert gw.metric("sipbridge_overload_rejected_total") == 5
    # the episode ends a second after the backlog
    until("the overload over after the burst", lambda: gw.metric("sipbridge_overload_active"),
          lambda active: active == 0, WAIT, interval=0.2)
