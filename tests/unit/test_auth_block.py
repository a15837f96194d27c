"""Per-source limits on failed digest authentications, with a fake clock."""

from __future__ import annotations

import logging

import pytest

from sipbridge.sip.access import AccessGuard, AuthLimits, Decision
from sipbridge.sip.address import Address
from sipbridge.sip.auth import DigestServer, authorization, parse_challenge
from sipbridge.sip.message import Request, parse_message

REALM = "gw.example.com"
URI = "sip:agent@gw.example.com"
LIMITS = AuthLimits(max_failures=3, window=60.0, block_time=600.0, max_tracked=5)
T0 = 1_000.0
A = Address("udp", "192.0.2.7", 5060)
B = Address("udp", "192.0.2.8", 5060)


def invite(authz: str | None = None) -> Request:
    lines = [
        f"INVITE {URI} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-1",
        "From: <sip:alice@example.com>;tag=1",
        f"To: <{URI}>",
        "Call-ID: c1@example.com",
        "CSeq: 1 INVITE",
        "Max-Forwards: 70",
    ]
    if authz is not None:
        lines.append(f"Authorization: {authz}")
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def make_guard(allow: tuple[str, ...] = ()) -> AccessGuard:
    digest = DigestServer(REALM, {"alice": "wonderland"}, secret=b"k" * 32, algorithms=["MD5"])
    return AccessGuard(allow, digest, LIMITS)


def attempt(guard: AccessGuard, source: Address, password: str, now: float) -> Decision:
    """A challenge, then an answer with `password`."""
    first = guard.check(invite(), source, now)
    assert first.status == 401, first
    chal = parse_challenge(dict(first.headers)["WWW-Authenticate"])
    authz = authorization(chal, method="INVITE", uri=URI, username="alice",
                          password=password, cnonce="c0ffee")
    return guard.check(invite(authz), source, now)


def test_failures_below_the_limit_then_success() -> None:
    guard = make_guard()
    for i in range(LIMITS.max_failures - 1):
        assert attempt(guard, A, "wrong", T0 + i).status == 403
    assert attempt(guard, A, "wonderland", T0 + 5).allowed
    assert guard.blocked(T0 + 5) == 0 and guard.blocks_total == 0


def test_limit_reached_blocks_even_the_right_password(caplog: pytest.LogCaptureFixture) -> None:
    guard = make_guard()
    with caplog.at_level(logging.WARNING, logger="sipbridge.sip"):
        for i in range(LIMITS.max_failures):
            assert attempt(guard, A, "wrong", T0 + i).status == 403
        for _ in range(20):  # the blocked source keeps trying: no more log lines
            blocked = guard.check(invite(), A, T0 + 10)
            assert blocked.status == 403
            assert blocked.reason == "Forbidden (blocked after 3 failed authentications)"
            assert not blocked.headers  # no challenge, no nonce to work with
    lines = [r for r in caplog.records if "blocked" in r.getMessage()]
    assert len(lines) == 1 and "192.0.2.7" in lines[0].getMessage()
    assert "3 failed" in lines[0].getMessage() and lines[0].levelno == logging.WARNING
    assert guard.blocked(T0 + 10) == 1 and guard.blocks_total == 1


def test_failures_outside_the_window_do_not_add_up() -> None:
    guard = make_guard()
    for i in range(LIMITS.max_failures * 3):
        assert attempt(guard, A, "wrong", T0 + i * 31.0).status == 403
    assert guard.blocks_total == 0
    assert attempt(guard, A, "wonderland", T0 + 1_000).allowed


def test_block_expires_and_another_source_is_unaffected() -> None:
    guard = make_guard()
    for i in range(LIMITS.max_failures):
        attempt(guard, A, "wrong", T0 + i)
    assert attempt(guard, B, "wonderland", T0 + 5).allowed
    end = T0 + LIMITS.max_failures - 1 + LIMITS.block_time
    assert guard.check(invite(), A, end - 0.1).status == 403
    assert guard.check(invite(), A, end).status == 401  # challenged again
    assert attempt(guard, A, "wonderland", end + 1).allowed
    assert guard.blocked(end) == 0


def test_success_does_not_lift_a_block() -> None:
    guard = make_guard()
    for i in range(LIMITS.max_failures):
        attempt(guard, A, "wrong", T0 + i)
    chal = parse_challenge(dict(attempt_challenge(guard, B))["WWW-Authenticate"])
    good = authorization(chal, method="INVITE", uri=URI, username="alice",
                         password="wonderland", cnonce="c0ffee")
    assert guard.check(invite(good), A, T0 + 20).status == 403  # a nonce got elsewhere
    assert guard.check(invite(), A, T0 + 21).status == 403


def attempt_challenge(guard: AccessGuard, source: Address) -> tuple[tuple[str, str], ...]:
    return guard.check(invite(), source, T0 + 19).headers


def test_allow_listed_source_is_exempt() -> None:
    guard = make_guard(allow=("192.0.2.0/24",))
    bad = invite('Digest username="alice", realm="x", nonce="n", uri="sip:a", response="0"')
    for i in range(LIMITS.max_failures * 2):
        assert guard.check(bad, A, T0 + i).allowed
    assert guard.tracked() == 0 and guard.blocks_total == 0


def test_tracked_sources_stay_bounded() -> None:
    guard = make_guard()
    for i in range(LIMITS.max_tracked * 10):
        source = Address("udp", f"198.51.100.{i}", 5060)
        attempt(guard, source, "wrong", T0 + i * 0.01)
    assert guard.tracked() == LIMITS.max_tracked
