"""The UA core (RFC 3261 8, 12-15, 17): routes each message to its transaction or dialog.

Sans-IO like the rest of `sip`: `receive(data, source, now)` takes bytes, the caller
drains `outgoing()` and `events()`, and calls `handle_timer(now)` at `deadline`.
Everything a peer can send is answered here or dropped and counted in `stats`;
nothing raises out of `receive`.
"""

from __future__ import annotations

import enum
import heapq
import ipaddress
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address, in_networks, response_target, stamp_via
from sipbridge.sip.auth import authorization, choose_challenge
from sipbridge.sip.dialog import Dialog, DialogId, DialogState
from sipbridge.sip.errors import MessageTooLarge, ParseError, SipError
from sipbridge.sip.events import (
    CallConfirmed,
    CallEnded,
    EndReason,
    Event,
    IncomingCall,
    InDialogRequest,
    OutgoingAnswered,
    OutgoingProgress,
    ReInvite,
    RequestOutcome,
)
from sipbridge.sip.headers import NameAddr, Via
from sipbridge.sip.message import (
    DEFAULT_MAX_SIZE,
    Headers,
    Request,
    Response,
    parse_message,
    response_to,
)
from sipbridge.sip.overload import REASON as OVERLOADED
from sipbridge.sip.overload import OverloadDetector, shed_head, shed_response, shed_target
from sipbridge.sip.ratelimit import RateLimiter
from sipbridge.sip.tokens import token_hex
from sipbridge.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    Settled,
    State,
    Timeout,
    TimerConfig,
    client_key,
    new_branch,
    server_key,
)
from sipbridge.sip.uri import parse_uri

log = logging.getLogger("sipbridge.sip")

DRAINING = "Service Unavailable (draining)"
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "NOTIFY", "REFER")
KNOWN_METHODS = frozenset(
    (*ALLOW, "REGISTER", "SUBSCRIBE", "MESSAGE", "UPDATE", "PRACK", "PUBLISH")
)
SUPPORTED: frozenset[str] = frozenset({"norefersub"})


@dataclass(frozen=True, slots=True)
class UaConfig:
    host: str = "127.0.0.1"  # the address we put in Contact and Via when none is better
    port: int = 5060
    tls_port: int = 0  # where we take SIP over TLS; 0: nowhere
    user_agent: str = "sipbridge"
    timers: TimerConfig = field(default_factory=TimerConfig)
    max_message_size: int = DEFAULT_MAX_SIZE
    # Peers (by source network) whose in-dialog requests go to the address their INVITE
    # came from, or where ours went, instead of their Contact and Record-Route.
    rewrite_contact: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


class LegState(enum.Enum):
    CALLING = "calling"  # we sent an INVITE (an outgoing leg), no final response yet
    INCOMING = "incoming"  # INVITE received, no final response yet
    ANSWERED = "answered"  # 2xx sent, waiting for ACK
    CONFIRMED = "confirmed"  # ACK received
    ENDED = "ended"


@dataclass(slots=True)
class Leg:
    """One INVITE session the UA serves: its transaction, dialog and state."""

    id: str
    invite: Request
    source: Address
    tx: ServerTransaction  # an outgoing leg's is a stand-in that never sends
    dialog: Dialog
    state: LegState = LegState.INCOMING
    # a re-INVITE transaction under way (RFC 3261 14.2)
    pending_invite: ServerTransaction | ClientTransaction | None = None
    bye_after_ack: bool = False
    # Outgoing legs: the INVITE's client transaction, digest credentials, CANCEL asked.
    client: ClientTransaction | None = None
    credentials: tuple[str, str] | None = None
    auth_tried: bool = False
    cancel_sent: bool = False


