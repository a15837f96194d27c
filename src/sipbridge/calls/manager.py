"""The call registry: turns the UA's events into calls, answers them by policy or leaves
them ringing for an application, and carries out its call-control requests (accept,
reject, refer, hangup). Transfers are `calls.transfers`'; the call record is `calls.call`'s."""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sipbridge.audiostream import Direction
from sipbridge.calls.call import (
    PRIVATE_HEADERS,
    RECENT_CALLS,
    Call,
    CallError,
    CallState,
    TransferJob,
    Trunk,
)
from sipbridge.calls.sipids import SipCallIds
from sipbridge.calls.tool import ToolRun
from sipbridge.calls.transfer import TransferTimers
from sipbridge.calls.transfers import OnTransfer, Transfers
from sipbridge.media.engine import MediaEngine, load_wav
from sipbridge.media.ports import NoMediaPort
from sipbridge.media.session import MediaSession
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
    answer_offer,
    build_offer,
    parse_sdp,
    read_answer,
)
from sipbridge.sip.ua import UserAgent

log = logging.getLogger("sipbridge.calls")

# Schedules `callback` after `delay` seconds; returns a cancel function.
Scheduler = Callable[[float, Callable[[], None]], Callable[[], None]]


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
        on_incoming: Callable[[Call], None] | None = None,
        accept_timeout: float = 30.0,
        accept_timeout_code: int = 480,
        # Each step of a transfer, and each change of its fallback (step None).
        on_transfer: OnTransfer | None = None,
        on_end: Callable[[Call], None] | None = None,
        on_media: Callable[[Call, MediaSession], None] | None = None,
        on_digit: Callable[[Call, str], None] | None = None,
        on_change: Callable[[Call], None] | None = None,
        transfer_timers: TransferTimers | None = None,
        transfer_fallback: str = "none",
        tel_uri: str | None = None,
        trunk: Trunk | None = None,
        max_calls: int | None = None,
        max_calls_per_source: int | None = None,
    ) -> None:
        self.ua = ua
        self.max_calls = max_calls
        self.max_calls_per_source = max_calls_per_source
        self.per_source: Counter[str] = Counter()  # live calls by source address
        self.refused_busy = 0
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
        # Set: calls ring until the application accepts or rejects them (webhook mode).
        self.on_incoming = on_incoming
        self.accept_timeout = accept_timeout
        self.accept_timeout_code = accept_timeout_code
        self.on_end = on_end
        self.on_media = on_media  # media started for a call the gateway does not echo/play
        self.on_digit = on_digit
        self.on_change = on_change  # a call was created, answered, ended, or its transfer moved
        self.transfers = Transfers(self, on_transfer=on_transfer,
                                   timers=transfer_timers or TransferTimers(),
                                   default_fallback=transfer_fallback, tel_uri=tel_uri,
                                   trunk=trunk)
        self.calls: dict[str, Call] = {}
        self.recent: OrderedDict[str, Call] = OrderedDict()  # ended, newest last
        self.by_leg: dict[str, Call] = {}
        # SIP Call-ID (its own, or a bridge leg's) -> call, for its trace; ended calls too,
        # while their transactions last (64*T1, plus T4 for late retransmissions).
        timers = ua.config.timers
        self.by_sip_id = SipCallIds(clock, linger=timers.b + timers.t4, limit=RECENT_CALLS)
        self.ended = 0

    def handle(self, event: Event) -> None:
        now = self.clock()
        if self.transfers.bridges(event.leg_id):
            self.transfers.bridge_event(event, now)
            return
        match event:
            case IncomingCall():
                self._incoming(event, now)
            case CallConfirmed(leg_id=leg_id, body=body):
                call = self.by_leg.get(leg_id)
                if call is not None:
                    call.state = CallState.ACTIVE
                    if body and call.audio is None:
                        self._late_answer(call, body, now)
                        self._start_media(call)
            case CallEnded(leg_id=leg_id, reason=reason):
                call = self.by_leg.pop(leg_id, None)
                if call is not None:
                    self.transfers.end(call, reason, now)
                    self._forget(call, reason.value)
            case ReInvite(leg_id=leg_id, request=request):
                self._reinvite(leg_id, request.body, request, now)
            case InDialogRequest(leg_id=leg_id, request=request, answered=False):
                if request.method == "NOTIFY" and self.transfers.notify(leg_id, request, now):
                    return
                # REFER from the peer, NOTIFY with no subscription of ours.
                status = 481 if request.method == "NOTIFY" else 403
                self.ua.respond(leg_id, request, status, now)
            case RequestOutcome(leg_id=leg_id, request=request) if request.method == "REFER":
                self.transfers.refer_outcome(event, now)
            case InDialogRequest() | RequestOutcome():
                pass

    def _incoming(self, event: IncomingCall, now: float) -> None:
        req = event.request
        host = event.source.host
        per_source = self.max_calls_per_source
        if ((self.max_calls is not None and len(self.calls) >= self.max_calls)
                or (per_source is not None and self.per_source[host] >= per_source)):
            # Refused before any call state: cheap, and the caller may try again later.
            self.refused_busy += 1
            self.ua.reject(event.leg_id, 503, now, "Service Unavailable (call limit reached)",
                           headers=[("Retry-After", "5")])
            return
        self.per_source[host] += 1
        call = Call(
            id="rtc_" + secrets.token_hex(16),
            leg_id=event.leg_id,
            caller=str(req.from_.uri),
            callee=str(req.to.uri),
            created_at=time.time(),
            sip_call_id=req.call_id,
            source=f"{event.source.host}:{event.source.port}",
            sip_headers=[(n, v) for n, v in req.headers if n.lower() not in PRIVATE_HEADERS],
        )
        self.calls[call.id] = call
        self.by_leg[event.leg_id] = call
        self.by_sip_id[call.sip_call_id] = call
        self.changed(call)
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
        if self.auto_answer is None and self.on_incoming is not None:
            # The application decides (webhook); the caller hears ringing meanwhile.
            call.mode = "app"
            self.ua.ring(event.leg_id, now)
            call.cancel_timer = self.schedule(self.accept_timeout,
                                              lambda: self._accept_timeout(call))
            self.on_incoming(call)
            return
        if self.auto_answer is None:
            # No application to ask: refuse by policy.
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
        if call.state is not CallState.RINGING or call.leg_id not in self.by_leg:
            return
        self.ua.answer(call.leg_id, call.local_sdp, self.clock())
        call.state = CallState.ACTIVE
        call.answered_at = time.time()
        self.changed(call)
        if call.audio is not None:
            self._start_media(call)

    # ---- call control (the application's requests) ------------------------------

    def get(self, call_id: str) -> Call:
        """A live or recently ended call; CallError("not_found") otherwise."""
        call = self.calls.get(call_id) or self.recent.get(call_id)
        if call is None:
            raise CallError("not_found", f"No call found with id '{call_id}'.")
        return call

    def live(self, call_id: str, action: str) -> Call:
        call = self.get(call_id)
        if call.state is CallState.ENDED:
            raise CallError("conflict", f"Cannot {action} call '{call_id}': the call has "
                            f"already ended ({call.end_reason}).")
        return call

    def accept(self, call_id: str, session: dict[str, object],
               options: dict[str, object] | None = None) -> Call:
        """Answer a ringing call (200 OK with our SDP) and start its media."""
        call = self.live(call_id, "accept")
        if call.state is not CallState.RINGING:
            raise CallError("conflict", f"Cannot accept call '{call_id}': it was already "
                            "accepted.")
        if call.cancel_timer is not None:
            call.cancel_timer()
        call.session = session
        call.options = dict(options or {})
        self.note_api(call, "accept")
        self._answer(call)
        log.info("call %s accepted by the application", call.id)
        return call

    def reject(self, call_id: str, status: int) -> Call:
        """Refuse a ringing call with a SIP final status."""
        call = self.live(call_id, "reject")
        if call.state is not CallState.RINGING:
            raise CallError("conflict", f"Cannot reject call '{call_id}': it was already "
                            "accepted; use hangup to end it.")
        call.end_reason = "rejected"
        call.final_status = status
        self.note_api(call, "reject", status_code=status)
        self.ua.reject(call.leg_id, status, self.clock())
        log.info("call %s rejected by the application with %d", call.id, status)
        return call

    def hangup(self, call_id: str) -> Call:
        """End a call: BYE once answered, 480 while it still rings."""
        call = self.live(call_id, "hang up")
        call.end_reason = "hangup"
        self.note_api(call, "hangup")
        if call.state is CallState.RINGING:
            call.final_status = 480
        self.ua.hangup(call.leg_id, self.clock())
        log.info("call %s hung up by the application", call.id)
        return call

    def refer(self, call_id: str, target: str, *, fallback: str | None = None,
              headers: list[tuple[str, str]] | None = None,
              requested_by: str = "app") -> TransferJob:
        """Send REFER in the call's dialog (RFC 3515) to hand the caller to `target`, and
        track it to an outcome: the result comes as steps (`on_transfer`), never here."""
        return self.transfers.refer(call_id, target, fallback=fallback, headers=headers,
                                    requested_by=requested_by)

    def run_transfer_tool(self, call_id: str, arguments: str, *,
                          held: str | None = None, hold_for: float = 0.0) -> ToolRun:
        """The model called the built-in transfer tool: refer the call to the target it
        named among those the application declared; `held`: the REFER waits (up to
        `hold_for` s) for `send_held`. A transfer already under way is the answer instead
        (nothing starts)."""
        return self.transfers.run_transfer_tool(call_id, arguments, held=held,
                                                hold_for=hold_for)

    def send_held(self, call_id: str, job: TransferJob) -> bool:
        """Send a held transfer's REFER; False when the call or the transfer ended first."""
        return self.transfers.send_held(call_id, job)

    def changed(self, call: Call) -> None:
        if self.on_change is not None:
            self.on_change(call)

    @staticmethod
    def note_api(call: Call, action: str, **details: object) -> None:
        call.timeline.append({"at": time.time(), "kind": "api", "action": action, **details})

    def _accept_timeout(self, call: Call) -> None:
        call.cancel_timer = None
        if call.state is not CallState.RINGING or call.leg_id not in self.by_leg:
            return
        log.info("call %s: not accepted within %g s, answering %d", call.id,
                 self.accept_timeout, self.accept_timeout_code)
        call.end_reason = "accept_timeout"
        call.final_status = self.accept_timeout_code
        self.ua.reject(call.leg_id, self.accept_timeout_code, self.clock())

    def _start_media(self, call: Call) -> None:
        """RTP starts with the 200: the caller may send before its ACK arrives."""
        assert call.audio is not None
        session = self.media.start(
            call.id, call.audio,
            on_dtmf=lambda d: self._dtmf(call, d.digit, d.duration_ms),
            on_timeout=lambda reason: self._media_timeout(call, reason),
        )
        call.media_live = session.figures
        if self.auto_answer == "echo":
            self.media.echo(session)
        elif self._play is not None:
            session.play(self._play)
        elif self.on_media is not None:
            self.on_media(call, session)

    def _dtmf(self, call: Call, digit: str, duration_ms: int) -> None:
        log.info("call %s dtmf %s %dms", call.id, digit, duration_ms)
        call.timeline.append({"at": time.time(), "kind": "dtmf", "digit": digit,
                              "duration_ms": duration_ms})
        if self.on_digit is not None:
            self.on_digit(call, digit)

    def _media_timeout(self, call: Call, reason: str) -> None:
        log.info("call %s: %s, hanging up", call.id, reason)
        call.end_reason = "media_timeout"
        self.ua.hangup(call.leg_id, self.clock())
        self.wake()  # a media tick is outside the SIP pump: flush the BYE now

    def _reinvite(self, leg_id: str, offer: bytes, request: Request, now: float) -> None:
        """RFC 3264 8: a new offer in the dialog (hold, resume, codec change)."""
        call = self.by_leg.get(leg_id)
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
            call.cancel_timer = None
        call.state = CallState.ENDED
        call.end_reason = call.end_reason or reason
        call.ended_at = time.time()
        session = self.media.stop(call.id)
        call.media_live = None
        if session is not None:
            log.info("call %s ended (%s): %s", call.id, call.end_reason, session.summary())
            call.media = session.figures()
            call.timeline.append({"at": time.time(), "kind": "media", **call.media})
        call.timeline.append({"at": time.time(), "kind": "call", "status": "ended",
                              "reason": call.end_reason})
        for job in call.transfers:
            if job.cancel_timer is not None:
                job.cancel_timer()
                job.cancel_timer = None
        if self.calls.pop(call.id, None) is not None:
            host = call.source.rsplit(":", 1)[0]
            left = self.per_source[host] - 1
            if left > 0:
                self.per_source[host] = left
            else:
                self.per_source.pop(host, None)
        self.by_sip_id.ended(call)  # what is sent and received after the end is traced too
        self.ended += 1
        self.changed(call)
        if self.on_end is not None:
            self.on_end(call)
        self.recent[call.id] = call  # the application or an operator may still ask
        while len(self.recent) > RECENT_CALLS:
            self.recent.popitem(last=False)
