"""SIP digest authentication, both sides (RFC 3261 22, RFC 7616, RFC 8760).

Server side: `DigestServer` challenges callers and verifies their credentials
with stateless nonces. Client side: `choose_challenge`, `parse_challenge` and
`authorization` answer a trunk's 401/407. Sans-IO and clock-free: the caller
passes `now`. Supported algorithms: SHA-256, MD5 and, where the local OpenSSL
has it, SHA-512-256 (RFC 8760 2.1); `-sess` variants are not supported.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sipbridge.sip.errors import ParseError

MAX_HEADER_LENGTH = 4096
"""Longest WWW-Authenticate / Authorization value we parse; longer is refused."""

_HASHLIB_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(
    name for name, lib in _HASHLIB_NAMES.items() if lib in hashlib.algorithms_available
)
"""Algorithm names we can compute, as spelled on the wire (RFC 8760 2.1)."""

_STRENGTH = {"MD5": 0, "SHA-256": 1, "SHA-512-256": 2}
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME = re.compile(rf"[ \t]*({_TOKEN})(?:[ \t]+|$)")
# name = ( quoted-string / token ), then a comma (empty list elements allowed, RFC 7230 7)
_PARAM = re.compile(
    rf'({_TOKEN})[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^ \t,"]+))[ \t]*(?:,[ \t,]*|$)'
)
_QUOTED_PAIR = re.compile(r"\\(.)")  # RFC 3261 25.1
_MAC_LEN = 16
_TS = struct.Struct(">d")


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split `Scheme k=v, k="q\\"s"` into the scheme and its parameters.

    RFC 3261 25.1 (challenge, credentials, auth-param) and RFC 7235 2.1:
    names are case-insensitive and returned lowercased, values are tokens or
    quoted strings (unescaped here). Unquoted values are read leniently up to
    the next comma or whitespace, since some UAs send `uri=sip:a@b` bare.
    Raises only `ParseError`.
    """
    if len(value) > MAX_HEADER_LENGTH:
        raise ParseError("auth header value too long")
    if any((ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in value):
        raise ParseError("control character in auth header value")
    m = _SCHEME.match(value)
    if m is None:
        raise ParseError("auth header value does not start with a scheme")
    scheme, pos = m[1], m.end()
    params: dict[str, str] = {}
    while pos < len(value):
        m = _PARAM.match(value, pos)
        if m is None:
            raise ParseError(f"malformed auth parameter at offset {pos}")
        name = m[1].lower()
        if name in params:
            raise ParseError(f"duplicate parameter {name}")  # RFC 7235 2.1
        params[name] = m[3] if m[2] is None else _QUOTED_PAIR.sub(r"\1", m[2])
        pos = m.end()
    return scheme, params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _canonical_algorithm(name: str) -> str | None:
    """Wire spelling of a supported algorithm (names are case-insensitive), else None."""
    for alg in SUPPORTED_ALGORITHMS:
        if alg.lower() == name.lower():
            return alg
    return None


def _h(algorithm: str, data: bytes) -> str:
    return hashlib.new(_HASHLIB_NAMES[algorithm], data).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username ":" realm ":" password), the stored secret (RFC 7616 3.4.2)."""
    return _h(algorithm, f"{username}:{realm}:{password}".encode())


def digest_response(
    algorithm: str,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The request-digest (RFC 7616 3.4.1, RFC 2617 3.2.2.1; RFC 2069 when qop is None).

    `algorithm` is a name from SUPPORTED_ALGORITHMS; `nc` is the 8-hex-digit
    string as sent; `body` counts only for qop=auth-int (RFC 7616 3.4.3).
    """
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + _h(algorithm, body)
    ha2 = _h(algorithm, a2.encode())
    tail = f"{nonce}:{nc}:{cnonce}:{qop}:{ha2}" if qop else f"{nonce}:{ha2}"
    return _h(algorithm, f"{ha1}:{tail}".encode())


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of checking credentials.

    `username` is set only when `ok`. `stale` means the credentials were right
    but the nonce is too old: challenge again with `stale=True` (RFC 7616 3.3).
    `uri` is the digest-uri the response was computed over; the caller should
    check it names the Request-URI (RFC 3261 22.4, RFC 7616 3.4.6).
    """

    ok: bool
    username: str | None
    stale: bool
    reason: str
    uri: str | None = None


def _fail(reason: str, *, stale: bool = False) -> AuthResult:
    return AuthResult(ok=False, username=None, stale=stale, reason=reason)


class DigestServer:
    """Challenges requests and verifies digest credentials (RFC 3261 22.1, 22.4).

    Nonces are stateless: `base64url(timestamp || HMAC-SHA256(secret,
    timestamp || realm)[:16])`, so a challenge stores nothing and a flood of
    unauthenticated requests costs no memory. Servers sharing `secret` accept
    each other's nonces. The price: nonce counts are not tracked, so a
    captured Authorization value can be replayed until its nonce expires.
    """

    def __init__(
        self,
        realm: str,
        users: Mapping[str, str],
        *,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        nonce_ttl: float = 300.0,
        secret: bytes | None = None,
    ) -> None:
        canonical = [_canonical_algorithm(a) for a in algorithms]
        if not canonical or None in canonical:
            raise ValueError(f"algorithms must be a non-empty subset of {SUPPORTED_ALGORITHMS}")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        self.realm = realm
        self.users = users  # read on every verify, so a live mapping may change
        self.algorithms: tuple[str, ...] = tuple(a for a in canonical if a is not None)
        self.nonce_ttl = nonce_ttl
        self._secret = secrets.token_bytes(32) if secret is None else secret

    def _mac(self, stamp: bytes) -> bytes:
        mac = hmac.new(self._secret, stamp + self.realm.encode(), hashlib.sha256)
        return mac.digest()[:_MAC_LEN]

    def make_nonce(self, now: float) -> str:
        """A nonce that carries its own issue time and proof of origin."""
        stamp = _TS.pack(now)
        return base64.urlsafe_b64encode(stamp + self._mac(stamp)).decode("ascii")

    def _nonce_time(self, nonce: str) -> float | None:
        """Issue time of a nonce we made, or None if it is not genuine."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
            return None
        if len(raw) != _TS.size + _MAC_LEN or base64.urlsafe_b64encode(raw).decode() != nonce:
            return None
        stamp, mac = raw[: _TS.size], raw[_TS.size :]
        if not hmac.compare_digest(mac, self._mac(stamp)):
            return None
        return float(_TS.unpack(stamp)[0])

    def challenge(self, now: float, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values, one per algorithm, preferred
        first (RFC 3261 22.1, RFC 8760 2.3)."""
        nonce = self.make_nonce(now)
        tail = ", stale=true" if stale else ""
        return [
            f"Digest realm={_quote(self.realm)}, nonce={_quote(nonce)}, "
            f'algorithm={alg}, qop="auth"{tail}'
            for alg in self.algorithms
        ]

    def verify(self, method: str, header_value: str, now: float) -> AuthResult:
        """Check one Authorization / Proxy-Authorization value (RFC 3261 22.4, RFC 7616 3.4).

        Accepts qop=auth and the RFC 2069 form without qop. Never raises: bad
        input gives `ok=False` with the reason.
        """
        try:
            scheme, params = parse_auth_params(header_value)
        except ParseError as exc:
            return _fail(exc.reason)
        return self._verify_params(method, scheme, params, now)

    def verify_any(self, method: str, header_values: Sequence[str], now: float) -> AuthResult:
        """Verify the first credentials for our realm among several (RFC 3261 22.3)."""
        for value in header_values:
            try:
                scheme, params = parse_auth_params(value)
            except ParseError:
                continue
            if scheme.lower() == "digest" and params.get("realm") == self.realm:
                return self._verify_params(method, scheme, params, now)
        return _fail(f"no Digest credentials for realm {self.realm}")

    def _verify_params(
        self, method: str, scheme: str, params: dict[str, str], now: float
    ) -> AuthResult:
        if scheme.lower() != "digest":
            return _fail("auth scheme is not Digest")
        for name in ("username", "realm", "nonce", "uri", "response"):
            if name not in params:
                return _fail(f"Authorization header has no {name} parameter")
        if params["realm"] != self.realm:
            return _fail("realm does not match")
        algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
        if algorithm is None or algorithm not in self.algorithms:
            return _fail("algorithm not offered")
        qop = params.get("qop")
        nc = cnonce = ""
        if qop is not None:
            if qop.lower() != "auth":
                return _fail("qop not offered")
            qop, nc, cnonce = "auth", params.get("nc", ""), params.get("cnonce", "")
            if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
                return _fail("nc is missing or not 8 hex digits")
            if not cnonce:
                return _fail("cnonce is missing")
        password = self.users.get(params["username"])
        if password is None:
            return _fail("unknown user")
        issued = self._nonce_time(params["nonce"])
        if issued is None:
            return _fail("nonce not issued by this server")
        key = ha1(algorithm, params["username"], self.realm, password)
        expected = digest_response(
            algorithm, key, method, params["uri"], params["nonce"], qop, nc, cnonce
        )
        correct = hmac.compare_digest(expected.encode(), params["response"].lower().encode())
        if issued > now:
            return _fail("nonce issued in the future (clock mismatch)")
        if now - issued > self.nonce_ttl:
            # RFC 7616 3.3: stale only when the response itself was right.
            return _fail("nonce expired", stale=correct)
        if not correct:
            return _fail("response does not match")
        return AuthResult(True, params["username"], False, "ok", uri=params["uri"])


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed WWW-Authenticate / Proxy-Authenticate Digest challenge (RFC 3261 25.1)."""

    scheme: str
    realm: str
    nonce: str
    algorithm: str
    qop: tuple[str, ...]
    opaque: str | None
    stale: bool


def parse_challenge(header_value: str) -> Challenge:
    """Parse a Digest challenge (RFC 7616 3.3); raises ParseError on anything else."""
    scheme, params = parse_auth_params(header_value)
    if scheme.lower() != "digest":
        raise ParseError(f"unsupported auth scheme {scheme}")
    for name in ("realm", "nonce"):
        if name not in params:
            raise ParseError(f"challenge has no {name} parameter")
    algorithm = params.get("algorithm", "MD5")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    stale = params.get("stale", "").lower() == "true"
    algorithm = _canonical_algorithm(algorithm) or algorithm
    return Challenge(
        "Digest", params["realm"], params["nonce"], algorithm, qop, params.get("opaque"), stale
    )


def choose_challenge(values: Sequence[str]) -> Challenge:
    """The challenge with the strongest algorithm we support (RFC 8760 2.4).

    Ties keep the server's order. Unparsable or unsupported challenges are
    skipped; raises ParseError if none is usable.
    """
    usable = []
    for value in values:
        try:
            chal = parse_challenge(value)
        except ParseError:
            continue
        if chal.algorithm in SUPPORTED_ALGORITHMS:
            usable.append(chal)
    if not usable:
        raise ParseError("no usable Digest challenge")
    return max(usable, key=lambda c: _STRENGTH[c.algorithm])  # max keeps the first tie


def authorization(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """An Authorization / Proxy-Authorization value answering `challenge` (RFC 3261 22.2,
    RFC 7616 3.4). Uses qop=auth if offered, else auth-int (over `body`), else none."""
    if challenge.algorithm not in SUPPORTED_ALGORITHMS:
        raise ParseError(f"unsupported digest algorithm {challenge.algorithm}")
    if not 0 < nc <= 0xFFFFFFFF:
        raise ValueError("nc must fit in 8 hex digits and be positive")
    qop = next((q for q in ("auth", "auth-int") if q in challenge.qop), None)
    nc_text = f"{nc:08x}"
    key = ha1(challenge.algorithm, username, challenge.realm, password)
    response = digest_response(
        challenge.algorithm, key, method, uri, challenge.nonce, qop, nc_text, cnonce, body
    )
    parts = [f"Digest username={_quote(username)}", f"realm={_quote(challenge.realm)}"]
    parts += [f"nonce={_quote(challenge.nonce)}", f"uri={_quote(uri)}", f'response="{response}"']
    parts.append(f"algorithm={challenge.algorithm}")
    if qop:
        parts += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc_text}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return ", ".join(parts)
