"""Registration to a provider (RFC 3261 10.2), one machine per `[[registration]]` entry.

Sans-IO: `start(now)`, `receive(response, now)` (a response, or None for a timeout or a
transport error as the UA reports them), `handle_timer(now)` and `stop(now)` are its
inputs; `outgoing()` hands back the REGISTERs to send and `deadline` says when it next
needs `handle_timer`. The Call-ID stays the same across refreshes and the CSeq grows
(10.2.4); a 401/407 is answered once per attempt; a failure is retried with exponential
backoff and jitter between `retry_min` and `retry_max` (RFC 5626 4.5), a 503's Retry-After
is honoured and a 423 is retried with its Min-Expires. Nothing here sends twice without a
response or a deadline in between: it cannot loop.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from sipbridge.sip.address import Address, next_hop
from sipbridge.sip.auth import authorization, choose_challenge
from sipbridge.sip.errors import ParseError, SipError
from sipbridge.sip.headers import NameAddr, Via
from sipbridge.sip.message import Headers, Request, Response
from sipbridge.sip.tokens import token_hex
from sipbridge.sip.transaction import new_branch
from sipbridge.sip.uri import SipUri, parse_sip_uri

MIN_REFRESH = 1.0  # seconds: a refresh is never scheduled sooner than this
MAX_RETRY_AFTER = 3600  # seconds: a longer Retry-After is taken as this
MAX_EXPIRES = 86400  # seconds: a 423 asking for more is a failure (backoff), not a retry


class RegState(enum.Enum):
    IDLE = "idle"  # not started
    REGISTERING = "registering"  # a REGISTER is on its way, no binding yet
    REGISTERED = "registered"  # bound until `expires_at`; refreshed at `refresh_at`
    FAILING = "failing"  # the last attempt failed; the next one is at `retry_at`
    UNREGISTERING = "unregistering"  # Expires: 0 sent on shutdown
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class RegistrationSpec:
    """What one registration binds: `aor` at `registrar` with our `contact_user`."""

    name: str
    registrar: str  # a sip: URI (where the REGISTERs go)
    aor: str  # sip:user@domain
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    transport: str = "udp"
    expires: int = 3600
    contact_user: str = "sipbridge"
    retry_min: float = 5.0
    retry_max: float = 300.0
    user_agent: str = "sipbridge"


@dataclass(frozen=True, slots=True)
class RegStatus:
    """One registration's state as reported (API, metrics, `sipbridge status`)."""

    name: str
    aor: str
    registrar: str
    transport: str
    state: RegState
    expires_at: float | None
    last_status: int | None
    last_reason: str | None
    next_attempt_at: float | None
    attempts: int
    failures: int


