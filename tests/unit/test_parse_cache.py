"""The parse caches of URIs, name-addrs, Via values and SDP bodies: bounded, equal to a
fresh parse, and never able to hand a caller something an earlier caller changed."""

from __future__ import annotations

import dataclasses
import enum
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.sip import headers, sdp, uri
from sipbridge.sip.errors import ParseError, SdpError
from sipbridge.sip.headers import (
    CACHED_VALUE_MAX,
    HEADER_CACHE_SIZE,
    parse_name_addr,
    parse_via,
)
from sipbridge.sip.message import Request, parse_message
from sipbridge.sip.sdp import SDP_CACHE_BODY_MAX, SDP_CACHE_SIZE, parse_sdp
from sipbridge.sip.uri import URI_CACHE_SIZE, SipUri, parse_uri

OFFER = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
    b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)

CACHES: dict[str, Any] = {
    "uri": uri._parse_uri_cached,
    "name_addr": headers._parse_name_addr_cached,
    "via": headers._parse_via_cached,
    "host_port": uri._parse_host_port_cached,
    "sdp": sdp._parse_sdp_cached,
}


@pytest.fixture(autouse=True)
def empty_caches() -> Iterator[None]:
    for cache in CACHES.values():
        cache.cache_clear()
    yield
    for cache in CACHES.values():
        cache.cache_clear()


def size(name: str) -> int:
    return int(CACHES[name].cache_info().currsize)


def leaves_immutable(value: object, path: str = "") -> list[str]:
    """Where in `value` something could be changed in place: a non-frozen dataclass, a
    list, dict, set, bytearray or any other type not known to be immutable."""
    if value is None or isinstance(value, str | bytes | int | float | bool | enum.Enum):
        return []
    if isinstance(value, tuple | frozenset):
        return [p for i, item in enumerate(value) for p in leaves_immutable(item, f"{path}[{i}]")]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        params = getattr(type(value), "__dataclass_params__")  # noqa: B009
        bad = [] if params.frozen else [f"{path} ({type(value).__name__} is not frozen)"]
        for f in dataclasses.fields(value):
            bad += leaves_immutable(getattr(value, f.name), f"{path}.{f.name}")
        return bad
    return [f"{path} ({type(value).__name__})"]


CASES: list[tuple[Callable[[str], object], str]] = [
    (parse_uri, "sip:alice:pw@example.com:5070;transport=tcp;lr?subject=hi"),
    (parse_uri, "tel:+15551230000;phone-context=example.com"),
    (lambda v: parse_name_addr(v, "From"), '"Alice" <sip:alice@example.com>;tag=abc;x=1'),
    (lambda v: parse_name_addr(v, "Contact"), "sip:sipp@127.0.0.1:5061;expires=60"),
    (parse_via, "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport;received=10.0.0.1"),
    (lambda v: parse_sdp(v.encode()), OFFER.decode()),
]


@pytest.mark.parametrize(("parse", "text"), CASES)
def test_a_parsed_value_is_immutable_all_the_way_down(parse: Callable[[str], object],
                                                      text: str) -> None:
    assert leaves_immutable(parse(text)) == []


@pytest.mark.parametrize(("parse", "text"), CASES)
def test_a_hit_is_the_same_value_and_cannot_be_changed(parse: Callable[[str], object],
                                                       text: str) -> None:
    first = parse(text)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.params = (("evil", "1"),)  # type: ignore[attr-defined]
    second = parse(text)
    assert second == first
    assert not any("evil" in repr(v) for v in (first, second))


def test_derived_copies_leave_the_cached_value_alone() -> None:
    via_text = "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-7;rport"
    via = parse_via(via_text)
    stamped = via.with_received("192.0.2.1", 5061)
    assert stamped.received == "192.0.2.1" and stamped.rport == 5061
    again = parse_via(via_text)
    assert again.received is None and again.rport is None and again == via

    to_text = "<sip:service@127.0.0.1:5060>"
    to = parse_name_addr(to_text, "To")
    assert to.with_tag("t1").tag == "t1"
    assert parse_name_addr(to_text, "To").tag is None

    uri_text = "sip:bob@example.com"
    assert parse_uri(uri_text).with_params(transport="tcp")  # type: ignore[union-attr]
    assert parse_uri(uri_text) == SipUri("example.com", "bob")


