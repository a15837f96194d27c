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

from sipbridge.calls.tool import pick_target
from sipbridge.calls.transfer import (
    FAILED,
    REJECTED,
    SUCCEEDED,
    TIMED_OUT,
    UNCONFIRMED,
    Transfer,
    TransferStep,
    TransferTimers,
)
from sipbridge.media.engine import MediaEngine, load_wav
from sipbridge.media.ports import NoMediaPort
from sipbridge.media.session import MediaSession
from sipbridge.sip.address import Address
from sipbridge.sip.errors import SipError
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
from sipbridge.sip.message import Headers, Request
from sipbridge.sip.sdp import (
    Direction,
    NegotiatedAudio,
    answer_offer,
    build_offer,
    parse_sdp,
    read_answer,
)
from sipbridge.sip.subscription import (
    SipFragError,
    parse_event,
    parse_sipfrag,
    parse_subscription_state,
    refer_sub_disabled,
)
from sipbridge.sip.ua import UserAgent

log = logging.getLogger("sipbridge.calls")

# Schedules `callback` after `delay` seconds; returns a cancel function.
Scheduler = Callable[[float, Callable[[], None]], Callable[[], None]]


class Timeline(list[dict[str, object]]):
    """A call's timeline; `sink` (the store) sees each entry as it is added."""

    sink: Callable[[dict[str, object]], None] | None = None

    def append(self, entry: dict[str, object]) -> None:
        super().append(entry)
        if self.sink is not None:
            self.sink(entry)


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


FALLBACK_STATES = (FAILED, REJECTED, TIMED_OUT, UNCONFIRMED)  # outcomes that run the fallback


@dataclass(frozen=True, slots=True)
class Trunk:
    """Where the gateway dials out (the `bridge` fallback), and as whom."""

    address: Address
    from_uri: str
    domain: str
    credentials: tuple[str, str] | None = None


