"""Request bodies of the call-control API that are not the session config: reject and refer.

Like the session config (`sipbridge.realtime.schemas`) they follow the `openai` SDK's
parameter types (`types/realtime/call_reject_params.py`, `call_refer_params.py`), forbid
extra fields and are strict.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from sipbridge.calls.dtmf_send import MAX_DIGITS
from sipbridge.media.dtmf import MAX_DURATION_MS, MAX_GAP_MS, MIN_DURATION_MS, dtmf_digits
from sipbridge.realtime.schemas import StrictModel
from sipbridge.sip.errors import ParseError
from sipbridge.sip.uri import parse_uri

MAX_TARGET_URI = 1024


class RejectBody(StrictModel):
    """`POST /v1/realtime/calls/{id}/reject`: the SIP final response the caller hears."""

    status_code: int = 603

    @field_validator("status_code")
    @classmethod
    def _failure_code(cls, value: int) -> int:
        if not 400 <= value <= 699:
            raise PydanticCustomError(
                "invalid_value",
                "{reason}",
                {
                    "reason": f"{value} is not a SIP failure response; use a status code from 400 "
                    "to 699, e.g. 486 (Busy Here) or 603 (Decline)."
                },
            )
        return value


# RFC 3966: global-number-digits, local-number-digits, par (parameter / extension / isub).
_TEL_GLOBAL = re.compile(r"\+[0-9\-.()]*[0-9][0-9\-.()]*")
_TEL_LOCAL = re.compile(r"[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*")
_TEL_PNAME = re.compile(r"[A-Za-z0-9-]+")
_TEL_PVALUE = re.compile(r"(?:[\[\]/:&+$A-Za-z0-9\-_.!~*'()]|%[0-9A-Fa-f]{2})+")
_TEL_EXT = re.compile(r"[0-9\-.()]*[0-9][0-9\-.()]*")
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?"
)
_BAD_CHAR = re.compile(r"[\x00-\x20\x7f<>]|\s")
_EXAMPLES = "e.g. 'tel:+14155550123' or 'sip:agent@example.com'"


def _tel_problem(number: str, params: list[str]) -> str | None:
    is_global = number.startswith("+")
    if is_global and not _TEL_GLOBAL.fullmatch(number):
        return (
            f"'{number}' is not a global phone number: write '+' and digits, which may "
            "be grouped with '-', '.', '(' and ')'."
        )
    if not is_global and not _TEL_LOCAL.fullmatch(number):
        return (
            f"'{number}' is not a phone number: use '+', the country code and the number "
            "(e.g. 'tel:+14155550123')."
        )
    seen: set[str] = set()
    for param in params:
        name, eq, value = param.partition("=")
        lname = name.lower()
        if not _TEL_PNAME.fullmatch(name) or (eq and not _TEL_PVALUE.fullmatch(value)):
            return f"invalid tel URI parameter {param[:40]!r}."
        if lname in seen:
            return f"the tel URI parameter '{lname}' appears twice."
        seen.add(lname)
        if lname == "ext" and not _TEL_EXT.fullmatch(value):
            return f"invalid extension {value[:40]!r}: use digits."
        if lname == "phone-context":
            if is_global:
                return "a global number (starting with '+') takes no 'phone-context'."
            if not (_TEL_GLOBAL.fullmatch(value) or _DOMAIN.fullmatch(value)):
                return (
                    f"invalid phone-context {value[:40]!r}: use a domain name or a global "
                    "number prefix such as '+1'."
                )
    if not is_global and "phone-context" not in seen:
        return (
            f"the local number '{number}' needs a ';phone-context=' parameter (RFC 3966); "
            "for a number reachable from anywhere use '+' and the country code, "
            "e.g. 'tel:+14155550123'."
        )
    return None


def refer_target_problem(target: str) -> str | None:
    """What is wrong with a REFER target (it becomes `Refer-To: <target>`), or None.

    tel: URIs follow RFC 3966 (global `+` numbers, or local numbers with a phone-context);
    sip:/sips: URIs must pass `sipbridge.sip.uri.parse_uri`. Whitespace, control characters,
    '<' and '>' are refused anywhere: they could end the header or the angle brackets.
    """
    if not target:
        return f"must not be empty; give a tel: or sip: URI ({_EXAMPLES})."
    if len(target) > MAX_TARGET_URI:
        return f"must be at most {MAX_TARGET_URI} characters long, got {len(target)}."
    bad = _BAD_CHAR.search(target)
    if bad:
        return (
            f"must not contain whitespace, control characters, '<' or '>' "
            f"(found {bad.group()!r} at position {bad.start()})."
        )
    scheme, colon, rest = target.partition(":")
    lscheme = scheme.lower()
    if not colon or lscheme not in ("tel", "sip", "sips"):
        got = f"the scheme is '{scheme[:20]}'" if colon else "there is no scheme"
        return f"expected a tel:, sip: or sips: URI ({_EXAMPLES}), but {got}."
    if lscheme == "tel":
        number, _, param_text = rest.partition(";")
        return _tel_problem(number, param_text.split(";") if param_text else [])
    try:
        parse_uri(target)
    except ParseError as exc:
        return f"not a valid SIP URI: {exc.reason}."
    return None


class ReferBody(StrictModel):
    """`POST /v1/realtime/calls/{id}/refer`: where to transfer the caller.

    `sipbridge` holds gateway-specific transfer options (a JSON object whose keys the gateway
    documents); OpenAI's API has no such field and the SDK sends it only via `extra_body`.
    """

    target_uri: str
    sipbridge: dict[str, Any] | None = None

    @field_validator("target_uri")
    @classmethod
    def _valid_target(cls, value: str) -> str:
        problem = refer_target_problem(value)
        if problem is not None:
            raise PydanticCustomError("invalid_value", "{reason}", {"reason": problem})
        return value


class DtmfBody(StrictModel):
    """`POST /v1/realtime/calls/{id}/dtmf` (sipbridge's own route): digits to send on the
    call. `digits`: 0-9, *, #, A-D (a-d taken as A-D), 1 to 64 of them; `method`:
    "rfc4733" (telephone-events in the RTP stream) or "info" (SIP INFO), else the call's."""

    digits: str
    duration_ms: int = Field(100, ge=MIN_DURATION_MS, le=MAX_DURATION_MS)
    gap_ms: int = Field(100, ge=0, le=MAX_GAP_MS)
    method: Literal["rfc4733", "info"] | None = None

    @field_validator("digits")
    @classmethod
    def _valid_digits(cls, value: str) -> str:
        if len(value) > MAX_DIGITS:
            raise PydanticCustomError("invalid_value", "{reason}", {
                "reason": f"at most {MAX_DIGITS} digits at a time, got {len(value)}."})
        try:
            return dtmf_digits(value)
        except ValueError as exc:
            raise PydanticCustomError("invalid_value", "{reason}",
                                      {"reason": f"{exc}."}) from None
