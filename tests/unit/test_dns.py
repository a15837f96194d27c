"""Next hops named by host (RFC 3263 4.2), looked up on our own name server on loopback:
SRV then A, the URI's port, caching, failures and time-outs that cost one bounded wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from sipbridge.sip.address import Address
from sipbridge.sip.dns import ResolveError, Resolver, order_srv, parse_server
from tests.dnsserver import DnsServer

T = TypeVar("T")

RECORDS = {
    ("_sip._udp.carrier.test", "SRV"): ["20 10 5080 backup.carrier.test.",
                                        "10 5 5070 sbc1.carrier.test.",
                                        "10 50 5072 sbc2.carrier.test."],
    ("sbc1.carrier.test", "A"): ["127.0.0.11"],
    ("sbc2.carrier.test", "A"): ["127.0.0.12"],
    ("backup.carrier.test", "A"): ["127.0.0.13"],
    ("pbx.test", "A"): ["127.0.0.21"],
    ("_sip._tcp.tcp.test", "SRV"): ["0 0 5090 pbx.test."],
    ("v6.test", "AAAA"): ["::1"],
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_parse_server() -> None:
    assert parse_server("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:53") == ("::1", 53)
    for bad in ("ns.example.com", "127.0.0.1:0", "127.0.0.1:x", ""):
        with pytest.raises(ValueError):
            parse_server(bad)


def test_srv_order_is_priority_then_weight() -> None:
    records = [(20, 10, 1, "c"), (10, 5, 2, "b"), (10, 50, 3, "a"), (5, 0, 4, ".")]
    assert [r[3] for r in order_srv(records)] == ["a", "b", "c"]


def test_no_port_looks_up_srv_then_the_target() -> None:
    with DnsServer(RECORDS) as ns:
        resolver = Resolver([ns.address])
        got = run(resolver.resolve(Address("udp", "carrier.test", 0)))
        assert got == Address("udp", "127.0.0.12", 5072)
        got = run(resolver.resolve(Address("tcp", "tcp.test", 0)))
        assert got == Address("tcp", "127.0.0.21", 5090)
        assert ("_sip._tcp.tcp.test", "SRV") in ns.queries


def test_a_port_means_no_srv_and_no_srv_falls_back_to_a() -> None:
    with DnsServer(RECORDS) as ns:
        resolver = Resolver([ns.address])
        assert run(resolver.resolve(Address("udp", "pbx.test", 5099))) == \
            Address("udp", "127.0.0.21", 5099)
        assert all(kind != "SRV" for _, kind in ns.queries)
        assert run(resolver.resolve(Address("udp", "pbx.test", 0))) == \
            Address("udp", "127.0.0.21", 5060)


def test_ipv6_gateways_ask_for_aaaa() -> None:
    with DnsServer(RECORDS) as ns:
        got = run(Resolver([ns.address], ipv6=True).resolve(Address("udp", "v6.test", 5060)))
        assert got == Address("udp", "::1", 5060)


def test_ip_literals_are_not_looked_up() -> None:
    resolver = Resolver(["127.0.0.1:9"])  # nothing listens there: a lookup would fail
    assert run(resolver.resolve(Address("udp", "127.0.0.5", 0))) == \
        Address("udp", "127.0.0.5", 5060)
    assert run(resolver.resolve(Address("tls", "::1", 0))) == Address("tls", "::1", 5061)
    assert resolver.stats["lookups"] == 0


def test_answers_are_cached_and_so_are_failures() -> None:
    with DnsServer(RECORDS) as ns:
        resolver = Resolver([ns.address])

        async def twice() -> None:
            for _ in range(2):
                await resolver.resolve(Address("udp", "pbx.test", 5060))
                with pytest.raises(ResolveError, match=r"no A record for nowhere\.test"):
                    await resolver.resolve(Address("udp", "nowhere.test", 5060))

        run(twice())
        assert resolver.stats["lookups"] == 2 and len(ns.queries) == 2
        assert resolver.cached(Address("udp", "pbx.test", 5060)) == \
            Address("udp", "127.0.0.21", 5060)


def test_a_name_server_that_never_answers_costs_one_bounded_wait() -> None:
    with DnsServer(RECORDS, silent=["hang.test"]) as ns:
        resolver = Resolver([ns.address], timeout=0.3)

        async def many() -> float:
            start = time.monotonic()
            results = await asyncio.gather(
                *(resolver.resolve(Address("udp", "hang.test", 5060)) for _ in range(20)),
                return_exceptions=True)
            assert all(isinstance(r, ResolveError) for r in results), results
            assert "no answer for hang.test within 0.3 s" in str(results[0])
            return time.monotonic() - start

        elapsed = run(many())
        assert elapsed < 2.0  # one lookup for all twenty, bounded by the time-out
        assert resolver.stats["lookups"] == 1
        assert ns.queries.count(("hang.test", "A")) >= 1


def test_lookups_in_progress_are_bounded() -> None:
    with DnsServer(RECORDS, silent=[f"n{i}.test" for i in range(5)]) as ns:
        resolver = Resolver([ns.address], timeout=0.5, max_lookups=3)

        async def flood() -> list[object]:
            return await asyncio.gather(
                *(resolver.resolve(Address("udp", f"n{i}.test", 5060)) for i in range(5)),
                return_exceptions=True)

        results = run(flood())
        busy = [r for r in results if "too many name lookups" in str(r)]
        assert len(busy) == 2 and resolver.stats["refused_busy"] == 2
