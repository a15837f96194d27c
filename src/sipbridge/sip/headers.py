"""Typed header values: name-addr, Via, CSeq, and the header-name tables (RFC 3261 7.3,
20, 25.1)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace

from sipbridge.sip.errors import ParseError, UnsupportedUriScheme
from sipbridge.sip.uri import Params, Uri, parse_host_port, parse_uri

# RFC 3261 7.3.3 and the registry of compact forms.
COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "y": "Identity",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
        "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
        "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "In-Reply-To",
        "Max-Forwards", "MIME-Version", "Min-Expires", "Organization", "P-Asserted-Identity",
        "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
        "Reason", "Record-Route", "Refer-To", "Referred-By", "Reply-To", "Require",
        "Retry-After", "Route", "RSeq", "Server", "Session-Expires", "Subject",
        "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent",
        "Via", "Warning", "WWW-Authenticate",
    )
}

# Headers whose values are comma-separated lists (RFC 3261 7.3.1): `get_all` splits them.
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "allow", "supported", "require",
        "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "content-encoding", "content-language", "in-reply-to",
    }
)

# Headers a UA writes itself on a request it sends (long and compact forms): a caller of
# the gateway's API or config may not set them.
UA_WRITTEN_HEADERS = frozenset({
    "via", "from", "to", "call-id", "cseq", "contact", "max-forwards", "content-length",
    "content-type", "authorization", "proxy-authorization", "route", "record-route",
    "allow", "user-agent", "f", "t", "i", "m", "v", "l", "c"})
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
# gen-value = token / host / quoted-string (RFC 3261 25.1); host adds ":" "[" "]" for IPv6.
_PARAM_VALUE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~:\[\]]+$")


_NAME_CACHE: dict[str, tuple[str, str]] = {}

# Parsed From, To, Contact, Route and Via values are kept for reuse: most repeat in every
# message of a call (From, Contact, Route) and across calls (a trunk's addresses). The
# caches are LRU and bounded, as peers choose the values, and values longer than
# CACHED_VALUE_MAX are parsed afresh, so a flood of long unique values costs at most
# HEADER_CACHE_SIZE * CACHED_VALUE_MAX characters. A hit is safe to share: NameAddr and
# Via are frozen and hold only str, int, frozen URIs and tuples.
HEADER_CACHE_SIZE = 1024
CACHED_VALUE_MAX = 512


def canonical_name(name: str) -> tuple[str, str]:
    """(lower-case key, display name) for a header name, expanding compact forms."""
    cached = _NAME_CACHE.get(name)
    if cached is not None:
        return cached
    result = _canonical_name(name)
    if len(_NAME_CACHE) < 4096:  # names come from peers: keep the cache bounded
        _NAME_CACHE[name] = result
    return result


def _canonical_name(name: str) -> tuple[str, str]:
    lname = name.lower()
    full = COMPACT.get(lname)
    if full is not None:
        return full.lower(), full
    return lname, _CANONICAL.get(lname, name)


def is_token(text: str) -> bool:
    return bool(_TOKEN.match(text))


def split_outside(text: str, sep: str, *, brackets: bool = False) -> tuple[list[str], bool]:
    """Split on `sep` outside quoted strings (and `<...>` when `brackets`); also says
    whether a quoted string was left open. Backslash escapes inside quotes are honoured
    (quoted-pair, RFC 3261 25.1)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif brackets and c == "<":
            depth += 1
        elif brackets and c == ">":
            depth = max(0, depth - 1)
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts, quoted


