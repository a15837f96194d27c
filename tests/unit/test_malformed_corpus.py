"""The malformed-message corpus at the message layer, and fuzzing around it.

Nothing that comes off the wire may raise anything but ParseError or SipError, and every
SipError a request's `validate()` raises must turn into a response we can send.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipbridge.sip.errors import MessageTooLarge, ParseError, SipError
from sipbridge.sip.message import (
    MAX_HEADERS,
    Request,
    Response,
    StreamFramer,
    parse_message,
    response_to,
)
from tests.unit.corpus import CORPUS, CorpusEntry, Expected


def outcome(data: bytes) -> Expected:
    """What the message layer makes of `data`, in the corpus's terms (see corpus.py)."""
    try:
        msg = parse_message(data)
    except MessageTooLarge:
        head = _head(data)
        return 513 if isinstance(head, Request) else "drop"
    except ParseError:
        return "drop"
    try:
        msg.validate()
    except SipError as exc:
        return "drop" if isinstance(msg, Response) else exc.status
    return "valid"


def _head(data: bytes) -> Request | Response | None:
    """An oversized message's head on its own, as the server reads it to answer 513."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    try:
        return parse_message(data[: end + 4])
    except ParseError:
        return None


def _answerable(data: bytes, status: int) -> tuple[Request, str]:
    """The request to answer and the reason phrase the layer gives for `status`."""
    try:
        req = parse_message(data)
    except MessageTooLarge as exc:
        head = _head(data)
        assert isinstance(head, Request)
        return head, exc.reason
    assert isinstance(req, Request)
    with pytest.raises(SipError) as info:
        req.validate()
    assert info.value.status == status
    return req, info.value.reason


def _check_response(req: Request, status: int, reason: str) -> Response:
    """response_to must give bytes that parse back to the same status and reason."""
    resp = parse_message(response_to(req, status, reason, to_tag="z9corpus").to_bytes())
    assert isinstance(resp, Response)
    assert resp.status == status
    assert resp.reason == reason and reason.strip()
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    for name in ("From", "Call-ID", "CSeq"):
        assert resp.headers.get(name) == req.headers.get(name)
    return resp


def test_corpus_shape() -> None:
    names = [e.name for e in CORPUS]
    assert len(names) >= 45
    assert len(set(names)) == len(names)
    for entry in CORPUS:
        assert isinstance(entry, CorpusEntry) and isinstance(entry.data, bytes)
        assert entry.expected in ("drop", "valid") or (
            isinstance(entry.expected, int) and 400 <= entry.expected <= 599
        )
    counts = Counter(str(e.expected) for e in CORPUS)
    assert counts["valid"] >= 15 and counts["drop"] >= 10 and counts["400"] >= 15
    assert {"416", "483", "505", "513"} <= set(counts)


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_corpus_outcome(entry: CorpusEntry) -> None:
    assert outcome(entry.data) == entry.expected, entry.note


@pytest.mark.parametrize(
    "entry", [e for e in CORPUS if isinstance(e.expected, int)], ids=lambda e: e.name
)
def test_corpus_errors_can_be_answered(entry: CorpusEntry) -> None:
    assert isinstance(entry.expected, int)
    req, reason = _answerable(entry.data, entry.expected)
    _check_response(req, entry.expected, reason)


def test_rfc4475_details() -> None:
    by_name = {e.name: e for e in CORPUS}
    wsinv = parse_message(by_name["wsinv"].data)
    assert isinstance(wsinv, Request)
    assert wsinv.max_forwards == 68 and wsinv.cseq.seq == 9
    assert [v.host for v in wsinv.vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert wsinv.to.tag == "1918181833n"
    assert wsinv.from_.display == r'"J Rosenberg \\\""'
    assert wsinv.contacts[0].param("q") == "0.33"
    assert wsinv.headers.get("Subject") == ""
    assert wsinv.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    dblreq = parse_message(by_name["dblreq"].data)
    assert dblreq.body == b"" and dblreq.headers.get("Call-ID").startswith("dblreq.0ha0")  # type: ignore[union-attr]
    esc02 = parse_message(by_name["esc02"].data)
    assert isinstance(esc02, Request) and esc02.method == "RE%47IST%45R"
    assert len(esc02.contacts) == 2  # C%6Fntact is another header
    longreq = parse_message(by_name["longreq"].data)
    assert len(longreq.vias) == 34
    mpart = parse_message(by_name["mpart01"].data)
    assert mpart.body.endswith(b"--7a9cbec02ceef655--\r\n") and b"\x00" in mpart.body
    semiuri = parse_message(by_name["semiuri"].data)
    assert isinstance(semiuri, Request) and semiuri.uri.user == "user;par=u%40example.net"  # type: ignore[union-attr]


# ---- fuzzing ---------------------------------------------------------------------------

SEED = next(e.data for e in CORPUS if e.name == "wsinv")
PLAIN = (
    b"INVITE sip:bob@example.com;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-fuzz;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice \\"A\\"" <sip:alice@example.com>;tag=a1\r\n'
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: fuzz@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.1:5060>;expires=60\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:[2001:db8::1];lr>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n\r\nv=0\n"
)
_ATOMS = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"@",
    b"?",
    b"=",
    b"[",
    b"]",
    b"%",
    b"/",
    b"\x00",
    b"\xff",
    b"\xc2\xb2",
    b"0",
    b"9" * 12,
    b"-1",
    b"SIP/2.0",
    b"sip:",
    b"tel:",
    b"mailto:",
    b"l: ",
    b"Content-Length: ",
    b"Via: ",
    b"tag=",
    b"branch=",
    b"rport",
    b"\r\n\r\n",
    b"\r\n ",
]


def _exercise(data: bytes) -> None:
    """Parse and validate as the server does; only ParseError or SipError may come out."""
    try:
        msg = parse_message(data)
    except ParseError:
        return
    try:
        msg.validate()
    except SipError as exc:
        assert isinstance(exc.status, int) and exc.reason
        if isinstance(msg, Request):
            _check_response(msg, exc.status, exc.reason)
        return
    # A valid message: every typed view a handler may touch works or raises SipError.
    for view in ("record_routes", "contacts", "top_via", "content_type"):
        with contextlib.suppress(SipError):
            getattr(msg, view)
    _ = msg.top_via.rport, msg.top_via.received, msg.to.tag, msg.from_.tag
    if isinstance(msg, Request):
        _check_response(msg, 200, "OK")
    if len(msg.headers) < MAX_HEADERS:  # to_bytes() may add a Content-Length line
        assert parse_message(msg.to_bytes()).body == msg.body


@st.composite
def mutants(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([PLAIN, SEED])))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "atom", "dup-line", "cut"]))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "atom":
            data[pos:pos] = draw(st.sampled_from(_ATOMS))
        elif op == "dup-line":
            start = data.rfind(b"\n", 0, pos) + 1
            end = data.find(b"\n", pos)
            if end > 0:
                data[end + 1 : end + 1] = data[start : end + 1]
        elif op == "cut":
            del data[pos:]
    return bytes(data)


_FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _exercise(data)


_HEADERS = [
    b"Via",
    b"From",
    b"To",
    b"Call-ID",
    b"CSeq",
    b"Contact",
    b"Record-Route",
    b"Content-Length",
    b"Max-Forwards",
]


@_FUZZ
@given(
    st.lists(st.sampled_from(_ATOMS) | st.binary(max_size=4), max_size=40).map(b"".join),
    st.sampled_from(_HEADERS),
)
def test_fuzz_sip_shaped_noise(noise: bytes, header: bytes) -> None:
    _exercise(b"OPTIONS sip:a@b SIP/2.0\r\n" + noise + b"\r\n\r\n")
    _exercise(b"INVITE " + noise + b" SIP/2.0\r\n" + PLAIN.split(b"\r\n", 1)[1])
    name = b"\r\n" + header + b": "
    _exercise(PLAIN.replace(name, name + noise, 1))  # noise before a header's value
    _exercise(PLAIN.replace(name, name + noise + b"\r\nX-Y: ", 1))  # noise as its value


@_FUZZ
@given(mutants())
def test_fuzz_mutated_invites(data: bytes) -> None:
    _exercise(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(mutants() | st.binary(max_size=200), max_size=4), st.integers(1, 64))
def test_fuzz_stream_framer(chunks: list[bytes], size: int) -> None:
    stream = b"".join(chunks)
    framer = StreamFramer(max_size=4096)
    try:
        for i in range(0, len(stream), size):
            for message in framer.feed(stream[i : i + size]):
                _exercise(message)
    except ParseError:
        pass
