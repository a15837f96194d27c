"""What the transport does with a destination the core names: a host name is looked up
first (on our own name server here), a transport we do not offer or a name with no
address is reported to on_error, after the current call stack, never raised."""

from __future__ import annotations

import asyncio
import socket

from sipbridge.sip.address import Address
from sipbridge.sip.dns import Resolver
from sipbridge.sip.transport import SipTransport
from tests.dnsserver import DnsServer


async def _with_transport(servers: list[str], body) -> list[tuple[bytes, Address, str]]:  # type: ignore[no-untyped-def]
    errors: list[tuple[bytes, Address, str]] = []
    transport = SipTransport(lambda data, source: None, resolver=Resolver(servers, timeout=1),
                             on_error=lambda data, dest, why: errors.append((data, dest, why)))
    await transport.start("127.0.0.1", 0)
    try:
        await body(transport, errors)
    finally:
        await transport.close()
    return errors


def test_a_named_destination_is_looked_up_then_sent() -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(3)
    port = sink.getsockname()[1]
    with DnsServer({("peer.test", "A"): ["127.0.0.1"]}) as ns:

        async def body(transport: SipTransport, errors: list[object]) -> None:
            transport.send(b"OPTIONS one", Address("udp", "peer.test", port))
            transport.send(b"OPTIONS two", Address("udp", "peer.test", port))  # held too
            await asyncio.sleep(0.5)
            transport.send(b"OPTIONS three", Address("udp", "peer.test", port))  # cached

        errors = asyncio.run(_with_transport([ns.address], body))
    assert errors == []
    assert [sink.recv(100) for _ in range(3)] == [b"OPTIONS one", b"OPTIONS two",
                                                   b"OPTIONS three"]
    assert ns.queries == [("peer.test", "A")]
    sink.close()


def test_what_cannot_be_sent_is_reported_not_raised() -> None:
    with DnsServer({("peer.test", "A"): ["127.0.0.1"]}) as ns:

        async def body(transport: SipTransport, errors: list[object]) -> None:
            transport.send(b"BYE ws", Address("ws", "127.0.0.1", 80))
            transport.send(b"BYE nowhere", Address("udp", "nowhere.test", 5060))
            assert errors == []  # reported later, never from inside send()
            await asyncio.sleep(0.5)

        errors = asyncio.run(_with_transport([ns.address], body))
    reasons = {data: why for data, _, why in errors}
    assert reasons[b"BYE ws"] == "no WS transport here"
    assert reasons[b"BYE nowhere"] == "no A record for nowhere.test"


def test_datagrams_of_one_turn_go_out_together_at_its_end_in_order() -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    dest = Address("udp", "127.0.0.1", sink.getsockname()[1])

    def queued() -> list[bytes]:
        got = []
        while True:
            try:
                got.append(sink.recv(100))
            except BlockingIOError:
                return got

    async def body(transport: SipTransport, errors: list[object]) -> None:
        transport.send(b"SIP/2.0 200 one", dest)
        transport.send(b"SIP/2.0 200 two", dest)
        await asyncio.sleep(0.05)  # sent apart from each other, not before the turn's end
        assert queued() == [b"SIP/2.0 200 one", b"SIP/2.0 200 two"]
        transport.send(b"SIP/2.0 200 three", dest)
        assert queued() == []  # still this turn
        await asyncio.sleep(0)  # the turn ends
        await asyncio.sleep(0.05)
        assert queued() == [b"SIP/2.0 200 three"]
        transport.send(b"BYE last", dest)  # the transport closes in this same turn

    errors = asyncio.run(_with_transport([], body))
    assert errors == []
    assert queued() == [b"BYE last"]  # sent by the close, not lost
    sink.close()
