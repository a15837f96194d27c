"""SIP messages: parse bytes into typed requests and responses, and serialise them back.

RFC 3261 section 7 (message format), 18.3 (framing), 20 (header fields). Parsing is
in two steps: `parse_message` frames the message (start line, headers, body) and
`Request.validate()` checks the mandatory headers, so a request that frames but is
broken can still be answered with a precise 4xx (RFC 3261 8.2.6.2 needs only the raw
Via, From, To, Call-ID and CSeq values to build a response).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from sipbridge.sip.errors import MessageTooLarge, ParseError, SipError
from sipbridge.sip.headers import (
    LIST_HEADERS,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    is_token,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from sipbridge.sip.uri import SipUri, Uri, parse_uri

SIP_VERSION = "SIP/2.0"
DEFAULT_MAX_SIZE = 65_535
MAX_HEADERS = 200

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9]) (.*)$")
_VERSION = re.compile(r"^SIP/[0-9]+\.[0-9]+$", re.IGNORECASE)  # RFC 3261 7.1, case-insensitive
_HEADER_NAME_OK = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
# Header names from the wire already checked against _HEADER_NAME_OK, with canonical_name()'s
# answer; bounded because the names come from peers.
_WIRE_NAMES: dict[str, tuple[str, str]] = {}


def reason_phrase(status: int) -> str:
    return REASONS.get(status, "Unknown")


class Headers:
    """An ordered, case-insensitive multi-map of header fields; compact names expanded."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # Each item: (lower-case key, display name, value).
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        key, display = canonical_name(name)
        self._items.append((key, display, value))

    def get(self, name: str) -> str | None:
        """The first value of a header, or None."""
        key = canonical_name(name)[0]
        for k, _, v in self._items:
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, comma-joined list headers split (RFC 3261 7.3.1)."""
        key = canonical_name(name)[0]
        values = [v for k, _, v in self._items if k == key]
        if key in LIST_HEADERS:
            return [item for v in values for item in split_list(v)]
        return values

    def set(self, name: str, value: str) -> None:
        """Replace every value of a header with one value, kept at the first one's place."""
        key, display = canonical_name(name)
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, display, value)
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[0] != key]
                return
        self._items.append((key, display, value))

    def remove(self, name: str) -> None:
        key = canonical_name(name)[0]
        self._items = [it for it in self._items if it[0] != key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((display, value) for _, display, value in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h


class Message:
    """What requests and responses share: headers, body and typed views of common headers.

    The typed views are parsed on first use and kept in plain attributes (None: not yet),
    which compiled code (setup.py) reads as fast as a slot."""

    headers: Headers
    body: bytes
    # The serialised form of the first header items, when they were copied from a request
    # whose answers share them (`response_to`): (those items, their text).
    _head: tuple[list[tuple[str, str, str]], str] | None = None
    _vias: tuple[Via, ...] | None = None
    _from: NameAddr | None = None
    _to: NameAddr | None = None
    _call_id: str | None = None
    _cseq: CSeq | None = None
    _contacts: tuple[NameAddr, ...] | None = None
    _record_routes: tuple[NameAddr, ...] | None = None

    def __init__(self, headers: Headers | Iterable[tuple[str, str]], body: bytes) -> None:
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise; Content-Length always states the real body length (RFC 3261 20.14)."""
        items = self.headers._items
        head = ""
        if self._head is not None:
            copied, text = self._head
            # Used only while the headers still start with the very items it was made of.
            if items[: len(copied)] == copied:
                head, items = text, items[len(copied) :]
        rest = "".join([f"{display}: {value}\r\n" for _, display, value in items
                        if display != "Content-Length"])
        return (f"{self._start_line()}\r\n{head}{rest}Content-Length: {len(self.body)}"
                "\r\n\r\n").encode() + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    # Typed views, parsed on first use and kept (parse once, at the edge).
    @property
    def vias(self) -> tuple[Via, ...]:
        vias = self._vias
        if vias is None:
            values = self.headers.get_all("Via")
            if not values:
                raise ParseError("missing Via header")
            vias = self._vias = tuple([parse_via(v) for v in values])
        return vias

    def set_vias(self, vias: tuple[Via, ...]) -> None:
        """The parsed Vias as they now are (the caller changed the Via headers to match)."""
        self._vias = vias

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def from_(self) -> NameAddr:
        value = self._from
        if value is None:
            value = self._from = parse_name_addr(self._one("From"), "From")
        return value

    @property
    def to(self) -> NameAddr:
        value = self._to
        if value is None:
            value = self._to = parse_name_addr(self._one("To"), "To")
        return value

    @property
    def call_id(self) -> str:
        value = self._call_id
        if value is None:
            value = self._one("Call-ID").strip()
            if not value or len(value.split(maxsplit=1)) != 1:  # word ["@" word], no LWS
                raise ParseError("invalid Call-ID")
            self._call_id = value
        return value

    @property
    def cseq(self) -> CSeq:
        value = self._cseq
        if value is None:
            value = self._cseq = parse_cseq(self._one("CSeq"))
        return value

    @property
    def contacts(self) -> tuple[NameAddr, ...]:
        value = self._contacts
        if value is None:
            values = self.headers.get_all("Contact")
            value = () if values == ["*"] else tuple(
                [parse_name_addr(v, "Contact") for v in values])
            self._contacts = value
        return value

    @property
    def record_routes(self) -> tuple[NameAddr, ...]:
        value = self._record_routes
        if value is None:
            value = self._record_routes = tuple(
                [parse_name_addr(v, "Record-Route") for v in self.headers.get_all("Record-Route")])
        return value

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";")[0].strip().lower() if value else None

    def _one(self, name: str) -> str:
        key = name.lower()
        values = [v for k, _, v in self.headers._items if k == key]
        if not values:
            raise ParseError(f"missing {name} header")
        if len(values) > 1:
            raise ParseError(f"more than one {name} header")
        return values[0]


def _max_forwards(value: str | None) -> int:
    """A Max-Forwards header's value; 70 when there is none."""
    if value is None:
        return 70
    value = value.strip()
    # 1*DIGIT with leading zeros allowed (RFC 4475 3.1.1.1); isascii because
    # str.isdigit() also accepts digits such as "\u00b2" that int() rejects.
    if not value.isascii() or not value.isdigit() or len(value) > 10 or int(value) > 255:
        raise ParseError("invalid Max-Forwards")
    return int(value)


class Request(Message):
    """A SIP request (RFC 3261 7.1)."""

    start_line_error: SipError | None = None  # set when the start line cannot be served
    _max_forwards: int | None = None
    # The header items `response_to` copies, by (To tag, a 100's or not), remembered while
    # the request's headers stay the same items (`_response_head`).
    _response_heads: tuple[list[tuple[str, str, str]],
                           dict[tuple[str | None, bool],
                                tuple[list[tuple[str, str, str]], str]]] | None = None

    def __init__(
        self,
        method: str,
        uri: Uri,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    @property
    def max_forwards(self) -> int:
        value = self._max_forwards
        if value is None:
            value = self._max_forwards = _max_forwards(self.headers.get("Max-Forwards"))
        return value

    def validate(self) -> None:
        """Check what RFC 3261 8.1.1 makes mandatory; raises SipError with the answer to give."""
        _ = self.vias, self.from_, self.to, self.call_id
        if self.cseq.method != self.method:
            raise ParseError("CSeq method does not match the request method")
        if self.max_forwards == 0 and self.method != "OPTIONS":
            raise SipError("Too Many Hops", 483)
        _ = self.contacts
        length = self.headers.get("Content-Length")
        if length is not None and _content_length(length) != len(self.body):
            raise ParseError("Content-Length does not match the body")


class Response(Message):
    """A SIP response (RFC 3261 7.2)."""

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason if reason is not None else reason_phrase(status)

    def _start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    def validate(self) -> None:
        _ = self.vias, self.from_, self.to, self.call_id, self.cseq


def response_to(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to `request` (RFC 3261 8.2.6.2): Via, From, To, Call-ID, CSeq copied.

    Works from the raw header values, so it can answer a request whose headers do not
    all parse. `to_tag` is added to To unless it already carries a tag.

    The copied headers, and their serialised text, are made once per request and To tag:
    an INVITE's 180, 200 (and its retransmissions) share them (`Message.to_bytes`).
    """
    head = _response_head(request, to_tag, status == 100)
    h = Headers()
    h._items = list(head[0])
    for name, value in headers:
        h.add(name, value)
    response = Response(status, reason, h, body)
    response._head = head
    return response


_COPIED = frozenset({"via", "from", "to", "call-id", "cseq"})


def _response_head(request: Request, to_tag: str | None, trying: bool
                   ) -> tuple[list[tuple[str, str, str]], str]:
    """The header items a response to `request` copies (RFC 3261 8.2.6.2), with the To tag,
    and Timestamp in a 100 (8.2.6.1); remembered on the request while its headers stay
    the same items."""
    items = request.headers._items
    memo = request._response_heads
    if memo is None or memo[0] != items:
        memo = request._response_heads = (list(items), {})
    key = (to_tag, trying)
    found: tuple[list[tuple[str, str, str]], str] | None = memo[1].get(key)
    if found is not None:
        return found
    copied: list[tuple[str, str, str]] = []
    for item in items:
        name = item[0]
        if name in _COPIED:
            if name == "to" and to_tag is not None and not _has_tag(item[2]):
                item = (name, item[1], f"{item[2]};tag={to_tag}")
            copied.append(item)
    if trying:
        copied += [item for item in items if item[0] == "timestamp"][:1]
    text = "".join([f"{display}: {value}\r\n" for _, display, value in copied])
    found = (copied, text)
    memo[1][key] = found
    return found


def _has_tag(to_value: str) -> bool:
    """Whether a raw To value has a tag header parameter; a tag inside <uri> is a URI
    parameter and does not count (RFC 3261 20.10)."""
    try:
        return parse_name_addr(to_value, "To").tag is not None
    except SipError:  # unparseable: the request gets a 4xx anyway, so guess from the text
        return ";tag=" in to_value.replace(" ", "").lower()


def _content_length(value: str) -> int:
    """Content-Length = 1*DIGIT (RFC 3261 20.14); ASCII digits only, bounded."""
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise ParseError(f"invalid Content-Length {value[:20]!r}")
    return int(value)


def parse_message(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Request | Response:
    """Frame and parse one SIP message from a datagram or a framed stream chunk.

    Raises ParseError (or MessageTooLarge) when the bytes are not a SIP message. Whether a
    request's headers are right is left to `validate()`, so the caller can still answer:
    that includes a request whose Content-Length does not frame the datagram, which
    RFC 3261 18.3 answers with 400, and a request line with stray whitespace (RFC 4475
    3.1.2.8 to 3.1.2.10).
    """
    if len(data) > max_size:
        raise MessageTooLarge(f"message of {len(data)} bytes is over the {max_size}-byte limit")
    head, body = _split(data)
    lines = head.split("\n")
    start = lines[0].rstrip("\r")
    headers, length_at = _parse_headers(lines)
    body, length_error = _frame_body(headers, length_at, body)
    if start.startswith("SIP/"):
        m = _STATUS_LINE.match(start)
        if not m:
            raise ParseError(f"malformed status line {start[:60]!r}")
        if length_error is not None:
            raise length_error  # RFC 3261 18.3: such a response is discarded
        return Response(int(m.group(1)), m.group(2), headers, body)
    return _request(start, headers, body, length_error)


def _split(data: bytes) -> tuple[str, bytes]:
    """The header section (decoded) and the bytes after it."""
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # RFC 3261 7.5: ignore CRLFs before the start line
        if not data:
            raise ParseError("empty message")
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = data.find(b"\n\n")
        sep = 2
        if end < 0:
            if data.endswith((b"\r\n", b"\n")):
                end, sep = len(data), 0
            else:
                raise ParseError("message has no end of headers")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("message headers are not UTF-8") from None
    return head, data[end + sep :]


_FOLD = (" ", "\t")


def _parse_headers(lines: list[str]) -> tuple[Headers, list[int]]:
    """The header fields after the start line, unfolded (RFC 3261 7.3.1), and where the
    Content-Length fields are among them."""
    headers = Headers()
    items = headers._items
    length_at: list[int] = []
    for raw in lines[1:]:
        line = raw.removesuffix("\r")
        if "\r" in line:
            # A bare CR would end the line for some peers: never let one into a header we
            # may echo back (Via, From, To, Call-ID, CSeq in responses).
            raise ParseError("bare CR in the header section")
        if line[:1] in _FOLD:
            if not items:
                raise ParseError("continuation line before the first header")
            folded = line.strip(" \t")
            if folded:  # RFC 3261 7.3.1: the fold and its LWS become one SP
                key, display, value = items[-1]
                items[-1] = (key, display, f"{value} {folded}" if value else folded)
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        known = _WIRE_NAMES.get(name) if colon else None
        if known is None:
            if not colon or not _HEADER_NAME_OK.match(name):
                raise ParseError(f"malformed header line {line[:60]!r}")
            known = canonical_name(name)
            if len(_WIRE_NAMES) < 4096:
                _WIRE_NAMES[name] = known
        if len(items) >= MAX_HEADERS:
            raise ParseError("too many header fields")
        if known[0] == "content-length":
            length_at.append(len(items))
        items.append((known[0], known[1], value.strip(" \t")))
    return headers, length_at


def _frame_body(headers: Headers, length_at: list[int], body: bytes
                ) -> tuple[bytes, ParseError | None]:
    """The body as Content-Length frames it (RFC 3261 18.3: bytes past it are discarded),
    or the whole of it and why Content-Length cannot frame it."""
    if not length_at:
        return body, None
    lengths = [headers._items[i][2] for i in length_at]  # after folding
    try:
        if len(lengths) > 1:
            raise ParseError("more than one Content-Length header")
        length = _content_length(lengths[0])
        if length > len(body):
            raise ParseError(f"Content-Length {length} is larger than the {len(body)}-byte body")
    except ParseError as exc:
        return body, exc
    return body[:length], None


def _request(start: str, headers: Headers, body: bytes, length_error: ParseError | None
             ) -> Request:
    """A request from its start line: a `_BadRequest` (answered 400/505 by `validate`)
    when it can still be answered, ParseError when it cannot."""
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        words = start.split()
        if len(words) >= 3 and is_token(words[0]) and _VERSION.match(words[-1]):
            error = ParseError("Malformed Request-Line")
            return _BadRequest(words[0], " ".join(words[1:-1]), headers, body, error)
        raise ParseError(f"malformed request line {start[:60]!r}")
    method, uri_text, version = parts
    if not is_token(method):
        raise ParseError(f"invalid method {method[:20]!r}")
    if version != SIP_VERSION and version.upper() != SIP_VERSION:
        if not _VERSION.match(version):
            raise ParseError(f"malformed request line {start[:60]!r}")
        return _BadRequest(method, uri_text, headers, body, SipError("Version Not Supported", 505))
    if length_error is not None:
        return _BadRequest(method, uri_text, headers, body, length_error)
    try:
        uri = parse_uri(uri_text)
    except SipError as exc:
        return _BadRequest(method, uri_text, headers, body, exc)
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 19.1.1 (table 1): headers are not allowed in a Request-URI (RFC 4475 3.1.2.11)
        error = ParseError("Request-URI must not have headers")
        return _BadRequest(method, uri_text, headers, body, error)
    return Request(method, uri, headers, body)


_NO_URI = SipUri("invalid")


class _BadRequest(Request):
    """A request that framed but cannot be served as it stands (its start line, Request-URI
    or Content-Length is wrong); `validate` raises the error to answer with."""

    def __init__(
        self, method: str, uri_text: str, headers: Headers, body: bytes, error: SipError
    ) -> None:
        super().__init__(method, _NO_URI, headers, body)
        self.uri_text = uri_text
        self.error = error
        self.start_line_error = error

    def _start_line(self) -> str:
        return f"{self.method} {self.uri_text} {SIP_VERSION}"

    def validate(self) -> None:
        raise self.error


def frame_length(head: bytes) -> int | None:
    """Content-Length from a stream message's header block (compact `l` too), or None."""
    length: int | None = None
    for m in _STREAM_LENGTH.finditer(head):
        value = m.group(1).strip()
        if not value.isdigit() or len(value) > 9:  # bytes.isdigit() is ASCII-only
            raise ParseError("invalid Content-Length in stream")
        if length is not None and int(value) != length:
            raise ParseError("conflicting Content-Length headers in stream")
        length = int(value)
    return length


# A Content-Length header line; a name after "\n" is never a folded continuation line.
_STREAM_LENGTH = re.compile(rb"\n(?:content-length|l)[ \t]*:([^\r\n]*)", re.IGNORECASE)


class StreamFramer:
    """Cut a TCP byte stream into SIP messages by Content-Length (RFC 3261 18.3)."""

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._scanned = 0  # bytes at the front of _buf known to hold no end of headers
        self._total: int | None = None  # size of the message at the front, once its head is in
        self._crlfs = 0  # CRLFs seen since the last message: two make a keep-alive ping
        self.keepalives = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete messages now available. Raises ParseError when
        the stream cannot be framed any more (the connection should then be closed).

        Work per call is proportional to the new bytes, so a peer that trickles a message
        one byte at a time costs linear, not quadratic, time."""
        self._buf += data
        out: list[bytes] = []
        while True:
            if self._total is None:
                if not self._skip_crlfs():
                    return out
                end = self._buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
                if end < 0:
                    if len(self._buf) > self.max_size:
                        raise MessageTooLarge("header block over the size limit")
                    self._scanned = len(self._buf)
                    return out
                # Missing Content-Length on a stream (RFC 3261 18.3 requires it): no body.
                total = end + 4 + (frame_length(bytes(self._buf[:end])) or 0)
                if total > self.max_size:
                    raise MessageTooLarge(
                        f"message of {total} bytes is over the {self.max_size}-byte limit"
                    )
                self._total = total
            if len(self._buf) < self._total:
                return out
            out.append(bytes(self._buf[: self._total]))
            del self._buf[: self._total]
            self._total = None
            self._scanned = 0

    def _skip_crlfs(self) -> bool:
        """Drop CRLFs before a message (RFC 3261 7.5), counting each CRLFCRLF as one
        keep-alive ping (RFC 5626 3.5.1) even when it arrives in pieces. False while
        nothing but (part of) a CRLF is buffered."""
        buf = self._buf
        i = 0
        while buf.startswith(b"\r\n", i):
            i += 2
            self._crlfs += 1
            if self._crlfs == 2:
                self.keepalives += 1
                self._crlfs = 0
        if i:
            del buf[:i]
        if not buf or buf == b"\r":
            return False
        self._crlfs = 0
        return True
