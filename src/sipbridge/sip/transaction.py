"""SIP transactions (RFC 3261 17, with the Accepted states of RFC 6026), sans-IO.

A transaction takes messages and the current time, queues bytes to send in
`outbox`, and exposes its next deadline with `deadline`. The owner (the UA core)
calls `on_timer(now)` once that time has come. Nothing here reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from sipbridge.sip.address import Address
from sipbridge.sip.message import Headers, Request, Response

MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 17.1.1.1 and table 4 (A to K); T1, T2, T4 set the rest."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def b(self) -> float:
        return 64 * self.t1  # also F, H, J, L, M


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Timeout(enum.Enum):
    """Why a transaction ended without the expected message."""

    NO_RESPONSE = "no response (Timer B/F)"
    NO_ACK = "no ACK (Timer H)"
    NO_2XX_ACK = "no ACK for 2xx (RFC 3261 13.3.1.4)"


def server_key(request: Request) -> tuple[str, ...]:
    """The key that matches a request to its server transaction (RFC 3261 17.2.3).

    ACK matches the INVITE transaction; CANCEL has a transaction of its own.
    Requests without the RFC 3261 magic cookie fall back to RFC 2543 matching.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host, str(via.port), method)
    return (
        request.call_id, str(request.cseq.seq), request.from_.tag or "",
        via.host, str(via.port), method,
    )


def client_key(branch: str, method: str) -> tuple[str, ...]:
    """RFC 3261 17.1.3: a response matches by top Via branch and CSeq method."""
    return (branch, "INVITE" if method == "ACK" else method)


class Transaction:
    """What every transaction has: a peer, an outbox, timers as deadlines."""

    def __init__(
        self, peer: Address, timers: TimerConfig, outbox: list[tuple[bytes, Address]] | None
    ) -> None:
        self.peer = peer
        self.timers = timers
        self.state = State.TRYING
        self.owner = ""  # the id of the leg this transaction belongs to, if any
        self.settled_away = False  # the core keeps its `Settled` values in its place
        self.outbox: list[tuple[bytes, Address]] = [] if outbox is None else outbox
        # Retransmit timer (A, E, G or the 2xx timer) and the timer that ends a state.
        self._retransmit_at: float | None = None
        self._interval = timers.t1
        self._cap: float | None = None
        self._end_at: float | None = None
        self._last: bytes | None = None

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    @property
    def deadline(self) -> float | None:
        """The next time `on_timer` must be called, or None."""
        if self._retransmit_at is None:
            return self._end_at
        if self._end_at is None:
            return self._retransmit_at
        return min(self._retransmit_at, self._end_at)

    def _send(self, data: bytes) -> None:
        self._last = data
        self.outbox.append((data, self.peer))

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self._retransmit_at = self._end_at = None

    def _start_retransmit(self, now: float, cap: float | None) -> None:
        self._interval = self.timers.t1
        self._retransmit_at = now + self._interval
        self._cap = cap

    def _retransmit(self, now: float) -> None:
        if self._last is not None:
            self.outbox.append((self._last, self.peer))
        self._interval = self._interval * 2
        if self._cap is not None:
            self._interval = min(self._interval, self._cap)
        self._retransmit_at = now + self._interval

    def _due(self, at: float | None, now: float) -> bool:
        return at is not None and now >= at


class ClientTransaction(Transaction):
    """INVITE (17.1.1) and non-INVITE (17.1.2) client transactions."""

    def __init__(
        self,
        request: Request,
        peer: Address,
        now: float,
        timers: TimerConfig,
        outbox: list[tuple[bytes, Address]] | None = None,
    ) -> None:
        super().__init__(peer, timers, outbox)
        self.request = request
        self.is_invite = request.method == "INVITE"
        self.branch = request.top_via.branch or ""
        self.key = client_key(self.branch, request.method)
        self.state = State.CALLING if self.is_invite else State.TRYING
        self.timeout: Timeout | None = None
        self._send(request.to_bytes())
        if not peer.reliable:
            self._start_retransmit(now, None if self.is_invite else timers.t2)  # Timer A / E
        self._end_at = now + timers.b  # Timer B / F

    def receive(self, response: Response, now: float) -> bool:
        """Take a response; True if the TU should see it (retransmissions are absorbed)."""
        status = response.status
        state = self.state
        if state in (State.CALLING, State.TRYING, State.PROCEEDING):
            if status < 200:
                self.state = State.PROCEEDING
                if self.is_invite:
                    self._retransmit_at = self._end_at = None
                elif self._retransmit_at is not None:
                    self._interval = self.timers.t2  # 17.1.2.2: E fires at T2 in Proceeding
                return True
            self._retransmit_at = None
            if self.is_invite and status < 300:
                self.state = State.ACCEPTED  # RFC 6026 7.2, Timer M
                self._end_at = now + self.timers.b
            elif self.is_invite:
                self.state = State.COMPLETED
                self._send(self._ack_for(response).to_bytes())
                self._end_at = now + (0 if self.peer.reliable else 32.0)  # Timer D
            else:
                self.state = State.COMPLETED
                self._end_at = now + (0 if self.peer.reliable else self.timers.t4)  # Timer K
            return True
        if state is State.ACCEPTED:
            return 200 <= status < 300  # 2xx retransmissions go to the TU to re-ACK
        if state is State.COMPLETED and self.is_invite and status >= 300 and self._last:
            self.outbox.append((self._last, self.peer))  # resend the ACK
        return False

    def on_timer(self, now: float) -> Timeout | None:
        if self._due(self._end_at, now):
            expired = self.state in (State.CALLING, State.TRYING, State.PROCEEDING)
            self._terminate()
            if expired:
                self.timeout = Timeout.NO_RESPONSE
                return Timeout.NO_RESPONSE
            return None
        if self._due(self._retransmit_at, now):
            self._retransmit(now)
        return None

    def transport_error(self) -> None:
        self.timeout = Timeout.NO_RESPONSE
        self._terminate()

    def _ack_for(self, response: Response) -> Request:
        """ACK for a non-2xx final response (RFC 3261 17.1.1.3): same branch, To from the
        response."""
        req = self.request
        h = Headers()
        h.add("Via", req.headers.get_all("Via")[0])
        for name in ("Max-Forwards", "From"):
            if (value := req.headers.get(name)) is not None:
                h.add(name, value)
        h.add("To", response.headers.get("To") or "")
        h.add("Call-ID", req.call_id)
        h.add("CSeq", f"{req.cseq.seq} ACK")
        for route in req.headers.get_all("Route"):
            h.add("Route", route)
        return Request("ACK", req.uri, h)


