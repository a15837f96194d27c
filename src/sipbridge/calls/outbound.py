"""Outbound calls: the gateway places a call through a trunk (`POST /v1/realtime/calls`),
follows it to an outcome, and once answered hands it over as an ordinary call (its media,
the agent, transfers).

Outcomes: dialing -> ringing (180/183) -> answered | busy (486, 600) | no_answer (the ring
timeout, then CANCEL; or 408/480) | rejected (another final status) | failed (transport,
a bad SDP answer) | cancelled (hung up while it rang). Each change is a timeline entry of
kind "outbound" (`final` on the last), emitted as `OutboundNoted`, which the sinks turn
into sideband events, webhooks and metrics."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sipbridge.calls.call import Call, CallError, CallState, Trunk, new_call_id
from sipbridge.calls.events import CallEvents, MediaStarted, OutboundNoted, note
from sipbridge.calls.sipids import SipCallIds
from sipbridge.calls.trunks import Trunks
from sipbridge.media.engine import MediaEngine
from sipbridge.media.ports import NoMediaPort
from sipbridge.sip.driver import SipDriver
from sipbridge.sip.errors import SipError
from sipbridge.sip.events import CallEnded, Event, OutgoingAnswered, OutgoingProgress
from sipbridge.sip.sdp import build_offer, parse_sdp, read_answer
from sipbridge.sip.ua import UserAgent
from sipbridge.sip.uri import parse_uri

log = logging.getLogger("sipbridge.calls")

DIALING, RINGING, ANSWERED = "dialing", "ringing", "answered"
BUSY, NO_ANSWER, REJECTED, FAILED, CANCELLED = (
    "busy", "no_answer", "rejected", "failed", "cancelled")
OUTCOMES = (ANSWERED, BUSY, NO_ANSWER, REJECTED, FAILED, CANCELLED)
BUSY_CODES = (486, 600)
NO_ANSWER_CODES = (408, 480)
TRANSPORT_ERROR = "Service Unavailable ("  # the UA's stand-in 503 for a transport error


class CallRegistry(Protocol):
    """What outbound calls need of the call registry (`calls.manager.CallManager`)."""

    sip: SipDriver
    ua: UserAgent
    media: MediaEngine
    media_host: Callable[[str], str]
    bind_host: str
    node: str  # in a cluster, this node's name (the suffix of its call ids)
    events: CallEvents
    calls: dict[str, Call]
    by_leg: dict[str, Call]
    by_sip_id: SipCallIds

    def note_api(self, call: Call, action: str, **details: object) -> None: ...
    def changed(self, call: Call) -> None: ...
    def _dtmf(self, call: Call, digit: str, duration_ms: int) -> None: ...
    def _media_timeout(self, call: Call, reason: str) -> None: ...
    def _forget(self, call: Call, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Where outbound calls go (`trunks`), how many at once and per second, how long
    they ring by default, and how tel: targets become SIP URIs (`tel_uri`, with
    "{number}"; else sip:NUMBER@the trunk's domain)."""

    trunks: Trunks = field(default_factory=Trunks)
    max_calls: int = 50
    calls_per_second: float = 10.0
    ring_timeout: float = 30.0
    tel_uri: str | None = None


