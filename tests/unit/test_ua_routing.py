"""Where the UA core sends in-dialog requests (RFC 3261 8.1.2, 12.2.1.1, 16.12; RFC 3263):
through the route set a proxy recorded, else to the caller's Contact, never back to the
address the INVITE happened to come from, and never to the gateway itself."""

from __future__ import annotations

import ipaddress

from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.events import RequestOutcome
from sipbridge.sip.message import Headers, Request, Response
from sipbridge.sip.ua import UaConfig, UserAgent
from tests.unit.sipphone import ANSWER, OFFER, TIMERS, Phone, ack_2xx, sip

PROXY = Address("udp", "127.0.0.1", 25060)  # where the proxy sends from
CALLER_CONTACT = Address("udp", "127.0.0.1", 5061)


def proxied_call(phone: Phone, *, record_route: list[str], contact_port: int = 5061) -> str:
    """An INVITE that came through a proxy at PROXY; the caller's Contact is its own."""
    headers = [f"Record-Route: {rr}" for rr in record_route]
    via = ("Via: SIP/2.0/UDP 127.0.0.1:25060;branch=z9hG4bK-px-1, "
           "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-inv-1")
    phone.receive(sip("INVITE", body=OFFER, via=via, headers=headers, port=contact_port),
                  PROXY)
    [event] = phone.take_events()
    leg = event.leg_id
    phone.take()
    phone.ua.answer(leg, ANSWER, phone.now)
    phone.collect()
    ok = phone.one()
    assert ok.addr == PROXY  # responses follow the Via, back through the proxy
    assert isinstance(ok.msg, Response)
    phone.receive(ack_2xx(ok.msg, via="Via: SIP/2.0/UDP 127.0.0.1:25060;branch=z9hG4bK-pa"),
                  PROXY)
    phone.take_events()
    return leg


def test_bye_and_refer_go_to_the_record_route_not_the_source() -> None:
    """Kamailio sends from 25060 but records 25062: in-dialog requests go to 25062."""
    phone = Phone()
    leg = proxied_call(phone, record_route=["<sip:127.0.0.1:25062;lr>"])
    phone.ua.send_request(leg, "REFER", phone.now,
                          headers=Headers([("Refer-To", "<sip:human@127.0.0.1:6000>")]))
    phone.collect()
    refer = phone.one()
    assert refer.method == "REFER" and refer.addr == Address("udp", "127.0.0.1", 25062)
    assert refer.msg.headers.get_all("Route") == ["<sip:127.0.0.1:25062;lr>"]
    assert isinstance(refer.msg, Request)
    assert str(refer.msg.uri) == "sip:sipp@127.0.0.1:5061"  # the remote target
    phone.ua.hangup(leg, phone.now)
    phone.collect()
    bye = phone.one()
    assert bye.method == "BYE" and bye.addr == Address("udp", "127.0.0.1", 25062)


def test_without_record_route_requests_go_to_the_contact() -> None:
    """A stateless proxy that records no route: the REFER goes to the caller's Contact,
    not back to the proxy (which would forward it to the gateway: a loop)."""
    phone = Phone()
    leg = proxied_call(phone, record_route=[])
    phone.ua.send_request(leg, "REFER", phone.now,
                          headers=Headers([("Refer-To", "<sip:human@127.0.0.1:6000>")]))
    phone.collect()
    refer = phone.one()
    assert refer.addr == CALLER_CONTACT and not refer.msg.headers.get_all("Route")


def test_a_next_hop_that_is_the_gateway_itself_fails_482_unsent() -> None:
    """A Contact naming the gateway (a proxy rewrote it, say): the REFER is not sent
    to ourselves; its outcome is 482 at once, so the transfer says why."""
    phone = Phone()  # the UA's own address: 127.0.0.1:5060 (UaConfig's default)
    leg = proxied_call(phone, record_route=[], contact_port=5060)
    phone.ua.send_request(leg, "REFER", phone.now,
                          headers=Headers([("Refer-To", "<sip:human@127.0.0.1:6000>")]))
    phone.collect()
    assert phone.take() == []
    [outcome] = phone.take_events()
    assert isinstance(outcome, RequestOutcome) and outcome.response is not None
    assert outcome.response.status == 482 and "this gateway" in outcome.response.reason
    assert phone.ua.stats["loops_refused"] == 1


def test_a_transport_error_fails_the_request_as_503() -> None:
    phone = Phone()
    leg, _ok = phone.answered_call()
    phone.ua.send_request(leg, "REFER", phone.now,
                          headers=Headers([("Refer-To", "<sip:human@127.0.0.1:6000>")]))
    phone.collect()
    refer = phone.one()
    phone.ua.transport_error(refer.data, refer.addr, "no address for pbx.example.com",
                             phone.now)
    phone.collect()
    [outcome] = phone.take_events()
    assert isinstance(outcome, RequestOutcome) and outcome.response is not None
    assert outcome.response.status == 503
    assert "no address for pbx.example.com" in outcome.response.reason
    phone.advance(phone.now + 10)
    assert all(s.method != "REFER" for s in phone.take())  # not retransmitted after that
    # A second report for the same request, or one for a response, changes nothing.
    phone.ua.transport_error(refer.data, refer.addr, "again", phone.now)
    phone.ua.transport_error(b"SIP/2.0 200 OK\r\n\r\n", refer.addr, "x", phone.now)
    phone.ua.transport_error(b"garbage", refer.addr, "x", phone.now)
    phone.collect()
    assert phone.take_events() == []


def test_rewrite_contact_peers_get_requests_at_their_source() -> None:
    """Peers behind NAT (a configured network): requests go where the INVITE came from."""
    phone = Phone()
    phone.ua = UserAgent(
        UaConfig(timers=TIMERS, rewrite_contact=(ipaddress.ip_network("127.0.0.0/8"),)),
        AccessGuard(["127.0.0.0/8"]),
    )
    leg = proxied_call(phone, record_route=["<sip:127.0.0.1:25062;lr>"])
    phone.ua.hangup(leg, phone.now)
    phone.collect()
    bye = phone.one()
    assert bye.method == "BYE" and bye.addr == PROXY


def test_the_answer_counters_count_every_response_sent() -> None:
    """The SIGTERM summary's answered_NNN counts responses sent in transactions too, not
    only the stateless ones (it said answered_200=1 after thousands of calls)."""
    phone = Phone()
    for n in range(3):
        phone.receive(sip("INVITE", body=OFFER, call_id=f"c{n}", branch=f"z9hG4bK-c{n}"))
        [event] = phone.take_events()
        phone.ua.answer(event.leg_id, ANSWER, phone.now)
        phone.collect()
    phone.receive(sip("OPTIONS", call_id="o1", branch="z9hG4bK-o1"))
    stats = phone.ua.stats
    assert (stats["answered_100"], stats["answered_200"]) == (3, 4)
