"""Who may call: trunk networks let in by source address, others by digest, or refused.

RFC 3261 22.2 (UAS authentication). The check is stateless: a refused request and
a challenge leave nothing behind, so a flood of strangers costs no memory.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from sipbridge.sip.address import Address
from sipbridge.sip.auth import DigestServer
from sipbridge.sip.errors import ParseError
from sipbridge.sip.message import Request
from sipbridge.sip.uri import SipUri, parse_uri

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of an access check: allowed, or the response to send instead."""

    allowed: bool
    status: int = 200
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    username: str | None = None


ALLOWED = Decision(True)


class AccessGuard:
    """An allow-list of source networks, and optional digest auth for everyone else."""

    def __init__(self, allow: Iterable[str], digest: DigestServer | None = None) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allow
        )
        self.digest = digest

    def allows_source(self, source: Address) -> bool:
        try:
            ip = ipaddress.ip_address(source.host)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def check(self, request: Request, source: Address, now: float) -> Decision:
        """Decide on an out-of-dialog request (RFC 3261 22.1, 22.2)."""
        if self.allows_source(source):
            return ALLOWED
        if self.digest is None:
            return Decision(False, 403, "Forbidden (source not allowed)")
        values = request.headers.get_all("Authorization")
        stale = False
        if values:
            result = self.digest.verify_any(request.method, values, now)
            if result.ok:
                if not _names_request_uri(result.uri, request):
                    # RFC 7616 3.4.6: credentials computed for some other resource.
                    return Decision(False, 403, "Forbidden (digest uri is not the Request-URI)")
                return Decision(True, username=result.username)
            if not result.stale:
                # A wrong answer to our challenge: refuse rather than loop (RFC 3261 22.2).
                return Decision(False, 403, f"Forbidden ({result.reason})")
            stale = True
        challenge = self.digest.challenge(now, stale=stale)
        return Decision(
            False, 401, "Unauthorized",
            headers=tuple(("WWW-Authenticate", c) for c in challenge),
        )


def _names_request_uri(digest_uri: str | None, request: Request) -> bool:
    """Whether the digest-uri names the Request-URI (RFC 3261 22.4, RFC 7616 3.4.6).

    Lenient where deployed UACs differ: a SIP URI naming the same host and port
    matches even without the user part (SIPp and several PBXs sign `sip:host:port`).
    """
    if digest_uri is None:
        return False
    try:
        uri = parse_uri(digest_uri)
    except ParseError:
        return False
    target = request.uri
    if uri == target:
        return True
    return (isinstance(uri, SipUri) and isinstance(target, SipUri)
            and uri.host.lower() == target.host.lower() and uri.port == target.port)
