"""The call registry: turns the UA's events into calls, answers them by policy or leaves
them ringing for an application, and carries out its call-control requests (accept,
reject, refer, hangup), each a command on the SIP driver, sent when it is done. What
happens to a call goes out as events (`calls.events`); transfers are
`calls.transfer_runner`'s; the call record is `calls.call`'s."""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sipbridge.audiostream import Direction
from sipbridge.calls.answers import AnswerCache
from sipbridge.calls.call import (
    PRIVATE_HEADERS,
    RECENT_CALLS,
    Call,
    CallError,
    CallState,
    DtmfSend,
    TransferJob,
    new_call_id,
)
from sipbridge.calls.dtmf_send import DtmfSends
from sipbridge.calls.events import (
    CallEvents,
    Changed,
    Digit,
    Ended,
    Incoming,
    MediaStarted,
    note,
)
from sipbridge.calls.outbound import Outbound, OutboundPolicy
from sipbridge.calls.sipids import SipCallIds, SipTrace
from sipbridge.calls.tool import ToolRun
from sipbridge.calls.transfer_machine import TransferTimers
from sipbridge.calls.transfer_runner import TransferPolicy, Transfers
from sipbridge.media.engine import MediaEngine, load_wav
from sipbridge.media.ports import NoMediaPort
from sipbridge.sip.address import Address
from sipbridge.sip.driver import SipDriver
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
    build_offer,
    new_srtp_key,
    parse_sdp,
    read_answer,
)

log = logging.getLogger("sipbridge.calls")


@dataclass(frozen=True, slots=True)
class AnswerPolicy:
    """How calls are answered: `auto_answer` ("echo", "silence", "agent", "play:<wav>",
    or None: the application decides when `ask_app`, else `reject_code`), after
    `ring_time` s; an application that does not decide in `accept_timeout` s gets the call
    answered `accept_timeout_code`; calls past the limits get 503."""

    auto_answer: str | None = "silence"
    ring_time: float = 0.0
    reject_code: int = 480
    ask_app: bool = False  # calls ring until the application accepts or rejects them
    accept_timeout: float = 30.0
    accept_timeout_code: int = 480
    max_calls: int | None = None
    max_calls_per_source: int | None = None
    # With auto_answer "agent": calls at once that the agent (the built-in model) can take;
    # more get 503 (agents busy) + Retry-After.
    max_agent_calls: int | None = None
    srtp: str = "off"  # off | optional | required (sipbridge.sip.sdp.answer_offer)
    srtp_over_cleartext: bool = False  # SDES keys accepted over signalling other than TLS
    dtmf_method: str = "rfc4733"  # how calls send DTMF unless a request says