def test_messages_share_parsed_headers_but_not_their_state() -> None:
    """Two messages of a call with the same From get the same (frozen) NameAddr; what the
    UA derives from one (a dialog's local side with our tag) does not leak into the other."""
    def invite(branch: str) -> bytes:
        return (f"INVITE sip:service@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{branch}\r\n"
                "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:service@127.0.0.1>\r\n"
                "Call-ID: c@h\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:5061>\r\n"
                "Content-Length: 0\r\n\r\n").encode()
    one, two = parse_message(invite("a")), parse_message(invite("b"))
    assert isinstance(one, Request) and isinstance(two, Request)
    assert one.to is two.to and one.from_ == two.from_
    local = one.to.with_tag("ours")
    assert local.tag == "ours" and two.to.tag is None and one.to.tag is None
    assert one.top_via.branch == "z9hG4bK-a" and two.top_via.branch == "z9hG4bK-b"


@settings(max_examples=200)
@given(user=st.text("abcdefghij0123456789-_.", min_size=1, max_size=12),
       port=st.integers(1, 65535), tag=st.text("abcdef0123456789", min_size=1, max_size=10))
def test_a_cached_parse_equals_a_fresh_one(user: str, port: int, tag: str) -> None:
    uri_text = f"sip:{user}@example.com:{port};transport=udp"
    na_text = f'"{user}" <{uri_text}>;tag={tag}'
    via_text = f"SIP/2.0/TCP host.example.com:{port};branch=z9hG4bK{tag};rport"
    for _ in range(2):  # the second round is answered from the caches
        assert parse_uri(uri_text) == uri._parse_uri(uri_text)
        assert parse_name_addr(na_text, "To") == headers._parse_name_addr(na_text, "To")
        assert parse_via(via_text) == headers._parse_via(via_text)
    assert str(parse_name_addr(na_text, "To")) == na_text


def test_a_cached_sdp_parse_equals_a_fresh_one_and_round_trips() -> None:
    first = parse_sdp(OFFER)
    assert size("sdp") == 1
    assert parse_sdp(OFFER) is first
    assert first == sdp._parse_sdp(OFFER)
    assert first.to_bytes() == OFFER
    # A mutable buffer is parsed from an immutable copy: changing the buffer afterwards
    # cannot change what a later parse of the same bytes returns.
    buf = bytearray(OFFER)
    assert parse_sdp(buf) == first
    buf[:3] = b"v=9"
    assert parse_sdp(OFFER) == first


@pytest.mark.parametrize("name", ["uri", "name_addr", "via"])
def test_errors_are_not_kept(name: str) -> None:
    parse: Callable[[str], object] = {
        "uri": parse_uri, "via": parse_via,
        "name_addr": lambda v: parse_name_addr(v, "From"),
    }[name]
    for _ in range(3):
        with pytest.raises(ParseError):
            parse("sip:bad host@[::1")
    assert size(name) == 0


def test_sdp_errors_are_not_kept() -> None:
    for _ in range(3):
        with pytest.raises(SdpError):
            parse_sdp(b"v=0\r\nm=audio x RTP/AVP 0\r\n")
    assert size("sdp") == 0


def test_a_flood_of_unique_values_keeps_each_cache_at_its_bound() -> None:
    for i in range(3 * max(URI_CACHE_SIZE, HEADER_CACHE_SIZE, SDP_CACHE_SIZE)):
        parse_uri(f"sip:u{i}@example.com")
        parse_name_addr(f"<sip:u{i}@example.com>;tag={i}", "From")
        parse_via(f"SIP/2.0/UDP h{i}.example.com;branch=z9hG4bK{i}")
        parse_via(f"SIP/2.0/UDP 127.0.0.1;x={i}")
        parse_sdp(OFFER.replace(b"53655765", str(i).encode()))
    assert size("uri") == URI_CACHE_SIZE
    assert size("host_port") == URI_CACHE_SIZE
    assert size("name_addr") == HEADER_CACHE_SIZE
    assert size("via") == HEADER_CACHE_SIZE
    assert size("sdp") == SDP_CACHE_SIZE


