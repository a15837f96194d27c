"""How fast one source may send: a token bucket per source address, and a block for a
source that empties it (in the spirit of Kamailio's pike module).

Sans-IO and clock-free: `admit(host, now)` is asked once per datagram or TCP message,
before anything reads it, and answers whether the message may be read at all. Each
source's bucket holds `burst` tokens and refills at `rate` per second; each message
takes one. A source that finds its bucket empty is blocked for `block_time` seconds:
every message of it is dropped unread and unanswered, so a flood gets nothing back. The
block goes on for another `block_time` when it ends while the source still sends faster
than `rate`; it is logged (one WARNING naming the source and its rate) and counted once.

Memory is bounded: at most `max_sources` sources are remembered. A source whose bucket
has refilled and which is not blocked is the same as one never seen, so it is forgotten
first at no cost; past the cap the least recently seen goes even so (a spoofed flood of
many addresses, each sending little, only ever gives back a few fresh buckets).
Exempt networks are never charged and never remembered. An IPv6 source is limited
by its /64, as one host may send from any address of it.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from sipbridge.sip.address import NetworkMatch, networks

log = logging.getLogger("sipbridge.sip")

EXEMPT_CACHE = 4096  # host -> exempt or not, remembered for this many hosts at most


@dataclass(frozen=True, slots=True)
class RateLimits:
    """`rate` messages per second per source with bursts of `burst`; past that the
    source is dropped for `block_time` seconds. `max_sources` sources are remembered."""

    rate: float = 20.0
    burst: int = 60
    block_time: float = 60.0
    max_sources: int = 20_000

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.block_time <= 0 or self.max_sources < 1:
            raise ValueError(f"invalid rate limits: {self}")


class _Bucket:
    __slots__ = ("blocked_until", "count", "since", "stamp", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens  # as of `stamp`
        self.stamp = now
        self.blocked_until = 0.0  # 0: not blocked
        self.since = now  # when the bucket was last full ...
        self.count = 0  # ... and the messages taken from it since: the rate for the log


@functools.lru_cache(maxsize=EXEMPT_CACHE)
def source_key(host: str) -> str:
    """What a source is limited as: an IPv4 address as itself, an IPv6 address as its
    /64 (one host may own a whole /64 and send from any address in it; pike's tree
    groups addresses by prefix too), an IPv4-mapped IPv6 address as its IPv4 one."""
    try:
        ip = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class RateLimiter:
    """Per-source token buckets with blocks; see the module's docstring."""

    def __init__(self, limits: RateLimits | None = None, exempt: Iterable[str] = ()) -> None:
        self.limits = limits or RateLimits()
        self.exempt = networks(exempt)
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()  # least recently seen first
        self._is_exempt = NetworkMatch(self.exempt, EXEMPT_CACHE)
        self.blocks_total = 0  # blocks started (a block that goes on counts once)
        self.dropped_total = 0  # messages dropped while their source was blocked

    def admit(self, host: str, now: float) -> bool:
        """Whether a message from `host` may be read; False drops it (it is counted)."""
        if self._is_exempt(host):
            return True
        key = source_key(host) if ":" in host else host
        bucket = self._sources.get(key)
        if bucket is None:
            bucket = self._track(key, now)
        else:
            self._sources.move_to_end(key)
        limits = self.limits
        tokens = bucket.tokens + max(0.0, now - bucket.stamp) * limits.rate
        if tokens >= limits.burst:
            tokens = float(limits.burst)
            bucket.since, bucket.count = now, 0
        bucket.stamp = now
        if bucket.blocked_until:
            if now < bucket.blocked_until:
                # Still charged while blocked: whether the source slowed down decides
                # whether the block ends when its time is up.
                bucket.tokens = max(0.0, tokens - 1)
                self.dropped_total += 1
                return False
            if tokens < 1:
                bucket.blocked_until = now + limits.block_time  # still too fast: go on
                bucket.tokens = 0.0
                self.dropped_total += 1
                return False
            bucket.blocked_until = 0.0
        if tokens < 1:
            self._block(key, bucket, now)
            bucket.tokens = 0.0
            self.dropped_total += 1
            return False
        bucket.tokens = tokens - 1
        bucket.count += 1
        return True

    def blocked(self, now: float) -> int:
        """How many sources are blocked at `now`."""
        return sum(1 for b in self._sources.values() if b.blocked_until > now)

    def is_blocked(self, host: str, now: float) -> bool:
        bucket = self._sources.get(source_key(host))
        return bucket is not None and bucket.blocked_until > now

    def tracked(self) -> int:
        """How many sources are remembered."""
        return len(self._sources)

    def _block(self, host: str, bucket: _Bucket, now: float) -> None:
        limits = self.limits
        bucket.blocked_until = now + limits.block_time
        self.blocks_total += 1
        seconds = now - bucket.since
        log.warning("source %s blocked for %gs: %d messages in %.2fs (limit %g/s, bursts "
                    "of %d); its messages are dropped unanswered", host, limits.block_time,
                    bucket.count + 1, seconds, limits.rate, limits.burst)

    def _track(self, host: str, now: float) -> _Bucket:
        """A new source's full bucket; room is made for it first."""
        sources, limits = self._sources, self.limits
        # Sources at the front (the least recently seen) whose buckets have refilled and
        # which are not blocked are the same as unknown ones: forget them.
        refill = limits.burst / limits.rate
        while sources:
            oldest = next(iter(sources.values()))
            if oldest.blocked_until > now or oldest.stamp + refill > now:
                break
            sources.popitem(last=False)
        if len(sources) >= limits.max_sources:
            sources.popitem(last=False)
        bucket = sources[host] = _Bucket(float(limits.burst), now)
        return bucket
