"""Transport addresses and where responses go (RFC 3261 18.2.1, 18.2.2; RFC 3581)."""

from __future__ import annotations

from dataclasses import dataclass

from sipbridge.sip.headers import Via

RELIABLE = frozenset({"tcp", "tls", "ws", "wss"})


@dataclass(frozen=True, slots=True)
class Address:
    """A peer as the transport layer sees it: transport name, host, port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def stamp_via(via: Via, source: Address) -> Via | None:
    """RFC 3261 18.2.1 and RFC 3581 4: the top Via as the server records it, or None if
    it needs no change. received= when the sent-by host is not the source address;
    rport= filled with the source port when the client asked for it."""
    host = via.host[1:-1] if via.host.startswith("[") else via.host
    if via.has_rport:
        return via.with_received(source.host, source.port)
    if host != source.host:
        return via.with_received(source.host, None)
    return None


def response_target(via: Via, source: Address) -> Address:
    """Where to send a response (RFC 3261 18.2.2, RFC 3581 4).

    Reliable transports answer on the connection the request came in on, which the
    transport layer finds by the source address. Over UDP, rport wins, then received,
    then the sent-by host and port.
    """
    if source.reliable or via.has_rport:
        return source
    host = via.received or (via.host[1:-1] if via.host.startswith("[") else via.host)
    return Address(source.transport, host, via.port or 5060)
