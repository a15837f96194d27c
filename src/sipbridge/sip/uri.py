"""SIP, SIPS and tel URIs (RFC 3261 19.1, 25.1; RFC 3966), parsed once into types."""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field, replace

from sipbridge.sip.errors import ParseError, UnsupportedUriScheme

Params = tuple[tuple[str, str | None], ...]

MAX_URI_LENGTH = 2048
# Parsed URIs are kept for reuse: the same few (ours, a trunk's, a phone's) come back in
# every message of a call and in every call. Bounded, as peers choose them; a hit is safe
# to share because SipUri and TelUri are frozen and hold only str, int and tuples.
URI_CACHE_SIZE = 1024

# RFC 3261 25.1: hostname = *( domainlabel "." ) toplabel [ "." ], where toplabel starts
# with ALPHA; a host whose last label is numeric must be an IPv4address (octets <= 255).
_HOSTNAME = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?$"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
_IPV4 = re.compile(rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$")
# user = 1*( unreserved / escaped / user-unreserved ); password adds "&=+$,"
_USER = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
_PASSWORD = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*$")
# uri-parameter names and values: paramchar = param-unreserved / unreserved / escaped
_PARAM = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+$")
_HEADER_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*$")
_URI_BAD_CHARS = re.compile(r'[\s<>"]')
_TEL_NUMBER = re.compile(r"^(?:\+[0-9\-.()]*[0-9][0-9\-.()]*|[0-9A-Fa-f*#\-.()pw]+)$")


def _parse_params(text: str, what: str) -> Params:
    """`;name[=value]` list, as in uri-parameters (RFC 3261 19.1.1)."""
    out: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        if not part:
            raise ParseError(f"empty parameter in {what}")
        name, sep, value = part.partition("=")
        if not _PARAM.match(name) or (sep and not _PARAM.match(value)):
            raise ParseError(f"invalid parameter {part!r} in {what}")
        out.append((name, value if sep else None))
    return tuple(out)


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def parse_host_port(text: str, what: str = "URI") -> tuple[str, int | None]:
    """hostport = host [ ":" port ], host = hostname / IPv4address / IPv6reference.

    Answers from a bounded LRU cache: a Via's sent-by repeats in every message from a
    peer while its branch does not, so the Via itself is seldom a cache hit."""
    if len(text) > 256:  # longer than any DNS name: parsed (and refused) uncached
        return _parse_host_port(text, what)
    return _parse_host_port_cached(text, what)


@functools.lru_cache(maxsize=URI_CACHE_SIZE)
def _parse_host_port_cached(text: str, what: str) -> tuple[str, int | None]:
    return _parse_host_port(text, what)


def _parse_host_port(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {what}")
        host, rest = text[: end + 1], text[end + 1 :]
        # Python accepts a zone ("%eth0"); RFC 3261 25.1 IPv6reference does not.
        if "%" in host:
            raise ParseError(f"invalid IPv6 address {host!r} in {what}")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ParseError(f"invalid IPv6 address {host!r} in {what}") from None
        if rest and not rest.startswith(":"):
            raise ParseError(f"junk after IPv6 reference in {what}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_s = text.partition(":")
        port_text = port_text_s if sep else None
        if not _IPV4.match(host) and not _HOSTNAME.match(host):
            raise ParseError(f"invalid host {host!r} in {what}")
    port: int | None = None
    if port_text is not None:
        # isascii: str.isdigit() accepts digits such as "²" that int() rejects
        if (
            not port_text.isascii()
            or not port_text.isdigit()
            or len(port_text) > 5
            or not 0 < int(port_text) < 65536
        ):
            raise ParseError(f"invalid port {port_text!r} in {what}")
        port = int(port_text)
    return host, port


@dataclass(frozen=True, slots=True)
class SipUri:
    """sip: or sips: URI (RFC 3261 19.1)."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    password: str | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = field(default=())

    def param(self, name: str) -> str | None:
        """Value of a URI parameter (None if absent or valueless); names are case-insensitive."""
        lname = name.lower()
        for k, v in self.params:
            if k.lower() == lname:
                return v
        return None

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(k.lower() == lname for k, _ in self.params)

    def with_params(self, **params: str | None) -> SipUri:
        """A copy with parameters set (replacing ones of the same name)."""
        keep = [(k, v) for k, v in self.params if k.lower() not in params]
        return replace(self, params=tuple(keep) + tuple(params.items()))

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def transport(self) -> str:
        """The transport= parameter, lower case, udp when absent (RFC 3263 4.1, simplified)."""
        return (self.param("transport") or "udp").lower()

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        text = f"{self.scheme}:{userinfo}{self.host_port}{_format_params(self.params)}"
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers)
        return text


@dataclass(frozen=True, slots=True)
class TelUri:
    """tel: URI (RFC 3966): a global (+...) or local number with parameters."""

    number: str
    params: Params = ()

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    def param(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.params:
            if k.lower() == lname:
                return v
        return None

    def __str__(self) -> str:
        return f"tel:{self.number}{_format_params(self.params)}"


Uri = SipUri | TelUri


def parse_uri(text: str) -> Uri:
    """Parse a SIP, SIPS or tel URI; other schemes raise UnsupportedUriScheme (416).

    Answers from a bounded LRU cache of earlier answers (errors are not kept)."""
    if len(text) > MAX_URI_LENGTH:
        raise ParseError("URI too long")
    return _parse_uri_cached(text)


@functools.lru_cache(maxsize=URI_CACHE_SIZE)
def _parse_uri_cached(text: str) -> Uri:
    return _parse_uri(text)


def _parse_uri(text: str) -> Uri:
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme:
        raise ParseError(f"URI {text[:80]!r} has no scheme")
    lscheme = scheme.lower()
    if lscheme in ("sip", "sips"):
        return _parse_sip(lscheme, rest, text)
    if lscheme == "tel":
        number, semi, params = rest.partition(";")
        if not _TEL_NUMBER.match(number):
            raise ParseError(f"invalid tel number {number!r}")
        return TelUri(number, _parse_params(params, "tel URI") if semi else ())
    if not re.match(r"^[A-Za-z][A-Za-z0-9+\-.]*$", scheme):
        raise ParseError(f"invalid URI scheme {scheme[:40]!r}")
    raise UnsupportedUriScheme(f"unsupported URI scheme {scheme!r}")


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    if _URI_BAD_CHARS.search(rest):
        raise ParseError(f"invalid character in URI {text[:80]!r}")
    user: str | None = None
    password: str | None = None
    # The user part may hold "?" and ";" (user-unreserved) but neither parameters nor
    # headers may hold "@", so the last "@" ends the userinfo (RFC 3261 25.1).
    at = rest.rfind("@")
    hostpart, qmark, header_text = rest[at + 1 :].partition("?")
    if at >= 0:
        userinfo = rest[:at]
        user_s, colon, password_s = userinfo.partition(":")
        if not user_s or not _USER.match(user_s):
            raise ParseError(f"invalid user part in URI {text[:80]!r}")
        if colon and not _PASSWORD.match(password_s):
            raise ParseError(f"invalid password in URI {text[:80]!r}")
        user, password = user_s, (password_s if colon else None)
    hostport, semi, params_text = hostpart.partition(";")
    host, port = parse_host_port(hostport)
    headers: list[tuple[str, str]] = []
    if qmark:
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if (not name or not eq or not _HEADER_CHARS.match(name)
                    or not _HEADER_CHARS.match(value)):
                raise ParseError(f"invalid URI header {item[:40]!r}")
            headers.append((name, value))
    return SipUri(
        host=host,
        user=user,
        port=port,
        scheme=scheme,
        password=password,
        params=_parse_params(params_text, "URI") if semi else (),
        headers=tuple(headers),
    )


def parse_sip_uri(text: str) -> SipUri:
    """Parse a URI that must be sip: or sips: (Contact, Route, Via-derived targets)."""
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise UnsupportedUriScheme(f"expected a sip: or sips: URI, got {text[:80]!r}")
    return uri
