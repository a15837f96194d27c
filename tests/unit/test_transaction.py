"""SIP transactions through their timers (RFC 3261 17, RFC 6026), on a fake clock.

Nothing sleeps: a transaction is told the time, queues bytes in `outbox` and says
when it next needs `on_timer`. `advance` below plays the owner's part, firing each
deadline in turn and recording what went out when.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.sip.address import Address
from sipbridge.sip.message import Request, Response, parse_message, response_to
from sipbridge.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    State,
    Timeout,
    TimerConfig,
    client_key,
    new_branch,
    server_key,
)

UDP = Address("udp", "127.0.0.1", 5061)
TCP = Address("tcp", "127.0.0.1", 5061)
DEFAULT = TimerConfig(t1=0.5, t2=4, t4=5)
SMALL = TimerConfig(t1=0.125, t2=0.5, t4=1.0)  # powers of two: exact float sums
BRANCH = "z9hG4bK-tx-1"


def make_request(method: str = "INVITE", *, branch: str = BRANCH, transport: str = "UDP",
                 cseq: int = 1) -> Request:
    text = (
        f"{method} sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5061;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
        "From: Alice <sip:alice@127.0.0.1>;tag=a-1\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        "Call-ID: tx-call-1@127.0.0.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@127.0.0.1:5061>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def reply(request: Request | None, status: int, tag: str = "b-1") -> Response:
    assert request is not None, "the transaction let its request go (answered already)"
    return response_to(request, status, to_tag=tag)


def ack_for(request: Request, response: Response) -> Request:
    """The ACK a UAC sends for a non-2xx (same branch as the INVITE)."""
    text = (
        "ACK sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: {request.headers.get('Via')}\r\n"
        f"From: {request.headers.get('From')}\r\n"
        f"To: {response.headers.get('To')}\r\n"
        f"Call-ID: {request.call_id}\r\n"
        f"CSeq: {request.cseq.seq} ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def advance(
    tx: ClientTransaction | ServerTransaction, until: float
) -> tuple[list[tuple[float, bytes]], list[tuple[float, Timeout]]]:
    """Fire every deadline up to `until`: (time, bytes) sent and (time, Timeout) seen."""
    sent: list[tuple[float, bytes]] = []
    timeouts: list[tuple[float, Timeout]] = []
    for _ in range(10_000):
        at = tx.deadline
        if at is None or at > until:
            return sent, timeouts
        before = len(tx.outbox)
        result = tx.on_timer(at)
        sent += [(at, data) for data, _ in tx.outbox[before:]]
        if result is not None:
            timeouts.append((at, result))
    raise AssertionError("transaction timer never settles")


def doubling(t1: float, until: float, cap: float | None = None, start: float = 0.0) -> list[float]:
    """Retransmission times: intervals T1, 2T1, 4T1... (capped), strictly before `until`."""
    times, interval, at = [], t1, start + t1
    while at < until:
        times.append(at)
        interval = interval * 2 if cap is None else min(interval * 2, cap)
        at += interval
    return times


def times(sent: list[tuple[float, bytes]]) -> list[float]:
    return [at for at, _ in sent]


# --- keys and config ---------------------------------------------------------


def test_timer_b_is_64_t1() -> None:
    assert DEFAULT.b == 32.0
    assert SMALL.b == 8.0
    assert TimerConfig().b == 32.0


def test_server_key_matches_ack_to_invite_and_keeps_cancel_apart() -> None:
    invite = make_request("INVITE")
    ack = ack_for(invite, reply(invite, 486))
    cancel = make_request("CANCEL")
    assert server_key(ack) == server_key(invite)
    assert server_key(cancel) != server_key(invite)
    assert server_key(cancel)[:-1] == server_key(invite)[:-1]
    assert server_key(make_request(branch="z9hG4bK-other")) != server_key(invite)


def test_server_key_falls_back_to_rfc2543_matching_without_magic_cookie() -> None:
    old = make_request(branch="1234")
    key = server_key(old)
    assert "tx-call-1@127.0.0.1" in key and "1" in key and "a-1" in key
    assert server_key(make_request(branch="1234", cseq=2)) != key


def test_client_key_maps_ack_to_invite() -> None:
    assert client_key(BRANCH, "ACK") == client_key(BRANCH, "INVITE")
    assert client_key(BRANCH, "BYE") != client_key(BRANCH, "INVITE")
    assert new_branch("abc") == "z9hG4bKabc"


# --- client INVITE (17.1.1) --------------------------------------------------


def test_client_invite_timer_a_doubles_and_timer_b_times_out() -> None:
    invite = make_request()
    tx = ClientTransaction(invite, UDP, 0.0, DEFAULT)
    assert tx.state is State.CALLING
    assert tx.outbox == [(invite.to_bytes(), UDP)]
    assert tx.deadline == 0.5
    sent, timeouts = advance(tx, 100.0)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(data == invite.to_bytes() for _, data in sent)
    assert all(addr == UDP for _, addr in tx.outbox)
    assert sum(len(d) for d, _ in tx.outbox) == 7 * len(invite.to_bytes())
    assert timeouts == [(32.0, Timeout.NO_RESPONSE)]
    assert tx.terminated and tx.timeout is Timeout.NO_RESPONSE
    assert tx.deadline is None


@pytest.mark.parametrize("timers", [DEFAULT, SMALL], ids=["default", "small"])
def test_client_invite_timers_follow_config(timers: TimerConfig) -> None:
    tx = ClientTransaction(make_request(), UDP, 10.0, timers)
    sent, timeouts = advance(tx, 10.0 + 1000)
    assert times(sent) == doubling(timers.t1, 10.0 + timers.b, start=10.0)
    assert timeouts == [(10.0 + 64 * timers.t1, Timeout.NO_RESPONSE)]


def test_client_invite_provisional_stops_timers_a_and_b() -> None:
    invite = make_request()
    tx = ClientTransaction(invite, UDP, 0.0, DEFAULT)
    advance(tx, 1.0)  # one retransmission at 0.5
    assert len(tx.outbox) == 2
    assert tx.receive(reply(invite, 180), 1.2) is True
    assert tx.state is State.PROCEEDING
    assert tx.deadline is None
    sent, timeouts = advance(tx, 1000.0)
    assert sent == [] and timeouts == []
    assert not tx.terminated
    assert tx.receive(reply(invite, 183), 5.0) is True  # more provisionals still go up


def test_client_invite_non_2xx_final_generates_ack() -> None:
    invite = make_request()
    tx = ClientTransaction(invite, UDP, 0.0, DEFAULT)
    busy = reply(invite, 486, tag="callee-tag")
    assert tx.receive(busy, 2.0) is True
    assert tx.state is State.COMPLETED
    assert len(tx.outbox) == 2
    data, addr = tx.outbox[-1]
    assert addr == UDP
    ack = parse_message(data)
    assert isinstance(ack, Request)
    # RFC 3261 17.1.1.3: same Request-URI, top Via (same branch), From, Call-ID and
    # Route as the INVITE; To from the response; CSeq number of the INVITE with ACK.
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.get_all("Via") == [invite.headers.get("Via")]
    assert ack.top_via.branch == BRANCH
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.to.tag == "callee-tag"
    assert ack.headers.get("To") == busy.headers.get("To")
    assert ack.call_id == invite.call_id
    assert (ack.cseq.seq, ack.cseq.method) == (1, "ACK")
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.headers.get("Max-Forwards") == "70"
    assert ack.body == b""
    assert "Contact" not in ack.headers


def test_client_invite_retransmitted_final_resends_ack_and_is_absorbed() -> None:
    invite = make_request()
    tx = ClientTransaction(invite, UDP, 0.0, DEFAULT)
    busy = reply(invite, 486)
    tx.receive(busy, 0.2)
    ack_bytes = tx.outbox[-1][0]
    assert tx.receive(busy, 1.0) is False
    assert tx.receive(busy, 3.0) is False
    assert [d for d, _ in tx.outbox[2:]] == [ack_bytes, ack_bytes]
    assert tx.receive(reply(invite, 180), 3.5) is False  # late provisional: absorbed
    assert len(tx.outbox) == 4


def test_client_invite_timer_d_32s_over_udp() -> None:
    tx = ClientTransaction(make_request(), UDP, 0.0, SMALL)
    tx.receive(reply(tx.request, 503), 1.0)
    # Timer D is at least 32 s over UDP whatever T1 is (RFC 3261 table 4).
    assert tx.deadline == 33.0
    sent, timeouts = advance(tx, 32.9)
    assert sent == [] and not tx.terminated  # no request retransmissions once Completed
    sent, timeouts = advance(tx, 33.0)
    assert tx.terminated and timeouts == [] and tx.timeout is None


def test_client_invite_timer_d_zero_over_tcp() -> None:
    tx = ClientTransaction(make_request(transport="TCP"), TCP, 0.0, DEFAULT)
    tx.receive(reply(tx.request, 404), 3.0)
    assert tx.state is State.COMPLETED
    assert len(tx.outbox) == 2  # the ACK goes out over TCP too
    assert tx.deadline == 3.0
    assert tx.on_timer(3.0) is None
    assert tx.terminated


def test_client_invite_2xx_goes_to_accepted_and_retransmissions_pass_up() -> None:
    invite = make_request()
    tx = ClientTransaction(invite, UDP, 0.0, DEFAULT)
    advance(tx, 0.6)
    ok = reply(invite, 200)
    assert tx.receive(ok, 1.0) is True
    assert tx.state is State.ACCEPTED  # RFC 6026 7.2
    assert len(tx.outbox) == 2  # the ACK for a 2xx is the TU's, not the transaction's
    assert tx.receive(ok, 1.5) is True  # the TU re-ACKs each 2xx retransmission
    assert tx.receive(reply(invite, 200, tag="fork-2"), 1.6) is True  # forked 2xx too
    assert tx.receive(reply(invite, 180), 1.7) is False
    assert tx.receive(reply(invite, 486), 1.8) is False
    assert tx.deadline == 1.0 + 32.0  # Timer M
    sent, timeouts = advance(tx, 100.0)
    assert sent == [] and timeouts == []
    assert tx.terminated and tx.timeout is None
    assert tx.receive(ok, 40.0) is False


def test_client_invite_2xx_after_provisional_starts_timer_m() -> None:
    tx = ClientTransaction(make_request(), UDP, 0.0, SMALL)
    tx.receive(reply(tx.request, 180), 0.1)
    tx.receive(reply(tx.request, 200), 2.0)
    assert tx.state is State.ACCEPTED
    assert tx.deadline == 2.0 + 64 * SMALL.t1


def test_client_invite_over_tcp_never_retransmits() -> None:
    tx = ClientTransaction(make_request(transport="TCP"), TCP, 0.0, DEFAULT)
    assert tx.deadline == 32.0  # only Timer B
    sent, timeouts = advance(tx, 100.0)
    assert sent == []
    assert len(tx.outbox) == 1
    assert timeouts == [(32.0, Timeout.NO_RESPONSE)]


# --- client non-INVITE (17.1.2) ----------------------------------------------


def test_client_non_invite_timer_e_caps_at_t2_and_timer_f_times_out() -> None:
    bye = make_request("BYE")
    tx = ClientTransaction(bye, UDP, 0.0, DEFAULT)
    assert tx.state is State.TRYING
    sent, timeouts = advance(tx, 100.0)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert sum(len(d) for d, _ in tx.outbox) == 11 * len(bye.to_bytes())
    assert timeouts == [(32.0, Timeout.NO_RESPONSE)]
    assert tx.terminated and tx.timeout is Timeout.NO_RESPONSE


@pytest.mark.parametrize("timers", [DEFAULT, SMALL], ids=["default", "small"])
def test_client_non_invite_timers_follow_config(timers: TimerConfig) -> None:
    tx = ClientTransaction(make_request("OPTIONS"), UDP, 0.0, timers)
    sent, timeouts = advance(tx, 1000.0)
    assert times(sent) == doubling(timers.t1, timers.b, cap=timers.t2)
    assert timeouts == [(timers.b, Timeout.NO_RESPONSE)]


def test_client_non_invite_timer_e_fires_at_t2_in_proceeding() -> None:
    info = make_request("INFO")
    tx = ClientTransaction(info, UDP, 0.0, DEFAULT)
    advance(tx, 1.0)  # retransmitted at 0.5; next E due at 1.5
    assert tx.receive(reply(info, 100), 1.0) is True
    assert tx.state is State.PROCEEDING
    sent, timeouts = advance(tx, 100.0)
    # 17.1.2.2: the pending E fires, then E is reset to T2 each time it fires.
    assert times(sent) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert timeouts == [(32.0, Timeout.NO_RESPONSE)]  # F still runs in Proceeding


def test_client_non_invite_final_starts_timer_k_over_udp() -> None:
    bye = make_request("BYE")
    tx = ClientTransaction(bye, UDP, 0.0, DEFAULT)
    ok = reply(bye, 200)
    assert tx.receive(ok, 2.0) is True
    assert tx.state is State.COMPLETED
    assert tx.deadline == 2.0 + 5.0  # Timer K = T4
    assert tx.receive(ok, 3.0) is False  # retransmitted final absorbed
    sent, timeouts = advance(tx, 100.0)
    assert sent == [] and timeouts == []
    assert len(tx.outbox) == 1  # no ACK for non-INVITE, no more retransmissions
    assert tx.terminated


def test_client_non_invite_timer_k_follows_t4() -> None:
    tx = ClientTransaction(make_request("BYE"), UDP, 0.0, SMALL)
    tx.receive(reply(tx.request, 481), 0.3)
    assert tx.deadline == 0.3 + SMALL.t4


def test_client_non_invite_over_tcp_no_retransmission_and_timer_k_zero() -> None:
    tx = ClientTransaction(make_request("BYE", transport="TCP"), TCP, 0.0, DEFAULT)
    assert tx.deadline == 32.0
    tx.receive(reply(tx.request, 100), 1.0)
    assert tx.deadline == 32.0
    tx.receive(reply(tx.request, 200), 4.0)
    assert tx.deadline == 4.0
    sent, timeouts = advance(tx, 4.0)
    assert sent == [] and tx.terminated and timeouts == []
    assert len(tx.outbox) == 1


def test_client_transport_error_ends_with_no_response() -> None:
    tx = ClientTransaction(make_request("BYE"), UDP, 0.0, DEFAULT)
    tx.transport_error()
    assert tx.terminated and tx.timeout is Timeout.NO_RESPONSE and tx.deadline is None


def test_client_shares_the_owners_outbox() -> None:
    box: list[tuple[bytes, Address]] = []
    tx = ClientTransaction(make_request("BYE"), UDP, 0.0, DEFAULT, box)
    tx.on_timer(0.5)
    assert len(box) == 2 and tx.outbox is box


# --- server INVITE (17.2.1) --------------------------------------------------


def test_server_invite_retransmission_resends_last_provisional() -> None:
    invite = make_request()
    tx = ServerTransaction(invite, UDP, 0.0, DEFAULT)
    assert tx.state is State.PROCEEDING and tx.deadline is None
    assert tx.receive(invite, 0.1) is False  # nothing to resend yet
    assert tx.outbox == []
    trying = reply(invite, 100)
    tx.respond(trying, 0.0)
    assert tx.receive(invite, 0.5) is False
    assert [d for d, _ in tx.outbox] == [trying.to_bytes()] * 2
    ringing = reply(invite, 180)
    tx.respond(ringing, 1.0)
    assert tx.receive(invite, 1.5) is False
    assert [d for d, _ in tx.outbox[-2:]] == [ringing.to_bytes()] * 2
    assert tx.deadline is None  # no timers while Proceeding


def test_server_invite_non_2xx_timer_g_capped_at_t2_and_timer_h_no_ack() -> None:
    invite = make_request()
    tx = ServerTransaction(invite, UDP, 0.0, DEFAULT)
    busy = reply(invite, 486)
    tx.respond(busy, 0.0)
    assert tx.state is State.COMPLETED
    sent, timeouts = advance(tx, 100.0)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(d == busy.to_bytes() for _, d in sent)
    assert timeouts == [(32.0, Timeout.NO_ACK)]
    assert tx.terminated


@pytest.mark.parametrize("timers", [DEFAULT, SMALL], ids=["default", "small"])
def test_server_invite_timers_g_h_follow_config(timers: TimerConfig) -> None:
    tx = ServerTransaction(make_request(), UDP, 0.0, timers)
    tx.respond(reply(tx.request, 603), 0.0)
    sent, timeouts = advance(tx, 1000.0)
    assert times(sent) == doubling(timers.t1, timers.b, cap=timers.t2)
    assert timeouts == [(timers.b, Timeout.NO_ACK)]


def test_server_invite_ack_confirms_and_timer_i_ends() -> None:
    invite = make_request()
    tx = ServerTransaction(invite, UDP, 0.0, DEFAULT)
    busy = reply(invite, 486)
    tx.respond(busy, 0.0)
    advance(tx, 2.0)  # G at 0.5 and 1.5
    assert len(tx.outbox) == 3
    ack = ack_for(invite, busy)
    assert tx.receive(ack, 2.0) is False
    assert tx.state is State.CONFIRMED
    assert tx.deadline == 2.0 + 5.0  # Timer I = T4
    assert tx.receive(ack, 2.5) is False  # ACK retransmissions absorbed
    sent, timeouts = advance(tx, 100.0)
    assert sent == [] and timeouts == []
    assert len(tx.outbox) == 3
    assert tx.terminated


def test_server_invite_retransmission_in_completed_resends_final() -> None:
    invite = make_request()
    tx = ServerTransaction(invite, UDP, 0.0, DEFAULT)
    busy = reply(invite, 486)
    tx.respond(busy, 0.0)
    assert tx.receive(invite, 0.2) is False
    assert [d for d, _ in tx.outbox] == [busy.to_bytes()] * 2


def test_server_invite_over_tcp_no_timer_g_and_timer_i_zero() -> None:
    invite = make_request(transport="TCP")
    tx = ServerTransaction(invite, TCP, 0.0, DEFAULT)
    busy = reply(invite, 486)
    tx.respond(busy, 0.0)
    assert tx.deadline == 32.0  # Timer H only
    tx.receive(ack_for(invite, busy), 1.0)
    assert tx.state is State.CONFIRMED
    assert tx.deadline == 1.0
    sent, _ = advance(tx, 1.0)
    assert sent == [] and tx.terminated and len(tx.outbox) == 1


def test_server_invite_timer_h_over_tcp() -> None:
    tx = ServerTransaction(make_request(transport="TCP"), TCP, 0.0, SMALL)
    tx.respond(reply(tx.request, 480), 0.0)
    sent, timeouts = advance(tx, 100.0)
    assert sent == [] and timeouts == [(8.0, Timeout.NO_ACK)]


def test_server_invite_2xx_retransmitted_until_ack_received() -> None:
    invite = make_request()
    tx = ServerTransaction(invite, UDP, 0.0, DEFAULT)
    ok = reply(invite, 200)
    tx.respond(ok, 0.0)
    assert tx.state is State.ACCEPTED
    sent, _ = advance(tx, 9.0)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5]  # 13.3.1.4: T1, 2T1, 4T1... capped at T2
    assert all(d == ok.to_bytes() for _, d in sent)
    tx.ack_received(9.0)
    assert tx.acked
    sent, timeouts = advance(tx, 100.0)
    assert sent == [] and timeouts == []  # Timer L ends it quietly
    assert tx.terminated


def test_server_invite_2xx_cap_and_timer_l_no_ack() -> None:
    tx = ServerTransaction(make_request(), UDP, 0.0, DEFAULT)
    tx.respond(reply(tx.request, 200), 0.0)
    sent, timeouts = advance(tx, 100.0)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert timeouts == [(32.0, Timeout.NO_2XX_ACK)]
    assert tx.terminated


@pytest.mark.parametrize("timers", [DEFAULT, SMALL], ids=["default", "small"])
def test_server_invite_2xx_timers_follow_config(timers: TimerConfig) -> None:
    tx = ServerTransaction(make_request(), UDP, 0.0, timers)
    tx.respond(reply(tx.request, 200), 0.0)
    sent, timeouts = advance(tx, 1000.0)
    assert times(sent) == doubling(timers.t1, timers.b, cap=timers.t2)
    assert timeouts == [(timers.b, Timeout.NO_2XX_ACK)]


def test_server_invite_2xx_is_retransmitted_even_over_tcp() -> None:
    # 13.3.1.4: there may be UDP hops between us and the UAC.
    tx = ServerTransaction(make_request(transport="TCP"), TCP, 0.0, DEFAULT)
    tx.respond(reply(tx.request, 200), 0.0)
    sent, _ = advance(tx, 2.0)
    assert times(sent) == [0.5, 1.5]


def test_server_invite_in_accepted_absorbs_invite_and_ack() -> None:
    invite = make_request()
    tx = ServerTransaction(invite, UDP, 0.0, DEFAULT)
    ok = reply(invite, 200)
    tx.respond(ok, 0.0)
    assert tx.receive(invite, 0.1) is False
    assert tx.receive(ack_for(invite, ok), 0.2) is False
    assert tx.state is State.ACCEPTED and not tx.acked  # the TU matches 2xx ACKs
    assert len(tx.outbox) == 1


@pytest.mark.parametrize("status", [100, 200, 486])
def test_server_respond_after_final_is_refused(status: int) -> None:
    request = make_request()
    tx = ServerTransaction(request, UDP, 0.0, DEFAULT)
    tx.respond(reply(request, 486 if status == 100 else status), 0.0)
    with pytest.raises(RuntimeError):
        tx.respond(reply(request, status), 0.1)
    assert len(tx.outbox) == 1
    assert tx.final_status == (486 if status == 100 else status)
    assert tx.request is None  # released once answered


# --- server non-INVITE (17.2.2) ----------------------------------------------


def test_server_non_invite_trying_absorbs_retransmissions() -> None:
    bye = make_request("BYE")
    tx = ServerTransaction(bye, UDP, 0.0, DEFAULT)
    assert tx.state is State.TRYING
    assert tx.receive(bye, 0.5) is False
    assert tx.outbox == [] and tx.deadline is None


def test_server_non_invite_proceeding_resends_provisional() -> None:
    bye = make_request("BYE")
    tx = ServerTransaction(bye, UDP, 0.0, DEFAULT)
    trying = reply(bye, 100)
    tx.respond(trying, 0.0)
    assert tx.state is State.PROCEEDING
    tx.receive(bye, 0.5)
    assert [d for d, _ in tx.outbox] == [trying.to_bytes()] * 2


def test_server_non_invite_completed_resends_final_then_timer_j() -> None:
    bye = make_request("BYE")
    tx = ServerTransaction(bye, UDP, 0.0, DEFAULT)
    ok = reply(bye, 200)
    tx.respond(ok, 1.0)
    assert tx.state is State.COMPLETED
    assert tx.deadline == 33.0  # Timer J = 64*T1
    assert tx.receive(bye, 2.0) is False
    assert tx.receive(bye, 5.0) is False
    assert [d for d, _ in tx.outbox] == [ok.to_bytes()] * 3
    sent, _timeouts = advance(tx, 32.9)
    assert sent == [] and not tx.terminated  # no retransmissions of its own
    advance(tx, 33.0)
    assert tx.terminated


def test_server_non_invite_timer_j_follows_config_and_is_zero_over_tcp() -> None:
    tx = ServerTransaction(make_request("BYE"), UDP, 0.0, SMALL)
    tx.respond(reply(tx.request, 200), 0.0)
    assert tx.deadline == 8.0
    tcp = ServerTransaction(make_request("BYE", transport="TCP"), TCP, 0.0, DEFAULT)
    tcp.respond(reply(tcp.request, 200), 3.0)
    assert tcp.deadline == 3.0
    assert tcp.on_timer(3.0) is None and tcp.terminated


# --- loss: two transactions over a lossy link --------------------------------


def req_at(box: list[tuple[bytes, Address]], index: int) -> Request:
    """The request in `box[index]`, as the peer parses it off the wire."""
    msg = parse_message(box[index][0])
    assert isinstance(msg, Request)
    return msg


def resp_at(box: list[tuple[bytes, Address]], index: int) -> Response:
    msg = parse_message(box[index][0])
    assert isinstance(msg, Response)
    return msg


def test_lost_invite_and_lost_final_recovered_by_retransmission() -> None:
    invite = make_request()
    client = ClientTransaction(invite, UDP, 0.0, DEFAULT)  # transmission 0: lost
    advance(client, 0.5)  # transmission 1 at 0.5: arrives
    first = req_at(client.outbox, 1)
    server = ServerTransaction(first, UDP, 0.5, DEFAULT)
    server.respond(reply(first, 486), 0.5)  # lost
    advance(server, 1.0)  # Timer G retransmission at 1.0: lost too
    advance(client, 1.5)  # the INVITE again at 1.5
    assert server.receive(req_at(client.outbox, 2), 1.5) is False  # absorbed, 486 resent
    assert len(server.outbox) == 3
    final = resp_at(server.outbox, 2)
    assert final.status == 486
    assert client.receive(final, 1.5) is True
    ack = req_at(client.outbox, 3)
    assert ack.method == "ACK"
    assert server.receive(ack, 1.5) is False
    assert server.state is State.CONFIRMED and client.state is State.COMPLETED
    # Both sides stop sending: nothing further from either.
    assert advance(server, 100.0)[0] == [] and advance(client, 100.0)[0] == []


def test_lost_ack_recovered_by_timer_g() -> None:
    invite = make_request()
    client = ClientTransaction(invite, UDP, 0.0, DEFAULT)
    server = ServerTransaction(invite, UDP, 0.0, DEFAULT)
    server.respond(reply(invite, 404), 0.1)
    client.receive(resp_at(server.outbox, 0), 0.1)  # ACK sent, but lost
    assert len(client.outbox) == 2
    sent, _ = advance(server, 0.6)  # Timer G resends the 404
    assert times(sent) == [0.6]
    assert client.receive(resp_at(server.outbox, 1), 0.6) is False  # not passed up again
    assert len(client.outbox) == 3  # but the ACK is resent
    server.receive(req_at(client.outbox, 2), 0.6)
    assert server.state is State.CONFIRMED


def test_lost_2xx_recovered_by_2xx_retransmission() -> None:
    invite = make_request()
    client = ClientTransaction(invite, UDP, 0.0, DEFAULT)
    server = ServerTransaction(invite, UDP, 0.0, DEFAULT)
    server.respond(reply(invite, 100), 0.0)
    assert client.receive(resp_at(server.outbox, 0), 0.0) is True
    server.respond(reply(invite, 200), 1.0)  # lost
    assert advance(client, 100.0)[0] == []  # Proceeding: the client waits
    sent, _ = advance(server, 1.5)
    assert times(sent) == [1.5]
    assert client.receive(resp_at(server.outbox, 2), 1.5) is True
    assert client.state is State.ACCEPTED


def test_lost_non_invite_request_and_response() -> None:
    bye = make_request("BYE")
    client = ClientTransaction(bye, UDP, 0.0, DEFAULT)  # lost
    advance(client, 0.5)
    server = ServerTransaction(req_at(client.outbox, 1), UDP, 0.5, DEFAULT)
    server.respond(reply(server.request, 200), 0.5)  # lost
    advance(client, 1.5)
    assert server.receive(req_at(client.outbox, 2), 1.5) is False
    assert len(server.outbox) == 2  # the 200 again
    assert client.receive(resp_at(server.outbox, 1), 1.5) is True
    assert client.state is State.COMPLETED
    assert advance(client, 100.0)[0] == []


def test_lost_provisional_in_trying_is_simply_waited_out() -> None:
    # Server non-INVITE in Trying has nothing to resend: the client keeps retransmitting.
    bye = make_request("BYE")
    client = ClientTransaction(bye, UDP, 0.0, DEFAULT)
    server = ServerTransaction(bye, UDP, 0.0, DEFAULT)
    advance(client, 3.5)
    for i in range(1, len(client.outbox)):
        assert server.receive(req_at(client.outbox, i), 3.5) is False
    assert server.outbox == []


# --- properties --------------------------------------------------------------


@given(
    t1=st.sampled_from([0.0625, 0.125, 0.25, 0.5, 1.0]),
    t2_factor=st.integers(min_value=1, max_value=16),
    invite=st.booleans(),
)
def test_retransmit_intervals_never_shrink_and_respect_the_cap(
    t1: float, t2_factor: int, invite: bool
) -> None:
    timers = TimerConfig(t1=t1, t2=t1 * t2_factor, t4=5.0)
    tx = ClientTransaction(make_request("INVITE" if invite else "INFO"), UDP, 0.0, timers)
    sent, timeouts = advance(tx, 10_000.0)
    at = [0.0, *times(sent)]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert gaps[0] == t1
    assert all(b >= a for a, b in itertools.pairwise(gaps))
    if not invite:
        assert max(gaps) <= timers.t2
    assert at[-1] < timers.b
    assert timeouts == [(timers.b, Timeout.NO_RESPONSE)]
