"""Host names of next hops, looked up without blocking the event loop (RFC 3263 4.2).

The core names a peer by IP address, except where a Route or Contact it must honour names
a host. Those names are looked up here, asynchronously (dnspython), never through the
blocking `getaddrinfo`: SRV first when the URI gave no port (`_sip._udp`, `_sip._tcp`,
`_sips._tcp`), then the address records of the name or of the SRV target. Every lookup is
bounded by a time-out, at most `max_lookups` run at once, answers are cached for their TTL
(capped) and failures for a short while, so a name nobody answers for costs one bounded
wait, not one per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from sipbridge.sip.address import DEFAULT_PORTS, Address, is_ip, split_host_port

log = logging.getLogger("sipbridge.dns")

MAX_TTL = 300.0  # seconds an answer is kept at most, whatever its TTL
NEGATIVE_TTL = 10.0  # seconds a failed lookup is remembered
_SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}


class ResolveError(Exception):
    """A next hop's name has no usable address (or the lookup was refused or timed out)."""


def parse_server(value: str) -> tuple[str, int]:
    """A name server as `IP`, `IP:PORT` or `[V6]:PORT`."""
    try:
        host, port = split_host_port(value)
    except ValueError:
        host, port = "", None
    if not is_ip(host) or port == 0:
        raise ValueError(f"a name server is an IP address with an optional port, not {value!r}")
    return host, 53 if port is None else port


def order_srv(records: Sequence[tuple[int, int, int, str]]) -> list[tuple[int, int, int, str]]:
    """SRV records (priority, weight, port, target) in the order to try them (RFC 2782):
    lowest priority first, heavier weight first within a priority. The target "." means
    the service is not offered there: dropped."""
    return sorted((r for r in records if r[3] not in (".", "")), key=lambda r: (r[0], -r[1]))


class Resolver:
    """Looks up next hops' names; one per gateway, shared by everything that needs it."""

    def __init__(self, servers: Sequence[str] = (), *, timeout: float = 2.0,
                 ipv6: bool = False, max_lookups: int = 32, max_cache: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.servers = [parse_server(s) for s in servers]
        self.timeout = timeout
        self.rdtype = "AAAA" if ipv6 else "A"  # the family the SIP socket can send to
        self.max_lookups = max_lookups
        self.max_cache = max_cache
        self.clock = clock
        self._cache: OrderedDict[Address, tuple[float, Address | str]] = OrderedDict()
        self._running: dict[Address, asyncio.Future[Address]] = {}
        self._dns: Any = None  # made on first use: /etc/resolv.conf is read only if needed
        self.stats = {"lookups": 0, "failures": 0, "refused_busy": 0}

    def preload(self) -> None:
        """Import now, at start-up, what a first lookup would import on the event loop
        (dnspython loads its async backend and each record type's module on first use:
        tens of milliseconds, more on a busy disk)."""
        import dns.asyncbackend
        import dns.asyncresolver
        import dns.rdata
        import dns.rdataclass
        import dns.rdatatype
        import dns.resolver

        dns.asyncbackend.get_default_backend()
        for rdtype in ("A", "AAAA", "SRV"):
            dns.rdata.get_rdata_class(  # type: ignore[no-untyped-call]
                dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))

    def cached(self, dest: Address) -> Address | str | None:
        """The address a name resolved to, the reason it did not, or None (not known)."""
        entry = self._cache.get(dest)
        if entry is None:
            return None
        expires, result = entry
        if expires <= self.clock():
            del self._cache[dest]
            return None
        return result

    async def resolve(self, dest: Address) -> Address:
        """The address to send to for `dest` (whose host may be a name, port 0 for none)."""
        if is_ip(dest.host):
            return dest if dest.port else Address(dest.transport, dest.host,
                                                  DEFAULT_PORTS.get(dest.transport, 5060))
        known = self.cached(dest)
        if isinstance(known, Address):
            return known
        if isinstance(known, str):
            raise ResolveError(known)
        running = self._running.get(dest)
        if running is None:
            if len(self._running) >= self.max_lookups:
                self.stats["refused_busy"] += 1
                raise ResolveError(f"too many name lookups in progress to look up {dest.host}")
            running = asyncio.ensure_future(self._lookup(dest))
            self._running[dest] = running
            running.add_done_callback(lambda _: self._running.pop(dest, None))
        return await asyncio.shield(running)

    async def _lookup(self, dest: Address) -> Address:
        self.stats["lookups"] += 1
        try:
            result, ttl = await asyncio.wait_for(self._query(dest), self.timeout)
        except ResolveError as exc:
            self._remember(dest, str(exc), NEGATIVE_TTL)
            raise
        except TimeoutError:
            reason = f"no answer for {dest.host} within {self.timeout:g} s"
            self._remember(dest, reason, NEGATIVE_TTL)
            raise ResolveError(reason) from None
        self._remember(dest, result, min(ttl, MAX_TTL))
        return result

    def _remember(self, dest: Address, result: Address | str, ttl: float) -> None:
        if isinstance(result, str):
            self.stats["failures"] += 1
            log.info("next hop %s: %s", dest, result)
        self._cache[dest] = (self.clock() + ttl, result)
        self._cache.move_to_end(dest)
        while len(self._cache) > self.max_cache:
            self._cache.popitem(last=False)

    async def _query(self, dest: Address) -> tuple[Address, float]:
        if dest.port == 0:  # RFC 3263 4.2: no port in the URI, so SRV first
            prefix = _SRV_PREFIX.get(dest.transport)
            if prefix is not None:
                srv, ttl = await self._records(prefix + dest.host, "SRV")
                records = order_srv([(r.priority, r.weight, r.port,
                                      r.target.to_text(omit_final_dot=True)) for r in srv])
                for _, _, port, target in records:
                    try:
                        addresses, a_ttl = await self._records(target, self.rdtype)
                    except ResolveError:
                        continue
                    return (Address(dest.transport, addresses[0].to_text(), port),
                            min(ttl, a_ttl))
        addresses, ttl = await self._records(dest.host, self.rdtype)
        if not addresses:
            raise ResolveError(f"no {self.rdtype} record for {dest.host}")
        port = dest.port or DEFAULT_PORTS.get(dest.transport, 5060)
        return Address(dest.transport, addresses[0].to_text(), port), ttl

    async def _records(self, name: str, rdtype: str) -> tuple[list[Any], float]:
        """The records of one type for `name` (none: an empty list) and their TTL."""
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        if self._dns is None:
            resolver = dns.asyncresolver.Resolver(configure=not self.servers)
            if self.servers:
                resolver.nameservers = [host for host, _ in self.servers]
                resolver.nameserver_ports = {host: port for host, port in self.servers}
            self._dns = resolver
        self._dns.lifetime = self.timeout
        try:
            answer = await self._dns.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return [], NEGATIVE_TTL
        except dns.resolver.NoNameservers:
            raise ResolveError(f"the name servers refused to look up {name}") from None
        except dns.exception.Timeout:
            raise ResolveError(f"no answer for {name} within {self.timeout:g} s") from None
        except dns.exception.DNSException as exc:
            raise ResolveError(f"cannot look up {name}: {exc}") from None
        return list(answer), float(answer.rrset.ttl if answer.rrset is not None else 0)
