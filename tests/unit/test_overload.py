"""Overload control: the detector on a fake clock, the 503 built from raw bytes, and the
UA refusing new calls (and only new calls) while the detector is active."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.events import CallEnded, IncomingCall
from sipbridge.sip.loadprobe import LoadProbe
from sipbridge.sip.message import Request, Response, parse_message, response_to
from sipbridge.sip.overload import (
    REASON,
    OverloadDetector,
    OverloadLimits,
    Sign,
    shed_head,
    shed_response,
    shed_target,
)
from sipbridge.sip.ua import UaConfig, UserAgent
from tests.polling import until_async
from tests.unit.sipphone import OFFER, TIMERS, UAC, Phone, in_dialog, sip

# --- the detector ----------------------------------------------------------------------


def test_a_queue_delay_past_the_bound_starts_an_episode_that_holds_the_queue_short() -> None:
    d = OverloadDetector(OverloadLimits(queue_delay=0.2))
    d.queue_delay(0.19, 1.0)  # under the bound, outside an episode: fine
    assert not d.active(1.0) and d.admit(1.0)
    d.queue_delay(0.21, 1.0)  # past the bound: a sign once it lasts
    assert not d.active(1.0) and d.admit(1.0)
    d.queue_delay(0.21, 1.1)  # a tenth of a second later, still as late: the queue grows
    assert d.active(1.1) and not d.admit(1.1)
    d.queue_delay(0.03, 1.2)  # in the episode: past a tenth of the bound is late
    assert not d.admit(1.2)
    d.queue_delay(0.01, 1.3)  # read from a short queue: taken
    assert d.active(1.3) and d.admit(1.3)
    d.queue_delay(0.05, 1.5)
    assert not d.admit(1.5)
    d.queue_delay(0.0, 2.4)
    assert d.active(2.4) and d.admit(2.4)
    assert not d.active(2.5)  # a second with no late datagram: the episode is over
    d.queue_delay(0.15, 2.6)  # outside an episode only the bound counts
    assert not d.active(2.6) and d.admit(2.6)
    assert d.rejected == 3 and d.activations == 1 and d.signs[Sign.QUEUE_DELAY] == 1


def test_datagrams_that_waited_for_the_start_are_no_sign() -> None:
    d = OverloadDetector(OverloadLimits(queue_delay=0.2))
    d.starting()
    d.queue_delay(3.0, 5.0)  # read while starting (the first OPTIONS, queued meanwhile)
    assert not d.active(5.0) and d.admit(5.0)
    d.started(5.0)
    d.queue_delay(0.4, 5.1)  # came at 4.7, before the start was done: still none
    assert not d.active(5.1) and d.admit(5.1)
    d.queue_delay(0.5, 5.6)  # came at 5.1, once serving: a sign
    assert d.active(5.6) and not d.admit(5.6)
    assert d.signs[Sign.QUEUE_DELAY] == 1


def test_a_loop_held_up_by_the_start_is_no_sign() -> None:
    d = OverloadDetector(OverloadLimits(loop_lag=0.1))
    d.starting()
    d.loop_lag(0.5, 4.0)  # while starting (imports, the first collection)
    d.loop_lag(0.4, 4.6)
    assert not d.active(4.6)
    d.started(5.0)
    d.loop_lag(0.3, 5.2)  # due at 4.9, before the start was done
    d.loop_lag(0.3, 5.6)  # due at 5.3: a first sign after the start, not yet sustained
    assert not d.active(5.6)
    d.loop_lag(0.3, 6.0)  # the second in a row: active
    assert d.active(6.0) and d.signs[Sign.LOOP_LAG] == 1


def test_a_stall_that_is_over_is_no_queue_sign() -> None:
    """A pause (a full collection, the host taking the core) leaves datagrams that waited
    past the bound, but the delay only falls as the backlog drains: no call waited long
    enough to be sent again, and none is refused."""
    d = OverloadDetector(OverloadLimits(queue_delay=0.2))
    for i, delay in enumerate((0.35, 0.33, 0.3, 0.28, 0.25, 0.22, 0.21, 0.15, 0.05)):
        now = 1.0 + 0.05 * i
        d.queue_delay(delay, now)
        assert not d.active(now) and d.admit(now), (delay, now)
    assert d.activations == 0 and d.rejected == 0


def test_a_queue_that_grows_past_the_bound_is_a_sign_within_the_sustain_time() -> None:
    d = OverloadDetector(OverloadLimits(queue_delay=0.2))
    d.queue_delay(0.21, 2.0)
    d.queue_delay(0.22, 2.05)
    assert not d.active(2.05)
    d.queue_delay(0.1, 2.08)  # one read on time: the run of late ones starts again
    d.queue_delay(0.23, 2.1)
    d.queue_delay(0.24, 2.19)
    assert not d.active(2.19) and d.admit(2.19)
    d.queue_delay(0.25, 2.2)  # late for a tenth of a second, and later than at first
    assert d.active(2.2) and not d.admit(2.2) and d.signs[Sign.QUEUE_DELAY] == 1


def test_one_datagram_twice_the_bound_late_is_a_sign_by_itself() -> None:
    d = OverloadDetector(OverloadLimits(queue_delay=0.2))
    d.queue_delay(0.39, 3.0)
    assert not d.active(3.0)
    d.queue_delay(0.0, 3.01)
    d.queue_delay(0.41, 3.02)
    assert d.active(3.02) and not d.admit(3.02)


def test_queue_sign_ends_when_no_datagram_came_for_a_second() -> None:
    d = OverloadDetector(OverloadLimits(queue_delay=0.2))
    d.queue_delay(0.5, 10.0)
    assert d.active(10.9) and d.refusing(10.9)
    assert not d.active(11.0) and not d.refusing(11.0)


def test_loop_lag_in_two_probes_in_a_row_holds_for_the_hold_time() -> None:
    d = OverloadDetector(OverloadLimits(loop_lag=0.1, hold=0.25))
    d.loop_lag(0.1, 0.0)  # at the bound: not past it
    d.loop_lag(0.1, 0.1)
    assert not d.active(0.1)
    d.loop_lag(0.5, 0.7)  # one stall: over, not overload
    d.loop_lag(0.0, 0.8)
    d.loop_lag(0.3, 0.9)
    assert not d.active(0.9)
    d.loop_lag(0.3, 1.0)
    assert d.active(1.0) and d.active(1.24) and not d.active(1.25)
    assert d.sign is Sign.LOOP_LAG


def test_cpu_only_when_a_bound_is_set() -> None:
    off = OverloadDetector(OverloadLimits(max_cpu=0.0))
    off.cpu(1.0, 0.0)
    assert not off.active(0.0)
    on = OverloadDetector(OverloadLimits(max_cpu=0.9))
    on.cpu(0.85, 0.0)
    on.cpu(0.95, 0.1)
    assert not on.active(0.1)
    on.cpu(0.95, 0.2)
    assert on.active(0.2) and on.sign is Sign.CPU


def test_bounds_of_zero_are_off() -> None:
    d = OverloadDetector(OverloadLimits(queue_delay=0, loop_lag=0))
    d.queue_delay(30.0, 0.0)
    d.loop_lag(30.0, 0.0)
    assert not d.active(0.0) and d.admit(0.0) and not d.metered


def test_max_rate_is_a_token_bucket() -> None:
    d = OverloadDetector(OverloadLimits(max_rate=10))
    assert d.metered
    assert all(d.admit(5.0) for _ in range(10))  # a second's burst
    assert not d.admit(5.0) and d.active(5.0) and d.sign is Sign.RATE
    assert not d.admit(5.05)
    assert d.admit(5.1)  # one token back after 1/rate
    assert not d.admit(5.1)
    assert d.rejected == 3


def test_max_rate_burst() -> None:
    d = OverloadDetector(OverloadLimits(max_rate=100, burst=2))
    assert d.admit(0.0) and d.admit(0.0) and not d.admit(0.0)


# --- the 503 from raw bytes ------------------------------------------------------------

INVITE = (
    b"INVITE sip:agent@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-p1;rport, "
    b"SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-a\r\n"
    b"v: SIP/2.0/TCP [2001:db8::1]:5062;branch=z9hG4bK-b\r\n"
    b"f: \"A, B\" <sip:a@example.com>;tag=from-1\r\n"
    b"To: <sip:agent@127.0.0.1:5060>\r\n"
    b"i: abc-123@10.0.0.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:a@10.0.0.1:5070>\r\n"
    b"Max-Forwards: 69\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(OFFER)).encode() + b"\r\n\r\n" + OFFER
)
SOURCE = ("192.0.2.7", 40000)


def test_503_copies_the_headers_as_the_full_parser_would() -> None:
    head = shed_head(INVITE)
    assert head is not None and head.rport and head.sent_by == ("10.0.0.1", 5070)
    data = shed_response(head, *SOURCE, "ol1", 2)
    resp = parse_message(data)
    assert isinstance(resp, Response)
    assert (resp.status, resp.reason) == (503, REASON)
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    expected = response_to(req, 503, to_tag="ol1")
    for name in ("From", "To", "Call-ID", "CSeq"):
        assert resp.headers.get_all(name) == expected.headers.get_all(name), name
    assert resp.to.tag == "ol1" and resp.call_id == "abc-123@10.0.0.1"
    assert resp.headers.get("Retry-After") == "2"
    assert resp.headers.get("Content-Length") == "0"
    # Every Via in order; the top one stamped (RFC 3581 4: rport filled, received added).
    vias = resp.vias
    assert [v.branch for v in vias] == ["z9hG4bK-p1", "z9hG4bK-a", "z9hG4bK-b"]
    assert vias[0].received == "192.0.2.7" and vias[0].rport == 40000
    resp.validate()  # raises when the response is not well formed


def test_503_target_rport_else_sent_by_port() -> None:
    head = shed_head(INVITE)
    assert head is not None
    assert shed_target(head, *SOURCE) == SOURCE
    plain = INVITE.replace(b";rport,", b",")
    head = shed_head(plain)
    assert head is not None and not head.rport
    assert shed_target(head, *SOURCE) == ("192.0.2.7", 5070)
    resp = parse_message(shed_response(head, *SOURCE, "t", 5))
    assert isinstance(resp, Response)
    assert resp.vias[0].received == "192.0.2.7" and resp.headers.get("Retry-After") == "5"


def test_no_received_when_the_sent_by_host_is_the_source() -> None:
    raw = INVITE.replace(b"10.0.0.1:5070;branch=z9hG4bK-p1;rport", b"192.0.2.7:5070;branch=x")
    head = shed_head(raw)
    assert head is not None
    resp = parse_message(shed_response(head, *SOURCE, "t", 2))
    assert isinstance(resp, Response) and resp.vias[0].received is None


@pytest.mark.parametrize("raw", [
    INVITE.replace(b"To: <sip:agent@127.0.0.1:5060>", b"To: <sip:agent@127.0.0.1>;tag=x"),
    INVITE.replace(b"To: <sip:agent@127.0.0.1:5060>", b"t: <sip:a@h> ; TAG = x"),
    INVITE.replace(b"CSeq: 7 INVITE", b"CSeq: 7 ACK"),
    INVITE.replace(b"CSeq: 7 INVITE", b"CSeq: x INVITE"),
    INVITE.replace(b"i: abc-123@10.0.0.1\r\n", b""),
    INVITE.replace(b"i: abc-123@10.0.0.1\r\n", b"i: a\r\nCall-ID: b\r\n"),
    INVITE.replace(b"Max-Forwards: 69\r\n", b"Max-Forwards: 69\r\n folded\r\n"),
    INVITE.replace(b"Via: SIP/2.0/UDP 10.0.0.1:5070", b"Via: SIP/2.0/UDP @@@:5070"),
    INVITE.replace(b"CSeq: 7 INVITE\r\n", b"CSeq:\r\n"),
    INVITE.replace(b"INVITE sip:", b"OPTIONS sip:", 1),
    INVITE.split(b"\r\n\r\n")[0],  # no end of headers
    b"INVITE \r\n\r\n",
])
def test_what_it_cannot_read_for_certain_is_left_to_the_full_parser(raw: bytes) -> None:
    assert shed_head(raw) is None


def test_a_tag_inside_the_to_uri_is_not_a_dialog() -> None:
    raw = INVITE.replace(b"To: <sip:agent@127.0.0.1:5060>", b"To: <sip:agent@h;tag=u>")
    head = shed_head(raw)
    assert head is not None
    resp = parse_message(shed_response(head, *SOURCE, "ours", 2))
    assert isinstance(resp, Response) and resp.to.tag == "ours"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_invites_never_raise(data: st.DataObject) -> None:
    raw = bytearray(INVITE)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[at: at + data.draw(st.integers(1, 40))]
        else:
            raw[at:at] = data.draw(st.sampled_from([b"\r\n", b";", b",", b":", b"\x00", b" "]))
        if not raw:
            break
    head = shed_head(bytes(raw))
    if head is not None:
        out = shed_response(head, *SOURCE, "t", 2)
        assert out.startswith(b"SIP/2.0 503 ") and out.endswith(b"\r\n\r\n")


def test_random_bytes_never_raise() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        raw = b"INVITE " + bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        raw += b"\r\n\r\n" if rng.random() < 0.5 else b""
        shed_head(raw)


# --- the UA ----------------------------------------------------------------------------


class Loaded(Phone):
    """A Phone whose UA has an overload detector (switched on by the test)."""

    def __init__(self, limits: OverloadLimits | None = None) -> None:
        super().__init__()
        counter = itertools.count(1)
        self.detector = OverloadDetector(limits or OverloadLimits(queue_delay=0.2))
        self.ua = UserAgent(UaConfig(timers=TIMERS), AccessGuard(["127.0.0.0/8"]),
                            token=lambda: f"tok{next(counter)}", overload=self.detector)

    def overload(self) -> None:
        self.detector.queue_delay(1.0, self.now)


def test_new_invite_gets_503_and_leaves_no_state() -> None:
    p = Loaded()
    p.overload()
    p.receive(sip("INVITE", body=OFFER))
    sent = p.one()
    assert sent.status == 503 and sent.addr == UAC
    resp = sent.msg
    assert isinstance(resp, Response) and resp.reason == REASON
    assert resp.headers.get("Retry-After") == "2" and resp.to.tag
    assert p.take_events() == [] and p.empty()
    # Its ACK (RFC 3261 17.1.1.3) is dropped unread; nothing is sent, nothing kept.
    p.receive(sip("ACK", to=f"To: {resp.headers.get('To')}", contact=False))
    assert p.take() == [] and p.empty()
    assert p.ua.stats["overload_rejected"] == 1 and p.ua.stats["overload_acks"] == 1
    assert p.ua.stats["internal_errors"] == 0 and p.detector.rejected == 1


def test_an_invite_the_cheap_path_cannot_read_is_refused_by_the_full_one() -> None:
    p = Loaded()
    p.overload()
    p.receive(sip("INVITE", body=OFFER, headers=["Subject: a\r\n b"]))  # a folded line
    sent = p.one()
    assert sent.status == 503 and p.empty()
    assert isinstance(sent.msg, Response) and sent.msg.headers.get("Retry-After") == "2"


def test_calls_in_progress_options_and_retransmissions_go_on() -> None:
    p = Loaded()
    leg, ok = p.answered_call()
    ringing = p.call(call_id="call-2@127.0.0.1", branch="z9hG4bK-inv-2", from_tag="b")
    p.overload()
    # The ringing call's INVITE retransmitted: absorbed (its 100 again), not refused.
    p.receive(sip("INVITE", body=OFFER, call_id="call-2@127.0.0.1", branch="z9hG4bK-inv-2",
                  from_tag="b"))
    assert [s.status for s in p.take()] == [100]
    p.receive(sip("OPTIONS", branch="z9hG4bK-o1", call_id="o@x"))
    assert p.one().status == 200
    p.receive(in_dialog("INFO", ok, 2, "z9hG4bK-i1"))
    assert p.one().status == 200
    p.receive(in_dialog("BYE", ok, 3, "z9hG4bK-b1"))
    assert p.one().status == 200
    assert any(isinstance(e, CallEnded) and e.leg_id == leg for e in p.take_events())
    p.ua.reject(ringing, 486, p.now)
    p.collect()
    p.take()
    assert p.ua.held["incoming_call_ids"] == 0  # the Call-IDs of ended calls are not kept
    # Once the queue drains, new calls are taken again.
    p.detector.queue_delay(0.0, p.now)
    p.receive(sip("INVITE", body=OFFER, call_id="call-3@x", branch="z9hG4bK-3"))
    assert p.one().status == 100
    assert any(isinstance(e, IncomingCall) for e in p.take_events())


def test_max_rate_meters_new_calls_only() -> None:
    p = Loaded(OverloadLimits(queue_delay=0, loop_lag=0, max_rate=2))
    statuses = []
    for n in range(4):
        p.receive(sip("INVITE", body=OFFER, call_id=f"c{n}", branch=f"z9hG4bK-{n}"))
        statuses += [s.status for s in p.take()]
    assert statuses == [100, 100, 503, 503]
    p.now += 0.5  # one token back
    p.receive(sip("INVITE", body=OFFER, call_id="c9", branch="z9hG4bK-9"))
    assert p.one().status == 100


def test_tcp_503_goes_back_on_the_connection() -> None:
    p = Loaded()
    p.overload()
    source = Address("tcp", "127.0.0.1", 40123)
    p.receive(sip("INVITE", body=OFFER, transport="TCP", port=5090), source)
    sent = p.one()
    assert sent.status == 503 and sent.addr == source


# --- the measurements' way in ------------------------------------------------------------


def test_metrics_show_the_refusals_and_the_state() -> None:
    from sipbridge.metrics import Metrics

    state: list[tuple[int, bool]] = [(3, True)]
    metrics = Metrics(lambda: 0, overload=lambda: state[0])
    text = metrics.render().decode()
    assert "sipbridge_overload_rejected_total 3.0" in text
    assert "sipbridge_overload_active 1.0" in text
    state[0] = (5, False)
    text = metrics.render().decode()
    assert "sipbridge_overload_rejected_total 5.0" in text
    assert "sipbridge_overload_active 0.0" in text


def test_the_transport_reports_how_long_each_datagram_waited() -> None:
    """Datagrams that came while the loop was busy for 300 ms waited that long (the
    kernel's receive time, SO_TIMESTAMPNS); those read at once, about nothing."""
    import asyncio
    import socket
    import sys
    import time

    from sipbridge.sip.transport import SipTransport

    if sys.platform != "linux":
        pytest.skip("SO_TIMESTAMPNS is Linux's")

    async def run() -> tuple[list[float], list[bytes]]:
        delays: list[float] = []
        got: list[bytes] = []
        transport = SipTransport(lambda data, _src: got.append(data),
                                 on_queue_delay=delays.append)
        await transport.start("127.0.0.1", 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"first", ("127.0.0.1", transport.port))
            await until_async("the first datagram read", lambda: list(got), bool, 1.0)
            for n in range(3):
                s.sendto(b"late %d" % n, ("127.0.0.1", transport.port))
            time.sleep(0.3)  # noqa: ASYNC251 - the loop is busy on purpose: nothing is read
            await until_async("the three late datagrams read", lambda: list(got),
                              lambda seen: len(seen) == 4, 1.0)
        await transport.close()
        return delays, got

    delays, got = asyncio.run(run())
    assert got == [b"first", b"late 0", b"late 1", b"late 2"]
    assert len(delays) == 4
    assert delays[0] < 0.1
    assert all(0.29 <= d < 1.0 for d in delays[1:]), delays


def test_the_probe_reports_each_lag_it_measures() -> None:
    """On a real loop: a callback that holds the loop 0.2 s makes the next probe late by
    about that much, and every probe's lag reaches `on_lag` (the metrics' histogram)."""
    lags: list[float] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        probe = LoadProbe(OverloadDetector(OverloadLimits()), loop, interval=0.1,
                          on_lag=lags.append)
        probe.start()
        loop.call_later(0.02, time.sleep, 0.2)  # a blocking call on the loop
        await asyncio.sleep(0.6)
        probe.stop()

    asyncio.run(run())
    assert len(lags) >= 3, lags
    assert max(lags) >= 0.1, lags
    assert min(lags) < 0.05, lags  # the others ran on time
