"""In-dialog requests through the route set a proxy recorded, with its host named by DNS
(RFC 3261 12.2.1.1, RFC 3263): the gateway looks the name up on the name server it was
given (ours, on loopback; never the host's resolver), without blocking, and a name with
no address fails the request at once with the reason on the call."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.dnsserver import DnsServer
from tests.integration.gateway import Gateway
from tests.integration.probe import send_options

pytestmark = pytest.mark.integration

OFFER = ("v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def receive(sock: socket.socket, timeout: float, want: Callable[[str], bool]) -> str:
    """The first message on `sock` that `want` accepts; fails when none comes in time."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65535).decode()
        except TimeoutError:
            break
        if want(data):
            return data
    pytest.fail(f"no matching message on port {sock.getsockname()[1]} within {timeout} s")


def header(message: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*?)\r$", message, re.MULTILINE | re.IGNORECASE)
    assert match, f"no {name} in\n{message}"
    return match.group(1)


def answer(sock: socket.socket, request: str, status: str) -> None:
    """A response to `request`, sent back the way its Via says (the gateway)."""
    names = ("Via", "From", "To", "Call-ID", "CSeq")
    lines = [f"SIP/2.0 {status}"] + [f"{n}: {header(request, n)}" for n in names]
    via = header(request, "Via")
    host, port = re.search(r"UDP ([\d.]+):(\d+)", via).groups()  # type: ignore[union-attr]
    text = "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n"
    sock.sendto(text.encode(), (host, int(port)))


class Caller:
    """A caller that sends its INVITE as if through a proxy recording `record_route`."""

    def __init__(self, gateway: Gateway, record_route: str) -> None:
        self.gateway = gateway
        self.sock = udp_socket()
        self.port = self.sock.getsockname()[1]
        self.call_id = uuid.uuid4().hex
        target = (gateway.host, gateway.port)
        invite = "\r\n".join([
            f"INVITE sip:agent@{gateway.address} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <sip:caller@127.0.0.1>;tag={uuid.uuid4().hex[:8]}",
            f"To: <sip:agent@{gateway.address}>",
            f"Call-ID: {self.call_id}",
            "CSeq: 1 INVITE",
            f"Contact: <sip:caller@127.0.0.1:{self.port}>",
            f"Record-Route: {record_route}",
            "Content-Type: application/sdp",
            f"Content-Length: {len(OFFER)}", "", OFFER])
        self.sock.sendto(invite.encode(), target)
        ok = receive(self.sock, 5, lambda m: m.startswith("SIP/2.0 200"))
        assert header(ok, "Record-Route") == record_route  # 12.1.1: copied into the 2xx
        ack = "\r\n".join([
            f"ACK sip:agent@{gateway.address} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70", f"From: {header(ok, 'From')}", f"To: {header(ok, 'To')}",
            f"Call-ID: {self.call_id}", "CSeq: 1 ACK", "Content-Length: 0", "", ""])
        self.sock.sendto(ack.encode(), target)
        self.id = self._call()["id"]

    def _call(self) -> dict[str, Any]:
        calls = httpx.get(f"http://127.0.0.1:{self.gateway.http_port}/v1/realtime/calls").json()
        return next(c for c in calls["data"] if c["sip"]["call_id"] == self.call_id)

    def record(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.gateway.http_port}/v1/realtime/calls/{self.id}"
        return httpx.get(url).json()  # type: ignore[no-any-return]

    def post(self, action: str, body: dict[str, Any] | None = None) -> None:
        url = f"http://127.0.0.1:{self.gateway.http_port}/v1/realtime/calls/{self.id}/{action}"
        assert httpx.post(url, json=body or {}).status_code == 200

    def transfer(self, timeout: float) -> dict[str, Any]:
        """The call's transfer once it is final; fails if it is not within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            transfers = self.record()["transfers"]
            if transfers and transfers[-1]["status"] not in ("requested", "sent"):
                return transfers[-1]  # type: ignore[no-any-return]
            time.sleep(0.05)
        pytest.fail(f"the transfer had no outcome within {timeout} s: {self.record()}")


@contextmanager
def proxy_and_name_server(**extra: list[str]) -> Iterator[tuple[socket.socket, DnsServer]]:
    """A socket standing for the proxy, named proxy.test by SRV on our name server."""
    proxy = udp_socket()
    port = proxy.getsockname()[1]
    records = {("_sip._udp.proxy.test", "SRV"): [f"0 0 {port} edge.proxy.test."],
               ("edge.proxy.test", "A"): ["127.0.0.1"]}
    with DnsServer(records, **extra) as ns:  # type: ignore[arg-type]
        yield proxy, ns
    proxy.close()


def test_refer_and_bye_go_through_the_recorded_route_looked_up_by_srv(
        start_gateway: Callable[..., Gateway]) -> None:
    with proxy_and_name_server() as (proxy, ns):
        gw = start_gateway(auto_answer="silence", dns_servers=[ns.address])
        caller = Caller(gw, "<sip:proxy.test;lr>")
        caller.post("refer", {"target_uri": "sip:human@127.0.0.1:6000"})
        refer = receive(proxy, 5, lambda m: m.startswith("REFER "))
        assert refer.startswith(f"REFER sip:caller@127.0.0.1:{caller.port} SIP/2.0")
        assert header(refer, "Route") == "<sip:proxy.test;lr>"
        answer(proxy, refer, "603 Declined")
        assert caller.transfer(5)["status"] == "rejected"
        caller.post("hangup")
        bye = receive(proxy, 5, lambda m: m.startswith("BYE "))
        answer(proxy, bye, "200 OK")
        assert ("_sip._udp.proxy.test", "SRV") in ns.queries
        assert ("edge.proxy.test", "A") in ns.queries
        # Nothing went back to the address the INVITE came from.
        caller.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            while True:
                assert not caller.sock.recv(65535).split(b" ", 1)[0].isalpha()


def test_a_route_with_no_address_fails_the_refer_at_once_and_says_why(
        start_gateway: Callable[..., Gateway]) -> None:
    with proxy_and_name_server() as (_proxy, ns):
        gw = start_gateway(auto_answer="silence", dns_servers=[ns.address])
        caller = Caller(gw, "<sip:nowhere.test;lr>")
        started = time.monotonic()
        caller.post("refer", {"target_uri": "sip:human@127.0.0.1:6000"})
        transfer = caller.transfer(3)
        assert time.monotonic() - started < 2.0
        assert transfer["status"] == "rejected" and transfer["sip_status"] == 503
        assert "nowhere.test" in transfer["reason"]
        warnings = [e for e in caller.record()["timeline"] if e["kind"] == "warning"]
        assert any("REFER" in w["detail"] and "not sent" in w["detail"] for w in warnings)


def test_a_name_server_that_never_answers_stalls_nothing(
        start_gateway: Callable[..., Gateway]) -> None:
    with proxy_and_name_server(silent=["proxy.test", "_sip._udp.proxy.test"]) as (_p, ns):
        gw = start_gateway(auto_answer="silence", dns_servers=[ns.address], dns_timeout=1.5)
        caller = Caller(gw, "<sip:proxy.test;lr>")
        caller.post("refer", {"target_uri": "sip:human@127.0.0.1:6000"})
        # While the lookup waits, the gateway answers at once.
        for _ in range(5):
            started = time.monotonic()
            assert send_options(gw.host, gw.port, timeout=0.5) is not None
            assert time.monotonic() - started < 0.25
            time.sleep(0.1)
        transfer = caller.transfer(4)
        assert transfer["status"] == "rejected" and transfer["sip_status"] == 503
        assert "within 1.5 s" in transfer["reason"]
