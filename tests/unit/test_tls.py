"""SIP over TLS: the contexts, the handshake failures' count and log, the UA's Via and
Contact for a TLS flow, and the transport's TLS listener and outgoing connections (two
transports on loopback, certificates from a throwaway CA)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from sipbridge.sip.address import Address
from sipbridge.sip.message import Request, Response
from sipbridge.sip.tls import LOG_INTERVAL, HandshakeFailures, TlsConfig, server_context
from sipbridge.sip.transport import SipTransport
from sipbridge.sip.ua import UaConfig, UserAgent
from tests.tlscerts import CA, make_ca
from tests.unit.sipphone import ANSWER, Phone, sip

TLS_PEER = Address("tls", "127.0.0.1", 40123)
TLS_PORT = 5071


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("ca"))


# --- the contexts ------------------------------------------------------------------


def test_the_server_context_wants_tls_1_2_and_aead_suites_only(ca: CA) -> None:
    cert, key = ca.issue("server", ip=["127.0.0.1"])
    ctx = server_context(TlsConfig(str(cert), str(key)))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    names = [c["name"] for c in ctx.get_ciphers()]
    assert names and all("GCM" in n or "CHACHA20" in n for n in names), names
    assert not any("CBC" in n or "RC4" in n or "NULL" in n for n in names)
    assert ctx.verify_mode == ssl.CERT_NONE  # no client certificate asked for by default


def test_client_verification_needs_a_ca_and_a_server_needs_cert_and_key(ca: CA) -> None:
    cert, key = ca.issue("server2", ip=["127.0.0.1"])
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        server_context(TlsConfig(str(cert), None))
    with pytest.raises(ValueError, match="tls_ca"):
        server_context(TlsConfig(str(cert), str(key), verify_client=True))
    ctx = server_context(TlsConfig(str(cert), str(key), str(ca.cert), verify_client=True))
    assert ctx.verify_mode == ssl.CERT_REQUIRED


# --- handshake failures: counted, logged once per interval ---------------------------


def test_failed_handshakes_are_all_counted_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = HandshakeFailures()
    with caplog.at_level(logging.WARNING, logger="sipbridge.transport"):
        for i in range(50):
            failures.failed(f"tls:192.0.2.1:{1000 + i}", "WRONG_VERSION_NUMBER", i * 0.1)
        failures.failed("tls:192.0.2.9:999", "no handshake within the bound", LOG_INTERVAL + 1)
    assert failures.total == 51
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "tls:192.0.2.1:1000" in lines[0] and "WRONG_VERSION_NUMBER" in lines[0]
    assert "tls:192.0.2.9:999" in lines[1] and "49 not logged since the last line" in lines[1]


# --- the UA on a TLS flow ------------------------------------------------------------


def tls_phone() -> Phone:
    phone = Phone()
    phone.ua = UserAgent(UaConfig(tls_port=TLS_PORT, timers=phone.ua.config.timers),
                         phone.ua.guard, token=lambda: "tok")
    return phone


def answered(phone: Phone, uri: str) -> Response:
    phone.receive(sip("INVITE", uri=uri, transport="TLS", port=TLS_PEER.port,
                      body=b"v=0\r\n"), TLS_PEER)
    (event,) = phone.take_events()
    phone.take()  # the 100 Trying
    phone.ua.answer(event.leg_id, ANSWER, phone.now)
    phone.collect()
    ok = phone.one()
    assert ok.addr == TLS_PEER  # on the connection the INVITE came on
    assert isinstance(ok.msg, Response) and ok.msg.status == 200
    return ok.msg


def test_a_call_over_tls_gets_our_tls_port_and_transport_in_contact() -> None:
    phone = tls_phone()
    ok = answered(phone, f"sip:agent@127.0.0.1:{TLS_PORT};transport=tls")
    assert ok.headers.get("Contact") == f"<sip:sipbridge@127.0.0.1:{TLS_PORT};transport=tls>"


def test_a_sips_request_over_tls_is_served_with_a_sips_contact() -> None:
    phone = tls_phone()
    ok = answered(phone, f"sips:agent@127.0.0.1:{TLS_PORT}")
    assert ok.headers.get("Contact") == f"<sips:sipbridge@127.0.0.1:{TLS_PORT}>"


def test_a_sips_request_over_plain_tcp_still_gets_416() -> None:
    phone = tls_phone()
    phone.receive(sip("INVITE", uri="sips:agent@127.0.0.1", transport="TCP", body=b"v=0\r\n"),
                  Address("tcp", "127.0.0.1", 40124))
    assert phone.one().status == 416


def test_in_dialog_requests_go_over_tls_with_our_tls_via() -> None:
    phone = tls_phone()
    phone.receive(sip("INVITE", transport="TLS", port=TLS_PEER.port, body=b"v=0\r\n",
                      uri=f"sip:agent@127.0.0.1:{TLS_PORT};transport=tls"), TLS_PEER)
    (event,) = phone.take_events()
    leg = event.leg_id
    phone.take()
    phone.ua.answer(leg, ANSWER, phone.now)
    phone.collect()
    ok = phone.one().msg
    assert isinstance(ok, Response)
    phone.receive(sip("ACK", to=f"To: {ok.headers.get('To')}", transport="TLS",
                      port=TLS_PEER.port, contact=False, branch="z9hG4bK-ack"), TLS_PEER)
    phone.take_events()
    phone.ua.hangup(leg, phone.now)
    phone.collect()
    bye = phone.one()
    assert isinstance(bye.msg, Request) and bye.msg.method == "BYE"
    assert bye.addr == TLS_PEER  # the Contact names the Via's sent-by: the same connection
    assert bye.msg.top_via.transport == "TLS" and bye.msg.top_via.port == TLS_PORT


def test_an_outgoing_call_over_tls_names_tls_in_via_and_contact() -> None:
    phone = tls_phone()
    dest = Address("tls", "192.0.2.5", 5061)
    phone.ua.invite("sip:+15551234@192.0.2.5", dest, phone.now, body=ANSWER,
                    from_uri="sip:sipbridge@127.0.0.1")
    phone.collect()
    invite = phone.one()
    assert invite.addr == dest and isinstance(invite.msg, Request)
    assert invite.msg.top_via.transport == "TLS" and invite.msg.top_via.port == TLS_PORT
    assert invite.msg.headers.get("Contact") == (
        f"<sip:sipbridge@127.0.0.1:{TLS_PORT};transport=tls>")


# --- the transport: listener, outgoing connections, reuse ----------------------------


async def _pair(server: TlsConfig, client: TlsConfig, tmp: Path) -> tuple[
        SipTransport, SipTransport, list[tuple[bytes, Address]], list[tuple[bytes, Address]],
        list[str]]:
    got_a: list[tuple[bytes, Address]] = []
    got_b: list[tuple[bytes, Address]] = []
    errors: list[str] = []
    a = SipTransport(lambda d, s: got_a.append((d, s)), tls=server)
    b = SipTransport(lambda d, s: got_b.append((d, s)), tls=client,
                     on_error=lambda d, dest, why: errors.append(why))
    await a.start("127.0.0.1", 0)
    await a.listen_tls("127.0.0.1", 0)
    await b.start("127.0.0.1", 0)
    return a, b, got_a, got_b, errors


OPTIONS = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bK1"
           b"\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
REPLY = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bK1\r\nCall-ID: x\r\n"
         b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


async def _until(check: Callable[[], object], within: float = 3.0) -> None:
    for _ in range(int(within / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within} s")


def test_a_tls_request_arrives_as_tls_and_the_answer_reuses_its_connection(
    ca: CA, tmp_path: Path,
) -> None:
    cert, key = ca.issue("a", ip=["127.0.0.1"])

    async def run() -> None:
        a, b, got_a, got_b, errors = await _pair(
            TlsConfig(str(cert), str(key)), TlsConfig(ca=str(ca.cert)), tmp_path)
        try:
            b.send(OPTIONS, Address("tls", "127.0.0.1", a.tls_port))
            await _until(lambda: got_a)
            data, source = got_a[0]
            assert data == OPTIONS and source.transport == "tls"
            a.send(REPLY, source)  # back on the connection it came on
            await _until(lambda: got_b)
            assert got_b[0][0] == REPLY and got_b[0][1] == Address("tls", "127.0.0.1",
                                                                   a.tls_port)
            assert len(a.connections) == 1 and len(b.connections) == 1
            assert errors == [] and a.tls_failures.total == b.tls_failures.total == 0
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


@pytest.mark.parametrize("verify", [True, False])
def test_a_server_whose_certificate_does_not_name_it_is_refused_unless_told(
    ca: CA, tmp_path: Path, verify: bool,
) -> None:
    cert, key = ca.issue("elsewhere", dns=["elsewhere.test"])  # not 127.0.0.1

    async def run() -> None:
        a, b, got_a, _, errors = await _pair(
            TlsConfig(str(cert), str(key)), TlsConfig(ca=str(ca.cert), verify=verify),
            tmp_path)
        try:
            b.send(OPTIONS, Address("tls", "127.0.0.1", a.tls_port))
            if verify:
                await _until(lambda: errors)
                assert "certificate does not verify" in errors[0], errors
                assert b.tls_failures.total == 1 and not b.connections and not got_a
            else:
                await _until(lambda: got_a)
                assert errors == []
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_what_a_client_sends_with_its_finished_is_not_lost(ca: CA, tmp_path: Path) -> None:
    """A TLS 1.3 client sends its first request right behind its Finished: the bytes the
    handshake decrypts before it ends reach the core, on every connection."""
    cert, key = ca.issue("c", ip=["127.0.0.1"])

    async def run() -> None:
        got: list[tuple[bytes, Address]] = []
        server = SipTransport(lambda d, s: got.append((d, s)), tls=TlsConfig(str(cert), str(key)))
        await server.start("127.0.0.1", 0)
        await server.listen_tls("127.0.0.1", 0)
        ctx = ssl.create_default_context(cafile=str(ca.cert))
        writers = []
        try:
            for _ in range(20):
                _, writer = await asyncio.open_connection("127.0.0.1", server.tls_port, ssl=ctx)
                writer.write(OPTIONS)
                writers.append(writer)
            await _until(lambda: len(got) == 20)
            assert {s.transport for _, s in got} == {"tls"}
        finally:
            for writer in writers:
                writer.close()
            await server.close()

    asyncio.run(run())
