"""The call registry: turns the UA's events into calls and answers them by policy."""

from __future__ import annotations

import enum
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sipbridge.media.engine import MediaEngine, load_wav
from sipbridge.media.ports import NoMediaPort
from sipbridge.sip.errors import SipError
from sipbridge.sip.events import (
    CallConfirmed,
    CallEnded,
    Event,
    IncomingCall,
    InDialogRequest,
    ReInvite,
    RequestOutcome,
)
from sipbridge.sip.message import Request
from sipbridge.sip.sdp import (
    Direction,
    NegotiatedAudio,
    answer_offer,
    build_offer,
    parse_sdp,
    read_answer,
)
from sipbridge.sip.ua import UserAgent

log = logging.getLogger("sipbridge.calls")

# Schedules `callback` after `delay` seconds; returns a cancel function.
Scheduler = Callable[[float, Callable[[], None]], Callable[[], None]]


class CallState(enum.Enum):
    RINGING = "ringing"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(slots=True)
class Call:
    """One call as the rest of sipbridge sees it."""

    id: str
    leg_id: str
    caller: str
    callee: str
    created_at: float
    state: CallState = CallState.RINGING
    audio: NegotiatedAudio | None = None
    local_sdp: bytes = b""
    rtp_port: int = 0
    sdp_version: int = 0
    on_hold: bool = False
    end_reason: str | None = None
    cancel_timer: Callable[[], None] | None = field(default=None, repr=False)