class OutboundLimit(Exception):
    """Not placed: a limit is reached (`status` 429) or no media port is free (503);
    try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int, status: int = 429) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.status = status


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.tokens = self.burst
        self.last: float | None = None

    def take(self, now: float) -> float:
        """0 when a token was taken; else the seconds until one is there."""
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(slots=True)
class _Dialing:
    call: Call
    trunk: Trunk
    offer: bytes
    ending: str | None = None  # the outcome we are ending it with (CANCEL, BYE sent)
    reason: str | None = None
    cancel_timer: Callable[[], None] | None = None


def sip_target(to: str, trunk: Trunk, tel_uri: str | None = None) -> str:
    """The Request-URI for `to`: a tel: number at the trunk, a SIP URI as it is."""
    if to.lower().startswith("tel:"):
        number = to[4:].split(";")[0]
        if tel_uri is not None:
            return tel_uri.replace("{number}", number)
        return f"sip:{number}@{trunk.domain}"
    return to


def from_uri(trunk: Trunk, override: str | None) -> str:
    """Our From: the trunk's, its user replaced by `override` (a number or user, or a
    tel: URI), or `override` itself when a SIP URI."""
    if not override:
        return trunk.from_uri
    if override.lower().startswith(("sip:", "sips:")):
        return override
    user = override[4:].split(";")[0] if override.lower().startswith("tel:") else override
    uri = parse_uri(trunk.from_uri)
    scheme, _, rest = str(uri).partition(":")
    host = rest.split("@", 1)[1] if "@" in rest else rest
    return f"{scheme}:{user}@{host}"


class Outbound:
    """The outbound calls of one registry, until each is answered or ends."""

    def __init__(self, manager: CallRegistry, policy: OutboundPolicy) -> None:
        self.manager = manager
        self.policy = policy
        self.trunks = policy.trunks
        self.bucket = TokenBucket(policy.calls_per_second)
        self._dialing: dict[str, _Dialing] = {}  # leg id ->
        self.live = 0  # outbound calls not ended

    def place(self, to: str, session: dict[str, object], options: dict[str, object], *,
              trunk: str | None = None, from_: str | None = None,
              ring_timeout: float | None = None,
              headers: list[tuple[str, str]] | None = None,
              created: Callable[[Call], None] | None = None) -> Call:
        """Send the INVITE and return the call, dialing. CallError("not_found") for an
        unknown trunk; OutboundLimit when a limit is reached (nothing sent). `created`
        runs once the call exists, before anything is sent (the sideband opens)."""
        m = self.manager
        chosen = self.trunks.get(trunk or "default")
        if chosen is None:
            raise CallError("not_found", f"No trunk named {trunk or 'default'!r} is "
                            "configured." if trunk else "No default trunk is configured.")
        if self.live >= self.policy.max_calls:
            raise OutboundLimit(f"Too many outbound calls at once (outbound_max_calls = "
                                f"{self.policy.max_calls}).", 1)
        now = m.sip.now()
        wait = self.bucket.take(now)
        if wait > 0:
            raise OutboundLimit(f"Too many outbound calls per second "
                                f"(outbound_calls_per_second = "
                                f"{self.policy.calls_per_second:g}).", max(1, math.ceil(wait)))
        call_id = new_call_id(node=m.node)
        try:
            port = m.media.allocate(call_id, m.bind_host).port
        except NoMediaPort as exc:
            raise OutboundLimit(f"No media port is free: {exc}", 5, status=503) from None
        target = sip_target(to, chosen, self.policy.tel_uri)
        caller = from_uri(chosen, from_)
        offer = build_offer(local_address=m.media_host(chosen.address.host), local_port=port,
                            session_id=hash(call_id) & 0x7FFFFFFF, session_version=1,
                            codecs=m.media.config.codecs).to_bytes()
        extra = list(chosen.headers)
        if chosen.pai:
            extra.append(("P-Asserted-Identity", chosen.pai))
        extra.extend(headers or [])
        call = Call(id=call_id, leg_id="", caller=caller, callee=target,
                    created_at=time.time(), mode="app", rtp_port=port, sdp_version=1,
                    local_sdp=offer, session=session, options=dict(options),
                    direction="outbound", dtmf_method=chosen.dtmf,
                    source=f"{chosen.address.host}:{chosen.address.port}",
                    outbound={"status": DIALING, "sip_status": None, "reason": None,
                              "trunk": chosen.name, "to": to})
        try:
            leg_id = m.ua.invite(target, chosen.address, now, body=offer, from_uri=caller,
                                 headers=extra, credentials=chosen.credentials)
        except SipError as exc:
            m.media.stop(call_id)
            raise CallError("invalid", f"Cannot call {to}: {exc.reason}") from None
        leg = m.ua.leg(leg_id)
        call.leg_id = leg_id
        call.sip_call_id = leg.invite.call_id if leg is not None else ""
        call.sip_headers = [(n, v) for n, v in extra]
        m.calls[call.id] = call
        m.by_leg[leg_id] = call
        m.by_sip_id[call.sip_call_id] = call
        self.live += 1
        if created is not None:
            created(call)
        dialing = _Dialing(call, chosen, offer)
        self._dialing[leg_id] = dialing
        m.note_api(call, "call", to=to, trunk=chosen.name)
        m.changed(call)
        self._step(call, DIALING)
        timeout = ring_timeout if ring_timeout is not None else self.policy.ring_timeout
        dialing.cancel_timer = m.sip.schedule(timeout, lambda: self._ring_timeout(dialing))
        log.info("call %s: dialing %s through trunk %s", call.id, target, chosen.name)
        return call

    def handles(self, event: Event, now: float) -> bool:
        """Whether `event` belongs to an outbound call not answered yet (then it is
        handled here)."""
        d = self._dialing.get(event.leg_id)
        if d is None:
            return False
        match event:
            case OutgoingProgress(response=response):
                self._progress(d, response.status, response.body,
                               response.content_type)
            case OutgoingAnswered(response=response):
                self._answered(d, response.status, response.body, now)
            case CallEnded(status=status, reason=reason, detail=detail):
                self._ended(d, status, detail or reason.value)
            case _:
                return False
        return True

    def cancelling(self, call: Call) -> None:
        """The application hangs up a call that still rings: its outcome is cancelled."""
        for d in self._dialing.values():
            if d.call is call and d.ending is None:
                d.ending = CANCELLED

    # ---- the call's progress --------------------------------------------------------

    def _progress(self, d: _Dialing, status: int, body: bytes, content_type: str | None
                  ) -> None:
        call = d.call
        if status in (180, 183) and call.outbound is not None \
                and call.outbound["status"] == DIALING:
            self._step(call, RINGING, status)
        if body and content_type == "application/sdp" and d.ending is None:
            self._early_media(d, body)

    def _early_media(self, d: _Dialing, body: bytes) -> None:
        """RFC 3261 13.2.1 / RFC 3960: a provisional answer with SDP: its media plays (and
        is recorded) before the call is answered."""
        m = self.manager
        call = d.call
        try:
            audio = read_answer(parse_sdp(d.offer), parse_sdp(body))
        except SipError as exc:
            m.events.emit(note(call, "warning", detail=f"early media SDP refused: "
                                                       f"{exc.reason}"))
            return
        call.audio = audio
        session = m.media.sessions.get(call.id)
        if session is None:
            session = m.media.start(
                call.id, audio, on_dtmf=lambda dg: m._dtmf(call, dg.digit, dg.duration_ms),
                on_timeout=lambda reason: None)
            call.media_live = session.figures
        else:
            session.update(audio)

    def _answered(self, d: _Dialing, status: int, body: bytes, now: float) -> None:
        m = self.manager
        call = d.call
        if d.ending is not None:  # answered as our CANCEL crossed it: the UA sends BYE
            return
        try:
            audio = read_answer(parse_sdp(d.offer), parse_sdp(body))
        except SipError as exc:
            d.ending = FAILED
            d.reason = f"bad SDP answer: {exc.reason}"
            call.final_status = status
            call.end_reason = "bad_sdp_answer"
            log.info("call %s: unusable SDP answer (%s); hanging up", call.id, exc.reason)
            m.ua.hangup(call.leg_id, now)
            return
        self._forget(d)
        call.audio = audio
        call.state = CallState.ACTIVE
        call.answered_at = time.time()
        call.final_status = status
        m.changed(call)
        self._step(call, ANSWERED, status, final=True)
        session = m.media.sessions.get(call.id)
        if session is None:
            session = m.media.start(
                call.id, audio, on_dtmf=lambda dg: m._dtmf(call, dg.digit, dg.duration_ms),
                on_timeout=lambda reason: m._media_timeout(call, reason))
        else:
            session.update(audio)
            session.on_timeout = lambda reason: m._media_timeout(call, reason)
        call.media_live = session.figures
        m.events.emit(MediaStarted(call, session))

    def _ended(self, d: _Dialing, status: int | None, detail: str) -> None:
        m = self.manager
        call = d.call
        self._forget(d)
        if d.ending is not None:
            outcome, reason = d.ending, d.reason
        elif call.end_reason == "hangup":
            outcome, reason = CANCELLED, None
        elif status == 503 and detail.startswith(TRANSPORT_ERROR):
            outcome, reason = FAILED, "transport error: " + detail[len(TRANSPORT_ERROR):-1]
        elif status in BUSY_CODES:
            outcome, reason = BUSY, None
        elif status in NO_ANSWER_CODES:
            outcome, reason = NO_ANSWER, detail or None
        elif status is None or status < 300:
            outcome, reason = FAILED, detail or "the call ended before it was answered"
        else:
            outcome, reason = REJECTED, detail or None
        call.final_status = status if status is not None and status >= 300 else \
            call.final_status
        call.end_reason = call.end_reason if call.end_reason not in (None, "hangup") \
            else outcome
        self._step(call, outcome, status, reason, final=True)
        m.by_leg.pop(call.leg_id, None)
        m._forget(call, outcome)

    def _ring_timeout(self, d: _Dialing) -> None:
        d.cancel_timer = None
        if d.ending is not None or d.call.leg_id not in self._dialing:
            return
        d.ending = NO_ANSWER
        d.reason = "ring timeout"
        log.info("call %s: not answered in time; cancelling", d.call.id)
        self.manager.ua.hangup(d.call.leg_id, self.manager.sip.now())

    def _forget(self, d: _Dialing) -> None:
        self._dialing.pop(d.call.leg_id, None)
        if d.cancel_timer is not None:
            d.cancel_timer()
            d.cancel_timer = None

    def ended(self, call: Call) -> None:
        """An outbound call ended (answered or not): it no longer counts."""
        if call.direction == "outbound":
            self.live = max(0, self.live - 1)

    def _step(self, call: Call, status: str, sip_status: int | None = None,
              reason: str | None = None, *, final: bool = False) -> None:
        assert call.outbound is not None
        call.outbound.update(status=status, sip_status=sip_status, reason=reason)
        log.info("call %s: outbound %s%s%s", call.id, status,
                 f" {sip_status}" if sip_status else "", f" ({reason})" if reason else "")
        self.manager.events.emit(OutboundNoted(call, {
            "at": time.time(), "kind": "outbound", "status": status, "sip_status": sip_status,
            "reason": reason, "final": final}))
        self.manager.changed(call)
