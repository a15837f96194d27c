"""REFER's implicit subscription: the sipfrag in its NOTIFYs and the headers around them.

RFC 3515 2.4.5 (NOTIFY bodies for REFER), RFC 3420 (message/sipfrag), RFC 6665 8.2
(Event, Subscription-State), RFC 4488 (Refer-Sub). Sans-IO: text in, typed values out.

Reading follows RFC 3261's robustness rule: what a peer says is taken when its meaning is
clear, and what is malformed around it comes back as warnings (a tuple of short texts) for
the caller to note. Only what cannot be understood raises SipFragError (400): a
Subscription-State without a readable state, a sipfrag without a readable status line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipbridge.sip.errors import ParseError
from sipbridge.sip.headers import canonical_name, split_outside
from sipbridge.sip.message import Headers

MAX_SIPFRAG_SIZE = 8192
_MAX_DELTA = 2**32 - 1  # delta-seconds, RFC 3261 25.1 / RFC 6665 8.4
_MAX_LINE_WARNINGS = 3  # sipfrag header lines named in warnings; the rest are counted
_MAX_WARNINGS = 8  # texts returned by one parser; the rest are counted
_MAX_PARAMS = 64  # parameters read from one header value

Warnings = tuple[str, ...]

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
_HEADER_NAME = re.compile(_TOKEN)
# RFC 3261 25.1 gen-value: token / host / quoted-string.
_VALUE = r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+|\"(?:[^\"\\]|\\.)*\""
_PARAM = re.compile(rf";[ \t]*({_TOKEN})(?:[ \t]*=[ \t]*({_VALUE}))?[ \t]*")
# `reason=reason=noresource` (liblinphone 5.1): the name written once too often.
_DOUBLED = re.compile(rf";[ \t]*({_TOKEN})[ \t]*=(?:[ \t]*\1[ \t]*=)+[ \t]*({_VALUE})[ \t]*",
                      re.IGNORECASE)
_REQUEST_LINE = re.compile(rf"{_TOKEN}[ \t]+\S+[ \t]+SIP/\S+", re.IGNORECASE)
_LWS = re.compile(r"[ \t]+")
# Control characters other than HTAB have no place in a start line or header line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,10}")
_QUOTED_PAIR = re.compile(r"\\(.)")


class SipFragError(ParseError):
    """A NOTIFY body or subscription header that REFER cannot use (400)."""

    status = 400


class BadEvent(SipFragError):
    """A NOTIFY whose Event is not REFER's package, or cannot be read as one (489)."""

    status = 489


def _show(text: str, limit: int = 40) -> str:
    """Peer text quoted for a warning or an error: bounded, control characters escaped."""
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


@dataclass(frozen=True, slots=True)
class SipFrag:
    """A message/sipfrag holding a status line (RFC 3420), as REFER's NOTIFYs carry."""

    status: int  # 100..699
    reason: str
    headers: tuple[tuple[str, str], ...] = ()  # header lines after the status line, in order

    @property
    def final(self) -> bool:
        return self.status >= 200


def parse_sipfrag(body: bytes) -> tuple[SipFrag, Warnings]:
    """Read a sipfrag body: status line, optional headers (folding allowed), optional blank
    line and body (ignored). CRLF or LF line ends. Header names are canonical (compact forms
    expanded). Raises SipFragError when there is no readable status line (a request line
    is valid sipfrag but says nothing about a REFER); the rest is read with warnings."""
    warnings: list[str] = []
    if len(body) > MAX_SIPFRAG_SIZE:
        warnings.append(f"sipfrag of {len(body)} bytes: only its first {MAX_SIPFRAG_SIZE} read")
        body = body[:MAX_SIPFRAG_SIZE]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", errors="replace")
        warnings.append("sipfrag is not UTF-8")
    lines = [line.rstrip(" \t\r") for line in text.split("\n")]
    while lines and not lines[0].strip(" \t"):  # stray line ends (cf. RFC 3261 7.5)
        lines.pop(0)
    if not lines:
        raise SipFragError("empty sipfrag")
    status, reason = _status_line(lines[0], warnings)
    headers = _header_lines(lines[1:], warnings)
    return SipFrag(status=status, reason=reason, headers=headers), tuple(warnings)


def _status_line(line: str, warnings: list[str]) -> tuple[int, str]:
    if line[0] in " \t":
        warnings.append("whitespace before the sipfrag status line")
        line = line.lstrip(" \t")
    parts = _LWS.split(line, maxsplit=2)
    if not parts[0].isascii() or parts[0].upper() != "SIP/2.0":
        if _REQUEST_LINE.fullmatch(line):
            raise SipFragError("sipfrag holds a request line, not a status line")
        if parts[0].upper().startswith("SIP/"):
            raise SipFragError(f"unsupported SIP version {_show(parts[0], 20)} in sipfrag")
        raise SipFragError(f"sipfrag has no status line: {_show(line, 60)}")
    code = parts[1] if len(parts) > 1 else ""
    if len(code) != 3 or not code.isascii() or not code.isdigit() or not 100 <= int(code) <= 699:
        raise SipFragError(f"invalid status code {_show(code, 20)} in sipfrag")
    reason = parts[2] if len(parts) > 2 else ""
    bad = _CONTROL.search(reason)
    if bad is not None:  # a bare CR, a NUL: the phrase ends there
        warnings.append(f"control character in the sipfrag reason phrase {_show(reason)}")
        reason = reason[: bad.start()].rstrip(" \t")
    return int(code), reason