class Settled(NamedTuple):
    """What is left of a server transaction that only waits for its end: the last response
    to send again to a retransmitted request (None: absorb it), whether an ACK is absorbed,
    the leg it belongs to, and its peer and end, as plain values. Kept in place of the
    transaction until then (up to 64*T1), so that the garbage collector has nothing to walk:
    a tuple of strings, numbers and bytes is not tracked."""

    end_at: float
    resend: bytes | None
    absorbs_ack: bool
    owner: str
    transport: str
    host: str
    port: int

    @property
    def peer(self) -> Address:
        return Address(self.transport, self.host, self.port)


class ServerTransaction(Transaction):
    """INVITE (17.2.1) and non-INVITE (17.2.2) server transactions.

    An INVITE server transaction that sent a 2xx stays Accepted (RFC 6026) and keeps
    retransmitting the 2xx until the ACK arrives (RFC 3261 13.3.1.4); `ack_received`
    stops that, and a `Timeout.NO_2XX_ACK` tells the TU to end the call.
    """

    def __init__(
        self,
        request: Request,
        peer: Address,
        now: float,
        timers: TimerConfig,
        outbox: list[tuple[bytes, Address]] | None = None,
    ) -> None:
        super().__init__(peer, timers, outbox)
        # The request is let go once answered: a transaction then lives on for up to
        # 64*T1 holding only bytes, which keeps the garbage collector's work small.
        self.request: Request | None = request
        self.cseq = request.cseq.seq
        self.is_invite = request.method == "INVITE"
        self.key = server_key(request)
        self.state = State.PROCEEDING if self.is_invite else State.TRYING
        self.final_status: int | None = None
        self.acked = False

    @property
    def responded(self) -> bool:
        """Whether it has sent a response yet."""
        return self._last is not None

    def respond(self, response: Response, now: float) -> None:
        """Send a response from the TU; illegal after a final one (except 2xx re-sends)."""
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise RuntimeError(f"cannot respond in state {self.state.value}")
        status = response.status
        self._send(response.to_bytes())
        if status < 200:
            self.state = State.PROCEEDING
            return
        self.final_status = status
        self.request = None
        reliable = self.peer.reliable
        if self.is_invite and status < 300:
            self.state = State.ACCEPTED
            self._start_retransmit(now, self.timers.t2)  # 13.3.1.4
            self._end_at = now + self.timers.b  # Timer L
        elif self.is_invite:
            self.state = State.COMPLETED
            if not reliable:
                self._start_retransmit(now, self.timers.t2)  # Timer G
            self._end_at = now + self.timers.b  # Timer H
        else:
            self.state = State.COMPLETED
            self._end_at = now + (0 if reliable else self.timers.b)  # Timer J

    def receive(self, request: Request, now: float) -> bool:
        """Take a retransmission or an ACK; True if the TU should see it."""
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._retransmit_at = None
                self._end_at = now + (0 if self.peer.reliable else self.timers.t4)  # Timer I
            return False
        if self._last is not None and self.state is not State.ACCEPTED:
            self.outbox.append((self._last, self.peer))
        return False

    def ack_received(self, now: float) -> None:
        """The TU matched an ACK to this transaction's 2xx: stop retransmitting it."""
        self.acked = True
        self._retransmit_at = None

    def settled(self) -> Settled | None:
        """What is left of it, once all it has still to do is answer retransmissions
        until its timer ends: a non-INVITE Completed (Timer J), an INVITE Confirmed (Timer
        I) or Accepted with the ACK of its 2xx in (Timer L); else None."""
        state = self.state
        if state is State.COMPLETED and not self.is_invite:
            absorbs_ack, resend = False, self._last
        elif state is State.CONFIRMED:
            absorbs_ack, resend = True, self._last
        elif state is State.ACCEPTED and self.acked:
            absorbs_ack, resend = False, None  # 2xx re-sends are the TU's (13.3.1.4)
        else:
            return None
        end_at = self._end_at
        if end_at is None or self._retransmit_at is not None:
            return None
        peer = self.peer
        return Settled(end_at, resend, absorbs_ack, self.owner, peer.transport, peer.host,
                       peer.port)

    def on_timer(self, now: float) -> Timeout | None:
        if self._due(self._end_at, now):
            state = self.state
            self._terminate()
            if state is State.COMPLETED and self.is_invite:
                return Timeout.NO_ACK
            if state is State.ACCEPTED and not self.acked:
                return Timeout.NO_2XX_ACK
            return None
        if self._due(self._retransmit_at, now):
            self._retransmit(now)
        return None


def new_branch(token: str) -> str:
    return MAGIC_COOKIE + token

