"""Transfers of calls (RFC 3515), the runner around each transfer's state machine
(`calls.transfer_machine`): the REFER sent in a call's dialog, its 202 and NOTIFYs fed to
the machine, the timer that bounds it, what the gateway does with the outcome (its leg
ended on success), and the fallbacks when it fails: none, announce (the agent is told),
or bridge (the gateway dials the target through its trunk and joins the two calls'
audio)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sipbridge.calls.call import FALLBACK_STATES, Call, CallError, CallState, TransferJob, Trunk
from sipbridge.calls.events import CallEvents, Changed, TransferStepped, note
from sipbridge.calls.sipids import SipCallIds
from sipbridge.calls.targets import SpecError, read_timeouts, timers_for
from sipbridge.calls.tool import ToolRun, pick_target
from sipbridge.calls.transfer_machine import (
    REQUESTED,
    SUCCEEDED,
    Transfer,
    TransferStep,
    TransferTimers,
)
from sipbridge.calls.warm import WarmLeg, WarmTransfer
from sipbridge.calls.warm_runner import WarmTransfers
from sipbridge.media.engine import MediaEngine
from sipbridge.media.ports import NoMediaPort
from sipbridge.sip.driver import SipDriver
from sipbridge.sip.errors import SipError
from sipbridge.sip.events import (
    CallEnded,
    EndReason,
    Event,
    OutgoingAnswered,
    OutgoingProgress,
    RequestOutcome,
)
from sipbridge.sip.headers import quoted_string
from sipbridge.sip.message import Headers, Request
from sipbridge.sip.sdp import build_offer, new_srtp_key, parse_sdp, read_answer
from sipbridge.sip.subscription import (
    BadEvent,
    SipFragError,
    read_refer_notify,
)
from sipbridge.sip.tokens import token_hex

log = logging.getLogger("sipbridge.calls")


class CallRegistry(Protocol):
    """What transfers need of the call registry."""

    def get(self, call_id: str) -> Call:
        """A live or recently ended call; CallError("not_found") otherwise."""

    def live(self, call_id: str, action: str) -> Call:
        """A call not ended yet; CallError otherwise, saying why `action` cannot be done."""

    @property
    def by_leg(self) -> Mapping[str, Call]:
        """Live calls by their SIP leg."""

    @property
    def by_sip_id(self) -> SipCallIds:
        """Calls by SIP Call-ID, for the trace (a bridge leg's is added)."""


@dataclass(frozen=True, slots=True)
class TransferPolicy:
    """How transfers run: their timers, the fallback when a call's options name none,
    how tel: targets become SIP URIs, and the trunk the bridge fallback dials through."""

    timers: TransferTimers = field(default_factory=TransferTimers)
    default_fallback: str = "none"
    tel_uri: str | None = None
    trunk: Trunk | None = None
    warm_connect: str = "auto"  # how a warm transfer connects: auto | replaces | bridge
    hold_audio: np.ndarray | None = field(default=None, repr=False)  # 24 kHz; None: a tone


class Transfers:
    """The transfers of one registry's calls."""

    def __init__(self, calls: CallRegistry, sip: SipDriver, events: CallEvents, *,
                 media: MediaEngine, media_host: Callable[[str], str], bind_host: str,
                 policy: TransferPolicy) -> None:
        self.calls = calls
        self.sip = sip
        self.ua = sip.ua
        self.events = events
        self.media = media
        self.media_host = media_host
        self.bind_host = bind_host
        self.timers = policy.timers
        self.default_fallback = policy.default_fallback
        self.tel_uri = policy.tel_uri
        self.trunk = policy.trunk
        self._bridges: dict[str, tuple[Call, TransferJob, bytes]] = {}  # outbound leg ->
        self.warm = WarmTransfers(self, connect=policy.warm_connect,
                                  hold_audio=policy.hold_audio)

    def bridges(self, leg_id: str) -> bool:
        """Whether `leg_id` is an outbound call of the bridge fallback or a warm transfer."""
        return leg_id in self._bridges or self.warm.owns(leg_id)

    def refer(self, call_id: str, target: str, *, fallback: str | None = None,
              headers: list[tuple[str, str]] | None = None,
              requested_by: str = "app", held: str | None = None,
              hold_for: float = 0.0, mode: str = "blind", brief: str | None = None,
              timers: TransferTimers | None = None, connect: str | None = None) -> TransferJob:
        """Send REFER in the call's dialog (RFC 3515) to hand the caller to `target`, and
        track it to an outcome: the result comes as steps (`TransferStepped`), never here.
        `requested_by`: "app" (the API), "agent" (the transfer tool) or "gateway".
        `held`: the REFER is not sent yet; the transfer stays `requested`, with this as
        its reason, until `send_held`, expected within `hold_for` seconds (the REFER
        timer counts after that). `timers`: this transfer's bounds (None: the policy's).
        `mode` "warm" with its `brief`: the gateway dials the target and the agent briefs
        the person before the caller is connected (`connect`: how, as `warm_connect`)."""
        if mode not in ("blind", "warm"):
            raise CallError("conflict", f"Cannot refer call '{call_id}': mode {mode!r} is "
                            "not available.")
        call = self.calls.live(call_id, "refer")
        if call.state is not CallState.ACTIVE:
            raise CallError("conflict", f"Cannot refer call '{call_id}': it has not been "
                            "accepted yet.")
        running = [t for t in call.transfers if not t.final]
        if running:
            raise CallError("conflict", f"Cannot refer call '{call_id}': transfer "
                            f"{running[0].id} to {running[0].machine.target} is still in "
                            "progress.")
        now = self.sip.now()
        if requested_by == "app":
            self.events.emit(note(call, "api", action="refer", target_uri=target))
        if mode == "warm":
            return self._warm(call, target, brief, timers or self.timers, requested_by, held,
                              hold_for, connect or self.warm.connect, now)
        mode = fallback or self._call_fallback(call)
        job = TransferJob(Transfer("xfer_" + token_hex(12), target, now,
                                   timers or self.timers, epoch=time.time() - now, reason=held,
                                   hold=hold_for if held is not None else 0.0),
                          mode, list(headers or []),
                          requested_by=requested_by)
        call.transfers.append(job)
        self._steps(call, job, list(job.machine.steps))  # "requested"
        if held is None:
            self._send_refer(call, job)
        return job

    def _warm(self, call: Call, target: str, brief: str | None, timers: TransferTimers,
              requested_by: str, held: str | None, hold_for: float, connect: str,
              now: float) -> TransferJob:
        machine = WarmTransfer("xfer_" + token_hex(12), target, now, timers,
                               epoch=time.time() - now, reason=held,
                               hold=hold_for if held is not None else 0.0)
        job = TransferJob(machine, "none", requested_by=requested_by, mode="warm",
                          warm=WarmLeg(f"{call.id}:warm", brief, connect=connect))
        call.transfers.append(job)
        self.warm.begin(call, job, dial=held is None)
        return job

    def send_held(self, call_id: str, job: TransferJob) -> bool:
        """Send the REFER of a transfer `refer` held; False (nothing sent) when the call or
        the transfer ended meanwhile."""
        try:
            call = self.calls.get(call_id)
        except CallError:
            return False
        if call.state is not CallState.ACTIVE or job not in call.transfers \
                or job.status != REQUESTED:
            return False
        if job.mode == "warm":
            self.warm.dial(call, job)
            return not job.final
        try:
            self._send_refer(call, job)
        except KeyError:  # the dialog is ending (our BYE is out): the transfer with it
            self._steps(call, job, job.machine.local_end(
                self.sip.now(), "the call ended before the REFER was sent"))
            return False
        return True

    def _send_refer(self, call: Call, job: TransferJob) -> None:
        now = self.sip.now()
        refer_to = self._refer_target(job.machine.target)
        h = Headers([("Refer-To", f"<{refer_to}>")])
        leg = self.ua.leg(call.leg_id)
        if leg is not None:
            h.add("Referred-By", f"<{leg.dialog.local.uri}>")
        for name, value in job.headers:
            h.add(name, value)
        request = self.ua.send_request(call.leg_id, "REFER", now, headers=h)
        log.info("call %s: REFER to %s sent (%s)", call.id, refer_to, job.id)
        self._steps(call, job, blind(job).sent(now, request.cseq.seq))

    def run_transfer_tool(self, call_id: str, arguments: str, *,
                          held: str | None = None, hold_for: float = 0.0) -> ToolRun:
        """The model called the built-in transfer tool: refer the call to the target it
        named among those the application declared, with that target's mode, brief and
        timeouts over the call's (`held`: as `refer`'s). While a
        transfer of the call is under way, nothing new starts: that one is the answer."""
        call = self.calls.get(call_id)
        targets = call.options.get("transfer_targets")
        if not isinstance(targets, dict) or not targets:
            return ToolRun(None, problem="no transfer targets were declared for this call")
        running = next((t for t in call.transfers if not t.final), None)
        if running is not None:
            return ToolRun(running)
        spec, problem = pick_target(targets, arguments)
        if spec is None:
            return ToolRun(None, problem=problem)
        try:
            call_timeouts = read_timeouts(call.options, "sipbridge")
        except SpecError:  # checked on accept; a call's options are not changed after
            call_timeouts = {}
        timers = timers_for(self.timers, call_timeouts, spec.timeouts)
        try:
            return ToolRun(self.refer(call_id, spec.uri, requested_by="agent", held=held,
                                      hold_for=hold_for, mode=spec.mode, brief=spec.brief,
                                      timers=timers), True)
        except CallError as exc:
            return ToolRun(None, problem=exc.message)

    def _call_fallback(self, call: Call) -> str:
        mode = call.options.get("transfer_fallback")
        return mode if isinstance(mode, str) else self.default_fallback

    def _refer_target(self, target: str) -> str:
        """tel: targets become SIP URIs at the trunk when the carrier wants that."""
        if target.startswith("tel:") and self.tel_uri is not None:
            return self.tel_uri.replace("{number}", target[4:].split(";")[0])
        return target

    def _steps(self, call: Call, job: TransferJob, steps: list[TransferStep]) -> None:
        """Report a transfer's changes, re-arm its timer, and act on its outcome."""
        for step in steps:
            log.info("call %s: transfer %s %s%s%s", call.id, job.id, step.status,
                     f" {step.sip_status}" if step.sip_status else "",
                     f" ({step.reason})" if step.reason else "")
            self.events.emit(TransferStepped(call, job, step))
        if steps:
            self.events.emit(Changed(call))
        if job.cancel_timer is not None:
            job.cancel_timer()
            job.cancel_timer = None
        deadline = job.machine.deadline
        if deadline is not None and not job.final:
            job.cancel_timer = self.sip.schedule(max(0.0, deadline - self.sip.now()),
                                                 lambda: self._transfer_timer(call, job))
        if not steps or not job.final or call.state is CallState.ENDED:
            return
        if job.status == SUCCEEDED:
            call.end_reason = "transferred"
            self.ua.hangup(call.leg_id, self.sip.now())  # the caller is with the target now
        elif job.status in FALLBACK_STATES and job.fallback is None:
            self._fallback(call, job)

    def _transfer_timer(self, call: Call, job: TransferJob) -> None:
        job.cancel_timer = None
        self._steps(call, job, blind(job).handle_timer(self.sip.now()))

    def refer_outcome(self, event: RequestOutcome, now: float) -> None:
        call = self.calls.by_leg.get(event.leg_id)
        if call is None:
            return
        cseq = event.request.cseq.seq
        job = next((t for t in call.transfers if self._refer_cseq(t) == cseq), None)
        if job is None:
            return
        if job.mode == "warm":
            self.warm.refer_outcome(call, job, event, now)
            return
        self._steps(call, job, blind(job).answered(
            None if event.timed_out else event.response, now))

    def notify(self, leg_id: str, request: Request, now: float) -> bool:
        """A NOTIFY in a call's dialog: the REFER's implicit subscription (RFC 3515 2.4.5).
        Answered 200 when it belongs to a transfer of ours, whatever its state (a carrier
        may abort a transfer on 481), and acted on whenever its state and status line can
        be read: what is malformed around them becomes one warning on the timeline. 400
        (with a Warning saying why) only when they cannot be read, 489 for another event
        package; False when the call has no transfer at all (481 then)."""
        call = self.calls.by_leg.get(leg_id)
        if call is None or not call.transfers:
            return False
        try:
            content = read_refer_notify(request.headers, request.body)
        except BadEvent:
            self.ua.respond(leg_id, request, 489, now, reason="Bad Event",
                            headers=[("Allow-Events", "refer")])
            return True
        except SipFragError as exc:
            log.info("call %s: NOTIFY refused: %s", call.id, exc.reason)
            self.ua.respond(leg_id, request, 400, now, reason="Bad Request",
                            headers=[("Warning", f"399 sipbridge {quoted_string(exc.reason)}")])
            return True
        job = call.transfers[-1]
        event_id = content.event_id
        if event_id is not None and event_id.isascii() and event_id.isdigit():
            # id= the REFER's CSeq (RFC 3515 2.4.6)
            job = next((t for t in call.transfers if self._refer_cseq(t) == int(event_id)),
                       job)
        if content.warnings:
            detail = f"NOTIFY (CSeq {request.cseq.seq}) taken despite: " + "; ".join(
                content.warnings)
            log.info("call %s: %s", call.id, detail)
            self.events.emit(note(call, "warning", transfer_id=job.id, detail=detail))
        self.ua.respond(leg_id, request, 200, now)
        if job.mode == "warm":
            self.warm.notify(call, job, content.frag, content.state, now, request.cseq.seq)
            return True
        self._steps(call, job, blind(job).notify(content.frag, content.state, now,
                                                 cseq=request.cseq.seq))
        return True

    def _refer_cseq(self, job: TransferJob) -> int | None:
        if job.mode == "warm":
            return self.warm.refer_cseq(job)
        return blind(job).refer_cseq

    def end(self, call: Call, reason: EndReason, now: float) -> None:
        for job in call.transfers:
            if job.mode == "warm":
                self.warm.end(call, job, now)
                continue
            if job.bridge_leg is not None:
                self.ua.hangup(job.bridge_leg, now)
            if job.final:
                continue
            if reason is EndReason.REMOTE_BYE and call.end_reason is None:
                steps = blind(job).peer_bye(now)
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
        self.events.emit(TransferStepped(call, job, None))

    def sip_target(self, target: str) -> str:
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
        target = self.sip_target(job.machine.target)
        # An SRTP call's bridge leg is SRTP too, where its key travels over TLS.
        srtp = call.audio is not None and call.audio.srtp is not None
        srtp_key = new_srtp_key() if srtp and trunk.address.transport == "tls" else None
        offer = build_offer(local_address=self.media_host(trunk.address.host), local_port=port,
                            session_id=hash(key) & 0x7FFFFFFF, session_version=1,
                            srtp_key=srtp_key, codecs=self.media.config.codecs).to_bytes()
        leg = self.ua.leg(call.leg_id)
        headers = [("Referred-By", f"<{leg.dialog.local.uri}>")] if leg is not None else []
        try:
            leg_id = self.ua.invite(target, trunk.address, self.sip.now(), body=offer,
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
            self.calls.by_sip_id[outbound.invite.call_id] = call
        job.fallback = {"mode": "bridge", "status": "dialing", "target_uri": target}
        log.info("call %s: transfer %s %s; dialing %s to bridge", call.id, job.id,
                 job.status, target)

    def bridge_event(self, event: Event, now: float) -> None:
        if self.warm.owns(event.leg_id):
            self.warm.event(event, now)
            return
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


def blind(job: TransferJob) -> Transfer:
    """A blind transfer's REFER machine."""
    assert isinstance(job.machine, Transfer)
    return job.machine
