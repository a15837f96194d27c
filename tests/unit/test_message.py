"""SIP messages (RFC 3261 7, 18.3, 20): parse, serialise, typed views, responses, framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.sip.errors import MessageTooLarge, ParseError, SipError
from sipbridge.sip.headers import (
    COMPACT,
    CSeq,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from sipbridge.sip.message import (
    Headers,
    Request,
    Response,
    StreamFramer,
    parse_message,
    response_to,
)
from sipbridge.sip.uri import SipUri, TelUri, parse_uri
from tests.unit.corpus import CORPUS


def sip(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)

INVITE = sip(
    "INVITE sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776asdhds;rport",
    "Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bK-p1;received=198.51.100.7",
    "Max-Forwards: 70",
    'From: "Alice" <sip:alice@example.com>;tag=1928301774',
    "To: Bob <sip:bob@example.com>",
    "Call-ID: a84b4c76e66710@pc33.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.example.com>",
    "Content-Type: application/sdp",
    f"Content-Length: {len(SDP)}",
    body=SDP,
)


def request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


# ---- parsing ------------------------------------------------------------------------


def test_parses_a_request() -> None:
    req = request(INVITE)
    req.validate()
    assert req.method == "INVITE"
    assert req.uri == SipUri("example.com", "bob")
    assert req.body == SDP
    assert [v.host for v in req.vias] == ["pc33.example.com", "proxy.example.com"]
    assert req.top_via.branch == "z9hG4bK776asdhds"
    assert req.from_ == NameAddr(
        SipUri("example.com", "alice"), '"Alice"', (("tag", "1928301774"),)
    )
    assert req.from_.tag == "1928301774"
    assert req.to.display == "Bob" and req.to.tag is None
    assert req.call_id == "a84b4c76e66710@pc33.example.com"
    assert req.cseq == CSeq(314159, "INVITE")
    assert req.max_forwards == 70
    assert req.contacts == (NameAddr(SipUri("pc33.example.com", "alice")),)
    assert req.content_type == "application/sdp"


def test_parses_a_response() -> None:
    resp = parse_message(
        sip(
            "SIP/2.0 180 Ringing",
            "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds",
            "From: <sip:alice@example.com>;tag=1",
            "To: <sip:bob@example.com>;tag=2",
            "Call-ID: c1",
            "CSeq: 1 INVITE",
            "Content-Length: 0",
        )
    )
    assert isinstance(resp, Response)
    resp.validate()
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert resp.to.tag == "2"
    assert resp.body == b""


def test_reason_phrase_may_be_empty_or_utf8() -> None:
    assert parse_message(b"SIP/2.0 100 \r\n\r\n").reason == ""  # type: ignore[union-attr]
    resp = parse_message("SIP/2.0 200 Très bien\r\n\r\n".encode())
    assert isinstance(resp, Response) and resp.reason == "Très bien"


def test_serialises_a_request() -> None:
    req = Request(
        "OPTIONS",
        parse_uri("sip:bob@example.com"),
        [("Via", "SIP/2.0/UDP h;branch=z9hG4bKx"), ("Call-ID", "c"), ("Content-Length", "99")],
        b"hi",
    )
    assert req.to_bytes() == (
        b"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
        b"Call-ID: c\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert bytes(Response(404, headers=[("Call-ID", "c")])) == (
        b"SIP/2.0 404 Not Found\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n"
    )


def test_header_folding() -> None:
    req = request(
        sip(
            "OPTIONS sip:bob@example.com SIP/2.0",
            "Subject: first",
            "  second",
            "\tthird",
            "To:",
            " <sip:bob@example.com>",
            "  ;tag=x",
        )
    )
    assert req.headers.get("Subject") == "first second third"
    assert req.headers.get("To") == "<sip:bob@example.com> ;tag=x"
    assert req.to.tag == "x"


def test_blank_continuation_lines_add_nothing() -> None:
    req = request(sip("OPTIONS sip:bob@example.com SIP/2.0", "Subject: a", " ", "\t", "Call-ID: c"))
    assert req.headers.get("Subject") == "a"  # so an echoed header is the same header
    assert response_to(req, 200).to_bytes().count(b"\r\nCall-ID: c\r\n") == 1


@pytest.mark.parametrize(("compact", "full"), sorted(COMPACT.items()))
def test_compact_forms_expand(compact: str, full: str) -> None:
    for name in (compact, compact.upper()):
        req = request(sip("OPTIONS sip:bob@example.com SIP/2.0", f"{name}: value-{compact}"))
        assert req.headers.get(full) == f"value-{compact}"
        assert req.headers.get(compact) == f"value-{compact}"
        assert list(req.headers) == [(full, f"value-{compact}")]


def test_common_compact_forms_are_known() -> None:
    assert {k: COMPACT[k] for k in "vftimlcks"} == {
        "v": "Via",
        "f": "From",
        "t": "To",
        "i": "Call-ID",
        "m": "Contact",
        "l": "Content-Length",
        "c": "Content-Type",
        "k": "Supported",
        "s": "Subject",
    }


def test_repeated_headers_equal_comma_joined() -> None:
    vias = [
        "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
        "SIP/2.0/TCP b.example.com:5070",
        "SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK3",
    ]
    head = ["OPTIONS sip:bob@example.com SIP/2.0"]
    separate = request(sip(*head, *(f"Via: {v}" for v in vias)))
    joined = request(sip(*head, "Via: " + ", ".join(vias)))
    mixed = request(sip(*head, f"v: {vias[0]} ,{vias[1]}", f"VIA: {vias[2]}"))
    assert separate.headers.get_all("Via") == vias
    assert joined.headers.get_all("Via") == vias
    assert mixed.headers.get_all("Via") == vias
    assert separate.vias == joined.vias == mixed.vias
    assert [v.host for v in joined.vias] == ["a.example.com", "b.example.com", "[2001:db8::1]"]


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"Doe, John" <sip:j@x>, <sip:a@b;p="x,y">,  , <sip:c@d>') == [
        '"Doe, John" <sip:j@x>',
        '<sip:a@b;p="x,y">',
        "<sip:c@d>",
    ]
    assert split_list('"a \\" , b" <sip:x@y>') == ['"a \\" , b" <sip:x@y>']


def test_header_names_are_case_insensitive() -> None:
    req = request(sip("OPTIONS sip:bob@example.com SIP/2.0", "cALL-iD: abc", "CSEQ: 1 OPTIONS"))
    assert req.headers.get("Call-ID") == req.headers.get("call-id") == "abc"
    assert "CALL-ID" in req.headers
    assert req.call_id == "abc"
    assert req.cseq.seq == 1
    assert [name for name, _ in req.headers] == ["Call-ID", "CSeq"]  # canonical spelling


def test_headers_multimap() -> None:
    h = Headers([("Route", "<sip:a>"), ("X-Custom", "1"), ("route", "<sip:b>")])
    assert h.get_all("ROUTE") == ["<sip:a>", "<sip:b>"]
    h.set("Route", "<sip:c>")
    assert list(h) == [("Route", "<sip:c>"), ("X-Custom", "1")]
    h.remove("x-custom")
    assert len(h) == 1 and "X-Custom" not in h
    copy = h.copy()
    copy.add("Route", "<sip:d>")
    assert len(h) == 1 and len(copy) == 2


def test_leading_crlfs_are_ignored() -> None:
    assert request(b"\r\n\r\n" + INVITE).method == "INVITE"  # RFC 3261 7.5


# ---- Content-Length and size ---------------------------------------------------------


def test_body_is_cut_at_content_length_on_datagrams() -> None:
    req = request(INVITE + b"garbage after the body")
    assert req.body == SDP
    req.validate()


def test_larger_content_length_is_a_400() -> None:
    req = request(INVITE.replace(f"Content-Length: {len(SDP)}".encode(), b"Content-Length: 999"))
    with pytest.raises(ParseError, match="larger") as info:
        req.validate()
    assert info.value.status == 400  # RFC 3261 18.3: a request is answered 400


def test_larger_content_length_drops_a_response() -> None:
    with pytest.raises(ParseError):
        parse_message(b"SIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nabc")


@pytest.mark.parametrize("value", ["five", "-1", "1.5", "", "\u00b2", "1 2", "9999999999"])
def test_bad_content_length_is_a_400(value: str) -> None:
    req = request(INVITE.replace(f"Content-Length: {len(SDP)}".encode(), f"l: {value}".encode()))
    with pytest.raises(ParseError) as info:
        req.validate()
    assert info.value.status == 400


def test_two_content_lengths_are_a_400() -> None:
    data = INVITE.replace(b"Content-Type", f"Content-Length: {len(SDP)}\r\nContent-Type".encode())
    with pytest.raises(ParseError, match="more than one Content-Length"):
        request(data).validate()


def test_missing_content_length_on_udp_takes_the_rest() -> None:
    req = request(INVITE.replace(f"Content-Length: {len(SDP)}\r\n".encode(), b""))
    assert req.body == SDP
    req.validate()


def test_content_length_with_leading_zeros() -> None:
    request(
        INVITE.replace(
            f"Content-Length: {len(SDP)}".encode(), b"Content-Length: 0000" + str(len(SDP)).encode()
        )
    ).validate()


def test_size_limit() -> None:
    with pytest.raises(MessageTooLarge) as info:
        parse_message(INVITE + b"x" * 70_000)
    assert info.value.status == 513
    assert isinstance(info.value, ParseError)
    with pytest.raises(MessageTooLarge):
        parse_message(INVITE, max_size=len(INVITE) - 1)
    assert parse_message(INVITE, max_size=len(INVITE)).body == SDP


# ---- Via, CSeq, name-addr --------------------------------------------------------------


def test_via_parameters() -> None:
    via = parse_via("SIP/2.0/udp host.example.com:5060;branch=z9hG4bK74bf9;rport;x=1")
    assert (via.transport, via.host, via.port) == ("UDP", "host.example.com", 5060)
    assert via.branch == "z9hG4bK74bf9"
    assert via.has_rport and via.rport is None and via.received is None
    stamped = via.with_received("192.0.2.7", 40001)
    assert stamped.received == "192.0.2.7" and stamped.rport == 40001
    assert str(stamped) == (
        "SIP/2.0/UDP host.example.com:5060;branch=z9hG4bK74bf9;rport=40001;x=1;received=192.0.2.7"
    )
    assert parse_via(str(stamped)) == stamped


def test_via_received_replaced_and_rport_only_when_asked() -> None:
    via = parse_via("SIP/2.0/TCP h;received=10.0.0.1;branch=z9hG4bK1")
    stamped = via.with_received("192.0.2.9", 5070)
    assert stamped.params == (("branch", "z9hG4bK1"), ("received", "192.0.2.9"))
    assert not stamped.has_rport


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000, "70000x", ""])
def test_via_odd_rport_is_none(value: str) -> None:
    assert Via("UDP", "h", params=(("rport", value),)).rport is None  # never a ValueError
    assert parse_via("SIP/2.0/UDP h;rport=" + "9" * 5000).rport is None


@pytest.mark.parametrize(
    "text",
    [
        "SIP / 2.0 / UDP host.example.com;branch=z9hG4bKx",  # RFC 4475 3.1.1.1
        "SIP/2.0/UDP\thost.example.com;branch=z9hG4bKx",
        "SIP/2.0/UDP host.example.com ; branch = z9hG4bKx",
    ],
)
def test_via_lws(text: str) -> None:
    via = parse_via(text)
    assert (via.transport, via.host, via.branch) == ("UDP", "host.example.com", "z9hG4bKx")


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0 host",
        "SIP/3.0/UDP host",
        "HTTP/2.0/UDP host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP h;;",
        "SIP/2.0/UDP h;branch=",
        "SIP/2.0/UDP h:0",
        "SIP/2.0/U(P h",
    ],
)
def test_via_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_via(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 INVITE", CSeq(1, "INVITE")),
        ("  0009\t INVITE ", CSeq(9, "INVITE")),
        ("4294967295 FOO", CSeq(2**32 - 1, "FOO")),
    ],
)
def test_cseq(text: str, expected: CSeq) -> None:
    assert parse_cseq(text) == expected
    assert str(expected) == f"{expected.seq} {expected.method}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "INVITE",
        "x INVITE",
        "-1 INVITE",
        "4294967296 INVITE",
        "1 INV(TE",
        "1 INVITE extra",
        "\u00b2 INVITE",
        "1.0 INVITE",
    ],
)
def test_cseq_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_cseq(text)


def test_quoted_display_name_with_escaped_quotes_and_brackets() -> None:
    addr = parse_name_addr(r'"Bob \"the <Builder>\" \\" <sip:bob@example.com>;tag=99', "To")
    assert addr.display == r'"Bob \"the <Builder>\" \\"'
    assert addr.uri == SipUri("example.com", "bob")
    assert addr.tag == "99"
    assert parse_name_addr(str(addr)) == addr


def test_addr_spec_parameters_belong_to_the_header() -> None:
    # RFC 3261 20.10: without <>, parameters after the URI are header parameters.
    addr = parse_name_addr("sip:bob@example.com;tag=abc;user=phone")
    assert addr.uri == SipUri("example.com", "bob")
    assert addr.params == (("tag", "abc"), ("user", "phone"))
    assert addr.tag == "abc"
    inside = parse_name_addr("<sip:bob@example.com;user=phone;tag=uri>;tag=hdr")
    assert isinstance(inside.uri, SipUri)
    assert inside.uri.params == (("user", "phone"), ("tag", "uri"))
    assert inside.tag == "hdr"
    assert parse_name_addr("<sip:bob@example.com;tag=uri>").tag is None


def test_name_addr_forms() -> None:
    assert parse_name_addr("Bob Smith <sip:bob@example.com>").display == "Bob Smith"
    assert parse_name_addr("caller<sip:c@example.com>").display == "caller"  # RFC 4475 3.1.1.6
    assert parse_name_addr("<tel:+15551234567>").uri == TelUri("+15551234567")
    addr = parse_name_addr('<sip:a@b>;expires=60;q=0.5;x="quoted;value"')
    assert addr.param("Q") == "0.5" and addr.param("x") == '"quoted;value"'
    assert str(addr.with_tag("t1")) == '<sip:a@b>;expires=60;q=0.5;x="quoted;value";tag=t1'


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('"Unterminated <sip:a@b>', "unterminated"),
        ("<sip:a@b", "unterminated"),
        ("< sip:a@b >", "whitespace"),  # RFC 4475 3.1.2.14
        ("Bell, Alexander <sip:a@b>", "display name"),  # RFC 4475 3.1.2.15
        ("sip:a@b?subject=x", "<>"),  # RFC 3261 20.10, RFC 4475 3.1.2.13
        ('"Bob" sip:a@b', "display name"),
        ("<sip:a@b> junk", "junk"),
        ("<sip:a@b>;;tag=1", "empty parameter"),
        ("<sip:a@b>;tag=", "empty value"),
        ('<sip:a@b>;x="open', "unterminated"),
        ("<mailto:a@b>", "mailto"),
        ("", "empty"),
    ],
)
def test_name_addr_rejects(text: str, match: str) -> None:
    with pytest.raises(ParseError, match=match) as info:
        parse_name_addr(text)
    assert info.value.status == 400  # 416 is only for the Request-URI


# ---- round trip -------------------------------------------------------------------------


def _round_trip(data: bytes) -> None:
    first = parse_message(data)
    second = parse_message(first.to_bytes())
    assert first.to_bytes().split(b"\r\n", 1)[0] == second.to_bytes().split(b"\r\n", 1)[0]
    assert [h for h in first.headers if h[0] != "Content-Length"] == [
        h for h in second.headers if h[0] != "Content-Length"
    ]
    assert first.body == second.body
    assert second.headers.get("Content-Length") == str(len(first.body))


def test_round_trip_invite() -> None:
    _round_trip(INVITE)


@pytest.mark.parametrize(
    "entry", [e for e in CORPUS if e.expected == "valid"], ids=lambda e: e.name
)
def test_round_trip_valid_corpus(entry: object) -> None:
    _round_trip(entry.data)  # type: ignore[attr-defined]


_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
_token = st.text(_TOKEN_CHARS, min_size=1, max_size=12)
_value = st.text(_TOKEN_CHARS, min_size=1, max_size=10)
_host = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8), min_size=1, max_size=3
).map(".".join)
vias = st.builds(
    Via,
    transport=st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]),
    host=_host | st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    port=st.none() | st.integers(1, 65535),
    params=st.lists(st.tuples(_token, st.none() | _value), max_size=4).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(vias)
def test_via_round_trip(via: Via) -> None:
    assert parse_via(str(via)) == via


# ---- response_to ----------------------------------------------------------------------


def test_response_to_copies_the_dialog_headers() -> None:
    req = request(INVITE.replace(b"Max-Forwards", b"Timestamp: 54\r\nMax-Forwards"))
    resp = response_to(req, 180, to_tag="as83kd", headers=[("Contact", "<sip:gw@192.0.2.9>")])
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    for name in ("From", "Call-ID", "CSeq"):
        assert resp.headers.get(name) == req.headers.get(name)
    assert resp.headers.get("To") == "Bob <sip:bob@example.com>;tag=as83kd"
    assert resp.headers.get("Contact") == "<sip:gw@192.0.2.9>"
    assert "Max-Forwards" not in resp.headers and "Timestamp" not in resp.headers
    assert resp.body == b""
    again = parse_message(resp.to_bytes())
    assert isinstance(again, Response)
    again.validate()
    assert again.to.tag == "as83kd"
    assert [v.branch for v in again.vias] == ["z9hG4bK776asdhds", "z9hG4bK-p1"]


def test_response_to_keeps_separate_via_lines_in_order() -> None:
    req = request(
        INVITE.replace(b"Max-Forwards", b"Via: SIP/2.0/UDP third;branch=z9hG4bK3\r\nMax-Forwards")
    )
    resp = response_to(req, 200, to_tag="t")
    assert [v.host for v in resp.vias] == ["pc33.example.com", "proxy.example.com", "third"]


def test_response_to_adds_the_tag_once() -> None:
    tagged = request(
        INVITE.replace(b"To: Bob <sip:bob@example.com>", b"To: <sip:bob@example.com> ; tag=old")
    )
    assert response_to(tagged, 200, to_tag="new").to.tag == "old"
    in_uri = request(
        INVITE.replace(b"To: Bob <sip:bob@example.com>", b"To: <sip:bob@example.com;tag=u>")
    )
    resp = response_to(in_uri, 200, to_tag="new")
    assert resp.to.tag == "new"
    assert resp.headers.get("To") == "<sip:bob@example.com;tag=u>;tag=new"
    assert response_to(request(INVITE), 100).to.tag is None  # no tag asked for


def test_response_to_echoes_timestamp_on_100() -> None:
    req = request(INVITE.replace(b"Max-Forwards", b"Timestamp: 54.2\r\nMax-Forwards"))
    assert response_to(req, 100).headers.get("Timestamp") == "54.2"  # RFC 3261 8.2.6.1


def test_response_to_works_from_raw_headers() -> None:
    broken = request(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: many INVITE"))
    with pytest.raises(SipError) as info:
        broken.validate()
    resp = response_to(broken, info.value.status, info.value.reason, to_tag="x")
    again = parse_message(resp.to_bytes())
    assert isinstance(again, Response)
    assert again.status == 400 and again.reason == info.value.reason
    assert again.headers.get("CSeq") == "many INVITE"


def plain_bytes(msg: Request | Response) -> bytes:
    """A message serialised the plain way, header by header, for comparison."""
    lines = [msg.to_bytes().split(b"\r\n", 1)[0].decode()]
    lines += [f"{n}: {v}" for n, v in msg.headers if n != "Content-Length"]
    lines.append(f"Content-Length: {len(msg.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + msg.body


def test_responses_to_one_request_share_their_head_and_serialise_as_plainly() -> None:
    req = request(INVITE.replace(b"Max-Forwards", b"Timestamp: 54\r\nMax-Forwards"))
    trying = response_to(req, 100)
    ringing = response_to(req, 180, to_tag="t1", headers=[("Contact", "<sip:gw@192.0.2.9>")])
    ok = response_to(req, 200, to_tag="t1", headers=[("Contact", "<sip:gw@192.0.2.9>")],
                     body=SDP)
    for resp in (trying, ringing, ok, response_to(req, 200, to_tag="t1", body=SDP)):
        assert resp.to_bytes() == plain_bytes(resp)
    # made once for the request and the tag (compiled, the pair is a new tuple at each
    # read: its parts are the ones made)
    assert ringing._head is not None and ok._head is not None
    assert ringing._head[0] is ok._head[0] and ringing._head[1] is ok._head[1]
    assert trying._head is not None and trying._head[1] is not ok._head[1]
    assert trying.headers.get("Timestamp") == "54" and b"Timestamp" not in ringing.to_bytes()
    assert b"To: Bob <sip:bob@example.com>\r\n" in trying.to_bytes()
    assert b"To: Bob <sip:bob@example.com>;tag=t1\r\n" in ok.to_bytes()


def test_a_changed_response_is_serialised_as_it_now_is() -> None:
    req = request(INVITE)
    first = response_to(req, 180, to_tag="t1")
    second = response_to(req, 180, to_tag="t1")
    second.headers.set("Via", "SIP/2.0/UDP changed.example.com;branch=z9hG4bKx")
    second.headers.remove("CSeq")
    data = second.to_bytes()
    assert data == plain_bytes(second)
    assert b"changed.example.com" in data and b"CSeq" not in data
    assert b"pc33.example.com:5060" not in data
    assert first.to_bytes() == plain_bytes(first)
    assert b"pc33.example.com:5060" in first.to_bytes() and b"CSeq" in first.to_bytes()


def test_a_changed_request_gets_responses_from_its_new_headers() -> None:
    """The UA core rewrites the top Via of a request (received=, rport=) before it
    answers; a response made after any change to the request copies what it now says."""
    req = request(INVITE)
    before = response_to(req, 100).to_bytes()
    req.headers.set("Via", "SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776asdhds;"
                    "rport=5062;received=192.0.2.4")
    after = response_to(req, 100)
    assert b"received=192.0.2.4" not in before
    assert b"rport=5062;received=192.0.2.4" in after.to_bytes()
    assert after.to_bytes() == plain_bytes(after)


# ---- stream framing (RFC 3261 18.3) ----------------------------------------------------

OPTIONS = sip(
    "OPTIONS sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/TCP h;branch=z9hG4bKo",
    "Call-ID: o",
    "CSeq: 1 OPTIONS",
    "l: 0",
)


def test_framer_two_messages_in_one_chunk() -> None:
    assert StreamFramer().feed(INVITE + OPTIONS) == [INVITE, OPTIONS]


def test_framer_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(INVITE + OPTIONS)):
        out += framer.feed((INVITE + OPTIONS)[i : i + 1])
    assert out == [INVITE, OPTIONS]


def test_framer_body_split_across_feeds() -> None:
    framer = StreamFramer()
    cut = INVITE.index(b"\r\n\r\n") + 10
    assert framer.feed(INVITE[:cut]) == []
    assert framer.feed(INVITE[cut:-5]) == []
    assert framer.feed(INVITE[-5:] + OPTIONS[:3]) == [INVITE]
    assert framer.feed(OPTIONS[3:]) == [OPTIONS]


def test_framer_crlf_keepalives() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n" + INVITE + b"\r\n\r\n") == [INVITE]
    assert framer.feed(b"\r\n") == []  # RFC 5626 3.5.1: a ping may arrive in pieces
    assert framer.feed(OPTIONS) == [OPTIONS]
    assert framer.keepalives == 2
    pieces = StreamFramer()
    for byte in b"\r\n\r\n":
        assert pieces.feed(bytes([byte])) == []
    assert pieces.keepalives == 1


def test_framer_compact_content_length() -> None:
    msg = sip("MESSAGE sip:a@b SIP/2.0", "Call-ID: m", "L : 5", body=b"hello")
    assert StreamFramer().feed(msg + msg) == [msg, msg]


def test_framer_without_content_length_assumes_no_body() -> None:
    msg = sip("OPTIONS sip:a@b SIP/2.0", "Call-ID: m")
    assert StreamFramer().feed(msg + OPTIONS) == [msg, OPTIONS]


def test_framer_oversize_header_block() -> None:
    framer = StreamFramer(max_size=1000)
    framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: " + b"y" * 900)
    with pytest.raises(MessageTooLarge):
        framer.feed(b"y" * 200)


def test_framer_oversize_content_length() -> None:
    with pytest.raises(MessageTooLarge):
        StreamFramer().feed(sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 70000"))


@pytest.mark.parametrize(
    "headers",
    [["Content-Length: five"], ["Content-Length: -1"], ["l: 3", "Content-Length: 4"]],
)
def test_framer_unframeable_stream(headers: list[str]) -> None:
    with pytest.raises(ParseError):
        StreamFramer().feed(sip("MESSAGE sip:a@b SIP/2.0", *headers) + b"abcd")


def test_framer_ignores_folded_lines_that_look_like_content_length() -> None:
    msg = sip("MESSAGE sip:a@b SIP/2.0", "Subject: x", " l: 99", "Content-Length: 2", body=b"hi")
    assert StreamFramer().feed(msg) == [msg]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, len(INVITE + OPTIONS) * 2), max_size=12))
def test_framer_any_split_gives_the_same_messages(cuts: list[int]) -> None:
    stream = b"\r\n\r\n" + INVITE + OPTIONS + b"\r\n" + INVITE
    framer = StreamFramer()
    out: list[bytes] = []
    prev = 0
    for cut in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        out += framer.feed(stream[prev:cut])
        prev = cut
    assert out == [INVITE, OPTIONS, INVITE]
