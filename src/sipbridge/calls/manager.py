"""The call registry: turns the UA's events into calls, answers them by policy or leaves
them ringing for an application, and carries out its call-control requests (accept,
reject, refer, hangup)."""

from __future__ import annotations

import enum
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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
from sipbridge.sip.message import Headers, Request
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


RECENT_CALLS = 1000  # ended calls kept for GET /v1/realtime/calls until the store has them
PRIVATE_HEADERS = {"authorization", "proxy-authorization"}  # never shown to the application


class Record(Protocol):
    """Anything kept on a call that the API shows (a webhook delivery, say)."""

    def to_dict(self) -> dict[str, object]: ...


class CallState(enum.Enum):
    RINGING = "ringing"
    ACTIVE = "active"
    ENDED = "ended"


class CallError(Exception):
    """A call-control request that cannot be carried out: `kind` is "not_found" or
    "conflict" (the call is in the wrong state); the message says which and why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(slots=True)
class Transfer:
    """One REFER sent for a call and what became of it (RFC 3515)."""

    id: str
    target: str
    requested_at: float
    status: str = "sent"  # sent, accepted, progress, succeeded, failed, rejected, timed_out
    sip_status: int | None = None
    reason: str | None = None
    cseq: int = 0
    notifications: list[str] = field(default_factory=list)  # sipfrag status lines
    updated_at: float = 0.0

    @property
    def final(self) -> bool:
        return self.status in ("succeeded", "failed", "rejected", "timed_out")

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "target_uri": self.target, "status": self.status,
                "sip_status": self.sip_status, "reason": self.reason,
                "requested_at": self.requested_at, "updated_at": self.updated_at,
                "notifications": list(self.notifications)}


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
    sip_call_id: str = ""
    source: str = ""
    sip_headers: list[tuple[str, str]] = field(default_factory=list)
    mode: str = "auto"  # "auto": answered by policy; "app": waits for accept or reject
    answered_at: float | None = None
    ended_at: float | None = None
    final_status: int | None = None  # the SIP status a rejected call was answered with
    session: dict[str, object] | None = None  # the accepted session config
    transfers: list[Transfer] = field(default_factory=list)
    webhooks: list[Record] = field(default_factory=list)  # the webhook deliveries

    def to_dict(self) -> dict[str, object]:
        """The call record the API shows (GET /v1/realtime/calls/{id})."""
        audio = self.audio
        return {
            "id": self.id, "object": "realtime.call", "state": self.state.value,
            "created_at": self.created_at, "answered_at": self.answered_at,
            "ended_at": self.ended_at, "end_reason": self.end_reason,
            "sip": {
                "call_id": self.sip_call_id, "from": self.caller, "to": self.callee,
                "source": self.source, "final_status": self.final_status,
                "rtp_port": self.rtp_port or None,
                "codec": audio.codec.name if audio is not None else None,
                "on_hold": self.on_hold,
            },
            "transfers": [t.to_dict() for t in self.transfers],
            "webhooks": [w.to_dict() for w in self.webhooks],
        }


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
        on_transfer: Callable[[Call, Transfer], None] | None = None,
        on_end: Callable[[Call], None] | None = None,
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
        # Set: calls ring until the application accepts or rejects them (webhook mode).
        self.on_incoming = on_incoming
        self.accept_timeout = accept_timeout
        self.accept_timeout_code = accept_timeout_code
        self.on_transfer = on_transfer
        self.on_end = on_end
        self.calls: dict[str, Call] = {}
        self.recent: OrderedDict[str, Call] = OrderedDict()  # ended, newest last
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
                if request.method == "NOTIFY" and self._notify(leg_id, request, now):
                    return
                # REFER from the peer, NOTIFY with no subscription of ours.
                status = 481 if request.method == "NOTIFY" else 403
                self.ua.respond(leg_id, request, status, now)
            case RequestOutcome(leg_id=leg_id, request=request) if request.method == "REFER":
                self._refer_outcome(event, now)
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
            sip_call_id=req.call_id,
            source=f"{event.source.host}:{event.source.port}",
            sip_headers=[(n, v) for n, v in req.headers if n.lower() not in PRIVATE_HEADERS],
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
        if call.state is not CallState.RINGING or call.leg_id not in self._by_leg:
            return
        self.ua.answer(call.leg_id, call.local_sdp, self.clock())
        call.state = CallState.ACTIVE
        call.answered_at = time.time()
        if call.audio is not None:
            self._start_media(call)

    # ---- call control (the application's requests) ------------------------------

    def get(self, call_id: str) -> Call:
        """A live or recently ended call; CallError("not_found") otherwise."""
        call = self.calls.get(call_id) or self.recent.get(call_id)
        if call is None:
            raise CallError("not_found", f"No call found with id '{call_id}'.")
        return call

    def _live(self, call_id: str, action: str) -> Call:
        call = self.get(call_id)
        if call.state is CallState.ENDED:
            raise CallError("conflict", f"Cannot {action} call '{call_id}': the call has "
                            f"already ended ({call.end_reason}).")
        return call

    def accept(self, call_id: str, session: dict[str, object]) -> Call:
        """Answer a ringing call (200 OK with our SDP) and start its media."""
        call = self._live(call_id, "accept")
        if call.state is not CallState.RINGING:
            raise CallError("conflict", f"Cannot accept call '{call_id}': it was already "
                            "accepted.")
        if call.cancel_timer is not None:
            call.cancel_timer()
        call.session = session
        self._answer(call)
        log.info("call %s accepted by the application", call.id)
        return call

    def reject(self, call_id: str, status: int) -> Call:
        """Refuse a ringing call with a SIP final status."""
        call = self._live(call_id, "reject")
        if call.state is not CallState.RINGING:
            raise CallError("conflict", f"Cannot reject call '{call_id}': it was already "
                            "accepted; use hangup to end it.")
        call.end_reason = "rejected"
        call.final_status = status
        self.ua.reject(call.leg_id, status, self.clock())
        log.info("call %s rejected by the application with %d", call.id, status)
        return call

    def hangup(self, call_id: str) -> Call:
        """End a call: BYE once answered, 480 while it still rings."""
        call = self._live(call_id, "hang up")
        call.end_reason = "hangup"
        if call.state is CallState.RINGING:
            call.final_status = 480
        self.ua.hangup(call.leg_id, self.clock())
        log.info("call %s hung up by the application", call.id)
        return call

    def refer(self, call_id: str, target: str) -> Transfer:
        """Send REFER in the call's dialog (RFC 3515) to hand the caller to `target`."""
        call = self._live(call_id, "refer")
        if call.state is not CallState.ACTIVE:
            raise CallError("conflict", f"Cannot refer call '{call_id}': it has not been "
                            "accepted yet.")
        running = [t for t in call.transfers if not t.final]
        if running:
            raise CallError("conflict", f"Cannot refer call '{call_id}': transfer "
                            f"{running[0].id} to {running[0].target} is still in progress.")
        leg = self.ua.leg(call.leg_id)
        now = self.clock()
        headers = Headers([("Refer-To", f"<{target}>")])
        if leg is not None:
            headers.add("Referred-By", f"<{leg.dialog.local.uri}>")
        request = self.ua.send_request(call.leg_id, "REFER", now, headers=headers)
        transfer = Transfer(id="xfer_" + secrets.token_hex(12), target=target,
                            requested_at=time.time(), cseq=request.cseq.seq,
                            updated_at=time.time())
        call.transfers.append(transfer)
        log.info("call %s: REFER to %s sent (%s)", call.id, target, transfer.id)
        self._transfer_changed(call, transfer)
        return transfer

    def _transfer_changed(self, call: Call, transfer: Transfer) -> None:
        transfer.updated_at = time.time()
        if self.on_transfer is not None:
            self.on_transfer(call, transfer)

    def _refer_outcome(self, event: RequestOutcome, now: float) -> None:
        call = self._by_leg.get(event.leg_id)
        if call is None:
            return
        cseq = event.request.cseq.seq
        transfer = next((t for t in call.transfers if t.cseq == cseq), None)
        if transfer is None or transfer.status != "sent":
            return
        if event.timed_out or event.response is None:
            transfer.status, transfer.reason = "timed_out", "no answer to REFER"
        elif event.response.status < 200:
            return
        elif event.response.status < 300:
            transfer.status, transfer.sip_status = "accepted", event.response.status
        else:
            transfer.status = "rejected"
            transfer.sip_status = event.response.status
            transfer.reason = event.response.reason
        log.info("call %s: transfer %s %s%s", call.id, transfer.id, transfer.status,
                 f" ({transfer.sip_status})" if transfer.sip_status else "")
        self._transfer_changed(call, transfer)

    def _notify(self, leg_id: str, request: Request, now: float) -> bool:
        """A NOTIFY for a REFER of ours (Event: refer, message/sipfrag, RFC 3515 2.4.5)."""
        call = self._by_leg.get(leg_id)
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if call is None or event != "refer" or not call.transfers:
            return False
        transfer = call.transfers[-1]
        line = request.body.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[0].upper().startswith("SIP/") or not parts[1].isdigit():
            self.ua.respond(leg_id, request, 400, now, reason="Bad sipfrag")
            return True
        self.ua.respond(leg_id, request, 200, now)
        status = int(parts[1])
        transfer.notifications.append(line)
        if transfer.final:
            return True
        transfer.sip_status = status
        if status < 200:
            transfer.status = "progress"
        elif status < 300:
            transfer.status = "succeeded"
        else:
            transfer.status = "failed"
            transfer.reason = parts[2] if len(parts) > 2 else None
        log.info("call %s: transfer %s %s (%s)", call.id, transfer.id, transfer.status, line)
        self._transfer_changed(call, transfer)
        if transfer.status == "succeeded":
            call.end_reason = "transferred"
            self.ua.hangup(leg_id, now)  # the caller is with the target: our leg is done
        return True

    def _accept_timeout(self, call: Call) -> None:
        call.cancel_timer = None
        if call.state is not CallState.RINGING or call.leg_id not in self._by_leg:
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
            call.cancel_timer = None
        call.state = CallState.ENDED
        call.end_reason = call.end_reason or reason
        call.ended_at = time.time()
        session = self.media.stop(call.id)
        if session is not None:
            log.info("call %s ended (%s): %s", call.id, call.end_reason, session.summary())
        for transfer in call.transfers:
            if not transfer.final:
                transfer.status, transfer.reason = "failed", "the call ended first"
                self._transfer_changed(call, transfer)
        self.calls.pop(call.id, None)
        self.ended += 1
        if self.on_end is not None:
            self.on_end(call)
        if call.mode == "app":  # the application may still ask about it
            self.recent[call.id] = call
            while len(self.recent) > RECENT_CALLS:
                self.recent.popitem(last=False)