def _header_lines(lines: list[str], warnings: list[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    bad: list[str] = []
    for line in lines:
        if not line:
            break  # the blank line: what follows is the fragment's body
        if _CONTROL.search(line):
            bad.append(line)
            continue
        if line[0] in " \t":
            if not out:
                bad.append(line)
                continue
            name, value = out[-1]
            folded = line.strip(" \t")  # RFC 3261 7.3.1: the fold and its LWS become one SP
            out[-1] = (name, f"{value} {folded}" if value else folded)
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _HEADER_NAME.fullmatch(name):
            bad.append(line)
            continue
        out.append((canonical_name(name)[1], value.strip(" \t")))
    if bad:
        shown = ", ".join(_show(line) for line in bad[:_MAX_LINE_WARNINGS])
        more = f" and {len(bad) - _MAX_LINE_WARNINGS} more" if len(bad) > _MAX_LINE_WARNINGS else ""
        warnings.append(f"malformed sipfrag header lines ignored: {shown}{more}")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """Subscription-State (RFC 6665 8.2.3, 4.1.3); state and reason lower-cased."""

    state: str  # "active", "pending", "terminated", or an extension value
    reason: str | None = None
    expires: int | None = None
    retry_after: int | None = None

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"


def parse_subscription_state(value: str | None) -> tuple[SubscriptionState | None, Warnings]:
    """(None, ()) when the header is absent. SipFragError when no state can be read; bad,
    duplicate or quoted parameters, `reason=reason=x` and junk after the value are read
    as far as their meaning is clear, with warnings."""
    if value is None:
        return None, ()
    what = "Subscription-State"
    state, params, warnings = _read_value(value, what)
    known: dict[str, str] = {}
    for name, param in params:
        if name not in ("reason", "expires", "retry-after"):
            continue
        if param is None:
            warnings.append(f"{what}: {name} without a value ignored")
        elif name in known:
            warnings.append(f"{what}: {name} repeated; the first ({_show(known[name])}) used")
        else:
            known[name] = _unquote(param, name, what, warnings)
    reason = known.get("reason")
    if reason is not None and not _TOKEN_RE.fullmatch(reason):
        warnings.append(f"{what}: reason {_show(reason)} is not a token; ignored")
        reason = None
    return SubscriptionState(
        state=state.lower(),
        reason=reason.lower() if reason is not None else None,
        expires=_delta(known, "expires", what, warnings),
        retry_after=_delta(known, "retry-after", what, warnings),
    ), _bounded(warnings)


@dataclass(frozen=True, slots=True)
class EventHeader:
    """Event (RFC 6665 8.2.1): the package, lower-cased, and its id parameter."""

    package: str
    id: str | None = None


def parse_event(value: str | None) -> tuple[EventHeader | None, Warnings]:
    """(None, ()) when absent; SipFragError when no package can be read. An id that is
    quoted is unquoted; ids that disagree are dropped (which REFER it names is unclear)."""
    if value is None:
        return None, ()
    what = "Event"
    package, params, warnings = _read_value(value, what)
    ids: list[str] = []
    for name, param in params:
        if name != "id":
            continue
        if param is None:
            warnings.append(f"{what}: id without a value ignored")
        else:
            ids.append(_unquote(param, "id", what, warnings))
    event_id = ids[0] if ids else None
    if len(set(ids)) > 1:
        warnings.append(f"{what}: conflicting id parameters {', '.join(map(_show, ids))}; "
                        "none used")
        event_id = None
    elif len(ids) > 1:
        warnings.append(f"{what}: id parameter repeated")
    return EventHeader(package.lower(), event_id), _bounded(warnings)


def refer_sub_disabled(value: str | None) -> bool:
    """True when a Refer-Sub header says "false" (RFC 4488 7.1): no NOTIFYs will follow.
    Absent or unreadable counts as not disabled, the RFC 3515 default."""
    if value is None:
        return False
    return value.partition(";")[0].strip().strip('"').lower() == "false"


@dataclass(frozen=True, slots=True)
class ReferNotify:
    """What one NOTIFY of REFER's subscription says (RFC 3515 2.4.4, 2.4.5)."""

    event_id: str | None  # Event's id: the REFER's CSeq (RFC 3515 2.4.6), when given
    state: SubscriptionState | None
    frag: SipFrag | None
    warnings: Warnings = ()  # what was malformed around it, each a short text


def read_refer_notify(headers: Headers, body: bytes) -> ReferNotify:
    """Read a NOTIFY for REFER's event package. Raises BadEvent (489) when its Event is
    not `refer` or cannot be read, SipFragError (400) when its Subscription-State has
    no readable state, its Subscription-State headers disagree, or its body has no
    readable status line. Everything else is taken, its defects listed as warnings."""
    warnings: list[str] = []
    events = headers.get_all("Event")
    try:
        event, more = parse_event(events[0] if events else None)
    except SipFragError as exc:
        raise BadEvent(exc.reason) from None
    if event is None or event.package != "refer":
        raise BadEvent("not the refer event package" if event else "no Event header")
    warnings += more
    if len(events) > 1:
        warnings.append(f"{len(events)} Event headers; the first is used")
    states = headers.get_all("Subscription-State")
    state, more = parse_subscription_state(states[0] if states else None)
    warnings += more
    if state is None:
        warnings.append("no Subscription-State header (RFC 6665 8.2.3)")
    elif len(states) > 1:
        others = {s.state for v in states[1:] if (s := _state_or_none(v)) is not None}
        if others - {state.state}:
            raise SipFragError("conflicting Subscription-State headers")
        warnings.append(f"{len(states)} Subscription-State headers; the first is used")
    frag: SipFrag | None = None
    if body.strip(b" \t\r\n"):
        frag, more = parse_sipfrag(body)
        warnings += more
        ctype = (headers.get("Content-Type") or "").partition(";")[0].strip().lower()
        if ctype != "message/sipfrag":
            said = f"Content-Type {_show(ctype)}" if ctype else "no Content-Type"
            warnings.append(f"{said}; the body read as message/sipfrag")
    else:
        warnings.append("no sipfrag body (RFC 3515 2.4.5)")
    return ReferNotify(event.id, state, frag, _bounded(warnings))


def _bounded(warnings: list[str]) -> Warnings:
    """At most _MAX_WARNINGS texts: a peer's junk must not flood a call's timeline."""
    if len(warnings) <= _MAX_WARNINGS:
        return tuple(warnings)
    return (*warnings[: _MAX_WARNINGS - 1],
            f"and {len(warnings) - _MAX_WARNINGS + 1} more problems")


def _state_or_none(value: str) -> SubscriptionState | None:
    try:
        return parse_subscription_state(value)[0]
    except SipFragError:
        return None


def _read_value(value: str, what: str) -> tuple[str, list[tuple[str, str | None]], list[str]]:
    """A token followed by `;name[=value]` parameters; names lower-cased, values as written.
    SipFragError when the leading token cannot be read; what follows it is taken piece by
    piece, each unreadable piece skipped with a warning."""
    text = value.strip(" \t")
    if not text:
        raise SipFragError(f"empty {what}")
    head = _TOKEN_RE.match(text)
    if head is None or (head.end() < len(text) and text[head.end()] not in " \t;"):
        raise SipFragError(f"no readable value in {what} {_show(text)}")
    warnings: list[str] = []
    rest = text[head.end():].lstrip(" \t")
    junk, *pieces = split_outside(rest, ";")[0]
    if junk:
        warnings.append(f"{what}: {_show(junk)} after {_show(head[0])} ignored")
    params: list[tuple[str, str | None]] = []
    for piece in pieces[:_MAX_PARAMS]:
        piece = ";" + piece
        param = _PARAM.fullmatch(piece)
        if param is not None:
            params.append((param[1].lower(), param[2]))
        elif (doubled := _DOUBLED.fullmatch(piece)) is not None:
            name, val = doubled[1].lower(), doubled[2]
            warnings.append(f"{what}: {_show(piece.lstrip(';').strip())} read as {name}={val}")
            params.append((name, val))
        elif not piece.strip(" \t;"):
            warnings.append(f"{what}: empty parameter")
        else:
            warnings.append(f"{what}: malformed parameter {_show(piece.lstrip(';').strip())} "
                            "ignored")
    if len(pieces) > _MAX_PARAMS:
        warnings.append(f"{what}: more than {_MAX_PARAMS} parameters; the rest not read")
    return head[0], params, warnings


def _unquote(param: str, name: str, what: str, warnings: list[str]) -> str:
    """A parameter value that RFC 6665 wants as a token, with its quotes taken off."""
    if param.startswith('"'):
        warnings.append(f"{what}: quoted {name} {_show(param)}")
        return _QUOTED_PAIR.sub(r"\1", param[1:-1])
    return param


def _delta(params: dict[str, str], name: str, what: str, warnings: list[str]) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not _DIGITS.fullmatch(text) or int(text) > _MAX_DELTA:
        warnings.append(f"{what}: invalid {name} {_show(text, 20)} ignored")
        return None
    return int(text)
