"""Transport addresses and where responses go (RFC 3261 18.2.1, 18.2.2; RFC 3581)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from sipbridge.sip.headers import Via
from sipbridge.sip.uri import SipUri

RELIABLE = frozenset({"tcp", "tls", "ws", "wss"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Address:
    """A peer as the transport layer sees it: transport name, host, port.

    The core names peers by IP address, except where a URI it must honour names a host
    (Route, Contact): then `host` is that name and the transport layer resolves it
    (`sip.dns`); `port` 0 means the URI gave none (look up SRV)."""

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


DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


def split_host_port(value: str) -> tuple[str, int | None]:
    """An address as an operator writes it: `HOST`, `HOST:PORT`, `[V6]:PORT`, a bare IPv6
    address or `:PORT` (host ""), into (host, port or None). ValueError for a bad port."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        host, port_text = value, ""  # a name, an IPv4 address or a bare IPv6 address
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"invalid port in {value!r}")
    return host, int(port_text)


def is_ip(host: str) -> bool:
    """Whether `host` is an IP literal (no brackets), as opposed to a name to look up."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings ("10.0.0.0/8", "2001:db8::/32", a bare address) as networks."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def in_networks(host: str, nets: Iterable[Network]) -> bool:
    """Whether the IP literal `host` lies in one of `nets`; an IPv4-mapped IPv6 address
    (a dual-stack socket's view of an IPv4 peer) counts as its IPv4 address, and a
    host name is in none."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in nets)


class NetworkMatch:
    """`in_networks` for one set of networks, each host's answer remembered: up to `cache`
    hosts, then all are forgotten at once (a flood of new sources costs what it did)."""

    def __init__(self, nets: tuple[Network, ...], cache: int = 4096) -> None:
        self.nets = nets
        self.cache = cache
        self._known: dict[str, bool] = {}

    def __call__(self, host: str) -> bool:
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= self.cache:
                self._known.clear()
            known = self._known[host] = in_networks(host, self.nets)
        return known


def next_hop(uri: SipUri) -> Address:
    """Where a request for `uri` goes (RFC 3263 4.1, 4.2, before any DNS): maddr over the
    host, the transport= parameter (TLS for sips:, else UDP), the URI's port.

    A host name stays a name for the transport layer to look up without blocking. Its port
    is 0 when the URI gives none: a name is then looked up by SRV first (RFC 3263 4.2); an
    IP literal takes the transport's default port."""
    host = uri.param("maddr") or uri.host
    if host.startswith("["):
        host = host[1:-1]
    transport = uri.param("transport")
    transport = transport.lower() if transport else ("tls" if uri.scheme == "sips" else "udp")
    if uri.scheme == "sips" and transport == "tcp":
        transport = "tls"  # RFC 5630 3.1.3: sips over TCP means TLS
    port = uri.port
    if port is None:
        port = DEFAULT_PORTS.get(transport, 5060) if is_ip(host) else 0
    return Address(transport, host, port)
