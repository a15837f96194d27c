"""Bounded fuzzing of every parser a peer's bytes reach, with a fixed budget.

Each target feeds generated input (random bytes and text, and real messages from the
corpora mutated: bytes flipped, inserted and deleted, lines repeated and dropped, lengths
lied about, messages spliced) to one parser. The property: the input either parses or
raises that layer's own error (SipError and its kin for SIP, SDP, sipfrag, URIs and
headers; RtpError for RTP and RTCP; StunError for STUN; ValueError for a telephone-event),
never any other exception; and where a parser has a writer, what parsed writes back to
bytes that parse to the same thing.

The runs are derandomized (the same examples every run) and bounded: FUZZ_EXAMPLES
examples per target (default 150: the file runs in about 3 s here); set it higher for a
longer hunt, e.g. FUZZ_EXAMPLES=5000 (about 90 s), and FUZZ_RANDOM=1 to draw new examples
on each run instead of the same ones.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipbridge.media.dtmf import parse_event as parse_telephone_event
from sipbridge.media.rtp import RtpError, parse_rtcp, parse_rtp
from sipbridge.media.stun import (
    BINDING,
    REQUEST,
    StunError,
    binding_response,
    build_stun,
    parse_stun,
)
from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.auth import parse_auth_params, parse_challenge
from sipbridge.sip.errors import SipError
from sipbridge.sip.events import IncomingCall
from sipbridge.sip.headers import parse_cseq, parse_name_addr, parse_via, split_list
from sipbridge.sip.message import Request, Response, StreamFramer, parse_message
from sipbridge.sip.sdp import answer_offer, parse_sdp
from sipbridge.sip.subscription import (
    parse_event,
    parse_sipfrag,
    parse_subscription_state,
    read_refer_notify,
)
from sipbridge.sip.transaction import TimerConfig
from sipbridge.sip.ua import UaConfig, UserAgent
from sipbridge.sip.uri import parse_uri
from tests.unit import interop_corpus
from tests.unit.corpus import CORPUS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
fuzz = settings(
    max_examples=EXAMPLES,
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- seeds ----------------------------------------------------------------------------

_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
    b"m=audio 7078 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    b"m=video 9000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
)
_INVITE = (
    b"INVITE sip:agent@192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKfuzz1;rport\r\nMax-Forwards: 70\r\n"
    b'From: "Caller" <sip:caller@192.0.2.20>;tag=abc\r\nTo: <sip:agent@192.0.2.10>\r\n'
    b"Call-ID: fuzz-1@192.0.2.20\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@192.0.2.20:5060>\r\n"
    b"Record-Route: <sip:192.0.2.7;lr>\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(_SDP)).encode() + b"\r\n\r\n" + _SDP
)


def _corpus() -> list[bytes]:
    seeds = [e.data for e in CORPUS] + [_INVITE]
    seeds += [sample.data for sample in interop_corpus.NOTIFIES]
    seeds += [sample.data for sample in interop_corpus.REFER_ANSWERS]
    seeds += [sample.data for sample in interop_corpus.DIALOGS]
    return seeds


MESSAGES = _corpus()
SDPS = [_SDP] + [m.partition(b"\r\n\r\n")[2] for m in MESSAGES if b"\r\nv=0" in m]
SIPFRAGS = [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 200 OK\r\nContact: <sip:a@b>\r\n",
            b"SIP/2.0 486 Busy Here", b"SIP/2.0 603 Declined\r\nReason: SIP;cause=603\r\n\r\n"]
HEADER_VALUES = [
    '"Caller" <sip:caller@192.0.2.20;transport=tcp>;tag=abc;x="q;v"',
    "sip:+15551234@[2001:db8::1]:5061;user=phone?Subject=x",
    "tel:+1-555-123-4567;phone-context=example.com",
    "SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK1;rport;received=192.0.2.1",
    "terminated;reason=noresource;retry-after=30", "active;expires=3600", "refer;id=93",
    'Digest realm="gw", nonce="abc", algorithm=MD5, qop="auth,auth-int", opaque="x"',
    "314159 INVITE", "<sip:a@b;lr>, <sip:c@d;lr>",
]

_JUNK = [b"\x00", b"\r\n", b"\r", b"\n", b";", b":", b",", b"<", b">", b'"', b"%", b"\\",
         b"\xff", b"\xc3\x28", b" ", b"\t", b"=", b"[", b"]", b"@", b"/", b"?", b"\r\n\r\n",
         b"sip:", b";tag=", b"Content-Length: 9\r\n", b"9" * 12, b"-1", b"\xe2\x80\xa8"]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with up to 6 edits; each edit is shrinkable, so a failure shrinks to few."""
    buf = bytearray(draw(st.sampled_from(seeds)))
    for op, where, arg in draw(st.lists(
        st.tuples(st.integers(0, 8), st.integers(0, 1 << 16),
                  st.one_of(st.sampled_from(_JUNK), st.binary(max_size=12))),
        max_size=6,
    )):
        pos = where % (len(buf) + 1)
        if op == 0 and buf:  # overwrite bytes
            buf[pos:pos + len(arg)] = arg
        elif op == 1:  # truncate
            del buf[pos:]
        elif op == 2:  # insert
            buf[pos:pos] = arg
        elif op == 3:  # delete a span
            del buf[pos:pos + 1 + len(arg) * 3]
        elif op in (4, 5):  # repeat or drop a line
            lines = bytes(buf).split(b"\n")
            i = where % len(lines)
            if op == 4:
                lines[i:i] = [lines[i]] * (1 + len(arg))
            else:
                del lines[i]
            buf = bytearray(b"\n".join(lines))
        elif op == 6:  # replace a header's value
            lines = bytes(buf).split(b"\r\n")
            i = where % len(lines)
            name, colon, _ = lines[i].partition(b":")
            if colon:
                lines[i] = name + b": " + arg
            buf = bytearray(b"\r\n".join(lines))
        elif op == 7:  # swap case of a span (header names, methods, schemes)
            buf[pos:pos + 8] = bytes(buf[pos:pos + 8]).swapcase()
        else:  # splice another seed's tail
            other = draw(st.sampled_from(seeds))
            buf = buf[:pos] + other[where % (len(other) + 1):]
    return bytes(buf)


