"""Holding an action until the agent's words have reached the caller, sans-IO.

When the model says "I'll transfer you now" and calls its transfer tool in the same
response, the REFER must wait: a phone puts the call on hold when the REFER comes, and
what is still queued is never heard. A `SpeechWait` decides when the words are out: no
response of the model is under way (its `response.done` came) and the call's playout
has drained, then `tail` more for the packets on their way and the phone's jitter
buffer; or `limit` seconds have passed, whatever the model does.

The owner feeds it the current time, whether the model is responding and how much
agent audio is still queued, after each change (a response started or done, audio
dropped at barge-in) and when `deadline` comes; it gives the outcome once.

    wait = SpeechWait(now, limit=5.0)
    outcome = wait.poll(now, speaking=True, queued_ms=1800)   # None: call again at
    wait.deadline                                              # ... this time, or sooner
"""

from __future__ import annotations

PLAYED = "played"  # the words were played out
TIMED_OUT = "timed_out"  # `limit` passed first
CLOSED = "closed"  # the model left the call before either

FRAME_MS = 20  # less than one frame queued is nothing left to play
TAIL = 0.2  # seconds after the playout drains: packets in flight, the phone's jitter buffer


class SpeechWait:
    """Until the agent's words are played out, at most `limit` seconds (see the module)."""

    __slots__ = ("_quiet_since", "deadline", "ended_at", "limit_at", "outcome", "started",
                 "tail")

    def __init__(self, now: float, limit: float, *, tail: float = TAIL) -> None:
        if not limit > 0 or tail < 0:
            raise ValueError(f"limit must be positive and tail not negative: {limit}, {tail}")
        self.started = now
        self.limit_at = now + limit
        self.tail = min(tail, limit)
        self.outcome: str | None = None
        self.ended_at: float | None = None
        self.deadline: float | None = self.limit_at  # when `poll` must run next; None once ended
        self._quiet_since: float | None = None

    @property
    def waited(self) -> float:
        """Seconds from the start to the outcome (so far, while it runs: 0)."""
        return 0.0 if self.ended_at is None else self.ended_at - self.started

    def poll(self, now: float, *, speaking: bool, queued_ms: float) -> str | None:
        """The outcome (PLAYED or TIMED_OUT) once there is one, else None and a new
        `deadline`. `speaking`: a response of the model is under way; `queued_ms`: agent
        audio waiting in the call's playout."""
        if self.outcome is not None:
            return self.outcome
        if speaking or queued_ms >= FRAME_MS:
            self._quiet_since = None
            # The playout drains in real time; a response under way says when it is done.
            wake = self.limit_at if speaking else now + queued_ms / 1000
        else:
            if self._quiet_since is None:
                self._quiet_since = now
            wake = self._quiet_since + self.tail
            if now >= wake:
                return self._end(now, PLAYED)
        if now >= self.limit_at:
            return self._end(now, TIMED_OUT)
        self.deadline = min(wake, self.limit_at)
        return None

    def close(self, now: float) -> str:
        """The model left the call (or the call ended): CLOSED, unless already decided."""
        return self.outcome if self.outcome is not None else self._end(now, CLOSED)

    def _end(self, now: float, outcome: str) -> str:
        self.outcome, self.ended_at, self.deadline = outcome, now, None
        return outcome
