"""REFER's subscription: sipfrag bodies (RFC 3420), Subscription-State and Event (RFC 6665),
Refer-Sub (RFC 4488), and whole NOTIFYs read the robust way: taken with warnings when
their meaning is clear, refused only when it is not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.sip.errors import ParseError, SipError
from sipbridge.sip.message import Headers
from sipbridge.sip.subscription import (
    MAX_SIPFRAG_SIZE,
    BadEvent,
    EventHeader,
    SipFrag,
    SipFragError,
    SubscriptionState,
    parse_event,
    parse_sipfrag,
    parse_subscription_state,
    read_refer_notify,
    refer_sub_disabled,
)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"SIP/2.0 100 Trying\r\n", 100, "Trying"),
        (b"SIP/2.0 180 Ringing\r\n", 180, "Ringing"),
        (b"SIP/2.0 183 Session Progress", 183, "Session Progress"),
        (b"SIP/2.0 200 OK\r\n", 200, "OK"),
        (b"SIP/2.0 200 Ok\r\n", 200, "Ok"),  # liblinphone's phrase
        (b"SIP/2.0 486 Busy Here\r\n", 486, "Busy Here"),
        (b"SIP/2.0 603 Decline\r\n", 603, "Decline"),
        (b"sip/2.0 200 OK\r\n", 200, "OK"),  # the protocol name is case-insensitive
        (b"SIP/2.0 200\r\n", 200, ""),  # no reason phrase
        (b"SIP/2.0 200 \r\n", 200, ""),
        (b"SIP/2.0 200 OK", 200, "OK"),  # no line end at all (FreeSWITCH once, JsSIP)
        (b"SIP/2.0 200 OK\n", 200, "OK"),  # LF only
        (b"SIP/2.0 200 OK\r\n\r\n\r\n\r\n", 200, "OK"),  # trailing line ends
        (b"SIP/2.0 200 OK  \t\r\n\r\n", 200, "OK"),  # trailing whitespace
        (b"SIP/2.0  404\tNot  Found\n", 404, "Not  Found"),
        (b"\r\nSIP/2.0 200 OK\r\n", 200, "OK"),  # stray line end before the status line
        (b"\r\n\r\n  \r\nSIP/2.0 200 OK\r\n", 200, "OK"),  # several, one with blanks
        (b"SIP/2.0 480 Non joignable", 480, "Non joignable"),
        ("SIP/2.0 603 Abgelehnt \u00fcberall".encode(), 603, "Abgelehnt \u00fcberall"),
    ],
)
def test_sipfrag_status_lines(body: bytes, status: int, reason: str) -> None:
    frag, warnings = parse_sipfrag(body)
    assert frag == SipFrag(status, reason, ())
    assert warnings == ()
    assert frag.final is (status >= 200)


def test_sipfrag_with_headers_and_body() -> None:
    # RFC 3420 4's example shape: status line, headers, blank line, body.
    body = (
        b"SIP/2.0 200 OK\r\n"
        b"Contact: <sip:bob@198.51.100.9>\r\n"
        b"i: abc@192.0.2.1\r\n"
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: 21\r\n"
        b"\r\n"
        b"v=0\r\nnot: a header\r\n\r\n\r\n"
    )
    frag, warnings = parse_sipfrag(body)
    assert frag.status == 200 and warnings == ()
    assert frag.headers == (
        ("Contact", "<sip:bob@198.51.100.9>"),
        ("Call-ID", "abc@192.0.2.1"),
        ("Content-Type", "application/sdp"),
        ("Content-Length", "21"),
    )


def test_sipfrag_lf_only_and_folded_header() -> None:
    body = b"SIP/2.0 180 Ringing\nWarning: 399 example.com\n  \"still ringing\"\nX-Custom:v\n"
    frag, warnings = parse_sipfrag(body)
    assert (frag.status, frag.reason, warnings) == (180, "Ringing", ())
    assert frag.headers == (("Warning", '399 example.com "still ringing"'), ("X-Custom", "v"))


@pytest.mark.parametrize(
    ("body", "status", "reason", "warning"),
    [
        (b" SIP/2.0 200 OK", 200, "OK", "whitespace before"),
        (b"SIP/2.0 200 OK\x00", 200, "OK", "control character"),
        (b"SIP/2.0 200 O\rK\r\n", 200, "O", "control character"),  # a bare CR ends it
        (b"SIP/2.0 200 OK\xff\r\n", 200, "OK\ufffd", "not UTF-8"),
        (b"SIP/2.0 200 OK\r\n folded\r\n", 200, "OK", "malformed sipfrag header lines"),
        (b"SIP/2.0 200 OK\r\nno colon here\r\n", 200, "OK", "'no colon here'"),
        (b"SIP/2.0 200 OK\r\nBad Name: v\r\n", 200, "OK", "'Bad Name: v'"),
        (b"SIP/2.0 200 OK\r\nX: a\x01b\r\n", 200, "OK", "malformed sipfrag header lines"),
    ],
)
def test_sipfrag_read_with_warnings(body: bytes, status: int, reason: str, warning: str) -> None:
    frag, warnings = parse_sipfrag(body)
    assert (frag.status, frag.reason) == (status, reason)
    assert len(warnings) == 1 and warning in warnings[0]


def test_sipfrag_bad_header_lines_make_one_bounded_warning() -> None:
    body = b"SIP/2.0 200 OK\r\n" + b"junk line\r\n" * 500 + b"Reason: SIP;cause=200\r\n"
    frag, warnings = parse_sipfrag(body)
    assert frag.status == 200 and frag.headers == (("Reason", "SIP;cause=200"),)
    assert len(warnings) == 1 and "and 497 more" in warnings[0] and len(warnings[0]) < 200


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
        (b"200 OK", "no status line"),
        (b"SIP/2.0", "status code"),
        (b"SIP/2.0 20 OK", "status code"),
        (b"SIP/2.0 2000 OK", "status code"),
        (b"SIP/2.0 099 Odd", "status code"),
        (b"SIP/2.0 700 Seven", "status code"),
        (b"SIP/2.0 2x0 OK", "status code"),
        (b"SIP/2.0 200OK", "status code"),
        (b"SIP/2.0 2\x000 OK", "status code"),
        ("SIP/2.0 \u0662\u0660\u0660 OK".encode(), "status code"),  # Arabic-Indic digits
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
    frag, warnings = parse_sipfrag(fits)
    assert frag.headers == (("X-Pad", "a" * (MAX_SIPFRAG_SIZE - len(head))),)
    assert warnings == ()
    frag, warnings = parse_sipfrag(fits + b"a" * 60_000)  # only the head is read
    assert frag.status == 200
    expected = f"sipfrag of {MAX_SIPFRAG_SIZE + 60_000} bytes: only its first {MAX_SIPFRAG_SIZE}"
    assert warnings == (f"{expected} read",)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_sipfrag_never_raises_anything_else(body: bytes) -> None:
    try:
        frag, warnings = parse_sipfrag(body)
    except SipFragError:
        return
    assert 100 <= frag.status <= 699
    assert all(isinstance(w, str) and len(w) < 300 for w in warnings)


@given(st.integers(100, 699), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_sipfrag_any_valid_code_and_reason(code: int, reason: str) -> None:
    frag, warnings = parse_sipfrag(f"SIP/2.0 {code} {reason}\r\n".encode())
    assert (frag.status, frag.reason, warnings) == (code, reason.strip(" \t"), ())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("active;expires=60", SubscriptionState("active", None, 60, None)),
        ("Active ; Expires = 60", SubscriptionState("active", None, 60, None)),
        ("active", SubscriptionState("active", None, None, None)),  # liblinphone's 100 Trying
        ("active;expires=595", SubscriptionState("active", None, 595, None)),  # Asterisk
        ("pending", SubscriptionState("pending", None, None, None)),
        ("pending;expires=0", SubscriptionState("pending", None, 0, None)),
        ("terminated;reason=noresource", SubscriptionState("terminated", "noresource", None, None)),
        ("terminated;reason=Timeout", SubscriptionState("terminated", "timeout", None, None)),
        ("TERMINATED;REASON=NORESOURCE",
         SubscriptionState("terminated", "noresource", None, None)),
        (
            "terminated;reason=probation;retry-after=30",
            SubscriptionState("terminated", "probation", None, 30),
        ),
        ("terminated", SubscriptionState("terminated", None, None, None)),
        ("  terminated ;  reason = noresource  ",
         SubscriptionState("terminated", "noresource", None, None)),
        ("waiting;x-ext=\"a;b\";flag", SubscriptionState("waiting", None, None, None)),
        ("active;expires=4294967295", SubscriptionState("active", None, 2**32 - 1, None)),
    ],
)
def test_subscription_state(value: str, expected: SubscriptionState) -> None:
    assert parse_subscription_state(value) == (expected, ())


def test_subscription_state_terminated_flag() -> None:
    state, _ = parse_subscription_state("terminated;reason=rejected")
    assert state is not None
    assert state.terminated
    active, _ = parse_subscription_state("active")
    assert active is not None
    assert not active.terminated


def test_subscription_state_absent() -> None:
    assert parse_subscription_state(None) == (None, ())


@pytest.mark.parametrize(
    ("value", "expected", "warning"),
    [
        # liblinphone 5.1: the reason given as "reason=noresource", written after "reason="
        ("terminated;reason=reason=noresource",
         SubscriptionState("terminated", "noresource"),
         "'reason=reason=noresource' read as reason=noresource"),
        ("terminated;Reason=REASON=noresource", SubscriptionState("terminated", "noresource"),
         "read as reason=noresource"),
        ("terminated;reason=reason=reason=giveup", SubscriptionState("terminated", "giveup"),
         "read as reason=giveup"),
        ("active;", SubscriptionState("active"), "empty parameter"),
        ("active;;expires=60", SubscriptionState("active", expires=60), "empty parameter"),
        ("active expires=60", SubscriptionState("active"), "'expires=60' after 'active' ignored"),
        ("terminated;reason=noresource junk", SubscriptionState("terminated"),
         "malformed parameter 'reason=noresource junk' ignored"),
        ("active;expires=abc", SubscriptionState("active"), "invalid expires 'abc' ignored"),
        ("active;expires=-1", SubscriptionState("active"), "invalid expires"),
        ("active;expires=6.5", SubscriptionState("active"), "invalid expires"),
        ("active;expires=4294967296", SubscriptionState("active"), "invalid expires"),
        ("active;expires", SubscriptionState("active"), "expires without a value"),
        ("active;expires=", SubscriptionState("active"), "malformed parameter 'expires='"),
        ("active;expires=\"60\"", SubscriptionState("active", expires=60), "quoted expires"),
        ("active;expires=60;expires=61", SubscriptionState("active", expires=60),
         "expires repeated; the first ('60') used"),
        ("terminated;reason", SubscriptionState("terminated"), "reason without a value"),
        ("terminated;reason=\"timeout\"", SubscriptionState("terminated", "timeout"),
         "quoted reason"),
        ("terminated;retry-after=soon", SubscriptionState("terminated"),
         "invalid retry-after 'soon'"),
        ("active;x=\"unterminated", SubscriptionState("active"), "malformed parameter"),
        ("active;b@d=1;expires=60", SubscriptionState("active", expires=60),
         "malformed parameter 'b@d=1'"),
    ],
)
def test_subscription_state_read_with_warnings(value: str, expected: SubscriptionState,
                                               warning: str) -> None:
    state, warnings = parse_subscription_state(value)
    assert state == expected
    assert len(warnings) == 1 and warning in warnings[0], warnings
    assert warnings[0].startswith("Subscription-State: ")


def test_subscription_state_quoted_reason_that_is_no_token() -> None:
    state, warnings = parse_subscription_state('terminated;reason="no resource"')
    assert state == SubscriptionState("terminated")
    assert warnings == ("Subscription-State: quoted reason '\"no resource\"'",
                        "Subscription-State: reason 'no resource' is not a token; ignored")


@pytest.mark.parametrize(
    "value", ["", "   ", ";expires=60", ";reason=noresource", "act@ve", "\"active\"",
              "=terminated", "\u00e4ctive"]
)
def test_subscription_state_without_a_readable_state(value: str) -> None:
    with pytest.raises(SipFragError) as info:
        parse_subscription_state(value)
    assert info.value.status == 400


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_subscription_state_never_raises_anything_else(value: str) -> None:
    try:
        state, warnings = parse_subscription_state(value)
    except SipFragError:
        return
    assert state is not None and state.state
    assert len(warnings) <= 8
    assert state.expires is None or 0 <= state.expires < 2**32


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("refer;id=93809824", EventHeader("refer", "93809824")),
        ("refer", EventHeader("refer", None)),
        ("refer;id=3", EventHeader("refer", "3")),
        ("Refer;ID=3", EventHeader("refer", "3")),
        ("Refer ; ID=7", EventHeader("refer", "7")),
        ("  refer  ;  id = 7  ", EventHeader("refer", "7")),
        ("refer;id=7;other=x", EventHeader("refer", "7")),
        ("presence.winfo", EventHeader("presence.winfo", None)),
    ],
)
def test_event(value: str, expected: EventHeader) -> None:
    assert parse_event(value) == (expected, ())


@pytest.mark.parametrize(
    ("value", "expected", "warning"),
    [
        ("refer;id=\"3\"", EventHeader("refer", "3"), "quoted id"),
        ("refer;", EventHeader("refer"), "empty parameter"),
        ("refer;id", EventHeader("refer"), "id without a value"),
        ("refer;id=", EventHeader("refer"), "malformed parameter 'id='"),
        ("refer;id=1;id=1", EventHeader("refer", "1"), "id parameter repeated"),
        ("refer;id=1;id=2", EventHeader("refer"), "conflicting id parameters '1', '2'"),
        ("re fer", EventHeader("re"), "'fer' after 're' ignored"),
    ],
)
def test_event_read_with_warnings(value: str, expected: EventHeader, warning: str) -> None:
    event, warnings = parse_event(value)
    assert event == expected
    assert len(warnings) == 1 and warning in warnings[0], warnings


@pytest.mark.parametrize("value", ["", " ", ";id=1", "re@fer", "\"refer\""])
def test_event_without_a_readable_package(value: str) -> None:
    with pytest.raises(SipFragError):
        parse_event(value)


def test_event_absent() -> None:
    assert parse_event(None) == (None, ())


@pytest.mark.parametrize(
    ("value", "disabled"),
    [
        (None, False),
        ("false", True),
        ("FALSE", True),
        (" False ", True),
        ("false;x-param=1", True),
        ("false;x=y", True),
        ("\"false\"", True),
        ("true", False),
        ("true;x=y", False),
        ("", False),
        ("no", False),
        ("falsey", False),
    ],
)
def test_refer_sub(value: str | None, disabled: bool) -> None:
    assert refer_sub_disabled(value) is disabled


def notify_headers(*extra: tuple[str, str], event: str | None = "refer",
                   state: str | None = "terminated;reason=noresource",
                   ctype: str | None = "message/sipfrag") -> Headers:
    items = [("Event", event), ("Subscription-State", state), ("Content-Type", ctype), *extra]
    return Headers((name, value) for name, value in items if value is not None)


def test_read_refer_notify_clean() -> None:
    content = read_refer_notify(notify_headers(), b"SIP/2.0 200 OK\r\n")
    assert content.event_id is None and content.warnings == ()
    assert content.state == SubscriptionState("terminated", "noresource")
    assert content.frag == SipFrag(200, "OK")
    with_id = read_refer_notify(notify_headers(event="refer;id=2",
                                               ctype="message/sipfrag;version=2.0"),
                                b"SIP/2.0 100 Trying\r\n")
    assert (with_id.event_id, with_id.warnings) == ("2", ())


def test_read_refer_notify_linphone_5_1() -> None:
    content = read_refer_notify(notify_headers(state="terminated;reason=reason=noresource"),
                                b"SIP/2.0 200 Ok\r\n")
    assert content.state == SubscriptionState("terminated", "noresource")
    assert content.frag == SipFrag(200, "Ok")
    assert content.warnings == (
        "Subscription-State: 'reason=reason=noresource' read as reason=noresource",)


@pytest.mark.parametrize(
    ("headers", "body", "warning"),
    [
        (notify_headers(state=None), b"SIP/2.0 200 OK", "no Subscription-State header"),
        (notify_headers(), b"", "no sipfrag body"),
        (notify_headers(), b"\r\n", "no sipfrag body"),
        (notify_headers(ctype=None), b"SIP/2.0 200 OK", "no Content-Type; the body read as"),
        (notify_headers(ctype="text/plain"), b"SIP/2.0 200 OK",
         "Content-Type 'text/plain'; the body read as message/sipfrag"),
        (notify_headers(("Event", "refer")), b"SIP/2.0 200 OK", "2 Event headers"),
        (notify_headers(("Subscription-State", "terminated")), b"SIP/2.0 200 OK",
         "2 Subscription-State headers; the first is used"),
        (notify_headers(("Subscription-State", "ter@minated")), b"SIP/2.0 200 OK",
         "2 Subscription-State headers; the first is used"),
    ],
)
def test_read_refer_notify_with_warnings(headers: Headers, body: bytes, warning: str) -> None:
    content = read_refer_notify(headers, body)
    assert len(content.warnings) == 1 and warning in content.warnings[0], content.warnings


@pytest.mark.parametrize(
    ("headers", "body", "error", "message"),
    [
        (notify_headers(event=None), b"SIP/2.0 200 OK", BadEvent, "no Event header"),
        (notify_headers(event="presence"), b"SIP/2.0 200 OK", BadEvent, "not the refer"),
        (notify_headers(event="re@fer"), b"SIP/2.0 200 OK", BadEvent, "no readable value"),
        (notify_headers(state="act@ve"), b"SIP/2.0 200 OK", SipFragError, "no readable value"),
        (notify_headers(("Subscription-State", "active")), b"SIP/2.0 200 OK", SipFragError,
         "conflicting Subscription-State headers"),
        (notify_headers(), b"this is not a sipfrag", SipFragError, "no status line"),
    ],
)
def test_read_refer_notify_refused(headers: Headers, body: bytes, error: type[SipFragError],
                                   message: str) -> None:
    with pytest.raises(error, match=message) as info:
        read_refer_notify(headers, body)
    assert info.value.status == (489 if error is BadEvent else 400)


@pytest.mark.parametrize(
    "value",
    ["active" + ";" * 60_000, "active" + ";expires=1" * 6_000, "active" + ";b@d" * 10_000,
     "refer" + ";id" * 20_000],
)
def test_a_header_full_of_junk_is_read_in_bounded_time_with_bounded_warnings(value: str) -> None:
    parse = parse_event if value.startswith("refer") else parse_subscription_state
    _, warnings = parse(value)
    assert 1 <= len(warnings) <= 8 and sum(map(len, warnings)) < 1_000


def test_parameters_past_the_64th_are_not_read() -> None:
    state, warnings = parse_subscription_state("terminated" + ";x" * 63 + ";reason=noresource")
    assert state == SubscriptionState("terminated", "noresource") and warnings == ()
    state, warnings = parse_subscription_state("terminated" + ";x" * 64 + ";reason=noresource")
    assert state == SubscriptionState("terminated")
    assert warnings == ("Subscription-State: more than 64 parameters; the rest not read",)


_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x17F), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.just("refer"), _HEADER_TEXT.map(lambda t: "refer" + t)),
       st.lists(st.one_of(_HEADER_TEXT, st.sampled_from(["active", "terminated;reason=x"])),
                max_size=3),
       st.one_of(st.none(), _HEADER_TEXT), st.binary(max_size=200))
def test_read_refer_notify_takes_or_refuses_never_anything_else(
        event: str | None, states: list[str], ctype: str | None, body: bytes) -> None:
    headers = notify_headers(*(("Subscription-State", s) for s in states), event=event,
                             state=None, ctype=ctype)
    try:
        content = read_refer_notify(headers, body)
    except SipFragError as exc:
        assert exc.status in (400, 489) and len(exc.reason) < 300
        return
    assert len(content.warnings) <= 8
    assert (content.state is None) is (not states)
    assert content.frag is None or 100 <= content.frag.status <= 699