@dataclass(slots=True)
class TransferJob:
    """One transfer of a call: the REFER's state machine plus what the gateway did
    about it (the fallback), and the timer that bounds it."""

    machine: Transfer
    fallback_mode: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    fallback: dict[str, object] | None = None
    bridge_leg: str | None = None
    cancel_timer: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.machine.id

    @property
    def status(self) -> str:
        return self.machine.status

    @property
    def final(self) -> bool:
        return self.machine.final

    def to_dict(self) -> dict[str, object]:
        record = self.machine.to_dict()
        record["fallback"] = dict(self.fallback) if self.fallback is not None else None
        return record


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
    options: dict[str, object] = field(default_factory=dict)  # accept's "sipbridge" extension
    transfers: list[TransferJob] = field(default_factory=list)
    timeline: Timeline = field(default_factory=Timeline)
    webhooks: list[Record] = field(default_factory=list)  # the webhook deliveries
    recording: str | None = None  # the stereo WAV's path, when calls are recorded

    def to_dict(self, *, timeline: bool = True) -> dict[str, object]:
        """The call record the API shows (GET /v1/realtime/calls/{id}); lists and the store
        take it without the timeline (the store gets that entry by entry)."""
        audio = self.audio
        record: dict[str, object] = {
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
            "recording": self.recording,
            "webhooks": [w.to_dict() for w in self.webhooks],
        }
        if timeline:
            record["timeline"] = list(self.timeline)
        return record


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
        on_transfer: Callable[[Call, TransferJob, TransferStep | None], None] | None = None,
        on_end: Callable[[Call], None] | None = None,
        on_media: Callable[[Call, MediaSession], None] | None = None,
        on_digit: Callable[[Call, str], None] | None = None,
        on_change: Callable[[Call], None] | None = None,
        transfer_timers: TransferTimers | None = None,
        transfer_fallback: str = "none",
        tel_uri: str | None = None,
        trunk: Trunk | None = None,
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
        self.on_media = on_media  # media started for a call the gateway does not echo/play
        self.on_digit = on_digit
        self.on_change = on_change  # a call was created, answered, ended, or its transfer moved
        self.transfer_timers = transfer_timers or TransferTimers()
        self.transfer_fallback = transfer_fallback
        self.tel_uri = tel_uri
        self.trunk = trunk
        self._bridges: dict[str, tuple[Call, TransferJob, bytes]] = {}  # outbound leg ->
        self.calls: dict[str, Call] = {}
        self.recent: OrderedDict[str, Call] = OrderedDict()  # ended, newest last
        self._by_leg: dict[str, Call] = {}
        self.by_sip_id: dict[str, Call] = {}  # SIP Call-ID (its own, or a bridge leg's) ->
        self.ended = 0

    def handle(self, event: Event) -> None:
        now = self.clock()
        if event.leg_id in self._bridges:
            self._bridge_event(event, now)
            return
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
                    self._end_transfers(call, reason, now)
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
        self.by_sip_id[call.sip_call_id] = call
        self._changed(call)
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
        self._changed(call)
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

    def accept(self, call_id: str, session: dict[str, object],
               options: dict[str, object] | None = None) -> Call:
        """Answer a ringing call (200 OK with our SDP) and start its media."""
        call = self._live(call_id, "accept")
        if call.state is not CallState.RINGING:
            raise CallError("conflict", f"Cannot accept call '{call_id}': it was already "
                            "accepted.")
        if call.cancel_timer is not None:
            call.cancel_timer()
        call.session = session
        call.options = dict(options or {})
        self._api(call, "accept")
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
        self._api(call, "reject", status_code=status)
        self.ua.reject(call.leg_id, status, self.clock())
        log.info("call %s rejected by the application with %d", call.id, status)
        return call

    def hangup(self, call_id: str) -> Call:
        """End a call: BYE once answered, 480 while it still rings."""
        call = self._live(call_id, "hang up")
        call.end_reason = "hangup"
        self._api(call, "hangup")
        if call.state is CallState.RINGING:
            call.final_status = 480
        self.ua.hangup(call.leg_id, self.clock())
        log.info("call %s hung up by the application", call.id)
        return call

    def refer(self, call_id: str, target: str, *, fallback: str | None = None,
              headers: list[tuple[str, str]] | None = None) -> TransferJob:
        """Send REFER in the call's dialog (RFC 3515) to hand the caller to `target`, and
        track it to an outcome: the result comes as steps (`on_transfer`), never here."""
        call = self._live(call_id, "refer")
        if call.state is not CallState.ACTIVE:
            raise CallError("conflict", f"Cannot refer call '{call_id}': it has not been "
                            "accepted yet.")
        running = [t for t in call.transfers if not t.final]
        if running:
            raise CallError("conflict", f"Cannot refer call '{call_id}': transfer "
                            f"{running[0].id} to {running[0].machine.target} is still in "
                            "progress.")
        now = self.clock()
        self._api(call, "refer", target_uri=target)
        mode = fallback or self._call_fallback(call)
        job = TransferJob(Transfer("xfer_" + secrets.token_hex(12), target, now,
                                   self.transfer_timers), mode, list(headers or []))
        call.transfers.append(job)
        self._steps(call, job, list(job.machine.steps))  # "requested"
        refer_to = self._refer_target(target)
        h = Headers([("Refer-To", f"<{refer_to}>")])
        leg = self.ua.leg(call.leg_id)
        if leg is not None:
            h.add("Referred-By", f"<{leg.dialog.local.uri}>")
        for name, value in job.headers:
            h.add(name, value)
        request = self.ua.send_request(call.leg_id, "REFER", now, headers=h)
        log.info("call %s: REFER to %s sent (%s)", call.id, refer_to, job.id)
        self._steps(call, job, job.machine.sent(now, request.cseq.seq))
        return job

    def run_transfer_tool(self, call_id: str, arguments: str) -> tuple[TransferJob | None, str]:
        """The model called the built-in transfer tool: refer the call to the target it
        named among those the application declared. (job, "") or (None, why not)."""
        targets = self.get(call_id).options.get("transfer_targets")
        if not isinstance(targets, dict) or not targets:
            return None, "no transfer targets were declared for this call"
        uri, problem = pick_target(targets, arguments)
        if uri is None:
            return None, problem
        try:
            return self.refer(call_id, uri), ""
        except CallError as exc:
            return None, exc.message

    def _changed(self, call: Call) -> None:
        if self.on_change is not None:
            self.on_change(call)

    @staticmethod
    def _api(call: Call, action: str, **details: object) -> None:
        call.timeline.append({"at": time.time(), "kind": "api", "action": action, **details})

    def _call_fallback(self, call: Call) -> str:
        mode = call.options.get("transfer_fallback")
        return mode if isinstance(mode, str) else self.transfer_fallback

    def _refer_target(self, target: str) -> str:
        """tel: targets become SIP URIs at the trunk when the carrier wants that."""
        if target.startswith("tel:") and self.tel_uri is not None:
            return self.tel_uri.replace("{number}", target[4:].split(";")[0])
        return target

    def _steps(self, call: Call, job: TransferJob, steps: list[TransferStep]) -> None:
        """Report a transfer's changes, re-arm its timer, and act on its outcome."""
        for step in steps:
            entry = {"kind": "transfer", "transfer_id": job.id, **step.to_dict()}
            entry["clock"], entry["at"] = entry["at"], time.time()  # the machine's clock; wall
            call.timeline.append(entry)
            log.info("call %s: transfer %s %s%s%s", call.id, job.id, step.status,
                     f" {step.sip_status}" if step.sip_status else "",
                     f" ({step.reason})" if step.reason else "")
            if self.on_transfer is not None:
                self.on_transfer(call, job, step)
        if steps:
            self._changed(call)
        if job.cancel_timer is not None:
            job.cancel_timer()
            job.cancel_timer = None
        deadline = job.machine.deadline
        if deadline is not None and not job.final:
            job.cancel_timer = self.schedule(max(0.0, deadline - self.clock()),
                                             lambda: self._transfer_timer(call, job))
        if not steps or not job.final or call.state is CallState.ENDED:
            return
        if job.status == SUCCEEDED:
            call.end_reason = "transferred"
            self.ua.hangup(call.leg_id, self.clock())  # the caller is with the target now
        elif job.status in FALLBACK_STATES and job.fallback is None:
            self._fallback(call, job)

    def _transfer_timer(self, call: Call, job: TransferJob) -> None:
        job.cancel_timer = None
        self._steps(call, job, job.machine.handle_timer(self.clock()))

    def _refer_outcome(self, event: RequestOutcome, now: float) -> None:
        call = self._by_leg.get(event.leg_id)
        if call is None:
            return
        cseq = event.request.cseq.seq
        job = next((t for t in call.transfers if t.machine.refer_cseq == cseq), None)
        if job is None:
            return
        response = event.response
        if event.timed_out or response is None:
            steps = job.machine.no_response(now)
        else:
            steps = job.machine.response(
                response.status, now, reason=response.reason,
                refer_sub=not refer_sub_disabled(response.headers.get("Refer-Sub")))
        self._steps(call, job, steps)

    def _notify(self, leg_id: str, request: Request, now: float) -> bool:
        """A NOTIFY in a call's dialog: the REFER's implicit subscription (RFC 3515 2.4.5).
        Answered 200 when it belongs to a transfer of ours, whatever its state (a carrier
        may abort a transfer on 481), 400 when its sipfrag is broken, 489 for another
        event package; False when the call has no transfer at all (481 then)."""
        call = self._by_leg.get(leg_id)
        if call is None or not call.transfers:
            return False
        try:
            event = parse_event(request.headers.get("Event"))
        except SipFragError:
            event = None
        if event is None or event[0] != "refer":
            self.ua.respond(leg_id, request, 489, now, reason="Bad Event",
                            headers=[("Allow-Events", "refer")])
            return True
        job = call.transfers[-1]
        if event[1] is not None and event[1].isdigit():  # id= the REFER's CSeq (RFC 3515 2.4.6)
            job = next((t for t in call.transfers if t.machine.refer_cseq == int(event[1])),
                       job)
        try:
            sub_state = parse_subscription_state(request.headers.get("Subscription-State"))
            frag = parse_sipfrag(request.body) if request.body else None
        except SipFragError as exc:
            log.info("call %s: NOTIFY refused: %s", call.id, exc.reason)
            self.ua.respond(leg_id, request, 400, now, reason="Bad Request",
                            headers=[("Warning", f'399 sipbridge "{exc.reason}"')])
            return True
        self.ua.respond(leg_id, request, 200, now)
        self._steps(call, job, job.machine.notify(frag, sub_state, now,
                                                  cseq=request.cseq.seq))
        return True

    def _end_transfers(self, call: Call, reason: EndReason, now: float) -> None:
        for job in call.transfers:
            if job.bridge_leg is not None:
                self.ua.hangup(job.bridge_leg, now)
            if job.final:
                continue
            if reason is EndReason.REMOTE_BYE and call.end_reason is None:
                steps = job.machine.peer_bye(now)
            else:
                steps = job.machine.local_end(now, "the call ended during the transfer")
            self._steps(call, job, steps)

    # ---- fallbacks ----------------------------------------------------------------

    def _fallback(self, call: Call, job: TransferJob) -> None:
        mode = job.fallback_mode
        if mode == "bridge":
            self._dial(call, job)
        elif mode == "announce":
            job.fallback = {"mode": "announce", "status": "announced"}
            log.info("call %s: transfer %s %s; the agent is told", call.id, job.id, job.status)
        else:
            job.fallback = {"mode": "none", "status": "none"}
        self._fallback_changed(call, job)

    def _fallback_changed(self, call: Call, job: TransferJob) -> None:
        call.timeline.append({"at": time.time(), "kind": "fallback", "transfer_id": job.id,
                              **(job.fallback or {})})
        if self.on_transfer is not None:
            self.on_transfer(call, job, None)

    def _sip_target(self, target: str) -> str:
        if target.startswith("tel:"):
            number = target[4:].split(";")[0]
            if self.tel_uri is not None:
                return self.tel_uri.replace("{number}", number)
            assert self.trunk is not None
            return f"sip:{number}@{self.trunk.domain}"
        return target

    def _dial(self, call: Call, job: TransferJob) -> None:
        """The `bridge` fallback: call the target through the trunk and join the audio."""
        if self.trunk is None:
            job.fallback = {"mode": "bridge", "status": "failed",
                            "reason": "no outbound trunk configured"}
            return
        trunk = self.trunk
        key = f"{call.id}:bridge"
        try:
            port = self.media.allocate(key, self.bind_host).port
        except NoMediaPort as exc:
            job.fallback = {"mode": "bridge", "status": "failed", "reason": str(exc)}
            return
        target = self._sip_target(job.machine.target)
        offer = build_offer(local_address=self.media_host(trunk.address.host), local_port=port,
                            session_id=hash(key) & 0x7FFFFFFF, session_version=1).to_bytes()
        leg = self.ua.leg(call.leg_id)
        headers = [("Referred-By", f"<{leg.dialog.local.uri}>")] if leg is not None else []
        try:
            leg_id = self.ua.invite(target, trunk.address, self.clock(), body=offer,
                                    from_uri=trunk.from_uri, headers=headers,
                                    credentials=trunk.credentials)
        except SipError as exc:
            self.media.stop(key)
            job.fallback = {"mode": "bridge", "status": "failed", "reason": exc.reason}
            return
        job.bridge_leg = leg_id
        self._bridges[leg_id] = (call, job, offer)
        outbound = self.ua.leg(leg_id)
        if outbound is not None:
            self.by_sip_id[outbound.invite.call_id] = call
        job.fallback = {"mode": "bridge", "status": "dialing", "target_uri": target}
        log.info("call %s: transfer %s %s; dialing %s to bridge", call.id, job.id,
                 job.status, target)

    def _bridge_event(self, event: Event, now: float) -> None:
        call, job, offer = self._bridges[event.leg_id]
        key = f"{call.id}:bridge"
        fallback = job.fallback if job.fallback is not None else {}
        match event:
            case OutgoingProgress(response=response) if response.status in (180, 183):
                if fallback.get("status") == "dialing":
                    fallback["status"] = "ringing"
                    self._fallback_changed(call, job)
            case OutgoingAnswered(response=response):
                caller = self.media.sessions.get(call.id)
                try:
                    audio = read_answer(parse_sdp(offer), parse_sdp(response.body))
                except SipError as exc:
                    fallback.update(status="failed", reason=f"bad SDP answer: {exc.reason}")
                    self._fallback_changed(call, job)
                    self.ua.hangup(event.leg_id, now)
                    return
                if call.state is CallState.ENDED or caller is None:
                    self.ua.hangup(event.leg_id, now)
                    return
                target = self.media.start(key, audio)
                self.media.bridge(caller, target)
                fallback.update(status="answered", sip_status=response.status)
                self._fallback_changed(call, job)
            case CallEnded(status=status, reason=reason):
                del self._bridges[event.leg_id]
                job.bridge_leg = None
                self.media.stop(key)
                if fallback.get("status") == "answered":
                    fallback["status"] = "ended"
                    self._fallback_changed(call, job)
                    if call.state is not CallState.ENDED:
                        call.end_reason = "bridge_ended"
                        self.ua.hangup(call.leg_id, now)  # the target hung up: so do we
                else:
                    fallback.update(status="failed", sip_status=status,
                                    reason=f"target call ended: {reason.value}")
                    self._fallback_changed(call, job)
            case _:
                pass

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
            on_dtmf=lambda d: self._dtmf(call, d.digit, d.duration_ms),
            on_timeout=lambda reason: self._media_timeout(call, reason),
        )
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
            rx = session.rx
            call.timeline.append({
                "at": time.time(), "kind": "media", "packets_in": session.stats.packets_in,
                "packets_out": session.stats.packets_out, "lost": max(rx.lost, 0),
                "jitter_ms": round(rx.jitter_ms(8000), 2), "late": session.jitter.late,
                "concealed": session.jitter.concealed,
                "dtmf": "".join(d.digit for d in session.digits),
                "dropped": dict(session.dropped)})
        call.timeline.append({"at": time.time(), "kind": "call", "status": "ended",
                              "reason": call.end_reason})
        for job in call.transfers:
            if job.cancel_timer is not None:
                job.cancel_timer()
                job.cancel_timer = None
        self.calls.pop(call.id, None)
        self.by_sip_id.pop(call.sip_call_id, None)
        self.ended += 1
        self._changed(call)
        if self.on_end is not None:
            self.on_end(call)
        self.recent[call.id] = call  # the application or an operator may still ask
        while len(self.recent) > RECENT_CALLS:
            self.recent.popitem(last=False)