def test_recently_used_values_stay_through_a_flood() -> None:
    """LRU: a value in steady use (our own Contact, a trunk's URI) stays cached while a
    flood of one-off values passes through."""
    ours = "<sip:sipbridge@127.0.0.1:5060>"
    kept = parse_name_addr(ours, "Contact")
    for i in range(4 * HEADER_CACHE_SIZE):
        parse_name_addr(f"<sip:u{i}@example.com>", "From")
        if i % 100 == 0:
            assert parse_name_addr(ours, "Contact") is kept
    assert parse_name_addr(ours, "Contact") is kept


def test_huge_values_are_parsed_but_not_kept() -> None:
    long_user = "u" * 1500
    na_text = f"<sip:{long_user}@example.com>;tag=1"
    assert len(na_text) > CACHED_VALUE_MAX
    assert parse_name_addr(na_text, "From").uri.user == long_user  # type: ignore[union-attr]
    via_text = "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK" + "b" * 2000
    assert parse_via(via_text).branch == "z9hG4bK" + "b" * 2000
    body = OFFER + b"a=x-pad:" + b"p" * SDP_CACHE_BODY_MAX + b"\r\n"
    assert parse_sdp(body).media[0].port == 6000
    assert size("name_addr") == 0 and size("via") == 0 and size("sdp") == 0
    # The URI cache keys on URIs up to MAX_URI_LENGTH; a longer one is refused unparsed.
    with pytest.raises(ParseError):
        parse_uri("sip:" + "u" * (uri.MAX_URI_LENGTH + 1) + "@example.com")


def test_a_flood_of_long_unique_values_does_not_grow_memory() -> None:
    """Hostile input: unique, long (but cacheable) values in every cache. Memory held
    after the caches fill stays where it was, however long the flood goes on."""
    def flood(start: int, count: int) -> None:
        for i in range(start, start + count):
            pad = f"{i:08d}" + "x" * 400
            parse_uri(f"sip:{pad}@example.com")
            parse_name_addr(f"<sip:{pad}@example.com>;tag={i}", "From")
            parse_via(f"SIP/2.0/UDP 127.0.0.1:5061;x={pad};branch=z9hG4bK{i}")
            parse_via(f"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{pad};x=1")
            parse_sdp(OFFER + f"a=x-pad:{pad}{pad}{pad}\r\n".encode())

    tracemalloc.start()
    try:
        flood(0, 2 * URI_CACHE_SIZE)  # every cache full
        filled, _ = tracemalloc.get_traced_memory()
        flood(10**6, 6 * URI_CACHE_SIZE)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - filled < 512 * 1024, (filled, after)
    assert size("uri") == URI_CACHE_SIZE and size("sdp") == SDP_CACHE_SIZE
    assert size("via") == HEADER_CACHE_SIZE


VIA_PARAMS = st.sampled_from([
    ";branch=z9hG4bK-1", ";branch=z9hG4bK", ";Branch=z9hG4bK-2", "; branch=z9hG4bK-3",
    ";branch = z9hG4bK-4", ";branch=", ";branch=a=b", ";branch=x y", ";branch=\"q\"",
    ";rport", ";rport=5060", ";received=192.0.2.1", ';x="a;branch=b"', ";ttl=1",
    ";maddr=branch.example.com", ";branch=z9hG4bK%41", ";", " ;lr", ";branch=[::1]",
])