class CallManager:
    """Answers calls by policy until an application takes over (auto-answer, reject)."""

    def __init__(
        self,
        ua: UserAgent,
        scheduler: Scheduler,
        *,
        media_host: Callable[[str], str],
        media: MediaEngine,
        bind_host: str,
        auto_answer: str | None,
        ring_time: float,
        reject_code: int,
        clock: Callable[[], float],
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.ua = ua
        self.schedule = scheduler
        self.media_host = media_host
        self.media = media
        self.bind_host = bind_host
        self._play: np.ndarray | None = None
        if auto_answer is not None and auto_answer.startswith("play:"):
            self._play = load_wav(Path(auto_answer[5:]))
        self.auto_answer = auto_answer
        self.ring_time = ring_time
        self.reject_code = reject_code
        self.clock = clock
        self.wake = wake
        self.calls: dict[str, Call] = {}
        self._by_leg: dict[str, Call] = {}
        self.ended = 0

    def handle(self, event: Event) -> None:
        now = self.clock()
        match event:
            case IncomingCall():
                self._incoming(event, now)
            case CallConfirmed(leg_id=leg_id, body=body):
                call = self._by_leg.get(leg_id)
                if call is not None:
                    call.state = CallState.ACTIVE
                    if body and call.audio is None:
                        self._late_answer(call, body, now)
                        self._start_media(call)
            case CallEnded(leg_id=leg_id, reason=reason):
                call = self._by_leg.pop(leg_id, None)
                if call is not None:
                    self._forget(call, reason.value)
            case ReInvite(leg_id=leg_id, request=request):
                self._reinvite(leg_id, request.body, request, now)
            case InDialogRequest(leg_id=leg_id, request=request, answered=False):
                # REFER from the peer, NOTIFY with no subscription of ours.
                status = 481 if request.method == "NOTIFY" else 403
                self.ua.respond(leg_id, request, status, now)
            case InDialogRequest() | RequestOutcome():
                pass

    def _incoming(self, event: IncomingCall, now: float) -> None:
        req = event.request
        call = Call(
            id="rtc_" + secrets.token_hex(16),
            leg_id=event.leg_id,
            caller=str(req.from_.uri),
            callee=str(req.to.uri),
            created_at=time.time(),
        )
        self.calls[call.id] = call
        self._by_leg[event.leg_id] = call
        log.info("call %s from %s to %s", call.id, call.caller, call.callee)
        if req.body and req.content_type != "application/sdp":
            self.ua.reject(event.leg_id, 415, now, headers=[("Accept", "application/sdp")])
            return
        try:
            self._negotiate(call, req.body, event.source.host)
        except NoMediaPort as exc:
            log.warning("call %s refused: %s", call.id, exc)
            self.ua.reject(event.leg_id, 503, now, headers=[("Retry-After", "5")])
            return
        except SipError as exc:
            self.ua.reject(event.leg_id, exc.status, now,
                           headers=[("Warning", f'399 sipbridge "{exc.reason}"')])
            return
        if self.auto_answer is None:
            # No application to ask yet: refuse by policy.
            self.ua.reject(event.leg_id, self.reject_code, now)
            return
        self.ua.ring(event.leg_id, now)
        if self.ring_time > 0:
            call.cancel_timer = self.schedule(self.ring_time, lambda: self._answer(call))
        else:
            self._answer(call)

    def _negotiate(self, call: Call, offer: bytes, peer_host: str) -> None:
        """RFC 3264: answer the caller's offer, or make our own offer when it sent none."""
        host = self.media_host(peer_host)
        if not call.rtp_port:
            call.rtp_port = self.media.allocate(call.id, self.bind_host).port
        port = call.rtp_port
        call.sdp_version += 1
        if offer:
            answer, audio = answer_offer(
                parse_sdp(offer), local_address=host, local_port=port,
                session_id=hash(call.id) & 0x7FFFFFFF, session_version=call.sdp_version,
            )
            call.audio = audio
            call.on_hold = audio.direction in (Direction.RECVONLY, Direction.INACTIVE)
            call.local_sdp = answer.to_bytes()
        else:
            call.local_sdp = build_offer(
                local_address=host, local_port=port,
                session_id=hash(call.id) & 0x7FFFFFFF, session_version=call.sdp_version,
            ).to_bytes()

    def _late_answer(self, call: Call, body: bytes, now: float) -> None:
        """RFC 3261 13.2.1: after an INVITE without SDP, the ACK carries the answer."""
        try:
            call.audio = read_answer(parse_sdp(call.local_sdp), parse_sdp(body))
        except SipError as exc:
            call.end_reason = "bad_sdp_answer"
            log.info("call %s: unusable answer in ACK (%s); hanging up", call.id, exc.reason)
            self.ua.hangup(call.leg_id, now)

    def _answer(self, call: Call) -> None:
        call.cancel_timer = None
        if call.state is not CallState.RINGING or call.leg_id not in self._by_leg:
            return
        self.ua.answer(call.leg_id, call.local_sdp, self.clock())
        if call.audio is not None:
            self._start_media(call)

    def _start_media(self, call: Call) -> None:
        """RTP starts with the 200: the caller may send before its ACK arrives."""
        assert call.audio is not None
        session = self.media.start(
            call.id, call.audio,
            on_dtmf=lambda d: log.info("call %s dtmf %s %dms", call.id, d.digit, d.duration_ms),
            on_timeout=lambda reason: self._media_timeout(call, reason),
        )
        if self.auto_answer == "echo":
            self.media.echo(session)
        elif self._play is not None:
            session.play(self._play)

    def _media_timeout(self, call: Call, reason: str) -> None:
        log.info("call %s: %s, hanging up", call.id, reason)
        call.end_reason = "media_timeout"
        self.ua.hangup(call.leg_id, self.clock())
        self.wake()  # a media tick is outside the SIP pump: flush the BYE now

    def _reinvite(self, leg_id: str, offer: bytes, request: Request, now: float) -> None:
        """RFC 3264 8: a new offer in the dialog (hold, resume, codec change)."""
        call = self._by_leg.get(leg_id)
        leg = self.ua.leg(leg_id)
        if call is None or leg is None:
            return
        try:
            self._negotiate(call, offer, leg.source.host)
        except SipError as exc:
            self.ua.respond(leg_id, request, exc.status, now)
            return
        log.info("call %s %s", call.id, "on hold" if call.on_hold else "active")
        self.ua.respond(leg_id, request, 200, now, body=call.local_sdp)
        session = self.media.sessions.get(call.id)
        if session is not None and call.audio is not None:
            session.update(call.audio)

    def _forget(self, call: Call, reason: str) -> None:
        if call.cancel_timer is not None:
            call.cancel_timer()
        call.state = CallState.ENDED
        call.end_reason = call.end_reason or reason
        session = self.media.stop(call.id)
        if session is not None:
            log.info("call %s ended (%s): %s", call.id, call.end_reason, session.summary())
        self.calls.pop(call.id, None)
        self.ended += 1
