"""Warm (attended) transfers, the runner around each one's state machine (`calls.warm`):
the gateway dials the person (through the trunk, or straight to a sip: URI's address), the
caller hears hold audio meanwhile, the agent briefs the person once they answer, and on the
decision the caller is connected, by a REFER with Replaces (RFC 3891) in the caller's
dialog when the caller supports it, else by joining the two calls' audio in the gateway.
Whatever goes wrong before that brings the caller back to the agent, and the person's leg,
its media and the hold audio are gone by then."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Protocol
from urllib.parse import quote

import numpy as np

from sipbridge.calls.call import Call, CallError, CallState, TransferJob, Trunk
from sipbridge.calls.events import CallEvents, Changed, TransferStepped, note
from sipbridge.calls.sipids import SipCallIds
from sipbridge.calls.transfer_machine import SUCCEEDED, Transfer, TransferStep
from sipbridge.calls.warm import (
    ANSWERED,
    BRIEFING,
    CANCELLED,
    CONNECTED,
    CONNECTING,
    RETURNED,
    WarmTransfer,
)
from sipbridge.media.engine import MediaEngine
from sipbridge.media.hold import HoldAudio, hold_tone
from sipbridge.media.ports import NoMediaPort
from sipbridge.sip.address import Address
from sipbridge.sip.driver import SipDriver
from sipbridge.sip.errors import SipError
from sipbridge.sip.events import (
    CallEnded,
    EndReason,
    Event,
    InDialogRequest,
    OutgoingAnswered,
    OutgoingProgress,
    ReInvite,
    RequestOutcome,
)
from sipbridge.sip.message import Headers
from sipbridge.sip.sdp import build_offer, new_srtp_key, parse_sdp, read_answer
from sipbridge.sip.subscription import SipFrag, SubscriptionState
from sipbridge.sip.uri import SipUri, parse_uri

log = logging.getLogger("sipbridge.calls")

CONNECT_MODES = ("auto", "replaces", "bridge")
PERSON_BYE_GRACE = 5.0  # s after a Replaces transfer before we BYE a person still on our leg


class Registry(Protocol):
    @property
    def by_sip_id(self) -> SipCallIds:
        """Calls by SIP Call-ID, for the trace (a person's call's is added)."""


class Owner(Protocol):
    """What warm transfers need of the transfers runner (`calls.transfer_runner`)."""

    sip: SipDriver
    events: CallEvents
    media: MediaEngine
    media_host: Callable[[str], str]
    bind_host: str
    trunk: Trunk | None

    @property
    def calls(self) -> Registry: ...

    def sip_target(self, target: str) -> str:
        """A tel: target as a SIP URI at the trunk."""


class WarmTransfers:
    """The warm transfers of one registry's calls."""

    def __init__(self, owner: Owner, *, connect: str = "auto",
                 hold_audio: np.ndarray | None = None) -> None:
        self.owner = owner
        self.sip = owner.sip
        self.ua = owner.sip.ua
        self.events = owner.events
        self.media = owner.media
        self.connect = connect
        self.hold_audio = hold_audio if hold_audio is not None else hold_tone()
        self._legs: dict[str, tuple[Call, TransferJob, bytes]] = {}  # person's leg ->
        self._holds: dict[str, HoldAudio] = {}  # transfer id ->
        self._refers: dict[str, Transfer] = {}  # transfer id -> its REFER with Replaces
        self._graces: dict[str, Callable[[], None]] = {}  # person's leg -> cancel its BYE

    @staticmethod
    def machine(job: TransferJob) -> WarmTransfer:
        assert isinstance(job.machine, WarmTransfer) and job.warm is not None
        return job.machine

    def owns(self, leg_id: str) -> bool:
        """Whether `leg_id` is a person's call of a warm transfer."""
        return leg_id in self._legs

    def refer_cseq(self, job: TransferJob) -> int | None:
        refer = self._refers.get(job.id)
        return refer.refer_cseq if refer is not None else None

    # ---- dialing --------------------------------------------------------------------

    def route(self, target: str) -> tuple[str, Address, str, tuple[str, str] | None]:
        """Where the person's call goes: (request URI, next hop, From URI, credentials).
        tel: targets and, when a trunk is configured, sip: ones go through the trunk; a
        sip: URI without a trunk goes straight to its host, which must be an IP address
        (the gateway looks up no names for this). SipError when there is no way."""
        trunk = self.owner.trunk
        if target.startswith("tel:"):
            if trunk is None:
                raise SipError("no outbound trunk configured to dial a tel: number", 503)
            return self.owner.sip_target(target), trunk.address, trunk.from_uri, \
                trunk.credentials
        if trunk is not None:
            return target, trunk.address, trunk.from_uri, trunk.credentials
        uri = parse_uri(target)
        if not isinstance(uri, SipUri):
            raise SipError(f"cannot dial {target}", 400)
        try:
            ipaddress.ip_address(uri.host.strip("[]"))
        except ValueError:
            raise SipError(f"no trunk configured, and {uri.host} is not an IP address",
                           503) from None
        transport = "tls" if uri.scheme == "sips" else uri.transport
        port = uri.port or (5061 if transport == "tls" else 5060)
        return target, Address(transport, uri.host.strip("[]"), port), \
            f"sip:sipbridge@{self.ua.config.host}", None

    def begin(self, call: Call, job: TransferJob, *, dial: bool) -> None:
        """A new warm transfer: its first step; the person is dialed now, or when
        `dial` is called (a held transfer)."""
        self._steps(call, job, list(self.machine(job).steps))  # "requested"
        if dial:
            self.dial(call, job)

    def dial(self, call: Call, job: TransferJob) -> None:
        """Call the person with our SDP offer; the caller is on hold from now on."""
        machine = self.machine(job)
        assert job.warm is not None
        now = self.sip.now()
        key = job.warm.media_key
        try:
            target, dest, from_uri, credentials = self.route(machine.target)
            port = self.media.allocate(key, self.owner.bind_host).port
        except (SipError, NoMediaPort) as exc:
            reason = exc.reason if isinstance(exc, SipError) else str(exc)
            self._steps(call, job, machine.fail(now, reason))
            return
        srtp = call.audio is not None and call.audio.srtp is not None
        srtp_key = new_srtp_key() if srtp and dest.transport == "tls" else None
        offer = build_offer(local_address=self.owner.media_host(dest.host), local_port=port,
                            session_id=hash(key) & 0x7FFFFFFF, session_version=1,
                            srtp_key=srtp_key, codecs=self.media.config.codecs).to_bytes()
        leg = self.ua.leg(call.leg_id)
        headers = [("Referred-By", f"<{leg.dialog.local.uri}>")] if leg is not None else []
        try:
            leg_id = self.ua.invite(target, dest, now, body=offer, from_uri=from_uri,
                                    headers=headers, credentials=credentials)
        except SipError as exc:
            self.media.stop(key)
            self._steps(call, job, machine.fail(now, exc.reason))
            return
        job.warm.leg_id = leg_id
        self._legs[leg_id] = (call, job, offer)
        outbound = self.ua.leg(leg_id)
        if outbound is not None:
            self.owner.calls.by_sip_id[outbound.invite.call_id] = call
        self._steps(call, job, machine.dial(now, f"calling {target}"))
        caller = self.media.sessions.get(call.id)
        if caller is not None and not machine.final:
            hold = HoldAudio(caller, self.hold_audio)
            hold.install()
            self._holds[job.id] = hold

    def event(self, event: Event, now: float) -> None:
        """Something happened on a person's call."""
        call, job, offer = self._legs[event.leg_id]
        machine = self.machine(job)
        assert job.warm is not None
        match event:
            case OutgoingProgress(response=response) if response.status in (180, 183):
                self._steps(call, job, machine.ringing(now, response.status))
            case OutgoingAnswered(response=response):
                if machine.final:  # answered as we gave up on it
                    self.ua.hangup(event.leg_id, now)
                    return
                try:
                    audio = read_answer(parse_sdp(offer), parse_sdp(response.body))
                except SipError as exc:
                    self.ua.hangup(event.leg_id, now)
                    self._steps(call, job, machine.fail(now, f"bad SDP answer: {exc.reason}"))
                    return
                self.media.start(job.warm.media_key, audio)
                self._steps(call, job, machine.answered(now, response.status))
            case CallEnded(reason=reason, status=status, detail=detail):
                del self._legs[event.leg_id]
                cancel = self._graces.pop(event.leg_id, None)
                if cancel is not None:
                    cancel()
                self.media.stop(job.warm.media_key)
                if not machine.final:
                    refused = status if reason is EndReason.REJECTED else None
                    self._steps(call, job, machine.person_ended(now, refused, detail))
                elif (machine.status == CONNECTED and job.warm.how == "bridge"
                      and call.state is not CallState.ENDED):
                    call.end_reason = "bridge_ended"
                    self.ua.hangup(call.leg_id, now)  # the person hung up: so do we
            case ReInvite(request=request):
                self.ua.respond(event.leg_id, request, 488, now)
            case InDialogRequest(request=request, answered=False):
                self.ua.respond(event.leg_id, request,
                                481 if request.method == "NOTIFY" else 501, now)
            case _:
                pass

    # ---- the decision and connecting --------------------------------------------------

    def decide(self, call: Call, job: TransferJob, connect: bool, reason: str) -> None:
        machine = self.machine(job)
        if machine.status not in (ANSWERED, BRIEFING):
            raise CallError("conflict", f"Cannot decide transfer '{job.id}': it is "
                            f"{machine.status}, not briefing.")
        self._steps(call, job, machine.decide(self.sip.now(), connect, reason))

    def _connect(self, call: Call, job: TransferJob) -> None:
        assert job.warm is not None
        how = job.warm.connect
        if how == "auto":
            how = "replaces" if supports_replaces(call) else "bridge"
        if how == "replaces" and self._refer_replaces(call, job):
            return
        self._bridge(call, job)

    def _refer_replaces(self, call: Call, job: TransferJob) -> bool:
        """REFER the caller to the person's call, replacing ours (RFC 3891, RFC 3515)."""
        assert job.warm is not None and job.warm.leg_id is not None
        person = self.ua.leg(job.warm.leg_id)
        if person is None:
            return False
        dialog = person.dialog
        # The person's UA matches its dialog: to-tag is its tag, from-tag is ours.
        replaces = quote(f"{dialog.call_id};to-tag={dialog.remote_tag};"
                         f"from-tag={dialog.local_tag}", safe="")
        h = Headers([("Refer-To", f"<{dialog.remote_target}?Replaces={replaces}>")])
        leg = self.ua.leg(call.leg_id)
        if leg is not None:
            h.add("Referred-By", f"<{leg.dialog.local.uri}>")
        now = self.sip.now()
        try:
            request = self.ua.send_request(call.leg_id, "REFER", now, headers=h)
        except (KeyError, SipError) as exc:
            log.info("call %s: REFER with Replaces not sent (%s)", call.id, exc)
            return False
        machine = self.machine(job)
        refer = Transfer(job.id, machine.target, now, machine.timers, epoch=machine.epoch)
        self._refers[job.id] = refer
        self._refer_steps(call, job, refer.sent(now, request.cseq.seq))
        log.info("call %s: REFER with Replaces sent (%s)", call.id, job.id)
        return True

    def _bridge(self, call: Call, job: TransferJob) -> None:
        assert job.warm is not None
        machine = self.machine(job)
        caller = self.media.sessions.get(call.id)
        person = self.media.sessions.get(job.warm.media_key)
        now = self.sip.now()
        if caller is None or person is None:
            self._steps(call, job, machine.fail(now, "no media to join"))
            return
        self._remove_hold(job)
        job.warm.how = "bridge"
        self.media.bridge(caller, person)
        self._steps(call, job, machine.connected(now, "bridge"))

    def refer_outcome(self, call: Call, job: TransferJob, event: RequestOutcome,
                      now: float) -> None:
        refer = self._refers.get(job.id)
        if refer is None:
            return
        self._refer_steps(call, job, refer.answered(
            None if event.timed_out else event.response, now))

    def notify(self, call: Call, job: TransferJob, frag: SipFrag | None,
               state: SubscriptionState | None, now: float, cseq: int) -> None:
        refer = self._refers.get(job.id)
        if refer is not None:
            self._refer_steps(call, job, refer.notify(frag, state, now, cseq=cseq))

    def _refer_steps(self, call: Call, job: TransferJob, steps: list[TransferStep]) -> None:
        """The REFER with Replaces moved: on the timeline; its success connects, its
        failure bridges instead (both calls are still up)."""
        for step in steps:
            self.events.emit(note(call, "replaces", transfer_id=job.id, status=step.status,
                                  sip_status=step.sip_status, reason=step.reason))
        refer = self._refers.get(job.id)
        if refer is None or not refer.final:
            self._arm(call, job)
            return
        del self._refers[job.id]
        machine = self.machine(job)
        if machine.status != CONNECTING:
            return
        assert job.warm is not None
        if refer.status == SUCCEEDED or (refer.status == "accepted" and refer.final):
            self._remove_hold(job)
            job.warm.how = "replaces"
            now = self.sip.now()
            self._steps(call, job, machine.connected(now, "replaces", refer.sip_status))
            if call.state is not CallState.ENDED:
                call.end_reason = "transferred"
                self.ua.hangup(call.leg_id, now)  # the caller talks with the person now
            self._leave_person(job)
        else:
            log.info("call %s: REFER with Replaces %s (%s); bridging instead", call.id,
                     refer.status, refer.reason)
            self._bridge(call, job)

    def _leave_person(self, job: TransferJob) -> None:
        """The caller's UA takes the person's call over (INVITE with Replaces), and the
        person's UA then ends ours; if it has not within PERSON_BYE_GRACE, we do."""
        assert job.warm is not None
        leg_id = job.warm.leg_id
        if leg_id is not None and leg_id in self._legs and leg_id not in self._graces:
            self._graces[leg_id] = self.sip.schedule(
                PERSON_BYE_GRACE, lambda: self._grace_over(leg_id))

    def _grace_over(self, leg_id: str) -> None:
        self._graces.pop(leg_id, None)
        if leg_id in self._legs:
            self.ua.hangup(leg_id, self.sip.now())

    # ---- ending ---------------------------------------------------------------------

    def end(self, call: Call, job: TransferJob, now: float) -> None:
        """The caller's call ended: the transfer is cancelled, and the person's call ends
        (a bridged one too; after a Replaces transfer the person's UA ends it)."""
        machine = self.machine(job)
        assert job.warm is not None
        refer = self._refers.get(job.id)
        if refer is not None and refer.status in ("accepted", "progress") and not refer.final:
            # The caller accepted the REFER with Replaces, then hung up: its UA may be
            # calling the person, so the person's call is left to be replaced. As for a
            # blind transfer, `bye_after_accept` says whether this counts as success.
            del self._refers[job.id]
            self._leave_person(job)
            if machine.timers.bye_after_accept == SUCCEEDED:
                self._remove_hold(job)
                job.warm.how = "replaces"
                self._steps(call, job, machine.connected(
                    now, "replaces", refer.sip_status))
                return
            self._steps(call, job, machine.local_end(
                now, "the caller hung up after accepting the REFER with Replaces"))
        elif not machine.final:
            self._steps(call, job, machine.local_end(now, "the caller's call ended"))
        elif job.warm.how == "bridge" and job.warm.leg_id in self._legs:
            self.ua.hangup(job.warm.leg_id, now)

    def _steps(self, call: Call, job: TransferJob, steps: list[TransferStep]) -> None:
        """Report a warm transfer's changes, re-arm its timer, and act on them."""
        machine = self.machine(job)
        assert job.warm is not None
        for step in steps:
            log.info("call %s: warm transfer %s %s%s%s", call.id, job.id, step.status,
                     f" {step.sip_status}" if step.sip_status else "",
                     f" ({step.reason})" if step.reason else "")
            if step.final:
                self._remove_hold(job)  # before the step: the agent takes the caller back
            if step.status in (RETURNED, CANCELLED):
                self._drop_person(job)
            self.events.emit(TransferStepped(call, job, step))
        if steps:
            self.events.emit(Changed(call))
        self._arm(call, job)
        if steps and steps[-1].status == CONNECTING and machine.status == CONNECTING:
            self._connect(call, job)

    def _arm(self, call: Call, job: TransferJob) -> None:
        if job.cancel_timer is not None:
            job.cancel_timer()
            job.cancel_timer = None
        deadlines = [d for d in (self.machine(job).deadline,
                                 self._refers[job.id].deadline if job.id in self._refers
                                 else None) if d is not None]
        if deadlines:
            job.cancel_timer = self.sip.schedule(max(0.0, min(deadlines) - self.sip.now()),
                                                 lambda: self._timer(call, job))

    def _timer(self, call: Call, job: TransferJob) -> None:
        job.cancel_timer = None
        now = self.sip.now()
        refer = self._refers.get(job.id)
        if refer is not None:
            self._refer_steps(call, job, refer.handle_timer(now))
        self._steps(call, job, self.machine(job).handle_timer(now))

    def _drop_person(self, job: TransferJob) -> None:
        """End the person's call (CANCEL or BYE) and free its media now."""
        assert job.warm is not None
        self._refers.pop(job.id, None)
        leg_id = job.warm.leg_id
        if leg_id is not None and leg_id in self._legs and leg_id not in self._graces:
            self.ua.hangup(leg_id, self.sip.now())
        self.media.stop(job.warm.media_key)

    def _remove_hold(self, job: TransferJob) -> None:
        hold = self._holds.pop(job.id, None)
        if hold is not None:
            hold.remove()


def supports_replaces(call: Call) -> bool:
    """Whether the caller's INVITE said it supports Replaces (Supported: replaces)."""
    return any(name.lower() in ("supported", "k")
               and "replaces" in (t.strip().lower() for t in value.split(","))
               for name, value in call.sip_headers)