def sip_input(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(seeds), st.binary(max_size=300))


def text_input(seeds: list[str]) -> st.SearchStrategy[str]:
    as_bytes = [s.encode() for s in seeds]
    return st.one_of(
        mutated(as_bytes).map(lambda b: b.decode("utf-8", "replace")),
        st.text(max_size=80),
    )


def only(error: type[BaseException] | tuple[type[BaseException], ...],
         fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(...), or None when it raised `error`: any other exception fails the test."""
    try:
        return fn(*args, **kwargs)
    except error:
        return None


# --- SIP messages ---------------------------------------------------------------------


def read_everything(msg: Request | Response) -> None:
    """Every accessor the SIP core calls on a message a peer sent."""
    only(SipError, msg.validate)
    for name in ("vias", "top_via", "from_", "to", "call_id", "cseq", "contacts",
                 "record_routes", "content_type"):
        only(SipError, getattr, msg, name)
    if isinstance(msg, Request):
        only(SipError, getattr, msg, "max_forwards")
    for name in ("Route", "Record-Route", "Contact", "Refer-To", "Referred-By"):
        for value in msg.headers.get_all(name):
            for item in only(SipError, split_list, value) or ():
                only(SipError, parse_name_addr, item, name)
    for name in ("Authorization", "Proxy-Authorization", "WWW-Authenticate"):
        for value in msg.headers.get_all(name):
            only(SipError, parse_auth_params, value)
            only(SipError, parse_challenge, value)


@fuzz
@given(sip_input(MESSAGES))
def test_message_parser_raises_only_parse_errors(data: bytes) -> None:
    msg = only(SipError, parse_message, data)
    if msg is None:
        return
    read_everything(msg)
    # Round trip: a request that validates (or any response) writes back to a message
    # that parses to the same start line, headers and body (Content-Length restated).
    if isinstance(msg, Request):
        try:
            msg.validate()
        except SipError:
            return
    again = parse_message(msg.to_bytes(), max_size=1 << 20)
    assert type(again) is type(msg)
    def fields(m: Request | Response) -> list[tuple[str, str]]:
        return [h for h in m.headers if h[0] != "Content-Length"]  # written last, recomputed

    assert fields(again) == fields(msg)
    assert again.body == msg.body
    if isinstance(msg, Response):
        assert isinstance(again, Response)
        assert (again.status, again.reason) == (msg.status, msg.reason)
    else:
        assert isinstance(again, Request)
        assert (again.method, str(again.uri)) == (msg.method, str(msg.uri))


@fuzz
@given(st.lists(sip_input(MESSAGES), min_size=1, max_size=4), st.lists(st.integers(0, 4000)))
def test_stream_framer_raises_only_parse_errors(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(messages)
    framer = StreamFramer()
    prev = 0
    for cut in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        for frame in only(SipError, framer.feed, stream[prev:cut]) or ():
            assert len(frame) <= 65535
            only(SipError, parse_message, frame)
        prev = cut


def _user_agent() -> UserAgent:
    counter = itertools.count(1)
    return UserAgent(UaConfig(timers=TimerConfig()), AccessGuard(["192.0.2.0/24"]),
                     token=lambda: f"tok{next(counter)}")


@settings(fuzz, max_examples=max(1, EXAMPLES // 3))
@given(st.lists(sip_input(MESSAGES), min_size=1, max_size=8))
def test_user_agent_takes_any_datagram_without_an_internal_error(datagrams: list[bytes]) -> None:
    """The SIP core end to end: messages in, answers and timers out, no fault of ours.
    Every INVITE that makes a call is answered with the SDP negotiation's result."""
    ua = _user_agent()
    now = 0.0
    source = Address("udp", "192.0.2.20", 5060)
    for data in datagrams:
        now += 0.1
        ua.receive(data, source, now)
        for event in ua.events():
            if isinstance(event, IncomingCall):
                body = event.request.body
                offer = only(SipError, parse_sdp, body) if body else None
                if offer is not None:
                    negotiated = only(SipError, answer_offer, offer, local_address="192.0.2.10",
                                      local_port=20000, session_id=1, session_version=1)
                    if negotiated is not None:
                        ua.answer(event.leg_id, negotiated[0].to_bytes(), now)
                        continue
                ua.reject(event.leg_id, 488, now)
        for out, _ in ua.outgoing():
            parse_message(out)  # whatever we send parses
    while ua.deadline is not None and now < 300:
        now = max(now, ua.deadline)
        ua.handle_timer(now)
        ua.events()
        ua.outgoing()
    assert ua.stats["internal_errors"] == 0


# --- SDP --------------------------------------------------------------------------------


@fuzz
@given(st.one_of(mutated(SDPS), st.binary(max_size=200)))
def test_sdp_parser_and_answer_raise_only_sdp_errors(data: bytes) -> None:
    sdp = only(SipError, parse_sdp, data)
    if sdp is None:
        return
    again = parse_sdp(sdp.to_bytes())
    assert again == sdp
    answered = only(SipError, answer_offer, sdp, local_address="192.0.2.10", local_port=20000,
                    session_id=1, session_version=1)
    if answered is not None:
        answer, negotiated = answered
        assert parse_sdp(answer.to_bytes()) == answer
        assert len(answer.media) == len(sdp.media)
        assert negotiated.codec.name.upper() in ("PCMU", "PCMA")


# --- sipfrag, NOTIFY, Subscription-State, Event -------------------------------------


NOTIFIES = [s.data for s in interop_corpus.NOTIFIES]


@fuzz
@given(st.one_of(mutated(SIPFRAGS), st.binary(max_size=200)))
def test_sipfrag_parser_raises_only_sipfrag_errors(body: bytes) -> None:
    parsed = only(SipError, parse_sipfrag, body)
    if parsed is not None:
        frag, warnings = parsed
        assert 100 <= frag.status <= 699
        assert len(warnings) <= 8


@fuzz
@given(sip_input(NOTIFIES))
def test_refer_notify_reader_raises_only_sip_errors(data: bytes) -> None:
    msg = only(SipError, parse_message, data)
    if msg is None:
        return
    notify = only(SipError, read_refer_notify, msg.headers, msg.body)
    if notify is not None:
        assert len(notify.warnings) <= 8


@fuzz
@given(text_input(HEADER_VALUES))
def test_subscription_state_and_event_raise_only_sip_errors(value: str) -> None:
    state = only(SipError, parse_subscription_state, value)
    if state is not None:
        assert len(state[1]) <= 8
    event = only(SipError, parse_event, value)
    if event is not None:
        assert len(event[1]) <= 8


# --- URIs and headers -----------------------------------------------------------------


@fuzz
@given(text_input(HEADER_VALUES))
def test_uri_and_header_parsers_raise_only_parse_errors(value: str) -> None:
    uri = only(SipError, parse_uri, value)
    if uri is not None:
        assert str(parse_uri(str(uri))) == str(uri)
    addr = only(SipError, parse_name_addr, value)
    if addr is not None:
        assert str(parse_name_addr(str(addr))) == str(addr)
    via = only(SipError, parse_via, value)
    if via is not None:
        assert parse_via(str(via)) == via
    cseq = only(SipError, parse_cseq, value)
    if cseq is not None:
        assert parse_cseq(str(cseq)) == cseq
    only(SipError, split_list, value)
    only(SipError, parse_auth_params, value)
    only(SipError, parse_challenge, value)


# --- RTP, RTCP, STUN, telephone-event ------------------------------------------------

_RTP = bytes.fromhex("80000001000000a0deadbeef") + b"\xff" * 160
# CSRCs, a header extension and padding: each a length field to lie with.
_RTP_FULL = bytes.fromhex("b2650002000001400badcafe" "00000001" "00000002" "bede0001" "10ff0000"
                          ) + b"\xd5" * 20 + bytes.fromhex("00000004")
_RTCP = bytes.fromhex(
    "81c8000cdeadbeef" "e6f0a1b20000000000000640000000320000190000000001"
    "cafebabe00000000000000010000000000000000000000000000000000000000"
    "81ca0003deadbeef010474657374000000"
)
_STUN = build_stun(BINDING | REQUEST, b"0123456789ab", bytes.fromhex("8022000474657374"),
                   fingerprint=True)


@fuzz
@given(st.one_of(
    mutated([_RTP, _RTP_FULL, _RTCP]),
    st.builds(lambda seed, n: seed[:n], st.sampled_from([_RTP_FULL, _RTCP]), st.integers(0, 80)),
    st.binary(max_size=120),
))
def test_rtp_and_rtcp_parsers_raise_only_rtp_errors(data: bytes) -> None:
    packet = only(RtpError, parse_rtp, data)
    if packet is not None:
        only(ValueError, parse_telephone_event, packet.payload)
    only(RtpError, parse_rtcp, data)


@fuzz
@given(st.one_of(
    mutated([_STUN]),
    st.builds(lambda n: _STUN[:n], st.integers(0, len(_STUN))),
    st.binary(max_size=120),
))
def test_stun_parser_raises_only_stun_errors(data: bytes) -> None:
    message = only(StunError, parse_stun, data)
    if message is not None:
        only(StunError, binding_response, message, "192.0.2.10", 20000)
