"""REFER's subscription: sipfrag bodies (RFC 3420), Subscription-State and Event (RFC 6665),
Refer-Sub (RFC 4488)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.sip.errors import ParseError, SipError
from sipbridge.sip.subscription import (
    MAX_SIPFRAG_SIZE,
    SipFrag,
    SipFragError,
    SubscriptionState,
    parse_event,
    parse_sipfrag,
    parse_subscription_state,
    refer_sub_disabled,
)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"SIP/2.0 100 Trying\r\n", 100, "Trying"),
        (b"SIP/2.0 180 Ringing\r\n", 180, "Ringing"),
        (b"SIP/2.0 183 Session Progress", 183, "Session Progress"),
        (b"SIP/2.0 200 OK\r\n", 200, "OK"),
        (b"SIP/2.0 486 Busy Here\r\n", 486, "Busy Here"),
        (b"SIP/2.0 603 Decline\r\n", 603, "Decline"),
        (b"sip/2.0 200 OK\r\n", 200, "OK"),  # the protocol name is case-insensitive
        (b"SIP/2.0 200\r\n", 200, ""),  # empty reason
        (b"SIP/2.0 200 \r\n", 200, ""),
        (b"SIP/2.0 200 OK  \t\r\n\r\n", 200, "OK"),  # trailing whitespace
        (b"SIP/2.0  404\tNot  Found\n", 404, "Not  Found"),
        (b"\r\nSIP/2.0 200 OK\r\n", 200, "OK"),  # stray line end before the status line
        (b"SIP/2.0 480 Non joignable", 480, "Non joignable"),
        ("SIP/2.0 603 Abgelehnt \u00fcberall".encode(), 603, "Abgelehnt \u00fcberall"),
    ],
)
def test_sipfrag_status_lines(body: bytes, status: int, reason: str) -> None:
    frag = parse_sipfrag(body)
    assert frag == SipFrag(status, reason, ())
    assert frag.final is (status >= 200)


def test_sipfrag_with_headers_and_body() -> None:
    # RFC 3420 4's example shape: status line, headers, blank line, body.
    body = (
        b"SIP/2.0 200 OK\r\n"
        b"Contact: <sip:bob@198.51.100.9>\r\n"
        b"i: abc@192.0.2.1\r\n"
        b"Content-Type: application/sdp\r\n"
        b"\r\n"
        b"v=0\r\nnot: a header\r\n"
    )
    frag = parse_sipfrag(body)
    assert frag.status == 200
    assert frag.headers == (
        ("Contact", "<sip:bob@198.51.100.9>"),
        ("Call-ID", "abc@192.0.2.1"),
        ("Content-Type", "application/sdp"),
    )


def test_sipfrag_lf_only_and_folded_header() -> None:
    body = b"SIP/2.0 180 Ringing\nWarning: 399 example.com\n  \"still ringing\"\nX-Custom:v\n"
    frag = parse_sipfrag(body)
    assert (frag.status, frag.reason) == (180, "Ringing")
    assert frag.headers == (("Warning", '399 example.com "still ringing"'), ("X-Custom", "v"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n", "request line"),
        (b"REFER sip:bob@example.com sip/2.0", "request line"),
        (b"SIP/3.0 200 OK\r\n", "version"),
        (b"SIP/2 200 OK\r\n", "version"),
        (b"HTTP/1.1 200 OK\r\n", "no status line"),
        (b"Contact: <sip:a@b>\r\n", "no status line"),
        (b"hello", "no status line"),
        (b" SIP/2.0 200 OK", "no status line"),
        (b"SIP/2.0", "status code"),
        (b"SIP/2.0 20 OK", "status code"),
        (b"SIP/2.0 2000 OK", "status code"),
        (b"SIP/2.0 099 Odd", "status code"),
        (b"SIP/2.0 700 Seven", "status code"),
        (b"SIP/2.0 2x0 OK", "status code"),
        ("SIP/2.0 \u0662\u0660\u0660 OK".encode(), "status code"),  # Arabic-Indic digits
        (b"SIP/2.0 200 OK\x00", "control character"),
        (b"SIP/2.0 200 O\rK\r\n", "control character"),
        (b"SIP/2.0 200 OK\xff\r\n", "UTF-8"),
        (b"SIP/2.0 200 OK\r\n folded\r\n", "continuation"),
        (b"SIP/2.0 200 OK\r\nno colon here\r\n", "malformed"),
        (b"SIP/2.0 200 OK\r\nBad Name: v\r\n", "malformed"),
        (b"SIP/2.0 200 OK\r\nX: a\x01b\r\n", "control character"),
    ],
)
def test_sipfrag_refused(body: bytes, message: str) -> None:
    with pytest.raises(SipFragError, match=message) as info:
        parse_sipfrag(body)
    assert info.value.status == 400
    assert isinstance(info.value, SipError)
    assert isinstance(info.value, ParseError)


def test_sipfrag_size_limit() -> None:
    head = b"SIP/2.0 200 OK\r\nX-Pad: "
    fits = head + b"a" * (MAX_SIPFRAG_SIZE - len(head))
    assert len(fits) == MAX_SIPFRAG_SIZE
    assert parse_sipfrag(fits).headers == (("X-Pad", "a" * (MAX_SIPFRAG_SIZE - len(head))),)
    with pytest.raises(SipFragError, match="over the 8192-byte limit"):
        parse_sipfrag(fits + b"a")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_sipfrag_never_raises_anything_else(body: bytes) -> None:
    try:
        frag = parse_sipfrag(body)
    except SipFragError:
        return
    assert 100 <= frag.status <= 699


@given(st.integers(100, 699), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_sipfrag_any_valid_code_and_reason(code: int, reason: str) -> None:
    frag = parse_sipfrag(f"SIP/2.0 {code} {reason}\r\n".encode())
    assert (frag.status, frag.reason) == (code, reason.strip(" \t"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("active;expires=60", SubscriptionState("active", None, 60, None)),
        ("Active ; Expires = 60", SubscriptionState("active", None, 60, None)),
        ("pending", SubscriptionState("pending", None, None, None)),
        ("pending;expires=0", SubscriptionState("pending", None, 0, None)),
        ("terminated;reason=noresource", SubscriptionState("terminated", "noresource", None, None)),
        ("terminated;reason=Timeout", SubscriptionState("terminated", "timeout", None, None)),
        (
            "terminated;reason=probation;retry-after=30",
            SubscriptionState("terminated", "probation", None, 30),
        ),
        ("terminated", SubscriptionState("terminated", None, None, None)),
        ("waiting;x-ext=\"a;b\";flag", SubscriptionState("waiting", None, None, None)),
        ("active;expires=4294967295", SubscriptionState("active", None, 2**32 - 1, None)),
    ],
)
def test_subscription_state(value: str, expected: SubscriptionState) -> None:
    assert parse_subscription_state(value) == expected


def test_subscription_state_terminated_flag() -> None:
    state = parse_subscription_state("terminated;reason=rejected")
    assert state is not None
    assert state.terminated
    active = parse_subscription_state("active")
    assert active is not None
    assert not active.terminated


def test_subscription_state_absent() -> None:
    assert parse_subscription_state(None) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        ";expires=60",
        "active;",
        "active;;expires=60",
        "active expires=60",
        "active;expires=abc",
        "active;expires=-1",
        "active;expires=6.5",
        "active;expires",
        "active;expires=",
        "active;expires=\"60\"",
        "active;expires=4294967296",
        "active;expires=60;expires=61",
        "terminated;reason",
        "terminated;reason=\"timeout\"",
        "terminated;retry-after=soon",
        "act@ve",
        "active;x=\"unterminated",
    ],
)
def test_subscription_state_garbage(value: str) -> None:
    with pytest.raises(SipFragError):
        parse_subscription_state(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("refer;id=93809824", ("refer", "93809824")),
        ("refer", ("refer", None)),
        ("Refer ; ID=7", ("refer", "7")),
        ("refer;id=7;other=x", ("refer", "7")),
        ("presence.winfo", ("presence.winfo", None)),
    ],
)
def test_event(value: str, expected: tuple[str, str | None]) -> None:
    assert parse_event(value) == expected


@pytest.mark.parametrize(
    "value", ["", "refer;", "refer;id", "refer;id=", "refer;id=1;id=2", "re fer", "refer;id=\"1\""]
)
def test_event_garbage(value: str) -> None:
    with pytest.raises(SipFragError):
        parse_event(value)


def test_event_absent() -> None:
    assert parse_event(None) is None


@pytest.mark.parametrize(
    ("value", "disabled"),
    [
        (None, False),
        ("false", True),
        ("FALSE", True),
        (" False ", True),
        ("false;x-param=1", True),
        ("true", False),
        ("", False),
        ("no", False),
        ("falsey", False),
    ],
)
def test_refer_sub(value: str | None, disabled: bool) -> None:
    assert refer_sub_disabled(value) is disabled
