"""Who may call: trunk networks let in by source address, others by digest, or refused.

RFC 3261 22.2 (UAS authentication). A refused request and a challenge leave nothing
behind; only failed authentications are remembered, per source address, in a table of
bounded size, so that a source guessing passwords is blocked for a while.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipbridge.sip.address import Address, Network, NetworkMatch, networks
from sipbridge.sip.auth import DigestServer
from sipbridge.sip.errors import ParseError
from sipbridge.sip.message import Request
from sipbridge.sip.uri import SipUri, parse_uri

log = logging.getLogger("sipbridge.sip")


@dataclass(frozen=True, slots=True)
class AuthLimits:
    """After `max_failures` failed authentications within `window` seconds a source is
    refused for `block_time` seconds; at most `max_tracked` sources are remembered."""

    max_failures: int = 10
    window: float = 60.0
    block_time: float = 600.0
    max_tracked: int = 10_000


@dataclass(slots=True)
class _Source:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


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

    def __init__(self, allow: Iterable[str], digest: DigestServer | None = None,
                 limits: AuthLimits | None = None) -> None:
        self.networks: tuple[Network, ...] = networks(allow)
        self._allowed = NetworkMatch(self.networks)
        self.digest = digest
        self.limits = limits or AuthLimits()
        # Source host -> its recent failures and block, least recently touched first.
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self.blocks_total = 0

    def blocked(self, now: float) -> int:
        """How many sources are blocked at `now`."""
        return sum(1 for s in self._sources.values() if s.blocked_until > now)

    def tracked(self) -> int:
        return len(self._sources)

    def _is_blocked(self, host: str, now: float) -> bool:
        entry = self._sources.get(host)
        return entry is not None and entry.blocked_until > now

    def _failed(self, host: str, now: float) -> None:
        """Count a failed authentication from `host`; block it at the limit."""
        limits = self.limits
        entry = self._sources.pop(host, None) or _Source()
        self._sources[host] = entry  # now the most recently touched
        while len(self._sources) > limits.max_tracked:
            self._sources.popitem(last=False)  # the oldest goes: memory stays bounded
        failures = entry.failures
        failures.append(now)
        while failures and failures[0] <= now - limits.window:
            failures.popleft()
        if len(failures) >= limits.max_failures:
            entry.blocked_until = now + limits.block_time
            count = len(failures)
            failures.clear()
            self.blocks_total += 1
            log.warning("source %s blocked for %gs after %d failed authentications in %gs",
                        host, limits.block_time, count, limits.window)

    def allows_source(self, source: Address) -> bool:
        return self._allowed(source.host)

    def check(self, request: Request, source: Address, now: float) -> Decision:
        """Decide on an out-of-dialog request (RFC 3261 22.1, 22.2)."""
        if self.allows_source(source):
            return ALLOWED
        if self.digest is None:
            return Decision(False, 403, "Forbidden (source not allowed)")
        host = source.host
        if self._is_blocked(host, now):
            # A 403 rather than silence: it costs no more than a drop, tells a misconfigured
            # trunk what happened, and gives a password guesser nothing (not even a nonce).
            # Even the right password is refused until the block ends.
            return Decision(False, 403, "Forbidden (blocked after "
                            f"{self.limits.max_failures} failed authentications)")
        values = request.headers.get_all("Authorization")
        stale = False
        if values:
            result = self.digest.verify_any(request.method, values, now)
            if result.ok:
                if not _names_request_uri(result.uri, request):
                    # RFC 7616 3.4.6: credentials computed for some other resource.
                    self._failed(host, now)
                    return Decision(False, 403, "Forbidden (digest uri is not the Request-URI)")
                return Decision(True, username=result.username)
            if not result.stale:
                # A wrong answer to our challenge: refuse rather than loop (RFC 3261 22.2).
                self._failed(host, now)
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