class UserAgent:
    """The sans-IO SIP user agent core. One per gateway."""

    def __init__(
        self,
        config: UaConfig,
        guard: AccessGuard,
        *,
        token: Callable[[], str] = lambda: token_hex(8),
        limiter: RateLimiter | None = None,
        overload: OverloadDetector | None = None,
    ) -> None:
        self.config = config
        self.guard = guard
        self.limiter = limiter
        self._token = token
        # Overload control: new INVITEs answered 503 at once while it is active. The
        # To tags of those answers share a prefix, so that their ACKs are dropped unread.
        self.overload = overload
        self._shed_prefix = "ol" + secrets.token_hex(4)
        self._shed_mark = b";tag=" + self._shed_prefix.encode("ascii")
        self._shed_count = 0
        self._admitted = False  # the message being received was admitted already
        # Draining: new INVITEs and OPTIONS get 503 + Retry-After (a load balancer probing
        # with OPTIONS, as Kamailio's dispatcher does, takes the node out); dialogs go on.
        self.draining = False
        self.drain_retry_after = 30
        self._incoming_ids: Counter[str] = Counter()  # Call-IDs of incoming legs alive
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        # Server transactions that only wait for their end, as `Settled` values in plain
        # tuples, and their ends in a heap of (end, key).
        self._settled: dict[tuple[str, ...], tuple[Any, ...]] = {}
        self._settled_ends: list[tuple[float, tuple[str, ...]]] = []
        self._client: dict[tuple[str, ...], tuple[ClientTransaction, str]] = {}
        self._legs: dict[str, Leg] = {}
        self._dialogs: dict[DialogId, Leg] = {}
        self._timers: list[tuple[float, int, ServerTransaction | ClientTransaction]] = []
        self._timer_seq = 0
        self._out: list[tuple[bytes, Address]] = []
        self._trying: list[tuple[ServerTransaction, float]] = []  # new INVITEs not answered
        self._events: list[Event] = []
        self.stats: Counter[str] = Counter()

    # ---- I/O side -------------------------------------------------------------------

    def outgoing(self) -> list[tuple[bytes, Address]]:
        if self._trying:
            self._send_trying()
        out = self._out[:]  # transactions hold this list: empty it in place
        self._out.clear()
        return out

    def _send_trying(self) -> None:
        """A 100 Trying to each new INVITE that nothing has answered yet."""
        trying, self._trying = self._trying, []
        for tx, now in trying:
            request = tx.request
            if request is not None and tx.state is State.PROCEEDING and not tx.responded:
                self._respond_tx(tx, response_to(request, 100), now)

    def events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    @property
    def deadline(self) -> float | None:
        at = self._timers[0][0] if self._timers else None
        if self._settled_ends:
            end = self._settled_ends[0][0]
            return end if at is None or end < at else at
        return at

    @property
    def held(self) -> dict[str, int]:
        """How much state the core holds: server and client transactions, legs, dialogs and
        the Call-IDs of incoming legs alive; all 0 once every call and transaction ended."""
        return {"server_transactions": len(self._server) + len(self._settled),
                "client_transactions": len(self._client), "legs": len(self._legs),
                "dialogs": len(self._dialogs), "incoming_call_ids": len(self._incoming_ids)}

    @property
    def server_transactions(self) -> list[ServerTransaction]:
        """The server transactions alive (RFC 3261 17.2) that have more to do than answer
        retransmissions until they end (those are `settled_transactions`)."""
        return list(self._server.values())

    @property
    def settled_transactions(self) -> list[Settled]:
        """What is left of the server transactions that only wait for their end."""
        return [Settled._make(values) for values in self._settled.values()]

    def _settled_of(self, key: tuple[str, ...]) -> Settled | None:
        values = self._settled.get(key)
        return None if values is None else Settled._make(values)

    def admit(self, source: Address, now: float) -> bool:
        """The per-source rate limit (`sip.ratelimit`), first, before any parsing: a flood
        costs a dict lookup per message. Every message is charged, responses too: only
        parsing could tell them apart, and a flood can dress as responses. Trunks and
        allowed networks are exempt. False: drop it unread and unanswered (counted)."""
        if self.limiter is not None and not self.limiter.admit(source.host, now):
            self.stats["received"] += 1
            self.stats["dropped_rate_limited"] += 1
            return False
        return True

    def shed(self, data: bytes, source: Address, now: float) -> bool:
        """Overload control's cheap path, before anything else reads the message: True
        when it was a new INVITE refused with 503 (queued in `outgoing`) or the ACK of
        such a 503 (dropped); False when `receive(..., screened=True)` is to take it."""
        self._admitted = False
        overload = self.overload
        if overload is None:
            return False
        if data.startswith(b"INVITE ") and (overload.metered or overload.active(now)):
            try:
                refused = self._shed(data, source, now)
            except Exception:  # a bug here must not lose the message: the full path reads it
                self.stats["internal_errors"] += 1
                log.exception("error in overload control on a message from %s", source)
                return False
            if refused:
                self.stats["received"] += 1
                return True
        elif data.startswith(b"ACK ") and self._shed_mark in data:
            self.stats["received"] += 1
            self.stats["overload_acks"] += 1  # the ACK of a 503 of ours: nothing to do
            return True
        return False

    def receive(self, data: bytes, source: Address, now: float, *,
                screened: bool = False) -> bool:
        """Take one datagram or framed stream message. Never raises. False: dropped unread
        and unanswered, its source being over its rate. `screened=True`: the caller has
        asked `admit` and `shed` about it already."""
        if not screened:
            if not self.admit(source, now):
                return False
            if self.shed(data, source, now):
                return True
        try:
            return self._receive(data, source, now)
        finally:
            self._admitted = False

    def _receive(self, data: bytes, source: Address, now: float) -> bool:
        self.stats["received"] += 1
        if not data.strip(b"\r\n"):
            self.stats["keepalives"] += 1  # NAT keep-alive (RFC 5626 4.4.1): nothing to do
            return True
        try:
            msg = parse_message(data, self.config.max_message_size)
        except MessageTooLarge as exc:
            self._answer_oversize(data, source, exc)
            return True
        except ParseError as exc:
            self.stats["dropped_unparseable"] += 1
            # A peer's bad input: counted, and one line naming the peer (the log
            # throttles repeats), never a traceback.
            log.info("dropped an unparseable message from %s: %s", source, exc.reason)
            return True
        try:
            if isinstance(msg, Response):
                self._on_response(msg, source, now)
            else:
                self._on_request(msg, source, now)
        except Exception:  # a bug must not take the receive loop down
            self.stats["internal_errors"] += 1
            log.exception("error handling a message from %s", source)
            if isinstance(msg, Request) and msg.method != "ACK":
                self._stateless(msg, source, 500, "Server Internal Error")
        return True

    def handle_timer(self, now: float) -> None:
        """Fire every transaction timer that is due."""
        ends, settled = self._settled_ends, self._settled
        while ends and ends[0][0] <= now:
            at, key = heapq.heappop(ends)
            values = settled.get(key)
            if values is not None and values[0] == at:
                del settled[key]
        while self._timers and self._timers[0][0] <= now:
            at, _, tx = heapq.heappop(self._timers)
            if tx.terminated or tx.settled_away or tx.deadline != at:
                continue  # stale entry: the timer moved or the transaction ended
            result = tx.on_timer(now)
            if isinstance(tx, ServerTransaction):
                self._server_timeout(tx, result, now)
            else:
                self._client_timeout(tx, result, now)
            self._track(tx)

    # ---- TU commands ----------------------------------------------------------------

    def leg(self, leg_id: str) -> Leg | None:
        return self._legs.get(leg_id)

    def ring(self, leg_id: str, now: float, status: int = 180, body: bytes = b"") -> None:
        """Send a provisional response; it makes the early dialog (RFC 3261 12.1.1)."""
        leg = self._need(leg_id, LegState.INCOMING)
        headers = [("Contact", leg.dialog.local_contact)]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        self._respond_tx(leg.tx, response_to(leg.invite, status, to_tag=leg.dialog.local_tag,
                                             headers=headers, body=body), now)

    def answer(self, leg_id: str, body: bytes, now: float) -> None:
        """Send 200 OK with our SDP; retransmitted until the ACK (RFC 3261 13.3.1.4)."""
        leg = self._need(leg_id, LegState.INCOMING)
        headers = [
            ("Contact", leg.dialog.local_contact),
            ("Allow", ", ".join(ALLOW)),
            ("Supported", ", ".join(sorted(SUPPORTED))),
            ("Server", self.config.user_agent),
        ]
        for rr in leg.invite.headers.get_all("Record-Route"):
            headers.append(("Record-Route", rr))
        if body:
            headers.append(("Content-Type", "application/sdp"))
        leg.state = LegState.ANSWERED
        self._respond_tx(leg.tx, response_to(leg.invite, 200, to_tag=leg.dialog.local_tag,
                                             headers=headers, body=body), now)

    def reject(self, leg_id: str, status: int, now: float, reason: str | None = None,
               headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer the INVITE with a final non-2xx and end the leg."""
        leg = self._need(leg_id, LegState.INCOMING)
        resp = response_to(leg.invite, status, reason, to_tag=leg.dialog.local_tag,
                           headers=headers)
        self._respond_tx(leg.tx, resp, now)
        self._end(leg, EndReason.REJECTED, status, resp.reason)

    def hangup(self, leg_id: str, now: float) -> None:
        """End the leg from our side: BYE once answered, 480 before (RFC 3261 15)."""
        leg = self._legs.get(leg_id)
        if leg is None or leg.state is LegState.ENDED:
            return
        if leg.state is LegState.CALLING:
            if not leg.cancel_sent:
                self._cancel(leg, now)  # the leg ends with the INVITE's 487 (or a BYE)
        elif leg.state is LegState.INCOMING:
            self.reject(leg_id, 480, now)
        elif leg.state is LegState.ANSWERED:
            leg.bye_after_ack = True  # 15.1.1: no BYE before the ACK or the 2xx times out
        else:
            self._send_bye(leg, now, EndReason.LOCAL_BYE)

    def invite(self, target: str, dest: Address, now: float, *, body: bytes,
               from_uri: str, headers: Iterable[tuple[str, str]] = (),
               credentials: tuple[str, str] | None = None) -> str:
        """Place a call (RFC 3261 13.2): INVITE `target` (a SIP URI) through `dest` with our
        SDP offer. Returns the leg id. The TU then hears OutgoingProgress, OutgoingAnswered
        (the 2xx is ACKed here) or CallEnded(REJECTED, status); a 401/407 is answered once
        with `credentials` (user, password)."""
        uri = parse_uri(target)
        local_tag = self._token()
        h = Headers()
        h.add("Via", str(Via(dest.transport.upper(), self.config.host,
                             self._port(dest.transport),
                             (("branch", new_branch(self._token())), ("rport", None)))))
        h.add("Max-Forwards", "70")
        h.add("From", str(NameAddr(parse_uri(from_uri)).with_tag(local_tag)))
        h.add("To", str(NameAddr(uri)))
        h.add("Call-ID", f"{self._token()}{self._token()}@{self.config.host}")
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self._contact(dest))
        h.add("Allow", ", ".join(ALLOW))
        h.add("User-Agent", self.config.user_agent)
        for name, value in headers:
            h.add(name, value)
        if body:
            h.add("Content-Type", "application/sdp")
        request = Request("INVITE", uri, h, body)
        stand_in = ServerTransaction(request, dest, now, self.config.timers, [])
        placeholder = Dialog(call_id=request.call_id, local_tag=local_tag, remote_tag="",
                             local=request.from_, remote=request.to, remote_target=uri,
                             route_set=(), local_seq=1, remote_seq=None, peer=dest,
                             is_uas=False, local_contact=h.get("Contact") or "",
                             to_source=self._to_source(dest))
        leg = Leg(id=local_tag, invite=request, source=dest, tx=stand_in, dialog=placeholder,
                  state=LegState.CALLING, credentials=credentials)
        self._legs[leg.id] = leg
        self._send_invite(leg, request, now)
        self.stats["calls_out"] += 1
        return leg.id

    def _send_invite(self, leg: Leg, request: Request, now: float) -> None:
        tx = ClientTransaction(request, leg.source, now, self.config.timers, self._out)
        self._client[tx.key] = (tx, leg.id)
        leg.client = tx
        leg.invite = request
        self._track(tx)

    def _outgoing_response(self, leg: Leg, tx: ClientTransaction, resp: Response,
                           now: float) -> None:
        """A response to the INVITE of a call we placed."""
        status = resp.status
        if status < 200:
            if leg.state is LegState.CALLING:
                self._events.append(OutgoingProgress(leg.id, resp))
            return
        if status < 300:
            if leg.state is LegState.CALLING:
                dialog = Dialog.as_uac(tx.request, resp, leg.source)
                dialog.via_host = self.config.host
                dialog.via_port = self._port(leg.source.transport)
                dialog.to_source = leg.dialog.to_source
                leg.dialog = dialog
                leg.state = LegState.CONFIRMED
                dialog.state = DialogState.CONFIRMED
                self._dialogs[dialog.id] = leg
                self._out.append((dialog.ack_for_2xx(tx.request).to_bytes(),
                                  dialog.destination()))
                self._events.append(OutgoingAnswered(leg.id, resp))
                if leg.cancel_sent:  # answered while our CANCEL was on its way: 15.1.1
                    self._send_bye(leg, now, EndReason.LOCAL_BYE)
            elif leg.dialog.remote_tag == (resp.to.tag or ""):
                self._out.append((leg.dialog.ack_for_2xx(tx.request).to_bytes(),
                                  leg.dialog.destination()))  # a retransmitted 2xx: ACK again
            return
        if leg.state is not LegState.CALLING:
            return
        challenges = resp.headers.get_all(
            "WWW-Authenticate" if status == 401 else "Proxy-Authenticate")
        if status in (401, 407) and leg.credentials and not leg.auth_tried and challenges:
            try:
                challenge = choose_challenge(challenges)
            except ParseError:
                challenge = None
            if challenge is not None and not leg.cancel_sent:
                leg.auth_tried = True
                user, password = leg.credentials
                retry = Headers(list(leg.invite.headers))
                retry.set("Via", str(Via(leg.source.transport.upper(), self.config.host,
                                         self._port(leg.source.transport),
                                         (("branch", new_branch(self._token())),
                                          ("rport", None)))))
                retry.set("CSeq", f"{leg.invite.cseq.seq + 1} INVITE")
                retry.add("Authorization" if status == 401 else "Proxy-Authorization",
                          authorization(challenge, method="INVITE", uri=str(leg.invite.uri),
                                        username=user, password=password,
                                        cnonce=self._token(), body=leg.invite.body))
                self._send_invite(leg, Request("INVITE", leg.invite.uri, retry,
                                               leg.invite.body), now)
                return
        reason = EndReason.CANCELLED if leg.cancel_sent and status == 487 else EndReason.REJECTED
        self._end(leg, reason, status, resp.reason)

    def _cancel(self, leg: Leg, now: float) -> None:
        """RFC 3261 9.1: CANCEL a call we placed that has not been answered."""
        invite = leg.invite
        h = Headers()
        h.add("Via", invite.headers.get("Via") or "")
        h.add("Max-Forwards", "70")
        h.add("From", invite.headers.get("From") or "")
        h.add("To", invite.headers.get("To") or "")
        h.add("Call-ID", invite.call_id)
        h.add("CSeq", f"{invite.cseq.seq} CANCEL")
        cancel = Request("CANCEL", invite.uri, h)
        tx = ClientTransaction(cancel, leg.source, now, self.config.timers, self._out)
        self._client[tx.key] = (tx, leg.id)
        leg.cancel_sent = True
        self._track(tx)

    def respond(self, leg_id: str, request: Request, status: int, now: float, *,
                reason: str | None = None, headers: Iterable[tuple[str, str]] = (),
                body: bytes = b"") -> None:
        """Answer an in-dialog request the TU was handed (ReInvite, InDialogRequest)."""
        leg = self._legs.get(leg_id)
        key = server_key(request)
        tx = self._server.get(key)
        if tx is None and key in self._settled:
            return  # answered already
        if tx is None or leg is None:
            raise KeyError("no pending transaction for that request")
        h = list(headers)
        if request.method == "INVITE" and 200 <= status < 300:
            h.append(("Contact", leg.dialog.local_contact))
            if body:
                h.append(("Content-Type", "application/sdp"))
        self._respond_tx(tx, response_to(request, status, reason, to_tag=leg.dialog.local_tag,
                                         headers=h, body=body), now)
        if request.method == "INVITE" and status >= 300:
            leg.pending_invite = None  # a 2xx stays pending until its ACK (13.3.1.4)

    def send_request(self, leg_id: str, method: str, now: float, *,
                     headers: Headers | None = None, body: bytes = b"") -> Request:
        """Send a request inside the leg's dialog (BYE, INFO, REFER, re-INVITE)."""
        leg = self._legs.get(leg_id)
        if leg is None or leg.state is LegState.ENDED:
            raise KeyError(f"no live leg {leg_id}")
        request = leg.dialog.create_request(method, new_branch(self._token()),
                                            headers=headers, body=body)
        self._start_client(leg, request, now)
        return request

    def send_standalone(self, owner: str, request: Request, dest: Address,
                        now: float) -> None:
        """Send a request outside any dialog (a REGISTER) in a client transaction of its
        own; its outcome comes back as RequestOutcome(owner, ...), a timeout and a
        transport error (as a 503) included."""
        tx = ClientTransaction(request, dest, now, self.config.timers, self._out)
        self._client[tx.key] = (tx, owner)
        self._track(tx)

    # ---- requests -------------------------------------------------------------------

    def _on_request(self, req: Request, source: Address, now: float) -> None:
        try:
            top = req.top_via
        except SipError as exc:
            if req.headers.get("Via") is None:
                self.stats["dropped_no_via"] += 1
                return
            # A bad start line says more than the Via it broke too (SIP/7.0: 505, not 400).
            error = req.start_line_error or exc
            self._stateless(req, source, error.status, error.reason, target=source)
            return
        stamped = stamp_via(top, source)
        if stamped is not None:
            vias = req.headers.get_all("Via")
            req.headers.remove("Via")
            req.headers.add("Via", str(stamped))
            for v in vias[1:]:
                req.headers.add("Via", v)
            req.set_vias((stamped, *req.vias[1:]))
        try:
            req.validate()
        except SipError as exc:
            self._stateless(req, source, exc.status, exc.reason)
            return
        method = req.method
        if method == "ACK":
            self._on_ack(req, now)
            return
        if method == "CANCEL":
            self._on_cancel(req, source, now)
            return
        key = server_key(req)
        tx = self._server.get(key)
        if tx is not None:
            self.stats["retransmissions_absorbed"] += 1
            tx.receive(req, now)
            return
        settled = self._settled_of(key)
        if settled is not None:
            self.stats["retransmissions_absorbed"] += 1
            if settled.resend is not None:
                self._out.append((settled.resend, settled.peer))
            return
        if req.to.tag is not None:
            self._in_dialog(req, source, now)
            return
        self._out_of_dialog(req, source, now)

    def _out_of_dialog(self, req: Request, source: Address, now: float) -> None:
        """A new request outside any dialog: OPTIONS answered, a new INVITE admitted as a
        call, anything else refused with the status that says why."""
        method = req.method
        if method not in KNOWN_METHODS:
            self._stateless(req, source, 501, f"Method {method} Not Implemented")
            return
        unsupported = [t for t in req.headers.get_all("Require") if t not in SUPPORTED]
        if unsupported:
            self._stateless(req, source, 420, "Bad Extension",
                            headers=[("Unsupported", ", ".join(unsupported))])
            return
        if getattr(req.uri, "scheme", "") == "sips" and source.transport not in ("tls", "wss"):
            # A sips: Request-URI promises TLS on every hop; this one came over plain
            # UDP or TCP, so it is not served as if secure (RFC 5630; RFC 3261 8.2.2.1:
            # a Request-URI scheme the UAS does not support gets 416).
            self._stateless(req, source, 416, "Unsupported URI Scheme")
            return
        if method not in ("INVITE", "OPTIONS"):
            status = 481 if method in ("BYE", "NOTIFY") else 405
            self._stateless(req, source, status, headers=[("Allow", ", ".join(ALLOW))])
            return
        decision = self.guard.check(req, source, now)
        if not decision.allowed:
            self.stats[f"refused_{decision.status}"] += 1
            self._stateless(req, source, decision.status, decision.reason,
                            headers=decision.headers)
            return
        if self.draining:
            self.stats["refused_draining"] += 1
            self._stateless(req, source, 503, DRAINING,
                            headers=[("Retry-After", str(self.drain_retry_after))])
            return
        if method == "OPTIONS":
            self._stateless(req, source, 200, headers=self._capabilities())
            return
        if self.overload is not None and not self._admitted and not self.overload.admit(now):
            self.stats["overload_rejected"] += 1
            self._stateless(req, source, 503, OVERLOADED, to_tag=self._shed_tag(),
                            headers=[("Retry-After", str(self.overload.limits.retry_after))])
            return
        self._new_call(req, source, now, decision.username)

    def _shed(self, data: bytes, source: Address, now: float) -> bool:
        """Overload control on a raw INVITE (RFC 7339 5.1): a new call refused with a
        stateless 503 and Retry-After, read and answered without the full parser and
        before any state (True); or admitted, or left for the full parser (False)."""
        assert self.overload is not None
        head = shed_head(data)
        if head is None:
            return False  # not a plain new INVITE: the full path decides
        try:
            call_id = head.call_id.decode("utf-8")
        except UnicodeDecodeError:
            return False
        if call_id in self._incoming_ids:
            return False  # a retransmission of a call under way
        if self.overload.admit(now):
            self._admitted = True
            return False
        self.stats["overload_rejected"] += 1
        self.stats["answered_503"] += 1
        response = shed_response(head, source.host, source.port, self._shed_tag(),
                                 self.overload.limits.retry_after)
        if source.reliable:
            self._out.append((response, source))
        else:
            host, port = shed_target(head, source.host, source.port)
            self._out.append((response, Address(source.transport, host, port)))
        return True

    def _shed_tag(self) -> str:
        self._shed_count += 1
        return f"{self._shed_prefix}{self._shed_count:x}"

    def _new_call(self, req: Request, source: Address, now: float, user: str | None) -> None:
        local_tag = self._token()
        contact = self._contact(source, sips=getattr(req.uri, "scheme", "") == "sips")
        try:
            dialog = Dialog.as_uas(req, local_tag, 1, source, contact)
        except SipError as exc:  # no Contact (RFC 3261 8.1.1.8), a bad Record-Route
            self._stateless(req, source, exc.status, exc.reason)
            return
        dialog.via_host, dialog.via_port = self.config.host, self._port(source.transport)
        dialog.to_source = self._to_source(source)
        if source.reliable:
            via = req.top_via
            dialog.flow_alias = (via.host.strip("[]"), via.port or 5060)
        tx = ServerTransaction(req, source, now, self.config.timers, self._out)
        tx.peer = response_target(req.top_via, source)
        tx.owner = local_tag
        self._server[tx.key] = tx
        leg = Leg(id=local_tag, invite=req, source=source, tx=tx, dialog=dialog)
        self._legs[leg.id] = leg
        self._dialogs[dialog.id] = leg
        self._incoming_ids[req.call_id] += 1
        # 100 Trying only if the TU has not answered by the time this turn's messages go
        # out (RFC 3261 17.2.1 asks for it within 200 ms of no provisional response): a
        # call answered at once gets its 180 or 200 without a 100 before it.
        self._trying.append((tx, now))
        self.stats["calls_in"] += 1
        self._events.append(IncomingCall(leg.id, req, source, user))

    def _in_dialog(self, req: Request, source: Address, now: float) -> None:
        leg = self._dialogs.get((req.call_id, req.to.tag or "", req.from_.tag or ""))
        if leg is None or leg.state is LegState.ENDED:
            self._stateless(req, source, 481, "Call/Transaction Does Not Exist")
            return
        method = req.method
        if method not in ALLOW:
            status = 405 if method in KNOWN_METHODS else 501
            self._stateless(req, source, status, headers=[("Allow", ", ".join(ALLOW))])
            return
        try:
            leg.dialog.check_remote_cseq(req)
        except SipError as exc:
            self._stateless(req, source, exc.status, exc.reason)
            return
        tx = ServerTransaction(req, response_target(req.top_via, source), now,
                               self.config.timers, self._out)
        self._server[tx.key] = tx
        if method == "BYE":
            self._respond_tx(tx, response_to(req, 200), now)
            if leg.state is LegState.INCOMING:
                self._respond_tx(leg.tx, response_to(leg.invite, 487,
                                                     to_tag=leg.dialog.local_tag), now)
            elif leg.state is LegState.ANSWERED:
                leg.tx.ack_received(now)  # a BYE shows our 2xx arrived: stop resending it
                self._track(leg.tx)
            self._end(leg, EndReason.REMOTE_BYE)
        elif method == "INVITE":
            pending = leg.pending_invite
            if isinstance(pending, ServerTransaction) and pending.final_status is None:
                # RFC 3261 14.2: an INVITE before our final response to the previous one.
                retry = ("Retry-After", str(secrets.randbelow(11)))
                self._respond_tx(tx, response_to(req, 500, to_tag=leg.dialog.local_tag,
                                                 headers=[retry]), now)
                return
            if pending is not None or leg.state is not LegState.CONFIRMED:
                self._respond_tx(tx, response_to(req, 491, to_tag=leg.dialog.local_tag), now)
                return
            leg.pending_invite = tx
            tx.owner = leg.id
            leg.dialog.refresh_target(req)
            self._events.append(ReInvite(leg.id, req))
        elif method in ("INFO", "OPTIONS"):
            headers = self._capabilities() if method == "OPTIONS" else []
            self._respond_tx(tx, response_to(req, 200, headers=headers), now)
            self._events.append(InDialogRequest(leg.id, req, answered=True))
        else:
            self._events.append(InDialogRequest(leg.id, req, answered=False))
        self._track(tx)

    def _on_ack(self, req: Request, now: float) -> None:
        key = server_key(req)
        tx = self._server.get(key)
        if tx is not None and tx.state in (State.COMPLETED, State.CONFIRMED):
            tx.receive(req, now)  # ACK for a non-2xx: absorbed by the transaction
            self._track(tx)
            return
        settled = self._settled_of(key)
        if settled is not None and settled.absorbs_ack:
            return  # another ACK for a non-2xx, in Confirmed
        leg = self._dialogs.get((req.call_id, req.to.tag or "", req.from_.tag or ""))
        if leg is None:
            self.stats["dropped_stray_ack"] += 1
            return
        for pending in (leg.tx, leg.pending_invite):
            if isinstance(pending, ServerTransaction) and pending.cseq == req.cseq.seq:
                pending.ack_received(now)
                self._track(pending)
                if pending is leg.pending_invite:
                    leg.pending_invite = None  # the re-INVITE is complete (14.2)
        if leg.state is LegState.ANSWERED and req.cseq.seq == leg.invite.cseq.seq:
            leg.state = LegState.CONFIRMED
            leg.dialog.state = DialogState.CONFIRMED
            self._events.append(CallConfirmed(leg.id, req.body))
            if leg.bye_after_ack:
                self._send_bye(leg, now, EndReason.LOCAL_BYE)

    def _on_cancel(self, req: Request, source: Address, now: float) -> None:
        """RFC 3261 9.2: 200 to the CANCEL, 487 to the INVITE if it is still pending."""
        invite_key = (*server_key(req)[:-1], "INVITE")
        invite_tx = self._server.get(invite_key)
        found = invite_tx if invite_tx is not None else self._settled_of(invite_key)
        if found is None:
            self._stateless(req, source, 481, "Call/Transaction Does Not Exist")
            return
        self._stateless(req, source, 200, to_tag=found.owner or None)  # 9.2: same To tag
        if invite_tx is None:
            return  # answered already (settled): the CANCEL has nothing more to do
        leg = self._dialogs_by_tx(invite_tx)
        if leg is not None and leg.state is LegState.INCOMING:
            self._respond_tx(invite_tx, response_to(leg.invite, 487, to_tag=leg.dialog.local_tag),
                             now)
            self._end(leg, EndReason.CANCELLED, 487)

    # ---- responses ------------------------------------------------------------------

    def _on_response(self, resp: Response, source: Address, now: float) -> None:
        try:
            resp.validate()
        except SipError:
            self.stats["dropped_bad_response"] += 1
            return
        branch = resp.top_via.branch or ""
        entry = self._client.get(client_key(branch, resp.cseq.method))
        if entry is None:
            self.stats["dropped_stray_response"] += 1
            return
        tx, leg_id = entry
        retransmitted = tx.state is State.ACCEPTED
        leg = self._legs.get(leg_id)
        if leg is not None and tx is leg.client:
            if tx.receive(resp, now):
                self._outgoing_response(leg, tx, resp, now)
            self._track(tx)
            return
        if tx.receive(resp, now):
            if tx.is_invite and 200 <= resp.status < 300:
                if leg is not None:
                    leg.dialog.refresh_target(resp)
                    ack = leg.dialog.ack_for_2xx(tx.request)
                    self._out.append((ack.to_bytes(), leg.dialog.destination()))
                    if leg.pending_invite is tx:
                        leg.pending_invite = None
                if retransmitted:
                    self._track(tx)  # 13.2.2.4: ACK each 2xx, but the TU hears of it once
                    return
            elif tx.is_invite and resp.status >= 300 and leg is not None:
                leg.pending_invite = None
            self._events.append(RequestOutcome(leg_id, tx.request, resp))
        self._track(tx)

    # ---- timers ---------------------------------------------------------------------

    def _server_timeout(self, tx: ServerTransaction, result: Timeout | None, now: float) -> None:
        if result is Timeout.NO_2XX_ACK:
            leg = self._dialogs_by_tx(tx)
            if leg is not None and leg.state is not LegState.ENDED:
                self._send_bye(leg, now, EndReason.NO_ACK)

    def _client_timeout(self, tx: ClientTransaction, result: Timeout | None, now: float) -> None:
        if result is Timeout.NO_RESPONSE:
            _, leg_id = self._client.get(tx.key, (tx, ""))
            leg = self._legs.get(leg_id)
            if leg is not None and tx is leg.client:
                if leg.state is LegState.CALLING:
                    self._end(leg, EndReason.REJECTED, 408, "no answer to INVITE")
                return
            if leg is not None and tx.is_invite:
                leg.pending_invite = None
            self._events.append(RequestOutcome(leg_id, tx.request, None, timed_out=True))

    def _track(self, tx: ServerTransaction | ClientTransaction) -> None:
        """Re-arm a transaction's timer, or forget it once it has ended."""
        if tx.terminated:
            if isinstance(tx, ServerTransaction):
                if self._server.get(tx.key) is tx:
                    del self._server[tx.key]
            else:
                self._client.pop(tx.key, None)
            return
        if isinstance(tx, ServerTransaction):
            if tx.settled_away:
                return
            settled = tx.settled()
            if settled is not None and self._server.get(tx.key) is tx:
                # From now on it is plain values: the transaction object can go.
                del self._server[tx.key]
                tx.settled_away = True
                self._settled[tx.key] = tuple(settled)
                heapq.heappush(self._settled_ends, (settled.end_at, tx.key))
                return
        at = tx.deadline
        if at is not None:
            self._timer_seq += 1
            heapq.heappush(self._timers, (at, self._timer_seq, tx))

    # ---- helpers --------------------------------------------------------------------

    def _need(self, leg_id: str, state: LegState) -> Leg:
        leg = self._legs.get(leg_id)
        if leg is None or leg.state is not state:
            got = "unknown" if leg is None else leg.state.value
            raise RuntimeError(f"leg {leg_id} is {got}, not {state.value}")
        return leg

    def _respond_tx(self, tx: ServerTransaction, resp: Response, now: float) -> None:
        if tx.state not in (State.TRYING, State.PROCEEDING):
            return  # already answered (e.g. CANCEL raced the answer)
        self.stats[f"answered_{resp.status}"] += 1
        tx.respond(resp, now)
        self._track(tx)

    def _start_client(self, leg: Leg, request: Request, now: float) -> None:
        dest = leg.dialog.destination()
        looped = self._is_self(dest)
        # A request whose next hop is this gateway would come straight back (a proxy that
        # forwards everything here and records no route): it fails as 482, unsent.
        tx = ClientTransaction(request, dest, now, self.config.timers,
                               [] if looped else self._out)
        self._client[tx.key] = (tx, leg.id)
        if tx.is_invite:
            leg.pending_invite = tx
        self._track(tx)
        if looped:
            self.stats["loops_refused"] += 1
            self._on_response(response_to(request, 482, f"Loop Detected (the next hop {dest} "
                                          "is this gateway)"), dest, now)

    def transport_error(self, data: bytes, dest: Address, reason: str, now: float) -> None:
        """The transport could not send `data` to `dest` (no address for its host name, a
        refused connection): the request's client transaction fails as if answered 503
        (RFC 3261 8.1.3.1, RFC 3263 4.3), so the TU hears of it at once."""
        self.stats["transport_errors"] += 1
        try:
            msg = parse_message(data, self.config.max_message_size)
            if not isinstance(msg, Request) or msg.method == "ACK":
                return
            entry = self._client.get(client_key(msg.top_via.branch or "", msg.method))
        except SipError:
            return
        if entry is None or entry[0].terminated:
            return
        self._on_response(response_to(entry[0].request, 503, f"Service Unavailable ({reason})"),
                          dest, now)

    def _is_self(self, dest: Address) -> bool:
        return dest.port == self._port(dest.transport) and dest.host == self.config.host

    def _to_source(self, peer: Address) -> bool:
        """Whether `peer` is among the networks whose requests go back to their source."""
        nets = self.config.rewrite_contact
        return bool(nets) and in_networks(peer.host, nets)

    def _send_bye(self, leg: Leg, now: float, reason: EndReason) -> None:
        request = leg.dialog.create_request("BYE", new_branch(self._token()))
        self._start_client(leg, request, now)
        self._end(leg, reason)

    def _end(self, leg: Leg, reason: EndReason, status: int | None = None,
             detail: str = "") -> None:
        if leg.state is LegState.ENDED:
            return
        leg.state = LegState.ENDED
        leg.dialog.state = DialogState.TERMINATED
        self._legs.pop(leg.id, None)
        self._dialogs.pop(leg.dialog.id, None)
        if leg.client is None:  # an incoming leg
            left = self._incoming_ids[leg.invite.call_id] - 1
            if left > 0:
                self._incoming_ids[leg.invite.call_id] = left
            else:
                self._incoming_ids.pop(leg.invite.call_id, None)
        self._events.append(CallEnded(leg.id, reason, status, detail))

    def _dialogs_by_tx(self, tx: ServerTransaction) -> Leg | None:
        return self._legs.get(tx.owner)

    def _port(self, transport: str) -> int:
        """Our port for `transport`: TLS has one of its own (RFC 3261 26.2)."""
        return self.config.tls_port if transport == "tls" and self.config.tls_port else (
            self.config.port)

    def _contact(self, source: Address, *, sips: bool = False) -> str:
        """Our Contact for a dialog on `source`'s transport: sips: when the request was
        for a sips: URI (RFC 5630 3.1.3: TLS is then implied), else transport= named."""
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        port = self._port(source.transport)
        if sips and source.transport == "tls":
            return f"<sips:sipbridge@{host}:{port}>"
        transport = "" if source.transport == "udp" else f";transport={source.transport}"
        return f"<sip:sipbridge@{host}:{port}{transport}>"

    def _capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", ", ".join(ALLOW)),
            ("Accept", "application/sdp"),
            ("Supported", ", ".join(sorted(SUPPORTED))),
            ("Server", self.config.user_agent),
        ]

    def _stateless(self, req: Request, source: Address, status: int, reason: str | None = None,
                   *, headers: Iterable[tuple[str, str]] = (), target: Address | None = None,
                   to_tag: str | None = None) -> None:
        """A response sent without a transaction (RFC 3261 8.2.7): it leaves no state."""
        if req.method == "ACK":
            return
        self.stats[f"answered_{status}"] += 1
        if target is None:
            try:
                target = response_target(req.top_via, source)
            except SipError:
                target = source
        if to_tag is None and status != 100:
            to_tag = self._token()
        resp = response_to(req, status, reason, to_tag=to_tag, headers=headers)
        self._out.append((resp.to_bytes(), target))

    def _answer_oversize(self, data: bytes, source: Address, exc: MessageTooLarge) -> None:
        """Answer 513 when the headers of an oversized request can be read."""
        end = data.find(b"\r\n\r\n", 0, 16384)
        try:
            if end < 0:
                raise ParseError("no end of headers")
            head = parse_message(data[: end + 4], self.config.max_message_size)
        except SipError:
            self.stats["dropped_oversize"] += 1
            return
        if isinstance(head, Request):
            self._stateless(head, source, 513, exc.reason)
        else:
            self.stats["dropped_oversize"] += 1

