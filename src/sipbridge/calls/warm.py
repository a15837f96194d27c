"""One warm (attended) transfer as a sans-IO state machine with an injected clock.

The gateway dials the person while the caller waits on hold; once the person answers, the
agent briefs them and decides: connect (the caller and the person talk, by a REFER with
Replaces, RFC 3891, or by joining the two calls' audio) or not (the caller is back with
the agent). Every phase is bounded: `ring_timeout` while dialing and ringing,
`brief_timeout` from the answer to the decision (none by then: the gateway connects),
`refer_timeout + notify_timeout` (and a margin) while connecting, provided the owner calls
`handle_timer` at `deadline`.

    requested -> dialing -> ringing -> answered -> briefing -> connecting -> connected
    any non-final -> returned (reason: no_answer, busy, declined, rejected <code>,
                               hung_up or failed, then ": " and words)
    any non-final -> cancelled (the call ended)

Times and records as `calls.transfer_machine.Transfer`'s (same surface).
"""

from __future__ import annotations

from dataclasses import dataclass

from sipbridge.calls.transfer_machine import DEFAULT_TIMERS, Steps, TransferStep, TransferTimers
from sipbridge.sip.message import REASONS

REQUESTED = "requested"
DIALING = "dialing"
RINGING = "ringing"
ANSWERED = "answered"
BRIEFING = "briefing"
CONNECTING = "connecting"
CONNECTED = "connected"
RETURNED = "returned"
CANCELLED = "cancelled"

STATES = (REQUESTED, DIALING, RINGING, ANSWERED, BRIEFING, CONNECTING, CONNECTED, RETURNED,
          CANCELLED)
FINAL_STATES = frozenset({CONNECTED, RETURNED, CANCELLED})
BUSY_CODES = frozenset({486, 600})
DECLINE_CODES = frozenset({603})
NO_ANSWER_CODES = frozenset({408, 480, 487})
CONNECT_MARGIN = 2.0  # seconds past refer_timeout + notify_timeout before connecting fails


@dataclass(slots=True)
class WarmLeg:
    """The person's side of a warm transfer: the call the gateway placed, its media
    session's key in `MediaEngine.sessions`, the brief, and how the caller was connected."""

    media_key: str
    brief: str | None
    leg_id: str | None = None
    how: str | None = None  # "replaces" or "bridge", set when connecting
    connect: str = "auto"  # "auto", "replaces" or "bridge": how connecting is tried