@settings(max_examples=400)
@given(host=st.sampled_from(["127.0.0.1:5061", "branch.example.com", "[::1]:5060",
                             "h", "bad host", "127.0.0.1:99999"]),
       proto=st.sampled_from(["SIP/2.0/UDP", "SIP/2.0/tcp", "SIP / 2.0 / TLS", "SIP/3.0/UDP"]),
       params=st.lists(VIA_PARAMS, max_size=4))
def test_a_via_read_through_its_template_is_the_via_read_as_it_is(
        host: str, proto: str, params: list[str]) -> None:
    value = f"{proto} {host}{''.join(params)}"
    try:
        expected: object = headers._parse_via(value)
    except ParseError as exc:
        expected = ("error", str(exc))
    for _ in range(2):
        try:
            got: object = parse_via(value)
        except ParseError as exc:
            got = ("error", str(exc))
        assert got == expected


def test_vias_that_differ_only_in_their_branch_share_one_template() -> None:
    for i in range(3 * HEADER_CACHE_SIZE):
        via = parse_via(f"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{i};rport")
        assert via.branch == f"z9hG4bK-{i}" and via.has_rport and via.port == 5061
    assert size("via") == 1


NAME_ADDR_PARAMS = st.sampled_from([
    ";tag=abc", ";tag=1928301774", ";TAG=x", "; tag=y", ";tag = z", ";tag=", ";tag=a=b",
    ";tag=\"q\"", ";tag=a b", ";expires=60", ";x=\"a;tag=b\"", ";q=0.5", ";lr", ";",
    ";tag=0", ";tag=%41", ";y=\">\"",
])


@settings(max_examples=500)
@given(display=st.sampled_from(["", "Bob ", '"Alice" ', '"a>b;tag=c" ', "tag ", '"x" ']),
       uri=st.sampled_from(["sip:bob@example.com", "sip:tagger@h", "sip:b@h;tag=u",
                            "tel:+1555", "sip:b@h;transport=tcp", "mailto:x@y", "sip:bad host"]),
       bracketed=st.booleans(), params=st.lists(NAME_ADDR_PARAMS, max_size=3))
def test_a_name_addr_read_through_its_template_is_the_name_addr_read_as_it_is(
        display: str, uri: str, bracketed: bool, params: list[str]) -> None:
    value = (f"{display}<{uri}>" if bracketed else uri) + "".join(params)
    try:
        expected: object = headers._parse_name_addr(value, "To")
    except ParseError as exc:
        expected = ("error", str(exc))
    for _ in range(2):
        try:
            got: object = parse_name_addr(value, "To")
        except ParseError as exc:
            got = ("error", str(exc))
        assert got == expected


def test_name_addrs_that_differ_only_in_their_tag_share_one_template() -> None:
    for i in range(3 * HEADER_CACHE_SIZE):
        na = parse_name_addr(f'"Alice" <sip:alice@example.com>;tag=t{i};x=1', "From")
        assert na.tag == f"t{i}" and na.param("x") == "1" and na.display == '"Alice"'
    assert size("name_addr") == 1


@pytest.mark.parametrize("value", [
    "<sip:b@h>; tag=0;tag=abc",  # a second tag, the first one spaced and equal to the stand-in
    '<sip:b@h>;x="a;tag=b";tag=0',  # a ";tag=" inside a quoted value, before the real one
    '"tag" <sip:b@h>;tag=abc',
    "<sip:tag@h>;tag=abc",
    "sip:b@h;x=1;tag=abc",
])
def test_name_addrs_a_template_could_misread(value: str) -> None:
    for _ in range(2):
        assert parse_name_addr(value, "To") == headers._parse_name_addr(value, "To")


@pytest.mark.parametrize("value", [
    "SIP/2.0/UDP h; branch=z9hG4bK;branch=z9hG4bK-real",
    'SIP/2.0/UDP h;x="a;branch=b";branch=z9hG4bK',
    "SIP/2.0/UDP branch.example.com;branch=z9hG4bK-1",
])
def test_vias_a_template_could_misread(value: str) -> None:
    for _ in range(2):
        assert parse_via(value) == headers._parse_via(value)
