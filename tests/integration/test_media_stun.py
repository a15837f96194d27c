"""STUN keep-alives on a live call's media ports, and the call's media figures while it
runs.

SIPp places the call (``uac_listen.xml``: its SDP names this test's RTP socket); the test
is the phone's media: from that socket (and the one after it, for RTCP) it sends RTP and,
as phones behind NAT do, STUN Binding Requests to the gateway's media ports. Each request
must get a Binding Success Response from the port it was sent to, naming the socket's own
address; the call's record (`GET /v1/realtime/calls/{id}` and the list) must show its
media figures while the call runs, STUN counted as `stun` and not as malformed RTP, and
`/metrics` must count its RTP before the call ends, and not again when it ends.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sipbridge.media.rtp import build_rtp
from sipbridge.media.stun import (
    BINDING,
    INDICATION,
    REQUEST,
    SUCCESS,
    XOR_MAPPED_ADDRESS,
    build_stun,
    parse_stun,
    xor_address,
)
from tests.integration.gateway import Gateway
from tests.integration.sipp import SCENARIOS, SippResult, run_sipp
from tests.polling import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("sipp") is None,
                       reason="SIPp is needed (scripts/setup.sh installs it)"),
]

KEY = "sk-media-stun"
RTP_PACKETS = 50  # 1 s of PCMU, one STUN Binding Request every 10 packets
HOLD_MS = 6000  # SIPp keeps the call this long after its ACK, then sends BYE
WAIT = 5.0  # seconds any single expectation may take before the test fails


def port_pair() -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on 127.0.0.1, RTP on some port and RTCP on the next (RFC 3550 11)."""
    for _ in range(100):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp.bind(("127.0.0.1", rtp.getsockname()[1] + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        return rtp, rtcp
    raise AssertionError("no two neighbouring free UDP ports on 127.0.0.1")


def binding_request(n: int, kind: int = BINDING | REQUEST) -> bytes:
    return build_stun(kind, n.to_bytes(12, "big"), fingerprint=True)


def stun_answer(sock: socket.socket, n: int) -> tuple[tuple[str, int], tuple[str, int]]:
    """Wait for the response to request `n` among what arrives on `sock` (the gateway's
    RTP and RTCP are skipped): (where it came from, the address it maps)."""
    deadline = time.monotonic() + WAIT
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, source = sock.recvfrom(2048)
        except TimeoutError:
            break
        if data[:1] >= b"\x04":
            continue  # RTP or RTCP (RFC 7983)
        message = parse_stun(data)
        assert message.type == BINDING | SUCCESS, message
        assert message.transaction_id == n.to_bytes(12, "big"), message
        value = message.attribute(XOR_MAPPED_ADDRESS)
        assert value is not None, message
        return source, xor_address(value, message.transaction_id)
    raise AssertionError(f"no STUN Binding Response to request {n} within {WAIT:g} s")


def no_stun_answer(sock: socket.socket, quiet: float = 0.3) -> None:
    deadline = time.monotonic() + quiet
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            return
        assert data[:1] >= b"\x04", f"an answer to what must not get one: {data.hex()}"


class Api:
    def __init__(self, gateway: Gateway) -> None:
        self.base = f"http://127.0.0.1:{gateway.http_port}"
        self.headers = {"Authorization": f"Bearer {KEY}"}

    def calls(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.base}/v1/realtime/calls", headers=self.headers)
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def call(self, call_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.base}/v1/realtime/calls/{call_id}", headers=self.headers)
        response.raise_for_status()
        record: dict[str, Any] = response.json()
        return record

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.base}/metrics", headers=self.headers).text
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    def until(self, what: str, get: Callable[[], Any], ok: Callable[[Any], bool]) -> Any:
        """Poll `get` until `ok` holds of it; fail with the last value after WAIT."""
        return until(what, get, ok, WAIT)


class PlacedCall:
    """One call from SIPp whose media is this test's: `rtp` and `rtcp` are the phone's
    sockets, `media` the gateway's RTP address for the call."""

    def __init__(self, gateway: Gateway, api: Api, workdir: Path) -> None:
        self.api = api
        self.rtp, self.rtcp = port_pair()
        self.local = self.rtp.getsockname()
        scenario = workdir / "listen.xml"
        scenario.write_text((SCENARIOS / "uac_listen.xml").read_text()
                            .replace("__RTP_PORT__", str(self.local[1]))
                            .replace("__HOLD__", str(HOLD_MS)))
        self.result: list[SippResult] = []
        self._sipp = threading.Thread(target=lambda: self.result.append(
            run_sipp(gateway.address, scenario, workdir / "sipp", timeout=60)), daemon=True)
        self._sipp.start()
        calls = api.until("the call answered", api.calls, lambda calls: bool(
            calls and calls[0]["state"] == "active" and calls[0]["sip"]["rtp_port"]))
        self.id: str = calls[0]["id"]
        port = int(calls[0]["sip"]["rtp_port"])
        self.media, self.media_rtcp = ("127.0.0.1", port), ("127.0.0.1", port + 1)

    def send_rtp(self, on_packet: Callable[[int], None] = lambda k: None) -> None:
        """RTP_PACKETS of PCMU silence, paced at 20 ms."""
        start = time.monotonic()
        for k in range(RTP_PACKETS):
            delay = start + k * 0.020 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.rtp.sendto(build_rtp(0, k, k * 160, 0x5151, b"\xff" * 160), self.media)
            on_packet(k)

    def ended(self) -> dict[str, Any]:
        """The call's record once SIPp has hung up."""
        record: dict[str, Any] = self.api.until(
            "the call ended", lambda: self.api.call(self.id), lambda r: r["state"] == "ended")
        return record

    def close(self) -> None:
        self._sipp.join(HOLD_MS / 1000 + 30)
        self.rtp.close()
        self.rtcp.close()
        assert self.result and self.result[0].ok, \
            self.result[0].describe() if self.result else "SIPp did not finish"


def test_stun_keepalives_on_the_media_ports_are_answered_and_counted_as_stun(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = start_gateway(auto_answer="silence", api_key=[KEY])
    call = PlacedCall(gateway, Api(gateway), tmp_path)
    try:
        # Before any RTP: the request comes from the address the SDP named.
        call.rtp.sendto(binding_request(1), call.media)
        assert stun_answer(call.rtp, 1) == (call.media, call.local)
        call.rtcp.sendto(binding_request(2), call.media_rtcp)
        assert stun_answer(call.rtcp, 2) == (call.media_rtcp, call.rtcp.getsockname())
        call.rtp.sendto(binding_request(3, BINDING | INDICATION), call.media)  # not answered
        no_stun_answer(call.rtp)
        sent = [3]

        def keepalive(k: int) -> None:
            if k % 10 == 9:  # mid-call, between RTP packets
                sent[0] += 1
                call.rtp.sendto(binding_request(sent[0]), call.media)
                assert stun_answer(call.rtp, sent[0]) == (call.media, call.local)

        call.send_rtp(keepalive)
        record = call.ended()
    finally:
        call.close()
    requests = sent[0]
    entry = next(e for e in record["timeline"] if e["kind"] == "media")
    assert entry["packets_in"] == RTP_PACKETS, entry  # STUN is not RTP
    assert entry["dropped"] == {}, entry  # no `version`, no `rtcp_version`
    assert entry["stun"] == requests and entry["stun_answered"] == requests - 1, entry
    assert record["media"] == {k: v for k, v in entry.items() if k not in ("at", "kind")}


def test_a_live_call_shows_its_media_figures_in_the_api_and_in_metrics(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = start_gateway(auto_answer="silence", api_key=[KEY])
    api = Api(gateway)
    call = PlacedCall(gateway, api, tmp_path)
    try:
        call.send_rtp()
        # While the call runs: its record has its media figures.
        record = api.until("live media figures", lambda: api.call(call.id),
                           lambda r: (r.get("media") or {}).get("packets_in") == RTP_PACKETS)
        assert record["state"] == "active"
        media = record["media"]
        assert media["lost"] == 0 and media["jitter_ms"] >= 0 and media["packets_out"] > 0
        assert media["dropped"] == {} and media["stun"] == 0, media
        listed = next(c for c in api.calls() if c["id"] == call.id)
        assert listed["media"]["packets_in"] == RTP_PACKETS
        # and /metrics counts them before the call ends.
        values = api.until("/metrics counting the live call", api.metrics,
                           lambda v: v.get("sipbridge_rtp_packets_received_total")
                           == RTP_PACKETS)
        assert values["sipbridge_calls_active"] == 1
        assert values["sipbridge_rtp_packets_lost_total"] == 0
        assert values["sipbridge_rtp_jitter_seconds_count"] == 0  # the end's histogram
        assert "sipbridge_rtp_jitter_max_seconds" in values
        # Once it ends: the same figures, final, and counted once.
        record = call.ended()
    finally:
        call.close()
    assert record["media"]["packets_in"] == RTP_PACKETS, record["media"]
    values = api.metrics()
    assert values["sipbridge_rtp_packets_received_total"] == RTP_PACKETS
    assert values["sipbridge_rtp_jitter_seconds_count"] == 1
    assert values["sipbridge_calls_active"] == 0