def quoted_string(text: str) -> str:
    """`text` as a quoted-string (RFC 3261 25.1): quotes and backslashes escaped as
    quoted-pairs, line ends and other control characters left out."""
    clean = "".join(c for c in text if c == "\t" or (c >= " " and c != "\x7f"))
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_list(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets (RFC 3261 7.3.1)."""
    if "," not in value:
        return [value.strip()] if value.strip() else []
    items, _ = split_outside(value, ",", brackets=True)
    return [item.strip() for item in items if item.strip()]


def _split_params(text: str, what: str) -> Params:
    """`;name[=value]` header parameters (generic-param, RFC 3261 25.1); quoted values kept."""
    out: list[tuple[str, str | None]] = []
    for part in _split_semicolons(text):
        part = part.strip()
        if not part:
            raise ParseError(f"empty parameter in {what}")
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not is_token(name):
            raise ParseError(f"invalid parameter name {name[:40]!r} in {what}")
        if sep:
            if not value:
                raise ParseError(f"parameter {name} has an empty value in {what}")
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    raise ParseError(f"unterminated quoted value in {what}")
            elif not _PARAM_VALUE.match(value):
                raise ParseError(f"invalid value for parameter {name} in {what}")
        out.append((name, value if sep else None))
    return tuple(out)


def _split_semicolons(text: str) -> list[str]:
    if '"' not in text:
        parts = text.split(";")
    else:
        parts, open_quote = split_outside(text, ";")
        if open_quote:
            raise ParseError("unterminated quoted string in parameters")
    return parts[1:] if text.startswith(";") else parts


def _get_param(params: Params, name: str) -> str | None:
    lname = name.lower()
    for k, v in params:
        if k.lower() == lname:
            return v
    return None


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """name-addr / addr-spec with header parameters: From, To, Contact, Route (RFC 3261 20.10)."""

    uri: Uri
    display: str | None = None
    params: Params = ()

    @property
    def tag(self) -> str | None:
        return _get_param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return _get_param(self.params, name)

    def with_tag(self, tag: str) -> NameAddr:
        keep = tuple((k, v) for k, v in self.params if k.lower() != "tag")
        return replace(self, params=(*keep, ("tag", tag)))

    def __str__(self) -> str:
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"


def parse_name_addr(value: str, what: str = "header") -> NameAddr:
    """Parse `"Name" <uri>;p=v`, `Name <uri>`, `<uri>` or a bare addr-spec with parameters.

    Answers from a bounded LRU cache of earlier answers (errors are not kept). The tag
    differs in every call while the rest repeats, so a value with one plain `;tag=` after
    its <uri> is parsed as its template (a fixed tag) and the tag put in."""
    if len(value) > CACHED_VALUE_MAX:
        return _parse_name_addr(value, what)
    found = _name_addr_from_template(value, what)
    return found if found is not None else _parse_name_addr_cached(value, what)


_TAG_AT = ";tag="
_TAG_STAND_IN = "0"


def _name_addr_from_template(value: str, what: str) -> NameAddr | None:
    """`value` parsed as its template, or None when that is not certain to give what
    `_parse_name_addr` gives: then it is parsed as it is."""
    at = value.find(_TAG_AT)
    if at < 0:
        return None
    # The tag must be a header parameter: after the <uri> (in an addr-spec every ";" is),
    # with no quoted-string after the <uri>, and "tag" nowhere else in the value.
    after = value.rfind(">") + 1
    if at < after or '"' in value[after:] or value.lower().count("tag") != 1:
        return None
    cut = _cut_param(value, at + len(_TAG_AT), _TAG_STAND_IN)
    if cut is None:
        return None
    template_value, tag = cut
    try:
        template = _parse_name_addr_cached(template_value, what)
    except ParseError:
        return None  # parsed as it is, for the error that names what is wrong
    params = _put_param(template.params, "tag", _TAG_STAND_IN, tag)
    return None if params is None else NameAddr(template.uri, template.display, params)


def _cut_param(value: str, start: int, stand_in: str) -> tuple[str, str] | None:
    """The parameter value at `start` (up to the next ";") replaced by `stand_in`, and
    the value cut out; None unless that value is a token, as _split_params asks."""
    end = value.find(";", start)
    if end < 0:
        end = len(value)
    found = value[start:end]
    if not _PARAM_VALUE.match(found):
        return None
    return value[:start] + stand_in + value[end:], found


def _put_param(params: Params, name: str, stand_in: str, actual: str) -> Params | None:
    """`params` with the parameter `name` that holds `stand_in` given `actual` instead;
    None if there is no such parameter."""
    for i, (key, param) in enumerate(params):
        if key == name and param == stand_in:
            return (*params[:i], (name, actual), *params[i + 1 :])
    return None


@functools.lru_cache(maxsize=HEADER_CACHE_SIZE)
def _parse_name_addr_cached(value: str, what: str) -> NameAddr:
    return _parse_name_addr(value, what)


def _parse_name_addr(value: str, what: str) -> NameAddr:
    text = value.strip()
    if not text:
        raise ParseError(f"empty {what}")
    display: str | None = None
    if "<" in text:
        lt = text.find("<")
        if text.startswith('"'):
            end = _closing_quote(text, what)
            display = text[: end + 1]
            lt = text.find("<", end)
            if lt < 0 or text[end + 1 : lt].strip():
                raise ParseError(f"junk after display name in {what}")
        else:
            display = text[:lt].strip() or None
            if display is not None and not all(is_token(w) for w in display.split()):
                raise ParseError(f"invalid display name in {what}")
        gt = text.find(">", lt)
        if gt < 0:
            raise ParseError(f"unterminated <uri> in {what}")
        uri_text = text[lt + 1 : gt]
        # LAQUOT addr-spec RAQUOT: no LWS inside the brackets (RFC 4475 3.1.2.14)
        if uri_text != uri_text.strip():
            raise ParseError(f"whitespace inside <uri> in {what}")
        uri = _header_uri(uri_text, what)
        rest = text[gt + 1 :].strip()
        if rest and not rest.startswith(";"):
            raise ParseError(f"junk after <uri> in {what}")
        params = _split_params(rest, what) if rest else ()
        return NameAddr(uri=uri, display=display, params=params)
    # addr-spec: parameters after it belong to the header, not the URI (RFC 3261 20.10).
    if text.startswith('"'):
        raise ParseError(f"display name without <uri> in {what}")
    uri_text, semi, rest = text.partition(";")
    uri_text = uri_text.strip()
    if " " in uri_text or "\t" in uri_text:
        raise ParseError(f"invalid address in {what}")
    if "?" in uri_text or "," in uri_text:
        raise ParseError(f"a URI with ? or , must be in <> in {what} (RFC 3261 20.10)")
    params = _split_params(rest, what) if semi else ()
    return NameAddr(uri=_header_uri(uri_text, what), params=params)


def _header_uri(text: str, what: str) -> Uri:
    """A header's URI. 416 is for the Request-URI alone (RFC 3261 8.2.2.1, 21.4.17): another
    scheme in From, To or Contact makes the request one we cannot serve, so 400."""
    try:
        return parse_uri(text)
    except UnsupportedUriScheme as exc:
        raise ParseError(f"{exc.reason} in {what}") from None


def _closing_quote(text: str, what: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    raise ParseError(f"unterminated quoted display name in {what}")


@dataclass(frozen=True, slots=True)
class Via:
    """One Via entry (RFC 3261 20.42, RFC 3581 rport/received)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @property
    def branch(self) -> str | None:
        return _get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return _get_param(self.params, "received")

    @property
    def has_rport(self) -> bool:
        return any(k.lower() == "rport" for k, _ in self.params)

    @property
    def rport(self) -> int | None:
        value = _get_param(self.params, "rport")
        if value and value.isascii() and value.isdigit() and len(value) <= 5:
            return int(value)
        return None

    def with_received(self, host: str, port: int | None) -> Via:
        """RFC 3581 4: add received=, and fill rport= when the client asked for it."""
        out: list[tuple[str, str | None]] = []
        for k, v in self.params:
            lk = k.lower()
            if lk == "received":
                continue
            if lk == "rport" and port is not None:
                v = str(port)
            out.append((k, v))
        out.append(("received", host))
        return replace(self, params=tuple(out))

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hp}{_format_params(self.params)}"