class Registration:
    """The sans-IO REGISTER client of one binding."""

    def __init__(self, spec: RegistrationSpec, *, host: str, port: int,
                 token: Callable[[], str] = lambda: token_hex(8),
                 jitter: Callable[[], float] = random.random) -> None:
        self.spec = spec
        self._token = token
        self._jitter = jitter  # uniform in [0, 1)
        registrar = parse_sip_uri(spec.registrar)
        self.destination: Address = next_hop(
            registrar.with_params(transport=spec.transport))
        aor = parse_sip_uri(spec.aor)
        self.aor = aor
        # The Request-URI names the domain (10.2): the registrar's URI, no user part.
        self.request_uri = SipUri(registrar.host, port=registrar.port, scheme=registrar.scheme)
        shown = f"[{host}]" if ":" in host else host
        self.contact_uri = parse_sip_uri(
            f"sip:{spec.contact_user}@{shown}:{port};transport={spec.transport}")
        self.call_id = f"{token()}{token()}@{shown}"
        self.from_tag = token()
        self.cseq = 0
        self.expires = spec.expires  # asked for; a 423's Min-Expires raises it
        self.state = RegState.IDLE
        self.expires_at: float | None = None
        self.refresh_at: float | None = None
        self.retry_at: float | None = None
        self.last_status: int | None = None
        self.last_reason: str | None = None
        self.attempts = 0  # REGISTERs sent (challenge answers included)
        self.failures = 0  # failed attempts since the last success
        self.failures_total = 0
        self._pending: Request | None = None
        self._auth_tried = False
        self._out: list[tuple[Request, Address]] = []

    # ---- I/O side -------------------------------------------------------------------

    def outgoing(self) -> list[tuple[Request, Address]]:
        out, self._out = self._out, []
        return out

    @property
    def deadline(self) -> float | None:
        """When `handle_timer` is next due; None while a REGISTER awaits its outcome (the
        client transaction bounds that) or when stopped."""
        if self._pending is not None:
            return None
        if self.state is RegState.REGISTERED:
            return self.refresh_at
        if self.state is RegState.FAILING:
            return self.retry_at
        return None

    def status(self) -> RegStatus:
        s = self.spec
        return RegStatus(s.name, s.aor, s.registrar, s.transport, self.state,
                         self.expires_at, self.last_status, self.last_reason,
                         self.deadline, self.attempts, self.failures_total)

    # ---- inputs ---------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self.state is RegState.IDLE:
            self.state = RegState.REGISTERING
            self._attempt(now)

    def handle_timer(self, now: float) -> None:
        at = self.deadline
        if at is None or now < at:
            return
        self._attempt(now)

    def stop(self, now: float) -> bool:
        """Shutdown: remove the binding (Expires: 0). True when an un-REGISTER was queued
        (its outcome ends it), False when there was nothing to remove."""
        bound = self.expires_at is not None and self.expires_at > now
        if self.state in (RegState.UNREGISTERING, RegState.STOPPED):
            return False
        if not bound and self._pending is None:
            self.state = RegState.STOPPED
            return False
        self.state = RegState.UNREGISTERING
        self._auth_tried = False
        self._send(self._register(0), now)
        return True

    def receive(self, request: Request, response: Response | None, now: float,
                reason: str = "") -> None:
        """The outcome of our REGISTER `request`: a response, or None when it timed out or
        could not be sent (`reason` says which)."""
        if self._pending is None or request is not self._pending:
            return  # a stray or late outcome, or that of a REGISTER since replaced
        if response is not None and response.status < 200:
            return
        sent, self._pending = self._pending, None
        if self.state is RegState.UNREGISTERING:
            if response is not None and self._challenged(sent, response, now):
                return
            self.state = RegState.STOPPED
            self.expires_at = self.refresh_at = self.retry_at = None
            self._note(response, reason)
            return
        if response is None:
            self._fail(now, 408, reason or "no response")
            return
        status = response.status
        if 200 <= status < 300:
            self._registered(response, now)
            return
        if self._challenged(sent, response, now):
            return
        if status == 423:
            min_expires = _int_header(response, "Min-Expires")
            if min_expires is not None and self.expires < min_expires <= MAX_EXPIRES:
                self.expires = min_expires
                self._note(response, "")
                self._attempt(now)
                return
        retry_after = _int_header(response, "Retry-After") if status == 503 else None
        self._fail(now, status, response.reason, retry_after)

    # ---- steps ----------------------------------------------------------------------

    def _attempt(self, now: float) -> None:
        self._auth_tried = False
        self.retry_at = self.refresh_at = None
        if self.state is not RegState.REGISTERED:
            self.state = RegState.REGISTERING if self.failures == 0 else RegState.FAILING
        self._send(self._register(self.expires), now)

    def _challenged(self, sent: Request, response: Response, now: float) -> bool:
        """Answer a 401/407 once per attempt (RFC 3261 22.2); False when it is not one
        we answer (no credentials, answered already, no usable challenge)."""
        status = response.status
        spec = self.spec
        if status not in (401, 407) or self._auth_tried or not spec.username:
            return False
        header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        try:
            challenge = choose_challenge(response.headers.get_all(header))
        except ParseError:
            return False
        self._auth_tried = True
        retry = self._register(int(sent.headers.get("Expires") or 0))
        retry.headers.add("Authorization" if status == 401 else "Proxy-Authorization",
                          authorization(challenge, method="REGISTER",
                                        uri=str(self.request_uri), username=spec.username,
                                        password=spec.password or "", cnonce=self._token()))
        self._send(retry, now)
        return True

    def _registered(self, response: Response, now: float) -> None:
        granted = self._granted(response)
        if granted <= 0:  # a 2xx without our binding: the registrar did not keep it
            self._fail(now, response.status, "no binding for our Contact in the 200")
            return
        self.state = RegState.REGISTERED
        self.failures = 0
        self.expires_at = now + granted
        self.refresh_at = now + max(MIN_REFRESH, granted / 2)
        self.retry_at = None
        self._note(response, "")

    def _granted(self, response: Response) -> int:
        """The expiry the registrar granted our binding (RFC 3261 10.2.4): our Contact's
        expires parameter, else the Expires header, else what we asked for."""
        try:
            contacts = response.contacts
        except SipError:
            contacts = ()
        ours = self.contact_uri
        for contact in contacts:
            uri = contact.uri
            if (isinstance(uri, SipUri) and uri.user == ours.user
                    and uri.host.strip("[]") == ours.host.strip("[]")
                    and (uri.port or 5060) == (ours.port or 5060)):
                value = _int(contact.param("expires"))
                if value is not None:
                    return value
        header = _int_header(response, "Expires")
        if header is not None:
            return header
        return self.expires

    def _fail(self, now: float, status: int, reason: str,
              retry_after: int | None = None) -> None:
        self.failures += 1
        self.failures_total += 1
        self.state = RegState.FAILING
        self.last_status = status
        self.last_reason = reason
        if self.expires_at is not None and self.expires_at <= now:
            self.expires_at = None
        self.retry_at = now + self._backoff(retry_after)

    def _backoff(self, retry_after: int | None) -> float:
        """RFC 5626 4.5: min(max, min * 2^(failures-1)) scaled by a random 50-100%, never
        below `retry_min`; a 503's Retry-After, if longer, wins."""
        spec = self.spec
        base = min(spec.retry_max, spec.retry_min * 2.0 ** min(self.failures - 1, 30))
        delay = max(spec.retry_min, base * (0.5 + 0.5 * self._jitter()))
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    def _note(self, response: Response | None, reason: str) -> None:
        if response is not None:
            self.last_status, self.last_reason = response.status, response.reason
        elif reason:
            self.last_status, self.last_reason = 408, reason

    def _send(self, request: Request, now: float) -> None:
        self._pending = request
        self.attempts += 1
        self._out.append((request, self.destination))

    def _register(self, expires: int) -> Request:
        """A REGISTER (RFC 3261 10.2): To and From the AOR, our Contact, Expires."""
        self.cseq += 1
        spec = self.spec
        dest = self.destination
        h = Headers()
        h.add("Via", str(Via(dest.transport.upper(), self.contact_uri.host,
                             self.contact_uri.port,
                             (("branch", new_branch(self._token())), ("rport", None)))))
        h.add("Max-Forwards", "70")
        h.add("From", str(NameAddr(self.aor).with_tag(self.from_tag)))
        h.add("To", str(NameAddr(self.aor)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Contact", str(NameAddr(self.contact_uri)))
        h.add("Expires", str(expires))
        h.add("User-Agent", spec.user_agent)
        return Request("REGISTER", self.request_uri, h, b"")


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().split("(", 1)[0].split(";", 1)[0].strip()  # Retry-After comments
    return int(text) if text.isdigit() and len(text) <= 10 else None


def _int_header(response: Response, name: str) -> int | None:
    return _int(response.headers.get(name))
