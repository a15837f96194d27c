"""The REGISTER client (RFC 3261 10.2) on a fake clock: refresh timing, digest, backoff
growth and cap with jitter, Retry-After, 423, un-REGISTER, timeouts and transport errors."""

from __future__ import annotations

import itertools

import pytest

from sipbridge.sip.auth import DigestServer
from sipbridge.sip.message import Request, Response, response_to
from sipbridge.sip.registration import Registration, RegistrationSpec, RegState

SPEC = RegistrationSpec("prov", "sip:127.0.0.1:5070", "sip:100@example.com", "100", "secret",
                        "udp", 600, "agent", retry_min=5.0, retry_max=60.0)


def machine(spec: RegistrationSpec = SPEC, jitter: float = 0.0) -> Registration:
    counter = itertools.count()
    return Registration(spec, host="192.0.2.10", port=5080,
                        token=lambda: f"t{next(counter)}", jitter=lambda: jitter)


def sent(reg: Registration) -> Request:
    out = reg.outgoing()
    assert len(out) == 1, out
    request, dest = out[0]
    assert (dest.transport, dest.host, dest.port) == ("udp", "127.0.0.1", 5070)
    return request


def answer(request: Request, status: int, *headers: tuple[str, str]) -> Response:
    return response_to(request, status, to_tag="srv", headers=headers)


def ok(request: Request, expires: int) -> Response:
    contact = request.headers.get("Contact")
    return answer(request, 200, ("Contact", f"{contact};expires={expires}"),
                  ("Contact", "<sip:other@198.51.100.1>;expires=99"))


def register(reg: Registration, now: float = 0.0, granted: int = 600) -> Request:
    reg.start(now)
    request = sent(reg)
    reg.receive(request, ok(request, granted), now)
    assert reg.state is RegState.REGISTERED
    return request


def test_the_register_names_the_aor_our_contact_and_expires() -> None:
    reg = machine()
    reg.start(0.0)
    request = sent(reg)
    assert request.method == "REGISTER"
    assert str(request.uri) == "sip:127.0.0.1:5070"
    assert request.to.uri == request.from_.uri
    assert str(request.to.uri) == "sip:100@example.com"
    assert request.headers.get("Contact") == "<sip:agent@192.0.2.10:5080;transport=udp>"
    assert request.headers.get("Expires") == "600"
    assert reg.state is RegState.REGISTERING
    assert reg.deadline is None  # the transaction bounds the wait, not the machine


def test_the_granted_expiry_sets_the_refresh_and_the_call_id_stays() -> None:
    reg = machine()
    first = register(reg, 0.0, granted=300)  # our Contact's expires, not the other's 99
    assert reg.expires_at == 300.0
    assert reg.deadline == 150.0
    reg.handle_timer(149.0)
    assert reg.outgoing() == []
    reg.handle_timer(150.0)
    refresh = sent(reg)
    assert refresh.call_id == first.call_id
    assert refresh.cseq.seq > first.cseq.seq
    assert refresh.from_.tag == first.from_.tag
    assert reg.state is RegState.REGISTERED  # still bound while the refresh is out
    reg.receive(refresh, answer(refresh, 200, ("Expires", "120")), 150.0)
    assert reg.expires_at == 270.0 and reg.deadline == 210.0


def test_a_digest_challenge_is_answered_once_and_checks_out() -> None:
    server = DigestServer("example.com", {"100": "secret"})
    reg = machine()
    reg.start(0.0)
    request = sent(reg)
    challenges = server.challenge(0.0)
    reg.receive(request, answer(request, 401, *(("WWW-Authenticate", c) for c in challenges)),
                0.0)
    retry = sent(reg)
    assert retry.cseq.seq == request.cseq.seq + 1
    assert retry.top_via.branch != request.top_via.branch
    value = retry.headers.get("Authorization")
    assert value is not None
    assert server.verify("REGISTER", value, 0.0).ok
    # A second challenge in the same attempt is a failure: wrong password, no loop.
    reg.receive(retry, answer(retry, 401, ("WWW-Authenticate", challenges[0])), 0.0)
    assert reg.outgoing() == []
    assert reg.state is RegState.FAILING
    assert reg.last_status == 401
    assert reg.deadline is not None and reg.deadline >= 5.0


def test_a_proxy_challenge_gets_proxy_authorization() -> None:
    reg = machine()
    reg.start(0.0)
    request = sent(reg)
    reg.receive(request, answer(request, 407, ("Proxy-Authenticate",
                                               'Digest realm="r", nonce="n"')), 0.0)
    assert sent(reg).headers.get("Proxy-Authorization") is not None


@pytest.mark.parametrize("status", [403, 404, 500, 503])
def test_failures_back_off_exponentially_to_the_cap(status: int) -> None:
    reg = machine(jitter=0.999)
    reg.start(0.0)
    now = 0.0
    delays = []
    for _ in range(8):
        request = sent(reg)
        reg.receive(request, answer(request, status), now)
        assert reg.state is RegState.FAILING and reg.last_status == status
        deadline = reg.deadline
        assert deadline is not None
        delays.append(deadline - now)
        reg.handle_timer(deadline - 0.001)
        assert reg.outgoing() == []  # nothing before the deadline: never a tight loop
        now = deadline
        reg.handle_timer(now)
    assert delays[0] == pytest.approx(5.0, abs=0.01)
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert delays[2] == pytest.approx(20.0, abs=0.05)
    assert max(delays) == pytest.approx(60.0, abs=0.1)  # capped at retry_max
    assert reg.status().failures == 8


