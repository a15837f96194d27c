"""Per-source message rate limits (token buckets and blocks), with a fake clock."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipbridge.config import ConfigError, load_config
from sipbridge.gateway import rate_limiter
from sipbridge.metrics import Metrics
from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address, NetworkMatch, in_networks, networks
from sipbridge.sip.ratelimit import RateLimiter, RateLimits
from sipbridge.sip.ua import UaConfig, UserAgent

LIMITS = RateLimits(rate=20.0, burst=60, block_time=60.0, max_sources=100)
T0 = 1_000.0
A, B = "192.0.2.7", "192.0.2.8"


def send(limiter: RateLimiter, host: str, count: int, start: float, per_second: float
         ) -> tuple[int, float]:
    """`count` messages from `host` at `per_second`: how many were admitted, and when the
    last one was sent."""
    admitted, now = 0, start
    for i in range(count):
        now = start + i / per_second
        admitted += limiter.admit(host, now)
    return admitted, now


def test_a_burst_passes_and_one_more_blocks_once(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(LIMITS)
    with caplog.at_level(logging.WARNING, "sipbridge.sip"):
        assert all(limiter.admit(A, T0) for _ in range(60))
        assert not limiter.admit(A, T0)
        assert not any(limiter.admit(A, T0 + 0.01 * i) for i in range(1000))
    assert limiter.blocks_total == 1 and limiter.blocked(T0 + 1) == 1
    assert limiter.dropped_total == 1001
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines  # one line per block, however long the flood
    assert A in lines[0] and "61 messages in 0.00s" in lines[0] and "20/s" in lines[0], lines
    # Another source is not affected.
    assert limiter.admit(B, T0 + 1)


def test_the_sustained_rate_passes_and_a_little_more_is_blocked_in_time() -> None:
    limiter = RateLimiter(LIMITS)
    admitted, _ = send(limiter, A, 20 * 300, T0, 20.0)  # five minutes at exactly the rate
    assert admitted == 20 * 300 and limiter.blocks_total == 0
    # 25/s drains 5 tokens a second: the 60 of a full bucket last about 12 s.
    admitted, _ = send(limiter, B, 25 * 30, T0, 25.0)
    assert limiter.blocks_total == 1
    assert 25 * 11 <= admitted <= 25 * 13, admitted


def test_a_block_ends_after_block_time_when_the_source_has_gone_quiet() -> None:
    limiter = RateLimiter(LIMITS)
    send(limiter, A, 61, T0, 1e6)
    assert limiter.is_blocked(A, T0 + 59.9) and not limiter.admit(A, T0 + 59.9)
    assert not limiter.is_blocked(A, T0 + 61)
    # Back with a full bucket: a burst again, and then blocked again, logged again.
    admitted, _ = send(limiter, A, 61, T0 + 61, 1e6)
    assert admitted == 60 and limiter.blocks_total == 2


def test_a_block_goes_on_while_the_source_keeps_flooding(
    caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(LIMITS)
    with caplog.at_level(logging.WARNING, "sipbridge.sip"):
        admitted, last = send(limiter, A, 100 * 200, T0, 100.0)  # 200 s at 5x the rate
    # The bucket and what refilled while it drained (60 + 0.75 s x 20), and nothing after:
    # not a burst per block_time.
    assert 60 <= admitted <= 75, admitted
    assert limiter.blocks_total == 1 and len(caplog.records) == 1
    assert limiter.is_blocked(A, last)
    # It slows down to below the rate: the block ends at its next end.
    admitted, last = send(limiter, A, 10 * 70, last + 0.1, 10.0)
    assert limiter.admit(A, last + 0.1)
    assert admitted > 0 and limiter.blocks_total == 1


def test_exempt_networks_are_never_limited_nor_remembered() -> None:
    limiter = RateLimiter(LIMITS, exempt=["10.0.0.0/8", "2001:db8::/32", "192.0.2.99"])
    for host in ("10.1.2.3", "2001:db8::1", "::ffff:10.0.0.1", "192.0.2.99"):
        assert all(limiter.admit(host, T0) for _ in range(10_000)), host
    assert limiter.tracked() == 0 and limiter.blocks_total == 0
    # A host name is in no network (the transport gives addresses; this is a guard).
    assert sum(limiter.admit("trunk.example.com", T0) for _ in range(100)) == 60


def test_an_ipv6_source_is_limited_by_its_64_and_a_mapped_one_as_ipv4(
    caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(LIMITS, exempt=["2001:db8:ffff::/48"])
    with caplog.at_level(logging.WARNING, "sipbridge.sip"):
        admitted = sum(limiter.admit(f"2001:db8:1:2::{i:x}", T0) for i in range(100))
    assert admitted == 60 and limiter.tracked() == 1  # one bucket for the whole /64
    assert "source 2001:db8:1:2::/64 blocked" in caplog.records[0].getMessage()
    assert limiter.is_blocked("2001:db8:1:2:abcd::1", T0)
    assert limiter.admit("2001:db8:1:3::1", T0)  # the next /64 is another source
    # Exemption is by the address itself, even within a limited /64.
    assert all(limiter.admit("2001:db8:ffff::1", T0) for _ in range(100))
    assert all(limiter.admit("2001:db8:1:2::5", T0) for _ in range(100)) is False
    limiter = RateLimiter(LIMITS, exempt=["2001:db8:1:2::5/128"])
    send(limiter, "2001:db8:1:2::1", 61, T0, 1e6)
    assert all(limiter.admit("2001:db8:1:2::5", T0) for _ in range(100))
    send(limiter, A, 60, T0, 1e6)
    assert not limiter.admit(f"::ffff:{A}", T0)  # the IPv4 source seen on a v6 socket
    assert limiter.is_blocked(A, T0)


def test_a_spoofed_flood_of_many_sources_keeps_memory_bounded() -> None:
    limiter = RateLimiter(LIMITS)  # 100 sources at most
    send(limiter, A, 61, T0, 1e6)  # A is blocked
    now = T0 + 1
    for i in range(100_000):
        now = T0 + 1 + i / 100_000  # 100,000 addresses within a second
        limiter.admit(f"198.51.{i // 256 % 256}.{i % 256}", now)
        if i % 50 == 0:
            assert not limiter.admit(A, now)  # A keeps sending: it stays known, and blocked
        assert limiter.tracked() <= 100
    assert limiter.is_blocked(A, now)


def test_idle_sources_are_forgotten_first_and_at_no_cost() -> None:
    limiter = RateLimiter(LIMITS)
    for i in range(50):
        limiter.admit(f"198.51.100.{i}", T0)
    send(limiter, A, 61, T0, 1e6)
    assert limiter.tracked() == 51
    # 3 s later (a bucket refills in 60/20 s) the idle ones are the same as unknown ones:
    # the next new source makes them go, but the blocked one stays.
    limiter.admit(B, T0 + 3.5)
    assert limiter.tracked() == 2 and limiter.is_blocked(A, T0 + 3.5)


def test_a_clock_that_goes_back_takes_no_tokens() -> None:
    limiter = RateLimiter(LIMITS)
    assert limiter.admit(A, T0)
    assert all(limiter.admit(A, T0 - 1000) for _ in range(59))
    assert limiter.blocks_total == 0


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimits(rate=0)
    with pytest.raises(ValueError):
        RateLimits(burst=0)


# ---- in the UA core: before parsing --------------------------------------------------


def options(n: int, host: str) -> bytes:
    return (f"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {host}:5061;branch=z9hG4bK{n}"
            f"\r\nFrom: <sip:a@{host}>;tag={n}\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: {n}@x\r\n"
            f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def test_the_ua_drops_a_blocked_source_unread_and_unanswered() -> None:
    limiter = RateLimiter(LIMITS)
    ua = UserAgent(UaConfig(), AccessGuard(["192.0.2.0/24"]), limiter=limiter)
    flood = Address("udp", A, 5061)
    answered = 0
    for i in range(200):
        ua.receive(options(i, A), flood, T0)
        answered += len(ua.outgoing())
    assert answered == 60
    assert ua.stats["dropped_rate_limited"] == 140
    # Dropped before parsing: garbage from it is not even read.
    assert ua.receive(b"\x00garbage", flood, T0) is False
    assert ua.stats["dropped_unparseable"] == 0
    # Responses are charged too (a flood could dress as them): dropped unread.
    assert ua.receive(b"SIP/2.0 200 OK\r\n\r\n", flood, T0) is False
    # Another source is answered.
    assert ua.receive(options(999, B), Address("udp", B, 5061), T0) is True
    assert len(ua.outgoing()) == 1


# ---- config, wiring and metrics ------------------------------------------------------


def test_config_defaults_and_the_table(tmp_path: Path) -> None:
    rl = load_config().rate_limit
    assert (rl.enabled, rl.requests_per_second, rl.burst, rl.block_time, rl.exempt) == (
        True, 20.0, 60, 60.0, [])
    path = tmp_path / "sipbridge.toml"
    path.write_text('[rate_limit]\nrequests_per_second = 5\nburst = 10\nblock_time = 30\n'
                    'exempt = ["203.0.113.0/24"]\n')
    rl = load_config(path).rate_limit
    assert (rl.requests_per_second, rl.burst, rl.block_time, rl.exempt) == (
        5.0, 10, 30.0, ["203.0.113.0/24"])
    path.write_text('[rate_limit]\nexempt = ["not-a-network"]\n')
    with pytest.raises(ConfigError, match=r"rate_limit\.exempt"):
        load_config(path)
    path.write_text('[rate_limit]\nburst = 0\n')
    with pytest.raises(ConfigError, match=r"rate_limit\.burst"):
        load_config(path)


def test_the_allow_list_and_the_trunk_are_exempt_and_off_means_none() -> None:
    config = load_config(allow=["198.51.100.0/24"], rate_limit={"exempt": ["203.0.113.0/24"]},
                         trunk={"address": "192.0.2.50:5060"})
    limiter = rate_limiter(config)
    assert limiter is not None
    for host in ("198.51.100.9", "203.0.113.9", "192.0.2.50"):
        assert all(limiter.admit(host, T0) for _ in range(1000)), host
    assert not all(limiter.admit("192.0.2.51", T0) for _ in range(1000))
    assert rate_limiter(load_config(rate_limit={"enabled": False})) is None


def test_metrics_show_blocks_blocked_sources_and_dropped_messages() -> None:
    limiter = RateLimiter(LIMITS)
    now = [T0]
    metrics = Metrics(lambda: 0, rate_blocks=lambda: (
        limiter.blocks_total, limiter.blocked(now[0]), limiter.dropped_total))

    def scrape() -> dict[str, float]:
        return {s.name: s.value
                for family in text_string_to_metric_families(metrics.render().decode())
                for s in family.samples}

    assert scrape()["sipbridge_rate_blocks_total"] == 0
    send(limiter, A, 70, T0, 1e6)
    values = scrape()
    assert values["sipbridge_rate_blocks_total"] == 1
    assert values["sipbridge_rate_blocked_sources"] == 1
    assert values["sipbridge_rate_dropped_messages_total"] == 10
    now[0] = T0 + 61
    values = scrape()
    assert values["sipbridge_rate_blocked_sources"] == 0
    assert values["sipbridge_rate_blocks_total"] == 1


def test_a_network_match_remembers_hosts_within_its_bound() -> None:
    """What the rate limit and the allow-list ask of every message: the same answers as
    `in_networks`, each host's kept, and no more hosts kept than the bound."""
    nets = networks(["192.0.2.0/24", "2001:db8::/32"])
    match = NetworkMatch(nets, cache=3)
    hosts = ["192.0.2.7", "198.51.100.1", "::ffff:192.0.2.9", "2001:db8::1", "carrier.example",
             "192.0.2.7", "2001:db9::1"]
    assert [match(h) for h in hosts] == [in_networks(h, nets) for h in hosts] == [
        True, False, True, True, False, True, False]
    assert len(match._known) <= 3
