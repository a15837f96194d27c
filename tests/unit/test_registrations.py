"""The registrations on the SIP driver over a real UA core with a fake clock: REGISTERs
leave through client transactions, their answers, timeouts and send failures come back to
the right machine (and nothing of theirs reaches the calls), and each deadline is armed.
The gateway gives each registrar a Contact address it can reach."""

from __future__ import annotations

import logging

import pytest

from sipbridge.config import load_config
from sipbridge.gateway import Gateway
from sipbridge.registrations import Registrations
from sipbridge.sip.address import Address
from sipbridge.sip.auth import DigestServer
from sipbridge.sip.events import RequestOutcome
from sipbridge.sip.message import Request, response_to
from sipbridge.sip.registration import RegistrationSpec, RegState
from tests.unit.test_driver import World

REGISTRAR = Address("udp", "127.0.0.1", 5070)
SPEC = RegistrationSpec("prov", "sip:127.0.0.1:5070", "sip:100@example.com", "100", "pw",
                        expires=600, contact_user="agent", retry_min=5, retry_max=60)


def started() -> tuple[World, Registrations]:
    world = World()
    regs = Registrations(world.driver, [SPEC], host=lambda _: "127.0.0.1", port=lambda _: 5060)
    regs.attach()
    regs.start()
    return world, regs


def last_register(world: World) -> Request:
    request = world.sent[-1]
    assert isinstance(request, Request) and request.method == "REGISTER"
    return request


def reply(world: World, request: Request, status: int, *headers: tuple[str, str]) -> None:
    world.driver.receive(response_to(request, status, to_tag="r", headers=headers).to_bytes(),
                         REGISTRAR)


def test_register_digest_and_refresh_through_the_ua() -> None:
    world, regs = started()
    server = DigestServer("example.com", {"100": "pw"})
    first = last_register(world)
    reply(world, first, 401, *(("WWW-Authenticate", c) for c in server.challenge(0.0)))
    second = last_register(world)
    assert server.verify("REGISTER", second.headers.get("Authorization") or "", 0.0).ok
    reply(world, second, 200, ("Contact", f"{second.headers.get('Contact')};expires=600"))
    [status] = regs.statuses()
    assert status.state is RegState.REGISTERED and status.expires_at == 600.0
    assert not any(isinstance(e, RequestOutcome) for e in world.events)  # not the calls'
    sent = len(world.sent)
    world.advance(299)
    assert len(world.sent) == sent
    world.advance(1)  # half the granted time: the refresh
    assert last_register(world).call_id == first.call_id
    assert regs.report()[0]["state"] == "registered"


def test_a_send_failure_and_a_timeout_fail_and_arm_the_retry() -> None:
    world, regs = started()
    request = last_register(world)
    world.driver.send_failed(request.to_bytes(), REGISTRAR, "connection refused")
    [status] = regs.statuses()
    assert status.state is RegState.FAILING and status.last_status == 503
    assert status.next_attempt_at is not None and 5 <= status.next_attempt_at <= 10
    world.advance(status.next_attempt_at)
    retry = last_register(world)
    assert retry is not request
    world.advance(32)  # Timer F (64 * T1) with no answer
    [status] = regs.statuses()
    assert status.state is RegState.FAILING and status.last_status == 408
    assert status.failures == 2


@pytest.mark.parametrize(("settings", "registrar", "expected"), [
    ({"sip": "0.0.0.0:5060"}, "sip:127.0.0.1:5070", "127.0.0.1"),  # routes to the registrar
    ({"sip": "0.0.0.0:5060", "public_address": "203.0.113.10"}, "sip:127.0.0.1", "203.0.113.10"),
    ({"sip": "127.0.0.2:5060"}, "sip:127.0.0.1", "127.0.0.2"),  # the bound address
])
def test_the_contact_names_where_the_registrar_can_reach_us(
        settings: dict[str, str], registrar: str, expected: str) -> None:
    gateway = Gateway(load_config(None, store="off", **settings))
    spec = RegistrationSpec("p", registrar, "sip:1@example.com")
    assert gateway._contact_host(spec) == expected


def test_a_named_registrar_on_a_wildcard_address_asks_for_public_address(
        caplog: pytest.LogCaptureFixture) -> None:
    gateway = Gateway(load_config(None, store="off", sip="0.0.0.0:5060"))
    spec = RegistrationSpec("p", "sip:sip.example.com", "sip:1@example.com")
    with caplog.at_level(logging.WARNING, "sipbridge"):
        assert gateway._contact_host(spec) == gateway.advertised_host
    assert "set public_address" in caplog.text
