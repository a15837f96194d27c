"""Dialogs (RFC 3261 12): state from the INVITE or its response, and in-dialog requests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.sip.address import Address
from sipbridge.sip.dialog import Dialog, DialogState
from sipbridge.sip.errors import SipError
from sipbridge.sip.message import Headers, Request, Response, parse_message
from sipbridge.sip.uri import SipUri, parse_uri

PEER = Address("udp", "192.0.2.1", 5060)
CONTACT = "<sip:sipbridge@198.51.100.7:5060>"


def invite(*, record_route: list[str] | None = None,
           contact: str | None = "<sip:alice@192.0.2.1:5062>",
           uri: str = "sip:bob@198.51.100.7", cseq: int = 10) -> Request:
    lines = [
        f"INVITE {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-d1",
        "From: Alice <sip:alice@example.com>;tag=alice-tag",
        "To: Bob <sip:bob@example.org>",
        "Call-ID: dialog-1@192.0.2.1",
        f"CSeq: {cseq} INVITE",
        "Max-Forwards: 70",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines += [f"Record-Route: {rr}" for rr in record_route or []]
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def response(request: Request, *, record_route: list[str] | None = None,
             contact: str | None = "<sip:bob@198.51.100.9:5070>") -> Response:
    lines = [
        "SIP/2.0 200 OK",
        f"Via: {request.headers.get('Via')}",
        f"From: {request.headers.get('From')}",
        f"To: {request.headers.get('To')};tag=bob-tag",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.cseq}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines += [f"Record-Route: {rr}" for rr in record_route or []]
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Response)
    return msg


def uas(req: Request, local_seq: int = 1) -> Dialog:
    dialog = Dialog.as_uas(req, "bob-tag", local_seq, PEER, CONTACT)
    dialog.via_host, dialog.via_port = "198.51.100.7", 5080
    return dialog


def in_dialog(method: str, req: Request, cseq: int) -> Request:
    text = (
        f"{method} sip:bob@198.51.100.7 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-x\r\n"
        f"From: {req.headers.get('From')}\r\n"
        f"To: {req.headers.get('To')};tag=bob-tag\r\n"
        f"Call-ID: {req.call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


# --- UAS side (12.1.1) ----------------------------------------------------------


def test_as_uas_identity_and_remote_target() -> None:
    d = uas(invite())
    assert d.id == ("dialog-1@192.0.2.1", "bob-tag", "alice-tag")
    assert d.local.tag == "bob-tag" and str(d.local.uri) == "sip:bob@example.org"
    assert d.remote.tag == "alice-tag" and str(d.remote.uri) == "sip:alice@example.com"
    assert str(d.remote_target) == "sip:alice@192.0.2.1:5062"
    assert d.remote_seq == 10 and d.local_seq == 1
    assert d.is_uas and d.state is DialogState.EARLY
    assert d.peer == PEER and not d.secure
    assert d.route_set == ()


def test_as_uas_route_set_keeps_record_route_order() -> None:
    req = invite(record_route=["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>",
                               "<sip:p3.example.com;lr>"])
    d = uas(req)
    assert [str(r.uri) for r in d.route_set] == [
        "sip:p1.example.com;lr", "sip:p2.example.com;lr", "sip:p3.example.com;lr"
    ]


def test_as_uas_route_set_from_a_comma_joined_record_route() -> None:
    d = uas(invite(record_route=["<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"]))
    assert [r.uri.host for r in d.route_set] == ["p1.example.com", "p2.example.com"]  # type: ignore[union-attr]


def test_as_uas_without_contact_is_a_400() -> None:
    with pytest.raises(SipError) as info:
        uas(invite(contact=None))
    assert info.value.status == 400


def test_as_uas_sips_request_uri_makes_a_secure_dialog() -> None:
    assert uas(invite(uri="sips:bob@198.51.100.7")).secure


# --- in-dialog requests (12.2.1.1) ------------------------------------------------


def test_create_request_without_routes() -> None:
    d = uas(invite())
    bye = d.create_request("BYE", "z9hG4bK-bye")
    assert str(bye.uri) == "sip:alice@192.0.2.1:5062"
    assert bye.headers.get_all("Route") == []
    assert bye.headers.get("From") == str(d.local)
    assert bye.from_.tag == "bob-tag" and bye.to.tag == "alice-tag"
    assert bye.call_id == "dialog-1@192.0.2.1"
    assert str(bye.cseq) == "2 BYE"
    via = bye.top_via
    assert (via.transport, via.host, via.port) == ("UDP", "198.51.100.7", 5080)
    assert via.branch == "z9hG4bK-bye" and via.has_rport
    assert bye.headers.get("Max-Forwards") == "70"
    assert "Contact" not in bye.headers  # BYE is not a target refresh
    # It round-trips: what we send parses back to the same request.
    again = parse_message(bye.to_bytes())
    assert isinstance(again, Request) and again.uri == bye.uri


def test_create_request_loose_routing() -> None:
    req = invite(record_route=["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr;transport=tcp>"])
    d = uas(req)
    info = d.create_request("INFO", "z9hG4bK-i")
    assert str(info.uri) == "sip:alice@192.0.2.1:5062"  # Request-URI = remote target
    assert info.headers.get_all("Route") == [
        "<sip:p1.example.com;lr>", "<sip:p2.example.com;lr;transport=tcp>"
    ]


def test_create_request_strict_routing() -> None:
    req = invite(record_route=["<sip:strict.example.com;maddr=10.0.0.1>",
                               "<sip:p2.example.com;lr>"])
    d = uas(req)
    bye = d.create_request("BYE", "z9hG4bK-s")
    # 12.2.1.1: the first route (no lr) becomes the Request-URI; the rest of the route
    # set follows in Route, and the remote target goes last.
    assert isinstance(bye.uri, SipUri) and bye.uri.host == "strict.example.com"
    assert bye.headers.get_all("Route") == [
        "<sip:p2.example.com;lr>", "<sip:alice@192.0.2.1:5062>"
    ]


def test_create_request_strict_routing_single_route() -> None:
    d = uas(invite(record_route=["<sip:strict.example.com>"]))
    bye = d.create_request("BYE", "z9hG4bK-s")
    assert str(bye.uri) == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == ["<sip:alice@192.0.2.1:5062>"]


def test_create_request_cseq_increments_and_explicit_cseq_does_not() -> None:
    d = uas(invite(), local_seq=41)
    assert d.create_request("INFO", "z9hG4bK-1").cseq.seq == 42
    assert d.create_request("INFO", "z9hG4bK-2").cseq.seq == 43
    assert d.create_request("ACK", "z9hG4bK-3", cseq=7).cseq.seq == 7
    assert d.local_seq == 43
    assert d.create_request("BYE", "z9hG4bK-4").cseq.seq == 44


def test_create_request_target_refresh_carries_contact_and_extra_headers() -> None:
    d = uas(invite())
    reinvite = d.create_request(
        "INVITE", "z9hG4bK-r", headers=Headers([("Content-Type", "application/sdp")]),
        body=b"v=0\r\n",
    )
    assert reinvite.headers.get("Contact") == CONTACT
    assert reinvite.headers.get("Content-Type") == "application/sdp"
    assert reinvite.body == b"v=0\r\n"
    assert b"Content-Length: 5\r\n" in reinvite.to_bytes()


def test_create_request_via_follows_the_destination_transport() -> None:
    req = invite(contact="<sip:alice@192.0.2.1:5062;transport=tcp>")
    d = Dialog.as_uas(req, "bob-tag", 1, Address("tcp", "192.0.2.1", 40000), CONTACT)
    d.via_host = "198.51.100.7"
    assert d.create_request("BYE", "z9hG4bK-t").top_via.transport == "TCP"
    d.remote_target = parse_uri("sip:alice@192.0.2.1:5062;transport=udp")
    assert d.create_request("BYE", "z9hG4bK-u").top_via.transport == "UDP"


# ---- where in-dialog requests go (RFC 3261 12.2.1.1, 8.1.2; RFC 3263 4) ----------------


def test_destination_is_the_remote_target_not_the_flow() -> None:
    """The INVITE came from 192.0.2.1:5060, its Contact names 5062: requests go there."""
    d = uas(invite(contact="<sip:alice@203.0.113.5:5062>"))
    assert d.destination() == Address("udp", "203.0.113.5", 5062)


def test_destination_is_the_first_loose_route() -> None:
    d = uas(invite(record_route=["<sip:127.0.0.1:25062;lr>", "<sip:10.0.0.1;lr>"]))
    assert d.destination() == Address("udp", "127.0.0.1", 25062)


def test_destination_is_the_first_strict_route_too() -> None:
    d = uas(invite(record_route=["<sip:198.51.100.20:5070>"]))
    assert d.destination() == Address("udp", "198.51.100.20", 5070)
    assert str(d.create_request("BYE", "z9hG4bK-s").uri) == "sip:198.51.100.20:5070"


@pytest.mark.parametrize(("uri", "expected"), [
    ("<sip:192.0.2.9;transport=TCP>", Address("tcp", "192.0.2.9", 5060)),
    ("<sips:192.0.2.9>", Address("tls", "192.0.2.9", 5061)),
    ("<sips:192.0.2.9:5071;transport=tcp>", Address("tls", "192.0.2.9", 5071)),
    ("<sip:alice@[2001:db8::7]:5070>", Address("udp", "2001:db8::7", 5070)),
    ("<sip:alice@proxy.example.com;maddr=192.0.2.33>", Address("udp", "192.0.2.33", 5060)),
    ("<sip:alice@pbx.example.com:5080>", Address("udp", "pbx.example.com", 5080)),
    ("<sip:alice@pbx.example.com>", Address("udp", "pbx.example.com", 0)),  # SRV first
])
def test_destination_reads_the_uri_as_rfc_3263(uri: str, expected: Address) -> None:
    assert uas(invite(contact=uri)).destination() == expected


def test_destination_reuses_the_connection_the_invite_came_on() -> None:
    """Over TCP, a Contact naming the INVITE's source or its Via sent-by is reached over
    the same connection (RFC 5923): a phone behind NAT cannot take a new one."""
    flow = Address("tcp", "192.0.2.1", 40000)
    d = Dialog.as_uas(invite(contact="<sip:alice@192.0.2.1:5062;transport=tcp>"), "t", 1,
                      flow, CONTACT)
    assert d.destination() == Address("tcp", "192.0.2.1", 5062)
    d.flow_alias = ("192.0.2.1", 5062)
    assert d.destination() == flow
    # No transport= (as many phones on TCP write it): still this connection ...
    d.remote_target = parse_uri("sip:alice@192.0.2.1:5062")
    assert d.destination() == flow
    # ... but a Contact that asks for UDP, or names another address, is not.
    d.remote_target = parse_uri("sip:alice@192.0.2.1:5062;transport=udp")
    assert d.destination() == Address("udp", "192.0.2.1", 5062)
    d.remote_target = parse_uri("sip:alice@192.0.2.1:5064;transport=tcp")
    assert d.destination() == Address("tcp", "192.0.2.1", 5064)


def test_destination_is_the_source_for_peers_behind_nat() -> None:
    d = uas(invite(contact="<sip:alice@10.1.2.3:5062>", record_route=["<sip:10.9.9.9;lr>"]))
    d.to_source = True
    assert d.destination() == PEER


def test_destination_of_a_tel_contact_is_the_flow() -> None:
    d = uas(invite())
    d.remote_target = parse_uri("tel:+14155550123")
    assert d.destination() == PEER


def test_ack_for_2xx_has_its_own_branch_and_the_invites_cseq() -> None:
    d = uas(invite())
    reinvite = d.create_request("INVITE", "z9hG4bK-re")
    ack = d.ack_for_2xx(reinvite)
    assert ack.method == "ACK" and ack.cseq.seq == reinvite.cseq.seq == 2
    assert ack.cseq.method == "ACK"
    # RFC 3261 8.1.1.7: unique branch (the ACK for a 2xx is its own transaction).
    assert ack.top_via.branch != reinvite.top_via.branch
    assert (ack.top_via.branch or "").startswith("z9hG4bK")
    assert d.local_seq == 2  # the ACK does not use up a sequence number
    assert d.ack_for_2xx(reinvite).to_bytes() == ack.to_bytes()  # the same ACK each time
    assert d.ack_for_2xx(reinvite, "z9hG4bK-own").top_via.branch == "z9hG4bK-own"


# --- remote CSeq (12.2.2) ---------------------------------------------------------


def test_check_remote_cseq_accepts_increasing_and_refuses_out_of_order() -> None:
    req = invite(cseq=10)
    d = uas(req)
    d.check_remote_cseq(in_dialog("INFO", req, 11))
    assert d.remote_seq == 11
    d.check_remote_cseq(in_dialog("BYE", req, 20))  # gaps are fine
    assert d.remote_seq == 20
    for seq in (19, 20):
        with pytest.raises(SipError) as info:
            d.check_remote_cseq(in_dialog("INFO", req, seq))
        assert info.value.status == 500
    assert d.remote_seq == 20


def test_check_remote_cseq_ignores_ack_and_cancel() -> None:
    req = invite(cseq=10)
    d = uas(req)
    d.check_remote_cseq(in_dialog("ACK", req, 10))
    d.check_remote_cseq(in_dialog("CANCEL", req, 10))
    assert d.remote_seq == 10


def test_check_remote_cseq_sets_an_empty_remote_sequence() -> None:
    req = invite()
    d = Dialog.as_uac(req, response(req), PEER)
    assert d.remote_seq is None
    d.check_remote_cseq(in_dialog("BYE", req, 1))
    assert d.remote_seq == 1


@given(st.lists(st.integers(min_value=0, max_value=2**31), min_size=1, max_size=20))
def test_check_remote_cseq_keeps_the_highest(seqs: list[int]) -> None:
    req = invite(cseq=0)
    d = uas(req)
    highest = 0
    for seq in seqs:
        if seq > highest:
            d.check_remote_cseq(in_dialog("INFO", req, seq))
            highest = seq
        else:
            with pytest.raises(SipError):
                d.check_remote_cseq(in_dialog("INFO", req, seq))
        assert d.remote_seq == highest


# --- UAC side (12.1.2) ------------------------------------------------------------


def test_as_uac_reverses_the_route_set() -> None:
    req = invite()
    resp = response(req, record_route=["<sip:p3.example.com;lr>", "<sip:p2.example.com;lr>",
                                       "<sip:p1.example.com;lr>"])
    d = Dialog.as_uac(req, resp, PEER)
    assert [r.uri.host for r in d.route_set] == [  # type: ignore[union-attr]
        "p1.example.com", "p2.example.com", "p3.example.com"
    ]
    assert d.id == ("dialog-1@192.0.2.1", "alice-tag", "bob-tag")
    assert str(d.remote_target) == "sip:bob@198.51.100.9:5070"
    assert d.local_seq == 10 and not d.is_uas
    info = d.create_request("INFO", "z9hG4bK-u")
    assert info.cseq.seq == 11
    assert info.headers.get_all("Route")[0] == "<sip:p1.example.com;lr>"
    assert info.from_.tag == "alice-tag" and info.to.tag == "bob-tag"


def test_as_uac_without_contact_targets_the_request_uri() -> None:
    req = invite()
    d = Dialog.as_uac(req, response(req, contact=None), PEER)
    assert d.remote_target == parse_uri("sip:bob@198.51.100.7")


def test_refresh_target_moves_the_remote_target_only_with_a_contact() -> None:
    req = invite()
    d = uas(req)
    d.refresh_target(in_dialog("INFO", req, 11))  # no Contact: unchanged
    assert str(d.remote_target) == "sip:alice@192.0.2.1:5062"
    d.refresh_target(response(req, contact="<sip:alice@203.0.113.5:5090>"))
    assert str(d.remote_target) == "sip:alice@203.0.113.5:5090"
    assert str(d.create_request("BYE", "z9hG4bK-b").uri) == "sip:alice@203.0.113.5:5090"