def test_jitter_spreads_the_retries_between_half_and_all_of_the_step() -> None:
    low, high = machine(jitter=0.0), machine(jitter=0.999)
    for reg in (low, high):
        reg.start(0.0)
        for _ in range(3):
            request = sent(reg)
            reg.receive(request, answer(request, 500), 0.0)
            reg.handle_timer(reg.deadline or 0.0)
    assert low.retry_at is None and high.retry_at is None  # each has a REGISTER out
    r1, r2 = sent(low), sent(high)
    low.receive(r1, answer(r1, 500), 100.0)
    high.receive(r2, answer(r2, 500), 100.0)
    assert low.deadline == pytest.approx(120.0)  # 4th failure: 40 s step, 50 % of it
    assert high.deadline == pytest.approx(140.0, abs=0.1)


def test_retry_after_on_503_is_honoured() -> None:
    reg = machine()
    reg.start(0.0)
    request = sent(reg)
    reg.receive(request, answer(request, 503, ("Retry-After", "120 (maintenance)")), 0.0)
    assert reg.deadline == 120.0


def test_423_retries_at_once_with_min_expires() -> None:
    reg = machine()
    reg.start(0.0)
    request = sent(reg)
    reg.receive(request, answer(request, 423, ("Min-Expires", "1800")), 0.0)
    retry = sent(reg)
    assert retry.headers.get("Expires") == "1800"
    reg.receive(retry, answer(retry, 423, ("Min-Expires", "1800")), 0.0)
    assert reg.outgoing() == [] and reg.state is RegState.FAILING  # the same again: failure


def test_a_423_asking_for_too_long_backs_off() -> None:
    reg = machine()
    reg.start(0.0)
    request = sent(reg)
    reg.receive(request, answer(request, 423, ("Min-Expires", "999999")), 0.0)
    assert reg.outgoing() == [] and reg.status().state is RegState.FAILING
    assert reg.deadline == 5.0


def test_timeout_and_transport_error_fail_and_retry() -> None:
    reg = machine()
    reg.start(0.0)
    request = sent(reg)
    reg.receive(request, None, 32.0, "no response (timed out)")
    assert reg.state is RegState.FAILING
    assert (reg.last_status, reg.last_reason) == (408, "no response (timed out)")
    assert reg.deadline == 37.0
    reg.handle_timer(37.0)
    again = sent(reg)
    # The UA turns a send failure into a 503 without Retry-After.
    reg.receive(again, answer(again, 503), 37.0)
    assert reg.state is RegState.FAILING and reg.deadline is not None
    reg.handle_timer(reg.deadline)
    back = sent(reg)
    reg.receive(back, ok(back, 600), 60.0)
    status = reg.status()
    assert status.state is RegState.REGISTERED and reg.failures == 0
    assert status.failures == 2


def test_a_stale_outcome_is_ignored() -> None:
    reg = machine()
    first = register(reg)
    reg.handle_timer(reg.deadline or 0.0)
    refresh = sent(reg)
    reg.receive(first, answer(first, 500), 400.0)  # late, for the earlier REGISTER
    assert reg.state is RegState.REGISTERED
    reg.receive(refresh, ok(refresh, 600), 400.0)
    assert reg.status().expires_at == 1000.0


def test_stop_unregisters_with_expires_zero_and_digest() -> None:
    reg = machine()
    register(reg)
    assert reg.stop(10.0)
    bye = sent(reg)
    assert bye.headers.get("Expires") == "0"
    assert reg.state is RegState.UNREGISTERING
    reg.receive(bye, answer(bye, 401, ("WWW-Authenticate", 'Digest realm="r", nonce="n"')),
                10.0)
    authed = sent(reg)
    assert authed.headers.get("Expires") == "0" and authed.headers.get("Authorization")
    reg.receive(authed, answer(authed, 200), 10.0)
    status = reg.status()
    assert status.state is RegState.STOPPED
    assert status.next_attempt_at is None and status.expires_at is None


def test_stop_without_a_binding_sends_nothing() -> None:
    reg = machine()
    reg.start(0.0)
    request = sent(reg)
    reg.receive(request, answer(request, 403), 0.0)
    assert not reg.stop(1.0)
    assert reg.outgoing() == [] and reg.state is RegState.STOPPED and reg.deadline is None


def test_a_200_without_our_binding_is_a_failure() -> None:
    reg = machine()
    reg.start(0.0)
    request = sent(reg)
    reg.receive(request, answer(request, 200, ("Expires", "0")), 0.0)
    assert reg.state is RegState.FAILING and reg.deadline == 5.0


def test_the_password_stays_out_of_reprs_and_requests() -> None:
    reg = machine()
    reg.start(0.0)
    request = sent(reg)
    reg.receive(request, answer(request, 401, ("WWW-Authenticate",
                                               'Digest realm="r", nonce="n", qop="auth"')), 0.0)
    assert "secret" not in repr(SPEC) and "secret" not in repr(reg.status())
    assert b"secret" not in sent(reg).to_bytes()
