"""SIP, SIPS and tel URIs (RFC 3261 19.1, 25.1; RFC 3966): parsing, rejects, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.sip.errors import ParseError, UnsupportedUriScheme
from sipbridge.sip.uri import (
    SipUri,
    TelUri,
    parse_host_port,
    parse_sip_uri,
    parse_uri,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:alice@example.com", SipUri(host="example.com", user="alice")),
        ("sips:alice@example.com", SipUri(host="example.com", user="alice", scheme="sips")),
        ("sip:example.com", SipUri(host="example.com")),
        ("sip:alice:secret@example.com", SipUri("example.com", "alice", password="secret")),
        ("sip:alice:@example.com", SipUri("example.com", "alice", password="")),
        ("sip:alice@example.com:5070", SipUri("example.com", "alice", 5070)),
        ("sip:alice@192.0.2.4", SipUri("192.0.2.4", "alice")),
        ("sip:alice@192.0.2.4:5060", SipUri("192.0.2.4", "alice", 5060)),
        ("sip:[2001:db8::10]", SipUri("[2001:db8::10]")),
        ("sip:bob@[2001:db8::10]:5061", SipUri("[2001:db8::10]", "bob", 5061)),
        ("sip:host.example.com.", SipUri("host.example.com.")),
        ("sip:123.example.com", SipUri("123.example.com")),
        (
            "sip:+15551234567@gw.example.com;user=phone",
            SipUri("gw.example.com", "+15551234567", params=(("user", "phone"),)),
        ),
        ("sip:proxy.example.com;lr", SipUri("proxy.example.com", params=(("lr", None),))),
        (
            "sip:alice@example.com;transport=tcp;maddr=239.255.255.1;ttl=15",
            SipUri(
                "example.com",
                "alice",
                params=(("transport", "tcp"), ("maddr", "239.255.255.1"), ("ttl", "15")),
            ),
        ),
        ("sip:%61lice%20b@example.com", SipUri("example.com", "%61lice%20b")),
        (
            "sip:alice@example.com;n%61me=v%61lue",
            SipUri("example.com", "alice", params=(("n%61me", "v%61lue"),)),
        ),
        (
            "sip:bob@example.com?subject=project%20x&priority=urgent",
            SipUri(
                "example.com", "bob", headers=(("subject", "project%20x"), ("priority", "urgent"))
            ),
        ),
        (
            "sip:bob@example.com;transport=udp?subject=hi",
            SipUri(
                "example.com", "bob", params=(("transport", "udp"),), headers=(("subject", "hi"),)
            ),
        ),
        ("sip:bob@example.com?subject=", SipUri("example.com", "bob", headers=(("subject", ""),))),
        # user-unreserved holds ";" and "?": the last "@" ends the userinfo (RFC 4475 3.1.1.9)
        (
            "sip:user;par=u%40example.net@example.com",
            SipUri("example.com", "user;par=u%40example.net"),
        ),
        ("sip:a?b;c=d@example.com?h=v", SipUri("example.com", "a?b;c=d", headers=(("h", "v"),))),
    ],
)
def test_parses_sip_uris(text: str, expected: SipUri) -> None:
    assert parse_uri(text) == expected
    assert str(parse_uri(text)) == text


@pytest.mark.parametrize("scheme", ["SIP", "Sip", "sIp"])
def test_scheme_is_case_insensitive(scheme: str) -> None:
    uri = parse_uri(f"{scheme}:alice@example.com")
    assert isinstance(uri, SipUri)
    assert uri.scheme == "sip"
    assert parse_uri("SIPS:alice@example.com") == SipUri("example.com", "alice", scheme="sips")
    assert isinstance(parse_uri("TEL:+15551234567"), TelUri)


def test_rfc4475_intmeth_request_uri() -> None:
    uri = parse_uri(
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
        "(doesn't-it)@example.com"
    )
    assert isinstance(uri, SipUri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert uri.headers == ()


def test_param_lookup() -> None:
    uri = parse_sip_uri("sip:alice@example.com;Transport=TCP;lr;user=phone")
    assert uri.param("transport") == "TCP"
    assert uri.transport == "tcp"
    assert uri.has_param("LR") and uri.param("lr") is None
    assert not uri.has_param("maddr")
    assert parse_sip_uri("sip:example.com").transport == "udp"
    assert uri.host_port == "example.com"
    assert parse_sip_uri("sip:example.com:5070").host_port == "example.com:5070"


def test_with_params_replaces() -> None:
    uri = parse_sip_uri("sip:alice@example.com;transport=udp;lr")
    assert str(uri.with_params(transport="tcp")) == "sip:alice@example.com;lr;transport=tcp"
    assert str(uri.with_params(ob=None)) == "sip:alice@example.com;transport=udp;lr;ob"


@pytest.mark.parametrize(
    ("text", "number", "params"),
    [
        ("tel:+1-201-555-0123", "+1-201-555-0123", ()),
        ("tel:7042;phone-context=example.com", "7042", (("phone-context", "example.com"),)),
        ("tel:+15551234567;ext=22", "+15551234567", (("ext", "22"),)),
    ],
)
def test_parses_tel_uris(text: str, number: str, params: tuple[tuple[str, str], ...]) -> None:
    uri = parse_uri(text)
    assert uri == TelUri(number, params)
    assert str(uri) == text
    assert uri.is_global == number.startswith("+")


@pytest.mark.parametrize(
    "text",
    [
        "alice@example.com",  # no scheme
        ":alice@example.com",
        "sip:",  # no host
        "sip:alice@",
        "sip:@example.com",  # empty user
        "sip:alice@exa_mple.com",  # bad host
        "sip:alice@-example.com",
        "sip:alice@example-.com",
        "sip:alice@example..com",
        "sip:alice@256.1.1.1",
        "sip:alice@1.2.3",
        "sip:alice@host.1a",
        "sip:alice@example.com:0",  # port 0
        "sip:alice@example.com:70000",
        "sip:alice@example.com:123456",
        "sip:alice@example.com:50a",  # non-digit port
        "sip:alice@example.com:",
        "sip:alice@example.com:\u00b2",  # "²".isdigit() is True, int("²") fails
        "sip:alice@example.com:\u0665\u0660",  # Arabic-Indic digits
        "sip:alice @example.com",  # spaces
        "sip:alice@example.com; lr",
        "sip:alice@ex ample.com",
        "sip:alice@[2001:db8::1",  # unterminated IPv6
        "sip:alice@[2001:db8::1]x",
        "sip:alice@[not:an:address]",
        "sip:alice@[fe80::1%25eth0]",  # zone ids are not IPv6reference
        "sip:alice@example.com;",  # empty param
        "sip:alice@example.com;;lr",
        "sip:alice@example.com;=x",
        "sip:alice@example.com;lr=",
        "sip:alice@example.com;a=b=c",
        "sip:alice@example.com?",  # empty header
        "sip:alice@example.com?novalue",
        "sip:alice@example.com?=v",
        "sip:<alice@example.com>",
        'sip:"alice"@example.com',
        "sip:al<ice@example.com",
        "sip:alice:pa@ss@example.com",
        "tel:",
        "tel:xyz",
        "tel:+",
        "tel:+1;",
        "\x00\x01garbage",
        "sip:" + "a" * 3000 + "@example.com",  # over MAX_URI_LENGTH
        "1http:example.com",  # not a scheme
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_uri(text)
    assert not isinstance(info.value, UnsupportedUriScheme)
    assert info.value.status == 400
    assert info.value.reason


@pytest.mark.parametrize(
    "text", ["mailto:alice@example.com", "http://example.com/", "im:a@b", "h323:x"]
)
def test_other_schemes_are_416(text: str) -> None:
    with pytest.raises(UnsupportedUriScheme) as info:
        parse_uri(text)
    assert info.value.status == 416


def test_parse_sip_uri_refuses_tel() -> None:
    with pytest.raises(UnsupportedUriScheme):
        parse_sip_uri("tel:+15551234567")


def test_host_port() -> None:
    assert parse_host_port("example.com") == ("example.com", None)
    assert parse_host_port("192.0.2.1:5060") == ("192.0.2.1", 5060)
    assert parse_host_port("[::1]:5061") == ("[::1]", 5061)
    assert parse_host_port("01.002.3.4") == ("01.002.3.4", None)  # 1*3DIGIT per octet
    with pytest.raises(ParseError, match="Via"):
        parse_host_port("bad_host", "Via")


# ---- round trip: parse_uri(str(u)) == u ---------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_MARK = "-_.!~*'()"
_escaped = st.builds(lambda b: f"%{b:02X}", st.integers(0, 255))


def _chars(extra: str, min_size: int = 1) -> st.SearchStrategy[str]:
    atom = st.one_of(st.sampled_from(_ALNUM + _MARK + extra), _escaped)
    return st.lists(atom, min_size=min_size, max_size=12).map("".join)


_LDH = "abcdefghijklmnopqrstuvwxyz0123456789-"
_label = st.text(_LDH, min_size=1, max_size=10).filter(lambda t: "-" not in (t[0], t[-1]))
_toplabel = st.builds(
    str.__add__,
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    st.text(_LDH + "ABCDEF", max_size=8).filter(lambda t: not t.endswith("-")),
)
_hostname = st.builds(
    lambda labels, top: ".".join([*labels, top]), st.lists(_label, max_size=3), _toplabel
)
_host = st.one_of(
    _hostname,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
_param_text = _chars("[]/:&+$")
_header_text = _chars("[]/?:+$", min_size=0)

sip_uris = st.builds(
    SipUri,
    host=_host,
    user=st.none() | _chars("&=+$,;?/"),
    port=st.none() | st.integers(1, 65535),
    scheme=st.sampled_from(["sip", "sips"]),
    password=st.none() | _chars("&=+$,", min_size=0),
    params=st.lists(st.tuples(_param_text, st.none() | _param_text), max_size=4).map(tuple),
    headers=st.lists(st.tuples(_chars("[]/?:+$"), _header_text), max_size=3).map(tuple),
).filter(lambda u: u.user is not None or u.password is None)


@settings(max_examples=400, deadline=None)
@given(sip_uris)
def test_round_trip(uri: SipUri) -> None:
    assert parse_uri(str(uri)) == uri


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_raises_parse_error(text: str) -> None:
    try:
        uri = parse_uri(text)
    except ParseError:
        return
    assert parse_uri(str(uri)) == uri
