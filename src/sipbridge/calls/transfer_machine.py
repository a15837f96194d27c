"""One blind transfer (REFER, RFC 3515) as a sans-IO state machine with an injected clock.

A 202 only says the carrier will try: the outcome comes from the NOTIFYs' sipfrags
(RFC 3515 2.4.5). Every path ends in a final state in bounded time: `refer_timeout` after
the REFER goes out, then `notify_timeout` after it is accepted, provided the owner calls
`handle_timer` at `deadline`.

    requested -> sent -> accepted -> progress -> succeeded | failed | unconfirmed
    requested | sent -> rejected | timed_out;    any non-final -> cancelled

"accepted" is final too when the carrier refused the subscription (RFC 4488 Refer-Sub: false).
`sip_status` is the last status code the carrier reported (REFER response or sipfrag),
carried into later steps that bring none of their own.

Times in the machine (`requested_at`, each step's `at`, `deadline`) are the injected clock's;
its records (`to_dict`) show Unix time, the clock's time plus `epoch`, which the owner gives
when it makes the transfer (Unix time minus its clock's time then).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sipbridge.records import TransferState, TransferStepRecord
from sipbridge.sip.message import REASONS, Response
from sipbridge.sip.subscription import SipFrag, SubscriptionState, refer_sub_disabled

REQUESTED = "requested"
SENT = "sent"
ACCEPTED = "accepted"
PROGRESS = "progress"
SUCCEEDED = "succeeded"
FAILED = "failed"
REJECTED = "rejected"
TIMED_OUT = "timed_out"
UNCONFIRMED = "unconfirmed"
CANCELLED = "cancelled"

STATES = (
    REQUESTED, SENT, ACCEPTED, PROGRESS, SUCCEEDED, FAILED, REJECTED, TIMED_OUT, UNCONFIRMED,
    CANCELLED,
)
# Always final; ACCEPTED is final only without a subscription (see NO_SUBSCRIPTION).
FINAL_STATES = frozenset({SUCCEEDED, FAILED, REJECTED, TIMED_OUT, UNCONFIRMED, CANCELLED})

NO_SUBSCRIPTION = (
    "the carrier accepted the REFER without a subscription (Refer-Sub: false): "
    "no NOTIFY will report the outcome"
)
PEER_ENDED = "the peer ended the call without reporting the transfer"
PEER_ENDED_AS_SUCCESS = f"{PEER_ENDED}; counted as success (bye_after_accept)"
ENDED_BEFORE_ANSWER = "the call ended before the carrier answered the REFER"
ENDED_BEFORE_REFER = "the call ended before the REFER was sent"
EARLY_NOTIFY = "a NOTIFY came before the answer to the REFER"
REFER_TRANSACTION_TIMEOUT = "no answer to REFER (transaction timeout)"

_WAITING_FOR_ANSWER = (REQUESTED, SENT)


@dataclass(frozen=True, slots=True)
class TransferTimers:
    """How long each phase may last, in seconds, and how to read a BYE after the 2xx."""

    refer_timeout: float = 8.0  # REFER with no final response by then -> timed_out
    notify_timeout: float = 30.0  # after the 2xx, no final NOTIFY by then -> unconfirmed
    # Peer BYE after the 2xx without a final NOTIFY: some carriers hang up instead of notifying.
    bye_after_accept: str = UNCONFIRMED  # UNCONFIRMED or SUCCEEDED
    # A warm transfer: the target unanswered by then -> the caller returns to the agent;
    # answered, and no decision from the briefing by then -> the gateway decides.
    ring_timeout: float = 30.0
    brief_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name in ("refer_timeout", "notify_timeout", "ring_timeout", "brief_timeout"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.bye_after_accept not in (UNCONFIRMED, SUCCEEDED):
            raise ValueError(
                f"bye_after_accept must be {UNCONFIRMED!r} or {SUCCEEDED!r}, "
                f"not {self.bye_after_accept!r}"
            )


DEFAULT_TIMERS = TransferTimers()


@dataclass(frozen=True, slots=True)
class TransferStep:
    """One change of a transfer, for the timeline, events and webhooks."""

    at: float  # the injected clock's time
    status: str
    sip_status: int | None
    reason: str | None
    final: bool

    def to_dict(self, epoch: float) -> TransferStepRecord:
        """The step's record, `at` in Unix time (`epoch`: the transfer's, see `Transfer`)."""
        return {
            "at": self.at + epoch,
            "status": self.status,
            "sip_status": self.sip_status,
            "reason": self.reason,
            "final": self.final,
        }


class Steps:
    """What a transfer's state machines share: their steps, each a `_move`; their times
    never run backwards; their record (`to_dict`, in Unix time)."""

    __slots__ = ("_deadline", "epoch", "final", "id", "reason", "requested_at", "sip_status",
                 "status", "steps", "target")
    id: str
    epoch: float
    target: str
    requested_at: float
    status: str
    sip_status: int | None
    reason: str | None
    final: bool
    steps: list[TransferStep]
    _deadline: float | None

    @property
    def deadline(self) -> float | None:
        """When `handle_timer` must be called next; None once final."""
        return None if self.final else self._deadline

    def to_dict(self) -> TransferState:
        """The transfer's record; its times (`requested_at`, steps' `at`) in Unix time."""
        return {
            "id": self.id,
            "target_uri": self.target,
            "status": self.status,
            "final": self.final,
            "sip_status": self.sip_status,
            "reason": self.reason,
            "requested_at": self.requested_at + self.epoch,
            "steps": [step.to_dict(self.epoch) for step in self.steps],
        }

    def local_end(self, now: float, reason: str) -> list[TransferStep]:
        """We (or the caller's leg) ended the call before an outcome: cancelled."""
        if self.final:
            return []
        return [self._move(self._clock(now), CANCELLED, self.sip_status, reason, final=True)]

    def cancel(self, now: float, reason: str) -> list[TransferStep]:
        """API-driven cancellation; same as `local_end`."""
        return self.local_end(now, reason)

    def _clock(self, now: float) -> float:
        return max(now, self.steps[-1].at)

    def _move(
        self, now: float, status: str, sip_status: int | None, reason: str | None,
        final: bool = False,
    ) -> TransferStep:
        step = TransferStep(now, status, sip_status, reason, final)
        self.status, self.sip_status, self.reason, self.final = status, sip_status, reason, final
        self.steps.append(step)
        if final:
            self._deadline = None
        return step


class Transfer(Steps):
    """One transfer's state. Each event method returns the steps it caused (often none);
    once `final` is True nothing changes it. Times never run backwards: a `now` earlier than
    the last step counts as the last step's time."""

    __slots__ = (
        "_anchor",
        "_last_progress",
        "_notify_cseqs",
        "_progress_codes",
        "notify_count",
        "refer_cseq",
        "timers",
    )

    def __init__(
        self, transfer_id: str, target: str, now: float, timers: TransferTimers = DEFAULT_TIMERS,
        *, epoch: float = 0.0, reason: str | None = None, hold: float = 0.0,
    ) -> None:
        """`reason` and `hold`: the REFER waits up to `hold` seconds before it is sent
        (`sent`), and says why; `refer_timeout` counts after that."""
        self.id = transfer_id
        self.epoch = epoch  # Unix time minus the clock's time: records show Unix time
        self.target = target
        self.timers = timers
        self.requested_at = now
        self.status = REQUESTED
        self.sip_status: int | None = None
        self.reason = reason  # why the REFER is not sent yet, say
        self.final = False
        self.steps: list[TransferStep] = [TransferStep(now, REQUESTED, None, reason, False)]
        self.notify_count = 0
        self.refer_cseq: int | None = None
        # A REFER never put on the wire still times out.
        self._deadline: float | None = now + max(0.0, hold) + timers.refer_timeout
        self._anchor = ""  # what the NOTIFY timer counts from, for its reason text
        self._last_progress: tuple[int, str] | None = None
        self._progress_codes: set[int] = set()
        self._notify_cseqs: set[int] = set()

    def sent(self, now: float, cseq: int) -> list[TransferStep]:
        """The REFER is on the wire: `refer_timeout` counts from now."""
        if self.status != REQUESTED:
            return []
        now = self._clock(now)
        self.refer_cseq = cseq
        self._deadline = now + self.timers.refer_timeout
        return [self._move(now, SENT, None, None)]

    def response(
        self, status: int, now: float, *, reason: str = "", refer_sub: bool = True
    ) -> list[TransferStep]:
        """A response to the REFER. 1xx: nothing. 2xx: accepted (final when `refer_sub` is
        False); after an early NOTIFY it changes nothing. 3xx-6xx: rejected, even after an
        early NOTIFY (the carrier's answer to the REFER stands)."""
        if self.final or status < 200:
            return []
        if status < 300 and self.status not in _WAITING_FOR_ANSWER:
            return []  # a retransmitted 2xx, or one after an early NOTIFY
        now = self._clock(now)
        phrase = _phrase(status, reason)
        if status >= 300:
            return [self._move(now, REJECTED, status, phrase, final=True)]
        if not refer_sub:
            return [self._move(now, ACCEPTED, status, NO_SUBSCRIPTION, final=True)]
        self._start_notify_timer(now, f"the {status}")
        return [self._move(now, ACCEPTED, status, phrase)]

    def answered(self, response: Response | None, now: float) -> list[TransferStep]:
        """The REFER's response as the UA reports it; None: its transaction timed out."""
        if response is None:
            return self.no_response(now)
        return self.response(
            response.status, now, reason=response.reason,
            refer_sub=not refer_sub_disabled(response.headers.get("Refer-Sub")))

    def no_response(self, now: float) -> list[TransferStep]:
        """The REFER's client transaction timed out (RFC 3261 17.1.2.2, Timer F)."""
        if self.status not in _WAITING_FOR_ANSWER:
            return []
        return [self._move(self._clock(now), TIMED_OUT, None, REFER_TRANSACTION_TIMEOUT, True)]

    def notify(
        self, frag: SipFrag | None, sub_state: SubscriptionState | None, now: float, *, cseq: int
    ) -> list[TransferStep]:
        """One NOTIFY of the REFER's subscription, already answered 200 by the caller.

        A retransmission (a CSeq already counted) changes nothing. A NOTIFY before the 2xx
        accepts the REFER implicitly. A terminated subscription without a final sipfrag
        decides at once: unconfirmed."""
        if self.final or cseq in self._notify_cseqs:
            return []
        self._notify_cseqs.add(cseq)
        self.notify_count += 1
        now = self._clock(now)
        implicit = self.status in _WAITING_FOR_ANSWER
        if implicit:
            self._start_notify_timer(now, "the first NOTIFY")
        if frag is not None and frag.final:
            outcome = SUCCEEDED if frag.status < 300 else FAILED
            return [self._move(now, outcome, frag.status, _phrase(frag.status, frag.reason), True)]
        terminated = sub_state is not None and sub_state.terminated
        steps: list[TransferStep] = []
        if frag is not None and frag.status not in self._progress_codes:
            phrase = _phrase(frag.status, frag.reason)
            self._progress_codes.add(frag.status)
            self._last_progress = (frag.status, phrase)
            steps.append(self._move(now, PROGRESS, frag.status, phrase))
        elif implicit and not terminated:
            steps.append(self._move(now, ACCEPTED, self.sip_status, EARLY_NOTIFY))
        if terminated:
            reason = f"the subscription ended without a final status ({self._last()})"
            steps.append(self._move(now, UNCONFIRMED, self.sip_status, reason, final=True))
        return steps

    def peer_bye(self, now: float) -> list[TransferStep]:
        """The carrier ended the call. Before the 2xx: cancelled. While NOTIFYs report
        progress: cancelled too (a carrier that reports progress reports the outcome, so a
        BYE then is the caller hanging up). After a bare 2xx: `timers.bye_after_accept`
        decides (some carriers hang up instead of notifying)."""
        if self.final:
            return []
        now = self._clock(now)
        if self.status in _WAITING_FOR_ANSWER:
            reason = ENDED_BEFORE_REFER if self.status == REQUESTED else ENDED_BEFORE_ANSWER
            return [self._move(now, CANCELLED, self.sip_status, reason, True)]
        if self.status == PROGRESS:
            reason = f"the caller hung up during the transfer ({self._last()})"
            return [self._move(now, CANCELLED, self.sip_status, reason, final=True)]
        if self.timers.bye_after_accept == SUCCEEDED:
            return [self._move(now, SUCCEEDED, self.sip_status, PEER_ENDED_AS_SUCCESS, True)]
        return [self._move(now, UNCONFIRMED, self.sip_status, PEER_ENDED, final=True)]

    def handle_timer(self, now: float) -> list[TransferStep]:
        """Fire the running timer if it is due; a no-op otherwise."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        now = self._clock(now)
        if self.status == REQUESTED:
            return [self._move(now, TIMED_OUT, None, "the REFER was never sent", final=True)]
        if self.status in _WAITING_FOR_ANSWER:
            reason = f"no answer to REFER within {self.timers.refer_timeout:g} s"
            return [self._move(now, TIMED_OUT, self.sip_status, reason, final=True)]
        reason = (
            f"no final NOTIFY within {self.timers.notify_timeout:g} s of {self._anchor} "
            f"({self._last()})"
        )
        return [self._move(now, UNCONFIRMED, self.sip_status, reason, final=True)]

    def __repr__(self) -> str:
        return f"<Transfer {self.id} {self.status} sip_status={self.sip_status}>"

    def _start_notify_timer(self, now: float, anchor: str) -> None:
        self._deadline = now + self.timers.notify_timeout
        self._anchor = anchor

    def _last(self) -> str:
        if self._last_progress is None:
            return "no progress reported"
        code, phrase = self._last_progress
        return f"last: {code} {phrase}".rstrip()



def _phrase(status: int, reason: str) -> str:
    return reason.strip() or REASONS.get(status, "")