class CallManager:
    """Answers calls by policy until an application takes over (auto-answer, reject)."""

    def __init__(
        self,
        sip: SipDriver,
        events: CallEvents,
        policy: AnswerPolicy,
        *,
        media: MediaEngine,
        media_host: Callable[[str], str],
        bind_host: str,
        transfers: TransferPolicy | None = None,
        outbound: OutboundPolicy | None = None,
        node: str = "",
    ) -> None:
        self.node = node  # in a cluster, this node's name: the suffix of its call ids
        self.sip = sip
        self.ua = sip.ua
        self.events = events
        self.policy = policy
        self.per_source: Counter[str] = Counter()  # live calls by source address
        self.refused_busy = 0
        self.media_host = media_host
        self.media = media
        self.bind_host = bind_host
        self._play: np.ndarray | None = None
        auto_answer = policy.auto_answer
        if auto_answer is not None and auto_answer.startswith("play:"):
            self._play = load_wav(Path(auto_answer[5:]))
        self.auto_answer = auto_answer
        self.answers = AnswerCache()  # the SDP answers, from templates of earlier ones
        self.transfers = Transfers(self, sip, events, media=media, media_host=media_host,
                                   bind_host=bind_host, policy=transfers or TransferPolicy())
        self.dtmf = DtmfSends(sip, events, media)
        self.calls: dict[str, Call] = {}
        self.recent: OrderedDict[str, Call] = OrderedDict()  # ended, newest last
        self.by_leg: dict[str, Call] = {}
        # SIP Call-ID (its own, or a bridge leg's) -> call, for its trace; ended calls too,
        # while their transactions last (64*T1, plus T4 for late retransmissions).
        timers = sip.ua.config.timers
        self.by_sip_id = SipCallIds(sip.now, linger=timers.b + timers.t4, limit=RECENT_CALLS)
        self.sip_trace = SipTrace(self.by_sip_id, events)
        self.ended = 0
        self.outbound = Outbound(self, outbound or OutboundPolicy())
        sip.attach(self)

    def handle(self, event: Event) -> None:
        now = self.sip.now()
        if self.outbound.handles(event, now):
            return
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
            case RequestOutcome(request=request) if request.method == "INFO":
                self.dtmf.outcome(event)
            case InDialogRequest() | RequestOutcome():
                pass

    def _incoming(self, event: IncomingCall, now: float) -> None:
        req = event.request
        host = event.source.host
        policy = self.policy
        per_source = policy.max_calls_per_source
        if ((policy.max_calls is not None and len(self.calls) >= policy.max_calls)
                or (per_source is not None and self.per_source[host] >= per_source)):
            # Refused before any call state: cheap, and the caller may try again later.
            self.refused_busy += 1
            self.ua.reject(event.leg_id, 503, now, "Service Unavailable (call limit reached)",
                           headers=[("Retry-After", "5")])
            return
        if (policy.auto_answer == "agent" and policy.max_agent_calls is not None
                and len(self.calls) >= policy.max_agent_calls):
            self.refused_busy += 1
            self.ua.reject(event.leg_id, 503, now, "Service Unavailable (agents busy)",
                           headers=[("Retry-After", "5")])
            return
        self.per_source[host] += 1
        call = Call(
            id=new_call_id(node=self.node),
            leg_id=event.leg_id,
            caller=str(req.from_.uri),
            callee=str(req.to.uri),
            created_at=time.time(),
            sip_call_id=req.call_id,
            source=f"{event.source.host}:{event.source.port}",
            sip_headers=[(n, v) for n, v in req.headers if n.lower() not in PRIVATE_HEADERS],
            dtmf_method=policy.dtmf_method,
        )
        self.calls[call.id] = call
        self.by_leg[event.leg_id] = call
        self.by_sip_id[call.sip_call_id] = call
        log.info("call %s from %s to %s", call.id, call.caller, call.callee)
        answer_now = self.auto_answer is not None and policy.ring_time <= 0
        if not answer_now:
            self.changed(call)
        if req.body and req.content_type != "application/sdp":
            self._refuse(call, answer_now, 415, now, [("Accept", "application/sdp")])
            return
        try:
            self._negotiate(call, req.body, event.source.host, event.source.transport)
        except NoMediaPort as exc:
            log.warning("call %s refused: %s", call.id, exc)
            self._refuse(call, answer_now, 503, now, [("Retry-After", "5")])
            return
        except SipError as exc:
            self._refuse(call, answer_now, exc.status, now,
                         [("Warning", f'399 sipbridge "{exc.reason}"')])
            return
        if answer_now:
            # Answered in this same turn of the loop: the 200 alone (no 180 that nobody
            # would hear ring), and its record is written once, answered (`_answer` says it
            # changed), not ringing and then answered.
            self._answer(call)
            return
        if self.auto_answer is None and policy.ask_app:
            # The application decides (webhook); the caller hears ringing meanwhile.
            call.mode = "app"
            self.ua.ring(event.leg_id, now)
            call.cancel_timer = self.sip.schedule(policy.accept_timeout,
                                                  lambda: self._accept_timeout(call))
            self.events.emit(Incoming(call))
            return
        if self.auto_answer is None:
            # No application to ask: refuse by policy.
            self.ua.reject(event.leg_id, policy.reject_code, now)
            return
        self.ua.ring(event.leg_id, now)
        call.cancel_timer = self.sip.schedule(policy.ring_time, lambda: self._answer(call))

    def _refuse(self, call: Call, unsaid: bool, status: int, now: float,
                headers: list[tuple[str, str]]) -> None:
        """A new call refused with `status`; `unsaid`: its record was not written yet (it
        was to be answered at once), so it is now, as a call that rang."""
        if unsaid:
            self.changed(call)
        self.ua.reject(call.leg_id, status, now, headers=headers)

    def _negotiate(self, call: Call, offer: bytes, peer_host: str, transport: str = "udp"
                   ) -> None:
        """RFC 3264: answer the caller's offer, or make our own offer when it sent none.
        SRTP keys (SDES) are taken as the policy says and the signalling (`transport`
        "tls" or not) allows; ours stay the same through re-INVITEs."""
        policy = self.policy
        srtp_key = call.audio.srtp.local_key if call.audio and call.audio.srtp else None
        secure = transport == "tls"
        host = self.media_host(peer_host)
        if not call.rtp_port:
            call.rtp_port = self.media.allocate(call.id, self.bind_host).port
        port = call.rtp_port
        call.sdp_version += 1
        if offer:
            call.local_sdp, audio = self.answers.answer(
                offer, local_address=host, local_port=port,
                session_id=hash(call.id) & 0x7FFFFFFF, session_version=call.sdp_version,
                srtp=policy.srtp, secure_signalling=secure,
                srtp_over_cleartext=policy.srtp_over_cleartext, srtp_key=srtp_key,
                supported=self.media.config.codecs,
            )
            call.audio = audio
            call.on_hold = audio.direction in (Direction.RECVONLY, Direction.INACTIVE)
        else:
            offer_srtp = policy.srtp == "required" and (secure or policy.srtp_over_cleartext)
            call.local_sdp = build_offer(
                local_address=host, local_port=port,
                session_id=hash(call.id) & 0x7FFFFFFF, session_version=call.sdp_version,
                srtp_key=(srtp_key or new_srtp_key()) if offer_srtp else None,
                codecs=self.media.config.codecs,
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
        self.ua.answer(call.leg_id, call.local_sdp, self.sip.now())
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
        with self.sip.command():
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
        with self.sip.command() as ua:
            call = self.live(call_id, "reject")
            if call.state is not CallState.RINGING:
                raise CallError("conflict", f"Cannot reject call '{call_id}': it was already "
                                "accepted; use hangup to end it.")
            call.end_reason = "rejected"
            call.final_status = status
            self.note_api(call, "reject", status_code=status)
            ua.reject(call.leg_id, status, self.sip.now())
            log.info("call %s rejected by the application with %d", call.id, status)
            return call

    def hangup(self, call_id: str) -> Call:
        """End a call: BYE once answered, 480 while it still rings."""
        with self.sip.command() as ua:
            call = self.live(call_id, "hang up")
            call.end_reason = "hangup"
            self.note_api(call, "hangup")
            if call.state is CallState.RINGING and call.direction == "inbound":
                call.final_status = 480
            self.outbound.cancelling(call)
            ua.hangup(call.leg_id, self.sip.now())
            log.info("call %s hung up by the application", call.id)
            return call

    def refer(self, call_id: str, target: str, *, fallback: str | None = None,
              headers: list[tuple[str, str]] | None = None,
              requested_by: str = "app", mode: str = "blind", brief: str | None = None,
              timers: TransferTimers | None = None, connect: str | None = None
              ) -> TransferJob:
        """Send REFER in the call's dialog (RFC 3515) to hand the caller to `target`, and
        track it to an outcome: the result comes as steps (`TransferStepped`), never here.
        `mode`, `brief`, `timers`, `connect`: as `Transfers.refer`'s."""
        with self.sip.command():
            return self.transfers.refer(call_id, target, fallback=fallback, headers=headers,
                                        requested_by=requested_by, mode=mode, brief=brief,
                                        timers=timers, connect=connect)

    def warm_decision(self, call_id: str, transfer_id: str, connect: bool,
                      reason: str) -> TransferJob:
        """The briefing's decision on a warm transfer: connect the caller and the person,
        or not (the caller is back with the agent). CallError when the transfer is not
        briefing."""
        with self.sip.command():
            call = self.live(call_id, "decide a transfer of")
            job = next((t for t in call.transfers if t.id == transfer_id), None)
            if job is None or job.mode != "warm":
                raise CallError("not_found", f"No warm transfer '{transfer_id}' on call "
                                f"'{call_id}'.")
            self.transfers.warm.decide(call, job, connect, reason)
            return job

    def run_transfer_tool(self, call_id: str, arguments: str, *,
                          held: str | None = None, hold_for: float = 0.0) -> ToolRun:
        """The model called the built-in transfer tool: refer the call to the target it
        named among those the application declared; `held`: the REFER waits (up to
        `hold_for` s) for `send_held`. A transfer already under way is the answer instead
        (nothing starts)."""
        with self.sip.command():
            return self.transfers.run_transfer_tool(call_id, arguments, held=held,
                                                    hold_for=hold_for)

    def send_held(self, call_id: str, job: TransferJob) -> bool:
        """Send a held transfer's REFER; False when the call or the transfer ended first."""
        with self.sip.command():
            return self.transfers.send_held(call_id, job)

    def place(self, to: str, session: dict[str, object], options: dict[str, object],
              **how: Any) -> Call:
        """Place an outbound call (`calls.outbound.Outbound.place`): the call, dialing."""
        with self.sip.command():
            return self.outbound.place(to, session, options, **how)

    def send_dtmf(self, call_id: str, digits: str, *, duration_ms: int = 100,
                  gap_ms: int = 100, method: str | None = None, requested_by: str = "app",
                  on_done: Callable[[DtmfSend], None] | None = None) -> DtmfSend:
        """Send digits on an active call, after those it is sending already: RFC 4733
        events in its RTP stream, or SIP INFO (`method`, else the call's `dtmf_method`).
        ValueError for bad input (its message starts with the parameter's name)."""
        with self.sip.command():
            call = self.live(call_id, "send DTMF on")
            return self.dtmf.send(call, digits, duration_ms=duration_ms, gap_ms=gap_ms,
                                  method=method, requested_by=requested_by, on_done=on_done)

    def changed(self, call: Call) -> None:
        self.events.emit(Changed(call))

    def note_api(self, call: Call, action: str, **details: object) -> None:
        self.events.emit(note(call, "api", action=action, **details))

    def note(self, call_id: str, kind: str, **data: object) -> None:
        """One entry on a call's timeline (the API's sideband connections, say)."""
        call = self.calls.get(call_id) or self.recent.get(call_id)
        if call is not None:
            self.events.emit(note(call, kind, **data))

    # ---- SIP messages on the timeline (the driver asks) ---------------------------

    def trace(self, data: bytes, peer: Address, direction: str, *, early: bool = False
              ) -> bool:
        return self.sip_trace.trace(data, peer, direction, early=early)

    def unsent(self, data: bytes, dest: Address, reason: str) -> None:
        self.sip_trace.unsent(data, dest, reason)

    def _accept_timeout(self, call: Call) -> None:
        call.cancel_timer = None
        if call.state is not CallState.RINGING or call.leg_id not in self.by_leg:
            return
        code = self.policy.accept_timeout_code
        log.info("call %s: not accepted within %g s, answering %d", call.id,
                 self.policy.accept_timeout, code)
        call.end_reason = "accept_timeout"
        call.final_status = code
        self.ua.reject(call.leg_id, code, self.sip.now())

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
        else:
            self.events.emit(MediaStarted(call, session))

    def _dtmf(self, call: Call, digit: str, duration_ms: int) -> None:
        log.info("call %s dtmf %s %dms", call.id, digit, duration_ms)
        self.events.emit(Digit(call, digit, duration_ms))

    def _media_timeout(self, call: Call, reason: str) -> None:
        log.info("call %s: %s, hanging up", call.id, reason)
        call.end_reason = "media_timeout"
        with self.sip.command() as ua:  # a media tick is outside SIP: the BYE goes now
            ua.hangup(call.leg_id, self.sip.now())

    def _reinvite(self, leg_id: str, offer: bytes, request: Request, now: float) -> None:
        """RFC 3264 8: a new offer in the dialog (hold, resume, codec change)."""
        call = self.by_leg.get(leg_id)
        leg = self.ua.leg(leg_id)
        if call is None or leg is None:
            return
        try:
            self._negotiate(call, offer, leg.source.host, leg.source.transport)
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
        self.dtmf.end(call)
        session = self.media.stop(call.id)
        call.media_live = None
        if session is not None:
            if log.isEnabledFor(logging.INFO):  # the summary is not free: only when logged
                log.info("call %s ended (%s): %s", call.id, call.end_reason, session.summary())
            call.media = session.figures()
            self.events.emit(note(call, "media", **call.media))
        self.events.emit(note(call, "call", status="ended", reason=call.end_reason))
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
        self.outbound.ended(call)
        self.by_sip_id.ended(call)  # what is sent and received after the end is traced too
        self.ended += 1
        self.changed(call)
        self.events.emit(Ended(call))
        self.recent[call.id] = call  # the application or an operator may still ask
        while len(self.recent) > RECENT_CALLS:
            self.recent.popitem(last=False)
