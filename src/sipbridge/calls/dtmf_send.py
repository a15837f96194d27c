"""Digits a call sends (an application's request, or the agent's `send_dtmf` tool): as RFC
4733 telephone-events in the call's RTP stream (`MediaSession.send_dtmf`), or as SIP INFO
requests (RFC 6086) with `application/dtmf-relay` bodies, one per digit, each sent after
the one before it has its final response and its tone's time has passed.

Each call's sends run one after another in the order asked; each is a `DtmfSend` whose
status goes `queued` -> `sending` -> `sent` or `failed` (with the reason), every change a
`DtmfSending` event (the call's timeline and sideband). A call that cannot carry the
method (no telephone-event negotiated, on hold) is refused up front; nothing is sent."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from sipbridge.calls.call import Call, CallError, CallState, DtmfSend
from sipbridge.calls.events import CallEvents, DtmfSending
from sipbridge.media.dtmf import MAX_DURATION_MS, MAX_GAP_MS, MIN_DURATION_MS, dtmf_digits
from sipbridge.media.engine import MediaEngine
from sipbridge.sip.driver import SipDriver
from sipbridge.sip.events import RequestOutcome
from sipbridge.sip.message import Headers
from sipbridge.sip.tokens import token_hex

log = logging.getLogger("sipbridge.calls")

METHODS = ("rfc4733", "info")
MAX_DIGITS = 64  # digits in one request
MAX_QUEUED = 8  # sends a call holds at once (the one sending included)
INFO_TYPE = "application/dtmf-relay"


def check(digits: str, duration_ms: int, gap_ms: int, method: str) -> str:
    """The digits to send (a-d as A-D), or ValueError naming the parameter: its message
    starts with the parameter's name."""
    if not isinstance(digits, str) or len(digits) > MAX_DIGITS:
        raise ValueError(f"digits: at most {MAX_DIGITS} digits at a time")
    try:
        digits = dtmf_digits(digits)
    except ValueError as exc:
        raise ValueError(f"digits: {exc}") from None
    if not MIN_DURATION_MS <= duration_ms <= MAX_DURATION_MS:
        raise ValueError(f"duration_ms: {duration_ms} is not {MIN_DURATION_MS}-"
                         f"{MAX_DURATION_MS} ms")
    if not 0 <= gap_ms <= MAX_GAP_MS:
        raise ValueError(f"gap_ms: {gap_ms} is not 0-{MAX_GAP_MS} ms")
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    return digits


def info_body(digit: str, duration_ms: int) -> bytes:
    """An `application/dtmf-relay` body: the digit and its duration in ms."""
    return f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()