def parse_via(value: str) -> Via:
    """Parse one via-parm: `SIP/2.0/UDP host[:port];branch=...`.

    Answers from a bounded LRU cache of earlier answers (errors are not kept). A Via's
    branch differs in every transaction while the rest of it repeats in every message
    from the same peer, so a Via with one plain `;branch=` is parsed as its template
    (the same Via with a fixed branch) and the branch put in."""
    if len(value) > CACHED_VALUE_MAX:
        return _parse_via(value)
    via = _via_from_template(value)
    return via if via is not None else _parse_via_cached(value)


_BRANCH_AT = ";branch="
_BRANCH_STAND_IN = "z9hG4bK"


def _via_from_template(value: str) -> Via | None:
    """`value` parsed as its template, or None when that is not certain to give what
    `_parse_via` gives: then it is parsed as it is."""
    at = value.find(_BRANCH_AT)
    # "branch" exactly once, in any case: no other parameter (nor host) could be taken
    # for it. No quotes: no quoted-string could hold what looks like a parameter.
    if at < 0 or '"' in value or value.lower().count("branch") != 1:
        return None
    cut = _cut_param(value, at + len(_BRANCH_AT), _BRANCH_STAND_IN)
    if cut is None:
        return None
    template_value, branch = cut
    try:
        template = _parse_via_cached(template_value)
    except ParseError:
        return None  # parsed as it is, for the error that names what is wrong
    params = _put_param(template.params, "branch", _BRANCH_STAND_IN, branch)
    return None if params is None else Via(template.transport, template.host, template.port,
                                           params)


@functools.lru_cache(maxsize=HEADER_CACHE_SIZE)
def _parse_via_cached(value: str) -> Via:
    return _parse_via(value)


def _parse_via(value: str) -> Via:
    text = value.strip()
    proto, _, rest = text.partition(" ")
    parts = [p.strip() for p in proto.split("/")]
    if len(parts) != 3 or parts[0].upper() != "SIP" or parts[1] != "2.0" or not is_token(parts[2]):
        # Tolerate whitespace around the slashes (RFC 4475 3.1.1.1): re-split on "/".
        joined = re.sub(r"\s*/\s*", "/", text).replace("\t", " ")
        proto, _, rest = joined.partition(" ")
        parts = proto.split("/")
        if len(parts) != 3 or parts[0].upper() != "SIP" or not is_token(parts[2]):
            raise ParseError(f"invalid Via protocol {proto[:40]!r}")
        if parts[1] != "2.0":
            raise ParseError(f"unsupported Via protocol version {parts[1][:10]!r}")
    sent_by, semi, params_text = rest.strip().partition(";")
    host, port = parse_host_port(sent_by.strip().replace(" ", ""), "Via")
    params = _split_params(params_text, "Via") if semi else ()
    return Via(transport=parts[2].upper(), host=host, port=port, params=params)


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq: sequence number and method (RFC 3261 20.16)."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """CSeq = 1*DIGIT LWS Method (RFC 3261 20.16); the number fits in 32 bits (8.1.1.5)."""
    parts = value.split()
    if len(parts) != 2:
        raise ParseError(f"invalid CSeq {value[:40]!r}")
    num, method = parts
    if not num.isascii() or not num.isdigit() or len(num) > 10 or int(num) >= 2**32:
        raise ParseError(f"invalid CSeq number {num[:20]!r}")
    if not is_token(method):
        raise ParseError(f"invalid CSeq method {method[:20]!r}")
    return CSeq(int(num), method)
