"""REFER's implicit subscription: the sipfrag in its NOTIFYs and the headers around them.

RFC 3515 2.4.5 (NOTIFY bodies for REFER), RFC 3420 (message/sipfrag), RFC 6665 8.2
(Event, Subscription-State), RFC 4488 (Refer-Sub). Sans-IO: text in, typed values out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipbridge.sip.errors import ParseError
from sipbridge.sip.headers import canonical_name

MAX_SIPFRAG_SIZE = 8192
_MAX_DELTA = 2**32 - 1  # delta-seconds, RFC 3261 25.1 / RFC 6665 8.4

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_HEADER_NAME = re.compile(_TOKEN)
# RFC 3261 25.1 gen-value: token / host / quoted-string.
_VALUE = r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+|\"(?:[^\"\\]|\\.)*\""
_HEAD = re.compile(rf"[ \t]*({_TOKEN})[ \t]*")
_PARAM = re.compile(rf";[ \t]*({_TOKEN})(?:[ \t]*=[ \t]*({_VALUE}))?[ \t]*")
_REQUEST_LINE = re.compile(rf"{_TOKEN}[ \t]+\S+[ \t]+SIP/\S+", re.IGNORECASE)
_LWS = re.compile(r"[ \t]+")
# Control characters other than HTAB have no place in a start line or header line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class SipFragError(ParseError):
    """A NOTIFY body or subscription header that REFER cannot use (400)."""

    status = 400


@dataclass(frozen=True, slots=True)
class SipFrag:
    """A message/sipfrag holding a status line (RFC 3420), as REFER's NOTIFYs carry."""

    status: int  # 100..699
    reason: str
    headers: tuple[tuple[str, str], ...] = ()  # header lines after the status line, in order

    @property
    def final(self) -> bool:
        return self.status >= 200


def parse_sipfrag(body: bytes) -> SipFrag:
    """Parse a sipfrag body: status line, optional headers (folding allowed), optional blank
    line and body (ignored). CRLF or LF line ends. Header names are canonical (compact forms
    expanded). A request line is valid sipfrag but says nothing about a REFER: refused."""
    if len(body) > MAX_SIPFRAG_SIZE:
        raise SipFragError(f"sipfrag of {len(body)} bytes is over the {MAX_SIPFRAG_SIZE}-byte limit")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SipFragError("sipfrag is not UTF-8") from None
    lines = [line.rstrip(" \t\r") for line in text.split("\n")]
    while lines and not lines[0]:  # stray line ends before the start line (cf. RFC 3261 7.5)
        lines.pop(0)
    if not lines:
        raise SipFragError("empty sipfrag")
    status, reason = _status_line(lines[0])
    return SipFrag(status=status, reason=reason, headers=_header_lines(lines[1:]))


def _status_line(line: str) -> tuple[int, str]:
    if _CONTROL.search(line):
        raise SipFragError("control character in the sipfrag start line")
    parts = _LWS.split(line, maxsplit=2)
    if not parts[0].isascii() or parts[0].upper() != "SIP/2.0":
        if _REQUEST_LINE.fullmatch(line):
            raise SipFragError("sipfrag holds a request line, not a status line")
        if parts[0].upper().startswith("SIP/"):
            raise SipFragError(f"unsupported SIP version {parts[0][:20]!r} in sipfrag")
        raise SipFragError(f"sipfrag has no status line: {line[:60]!r}")
    code = parts[1] if len(parts) > 1 else ""
    if len(code) != 3 or not code.isascii() or not code.isdigit() or not 100 <= int(code) <= 699:
        raise SipFragError(f"invalid status code {code[:20]!r} in sipfrag")
    return int(code), parts[2] if len(parts) > 2 else ""


def _header_lines(lines: list[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            break  # the blank line: what follows is the fragment's body
        if _CONTROL.search(line):
            raise SipFragError("control character in a sipfrag header line")
        if line[0] in " \t":
            if not out:
                raise SipFragError("continuation line before the first sipfrag header")
            name, value = out[-1]
            folded = line.strip(" \t")  # RFC 3261 7.3.1: the fold and its LWS become one SP
            out[-1] = (name, f"{value} {folded}" if value else folded)
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise SipFragError(f"malformed sipfrag header line {line[:60]!r}")
        out.append((canonical_name(name)[1], value.strip(" \t")))
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


def parse_subscription_state(value: str | None) -> SubscriptionState | None:
    """None when the header is absent; SipFragError when it is empty or malformed."""
    if value is None:
        return None
    state, params = _parse_value(value, "Subscription-State")
    known: dict[str, str] = {}
    for name, param in params:
        if name in ("reason", "expires", "retry-after"):
            if name in known:
                raise SipFragError(f"duplicate {name} parameter in Subscription-State")
            if param is None or param.startswith('"'):
                raise SipFragError(f"{name} in Subscription-State needs a token value")
            known[name] = param
    reason = known.get("reason")
    return SubscriptionState(
        state=state.lower(),
        reason=reason.lower() if reason is not None else None,
        expires=_delta(known, "expires"),
        retry_after=_delta(known, "retry-after"),
    )


def parse_event(value: str | None) -> tuple[str, str | None] | None:
    """Event (RFC 6665 8.2.1): (lower-case package, id parameter). None when absent."""
    if value is None:
        return None
    package, params = _parse_value(value, "Event")
    ids = [param for name, param in params if name == "id"]
    if len(ids) > 1:
        raise SipFragError("duplicate id parameter in Event")
    if ids and (ids[0] is None or ids[0].startswith('"')):
        raise SipFragError("id in Event needs a token value")
    return package.lower(), ids[0] if ids else None


def refer_sub_disabled(value: str | None) -> bool:
    """True when a Refer-Sub header says "false" (RFC 4488 7.1): no NOTIFYs will follow.
    Absent or unreadable counts as not disabled, the RFC 3515 default."""
    if value is None:
        return False
    return value.partition(";")[0].strip().lower() == "false"


def _parse_value(value: str, what: str) -> tuple[str, list[tuple[str, str | None]]]:
    """A token followed by `;name[=value]` parameters; names lower-cased, values as written."""
    if not value.strip(" \t"):
        raise SipFragError(f"empty {what}")
    head = _HEAD.match(value)
    if head is None:
        raise SipFragError(f"invalid {what} {value[:40]!r}")
    params: list[tuple[str, str | None]] = []
    pos = head.end()
    while pos < len(value):
        param = _PARAM.match(value, pos)
        if param is None:
            raise SipFragError(f"invalid parameters in {what} {value[:60]!r}")
        params.append((param[1].lower(), param[2]))
        pos = param.end()
    return head[1], params


def _delta(params: dict[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > _MAX_DELTA:
        raise SipFragError(f"invalid {name} {text[:20]!r} in Subscription-State")
    return int(text)