class WarmTransfer(Steps):
    """One warm transfer's state. Each event method returns the steps it caused (often
    none); once `final` is True nothing changes it. A `now` earlier than the last step
    counts as the last step's time."""

    __slots__ = ("timers",)

    def __init__(
        self, transfer_id: str, target: str, now: float, timers: TransferTimers = DEFAULT_TIMERS,
        *, epoch: float = 0.0, reason: str | None = None, hold: float = 0.0,
    ) -> None:
        """`reason` and `hold`: dialing waits up to `hold` seconds (`dial`), and says why."""
        self.id = transfer_id
        self.epoch = epoch
        self.target = target
        self.timers = timers
        self.requested_at = now
        self.status = REQUESTED
        self.sip_status: int | None = None
        self.reason = reason
        self.final = False
        self.steps: list[TransferStep] = [TransferStep(now, REQUESTED, None, reason, False)]
        self._deadline: float | None = now + max(0.0, hold) + timers.ring_timeout

    @property
    def connect_bound(self) -> float:
        """How long connecting may take."""
        return self.timers.refer_timeout + self.timers.notify_timeout + CONNECT_MARGIN

    def dial(self, now: float, reason: str | None = None) -> list[TransferStep]:
        """The INVITE to the person is out: `ring_timeout` counts from now."""
        if self.status != REQUESTED:
            return []
        now = self._clock(now)
        self._deadline = now + self.timers.ring_timeout
        return [self._move(now, DIALING, None, reason)]

    def ringing(self, now: float, sip_status: int) -> list[TransferStep]:
        """A 180 or 183 from the person's side."""
        if self.status != DIALING:
            return []
        return [self._move(self._clock(now), RINGING, sip_status, _phrase(sip_status))]

    def answered(self, now: float, sip_status: int = 200) -> list[TransferStep]:
        """The person answered: answered, then briefing; `brief_timeout` counts from now."""
        if self.status not in (DIALING, RINGING):
            return []
        now = self._clock(now)
        self._deadline = now + self.timers.brief_timeout
        return [self._move(now, ANSWERED, sip_status, _phrase(sip_status)),
                self._move(now, BRIEFING, sip_status, None)]

    def decide(self, now: float, connect: bool, reason: str) -> list[TransferStep]:
        """The briefing's decision: connect (connecting) or not (returned, declined)."""
        if self.status not in (ANSWERED, BRIEFING):
            return []
        now = self._clock(now)
        if not connect:
            return [self._move(now, RETURNED, self.sip_status,
                               f"declined: {reason or 'the briefing decided not to connect'}",
                               final=True)]
        self._deadline = now + self.connect_bound
        return [self._move(now, CONNECTING, self.sip_status, reason or None)]

    def connected(self, now: float, how: str, sip_status: int | None = None
                  ) -> list[TransferStep]:
        """The caller and the person talk (`how`: "replaces" or "bridge")."""
        if self.status != CONNECTING:
            return []
        status = sip_status if sip_status is not None else self.sip_status
        return [self._move(self._clock(now), CONNECTED, status, f"connected by {how}",
                           final=True)]

    def person_ended(self, now: float, status: int | None, detail: str = ""
                     ) -> list[TransferStep]:
        """The person's call ended: refused with `status` before the answer, or hung up
        (`status` None) after it."""
        if self.final or self.status == REQUESTED:
            return []
        now = self._clock(now)
        if self.status in (DIALING, RINGING):
            if status is None:
                return self.fail(now, detail or "the call to the person ended unanswered")
            phrase = _phrase(status, detail)
            if status in BUSY_CODES:
                reason = f"busy: {status} {phrase}"
            elif status in DECLINE_CODES:
                reason = f"declined: the person refused the call ({status} {phrase})"
            elif status in NO_ANSWER_CODES:
                reason = f"no_answer: {status} {phrase}"
            else:
                reason = f"rejected {status}: {phrase}"
            return [self._move(now, RETURNED, status, reason.rstrip(), final=True)]
        where = "while connecting" if self.status == CONNECTING else "during the brief"
        return [self._move(now, RETURNED, self.sip_status,
                           f"hung_up: the person hung up {where}", final=True)]

    def fail(self, now: float, detail: str) -> list[TransferStep]:
        """Something on the gateway's side failed (bad SDP, no port, transport error)."""
        if self.final:
            return []
        return [self._move(self._clock(now), RETURNED, self.sip_status, f"failed: {detail}",
                           final=True)]

    def handle_timer(self, now: float) -> list[TransferStep]:
        """Fire the running timer if it is due; a no-op otherwise."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        now = self._clock(now)
        t = self.timers
        if self.status == REQUESTED:
            return self.fail(now, "the person was never dialed")
        if self.status in (DIALING, RINGING):
            return [self._move(now, RETURNED, self.sip_status,
                               f"no_answer: the person did not answer within "
                               f"{t.ring_timeout:g} s", final=True)]
        if self.status in (ANSWERED, BRIEFING):
            return self.decide(now, True, f"no decision within {t.brief_timeout:g} s of the "
                               "answer: connecting")
        return self.fail(now, f"not connected within {self.connect_bound:g} s")

    def __repr__(self) -> str:
        return f"<WarmTransfer {self.id} {self.status} sip_status={self.sip_status}>"


def _phrase(status: int, reason: str = "") -> str:
    return reason.strip() or REASONS.get(status, "")