class DtmfSends:
    """The digits the calls send: one queue per call, the head sending."""

    def __init__(self, sip: SipDriver, events: CallEvents, media: MediaEngine) -> None:
        self.sip = sip
        self.events = events
        self.media = media
        self.queues: dict[str, deque[DtmfSend]] = {}  # call id -> its sends, head first
        self.legs: dict[str, Call] = {}  # leg id -> a call with sends queued

    def send(self, call: Call, digits: str, *, duration_ms: int = 100, gap_ms: int = 100,
             method: str | None = None, requested_by: str = "app",
             on_done: Callable[[DtmfSend], None] | None = None) -> DtmfSend:
        """Queue a send on an active call; ValueError for bad input (naming the
        parameter), CallError("conflict") when the call cannot carry it."""
        method = method or call.dtmf_method
        digits = check(digits, duration_ms, gap_ms, method)
        if call.state is not CallState.ACTIVE:
            raise CallError("conflict", f"Cannot send DTMF on call '{call.id}': it is "
                            f"{call.state.value}, not active.")
        if method == "rfc4733":
            problem = self._rtp_problem(call)
            if problem is not None:
                raise CallError("conflict", f"Cannot send DTMF on call '{call.id}' as RFC 4733 "
                                f"events: {problem}.")
        queue = self.queues.setdefault(call.id, deque())
        if len(queue) >= MAX_QUEUED:
            raise CallError("conflict", f"Cannot send DTMF on call '{call.id}': {MAX_QUEUED} "
                            "sends are already queued; wait for them to be sent.")
        job = DtmfSend("dtmf_" + token_hex(8), digits, method, duration_ms, gap_ms,
                       requested_by, on_done=on_done)
        queue.append(job)
        self.legs[call.leg_id] = call
        self.events.emit(DtmfSending(call, job))
        if len(queue) == 1:
            self._start(call, job)
        return job

    def _rtp_problem(self, call: Call) -> str | None:
        audio = call.audio
        if audio is None or call.id not in self.media.sessions:
            return "the call has no media stream"
        if audio.telephone_event_pt is None:
            return ("the call negotiated no telephone-event payload type; use "
                    "method 'info' (SIP INFO) instead")
        if not audio.direction.sends or audio.remote_address == "0.0.0.0":
            return "the call is on hold (its stream does not send)"
        return None

    def _start(self, call: Call, job: DtmfSend) -> None:
        job.status = "sending"
        self.events.emit(DtmfSending(call, job))
        log.info("call %s: sending DTMF %s (%s)", call.id, job.digits, job.method)
        if job.method == "info":
            self._send_info(call, job)
            return
        session = self.media.sessions.get(call.id)
        problem = self._rtp_problem(call)
        if session is None or problem is not None:  # changed while it was queued
            self._finish(call, job, problem or "the call has no media stream")
            return
        try:
            session.send_dtmf(job.digits, duration_ms=job.duration_ms, gap_ms=job.gap_ms,
                              on_done=lambda: self._rtp_sent(call, job))
        except ValueError as exc:
            self._finish(call, job, str(exc))

    def _rtp_sent(self, call: Call, job: DtmfSend) -> None:
        """The last end packet is out (a media tick: what follows goes out at once)."""
        job.sent = len(job.digits)
        with self.sip.command():
            self._finish(call, job, None)

    def _send_info(self, call: Call, job: DtmfSend) -> None:
        job.cancel_timer = None
        if job.final:
            return
        digit = job.digits[job.sent]
        now = self.sip.now()
        try:
            request = self.sip.ua.send_request(
                call.leg_id, "INFO", now, headers=Headers([("Content-Type", INFO_TYPE)]),
                body=info_body(digit, job.duration_ms))
        except KeyError:
            self._finish(call, job, "the call's dialog has ended")
            return
        job.info_cseq = request.cseq.seq
        job.info_at = now

    def outcome(self, event: RequestOutcome) -> None:
        """A response to an INFO: the next digit after a 2xx (once the tone's time and the
        gap have passed), the send failed on anything else."""
        call = self.legs.get(event.leg_id)
        queue = self.queues.get(call.id) if call is not None else None
        if call is None or not queue or not event.final:
            return
        job = queue[0]
        if job.method != "info" or job.info_cseq != event.request.cseq.seq:
            return
        job.info_cseq = None
        response = event.response
        if response is None or not 200 <= response.status < 300:
            why = ("no response to INFO" if response is None
                   else f"INFO answered {response.status} {response.reason}")
            self._finish(call, job, f"{why}; digit {job.sent + 1} of {len(job.digits)} "
                         "not sent")
            return
        job.sent += 1
        if job.sent == len(job.digits):
            self._finish(call, job, None)
            return
        due = job.info_at + (job.duration_ms + job.gap_ms) / 1000
        job.cancel_timer = self.sip.schedule(max(0.0, due - self.sip.now()),
                                             lambda: self._send_info(call, job))

    def _finish(self, call: Call, job: DtmfSend, problem: str | None) -> None:
        if job.final:
            return
        if job.cancel_timer is not None:
            job.cancel_timer()
            job.cancel_timer = None
        job.status = "failed" if problem is not None else "sent"
        job.reason = problem
        log.info("call %s: DTMF %s %s%s", call.id, job.digits, job.status,
                 f" ({problem})" if problem else "")
        self.events.emit(DtmfSending(call, job))
        if job.on_done is not None:
            job.on_done(job)
        queue = self.queues.get(call.id)
        if queue and queue[0] is job:
            queue.popleft()
            if queue:
                self._start(call, queue[0])
            else:
                del self.queues[call.id]
                self.legs.pop(call.leg_id, None)

    def end(self, call: Call) -> None:
        """The call ended: what it had not sent yet never will be."""
        queue = self.queues.pop(call.id, None)
        self.legs.pop(call.leg_id, None)
        for job in queue or ():
            self._finish(call, job, "the call ended")
