"""Overload control, RFC 7339's local form: shed new calls at once while the server lags.

Sans-IO. The `OverloadDetector` is fed measurements with the time they were taken: how
long each datagram waited in the socket before it was read (the kernel's receive time
against ours), how late the event loop ran a callback it had scheduled, the process's
share of a CPU core; and, with `max_rate`, it meters new INVITEs through a token bucket.
While a bound is passed it is *active* (see `OverloadDetector` for how long), and
`admit` answers False for the INVITEs it refuses: such an INVITE gets a stateless 503
with Retry-After (RFC 3261 21.5.4, RFC 7339 5.1) and never reaches call state.

`shed_head` and `shed_response` build that 503 from the raw request, copying its Via,
From, To, Call-ID and CSeq lines (RFC 3261 8.2.6.2) without the full parser: under
overload the answer must cost a small share of what the call it refuses would cost.
Whatever they cannot read with certainty is left to the full parser (None).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

REASON = "Service Unavailable (overloaded)"


class Sign(enum.Enum):
    """The measurement that passed its bound."""

    QUEUE_DELAY = "queue_delay"
    LOOP_LAG = "loop_lag"
    CPU = "cpu"
    RATE = "rate"


@dataclass(frozen=True, slots=True)
class OverloadLimits:
    """The bounds; 0 turns one off. Times in seconds, `max_cpu` a share of one core,
    `max_rate` new INVITEs per second (with bursts of `burst`, default one second's)."""

    queue_delay: float = 0.2
    loop_lag: float = 0.1
    max_cpu: float = 0.0
    max_rate: float = 0.0
    burst: float = 0.0
    hold: float = 0.25  # active this long after the last loop lag or CPU sign
    retry_after: int = 2


QUEUE_LOW = 0.1  # in an episode, a datagram that waited this share of the bound is late
QUEUE_HOLD = 1.0  # seconds: an episode ends this long after the last late datagram
QUEUE_SUSTAIN = 0.1  # seconds of datagrams past the bound, the delay not falling: a sign
QUEUE_SURE = 2.0  # a datagram that waited this many times the bound is a sign by itself
SUSTAINED = 2  # probes in a row past the loop lag or CPU bound that make a sign


class OverloadDetector:
    """Whether new calls are admitted now. One per gateway; every method takes `now`
    (a monotonic clock, seconds).

    The queue delay comes with every datagram, and each INVITE is judged by its own.
    Datagrams past the bound for QUEUE_SUSTAIN seconds with the delay not falling (a
    queue that grows: more comes than the server does), or one past QUEUE_SURE times the
    bound, start an overload episode. A stall that is over (a full garbage collection,
    the host taking the core a moment) leaves a delay past the bound that only falls as
    the backlog drains: no sign, as no call waited long enough to be sent again. Within
    an episode, a datagram
    that waited past QUEUE_LOW of the bound is late, an INVITE that is late is refused,
    and the episode lasts until no datagram was late for QUEUE_HOLD seconds. So the
    backlog is held short while the load lasts (the calls taken are answered at once,
    not after a long wait that makes them longer and costlier), and the server never
    idles while calls wait: an INVITE read from a short queue is taken. The loop
    lag and the CPU share come from a probe every so often: past the bound in SUSTAINED
    probes in a row (one late callback is a stall that is over, not overload), their
    sign holds for `hold`.
    """

    def __init__(self, limits: OverloadLimits) -> None:
        self.limits = limits
        self._until = float("-inf")  # the loop lag, CPU or rate sign holds until then
        self._late = False  # the last datagram was late, in an episode
        self._episode_until = float("-inf")  # the queue delay's episode lasts until then
        # Outside an episode, since when datagrams waited past the bound, and the first one's
        # delay (None: the last one did not).
        self._over_since: float | None = None
        self._over_first = 0.0
        self._burst = limits.burst or max(1.0, limits.max_rate)
        self._tokens = self._burst
        self._filled_at: float | None = None
        self.sign: Sign | None = None  # the last sign seen
        self.rejected = 0  # new INVITEs refused
        self.activations = 0  # times it went from inactive to active
        self.signs: dict[Sign, int] = dict.fromkeys(Sign, 0)  # activations by sign
        self._past: dict[Sign, int] = dict.fromkeys((Sign.LOOP_LAG, Sign.CPU), 0)
        # What came or was due before this time waited for the server to start, not for a
        # server that lags (`starting`, `started`).
        self._started_at = float("-inf")

    def starting(self) -> None:
        """The server is starting: what waits in its sockets, and a probe that its start-up
        holds up, is no sign meanwhile."""
        self._started_at = float("inf")

    def started(self, now: float) -> None:
        """The server serves from `now` on: a datagram that came before then, or a probe
        due before then, waited for it to start, and says nothing of its load."""
        self._started_at = now

    # ---- measurements ----------------------------------------------------------------

    def queue_delay(self, delay: float, now: float) -> None:
        """A received datagram waited `delay` seconds in the socket before it was read."""
        bound = self.limits.queue_delay
        if not bound or now - delay < self._started_at:
            return
        if delay > bound and (now < self._episode_until or self._sustained(delay, now)):
            if not self.active(now):
                self._count(Sign.QUEUE_DELAY)
            self._over_since = None
            self._late = True
            self._episode_until = now + QUEUE_HOLD
        elif now < self._episode_until:
            self._late = delay > bound * QUEUE_LOW
            if self._late:
                self._episode_until = now + QUEUE_HOLD
        else:
            self._late = False
            if delay <= bound:
                self._over_since = None

    def _sustained(self, delay: float, now: float) -> bool:
        """Outside an episode: whether this datagram, past the bound, makes a sign."""
        if delay > self.limits.queue_delay * QUEUE_SURE:
            return True
        if self._over_since is None or now - self._over_since > QUEUE_HOLD:
            self._over_since, self._over_first = now, delay  # (a new run of late ones)
            return False
        return now - self._over_since >= QUEUE_SUSTAIN and delay >= self._over_first

    def loop_lag(self, lag: float, now: float) -> None:
        """A callback scheduled for a time ran `lag` seconds after it."""
        self._probe(Sign.LOOP_LAG, lag, self.limits.loop_lag, now, due=now - lag)

    def cpu(self, share: float, now: float) -> None:
        """The process used `share` of one core since the last measurement."""
        self._probe(Sign.CPU, share, self.limits.max_cpu, now, due=now)

    def _probe(self, sign: Sign, value: float, bound: float, now: float, *, due: float
               ) -> None:
        if not bound or value <= bound or due < self._started_at:
            self._past[sign] = 0
            return
        self._past[sign] += 1
        if self._past[sign] >= SUSTAINED:
            self._trip(sign, now)

    def _trip(self, sign: Sign, now: float, hold: float | None = None) -> None:
        if not self.active(now):
            self._count(sign)
        self._until = max(self._until, now + (self.limits.hold if hold is None else hold))

    def _count(self, sign: Sign) -> None:
        self.activations += 1
        self.signs[sign] += 1
        self.sign = sign

    # ---- decisions -------------------------------------------------------------------

    def active(self, now: float) -> bool:
        """Whether the server is overloaded: in a queue delay episode, or within `hold`
        of a loop lag, CPU or rate sign."""
        return now < self._episode_until or now < self._until

    def refusing(self, now: float) -> bool:
        """Whether a new INVITE read now is refused (its own queue delay counted)."""
        return (self._late and now < self._episode_until) or now < self._until

    @property
    def metered(self) -> bool:
        """Whether every new INVITE must be asked about (a rate bound is set)."""
        return self.limits.max_rate > 0

    def admit(self, now: float) -> bool:
        """Whether a new INVITE may become a call; False counts it as rejected. With
        `max_rate` it takes a token, and the bucket running dry is a sign of its own."""
        if self.refusing(now):
            self.rejected += 1
            return False
        rate = self.limits.max_rate
        if rate <= 0:
            return True
        if self._filled_at is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._filled_at) * rate)
        self._filled_at = now
        if self._tokens >= 1.0 - 1e-9:  # float sums of elapsed times
            self._tokens -= 1.0
            return True
        # Held only until the bucket has a token again.
        self._trip(Sign.RATE, now, (1.0 - self._tokens) / rate)
        self.rejected += 1
        return False


# ---- the stateless 503, from raw bytes ------------------------------------------------

_HEADER = re.compile(rb"\r\n(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[ \t]*([^\r\n]*)",
                     re.IGNORECASE)
_VIA, _FROM, _TO, _CALL_ID, _CSEQ_KEY = range(5)
_NAMES = {b"via": _VIA, b"v": _VIA, b"from": _FROM, b"f": _FROM, b"to": _TO, b"t": _TO,
          b"call-id": _CALL_ID, b"i": _CALL_ID, b"cseq": _CSEQ_KEY}
_CSEQ = re.compile(rb"[0-9]{1,10}[ \t]+INVITE[ \t]*")
_SENT_BY = re.compile(rb"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z]+)[ \t]+"
                      rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
                      rb"[ \t]*(;[^,]*)?$", re.IGNORECASE)
_RPORT = re.compile(rb";[ \t]*rport(?=[ \t]*(?:;|$))", re.IGNORECASE)
_TAG = re.compile(rb";[ \t]*tag[ \t]*=", re.IGNORECASE)
MAX_HEAD = 16384  # bytes searched for the end of the header block


class ShedHead(NamedTuple):
    """What a stateless answer to an INVITE copies, as raw header values."""

    vias: list[bytes]  # every Via value, in order (a line may hold several)
    from_: bytes
    to: bytes
    call_id: bytes
    cseq: bytes
    sent_by: tuple[str, int | None]  # the top Via's host and port
    rport: bool  # the top Via asks for rport (RFC 3581)


def shed_head(data: bytes) -> ShedHead | None:
    """The header values of a new INVITE (no To tag) read from raw bytes; None when it
    is anything else, or when its headers are not plain enough to read this way (folded
    lines, a header twice, a CSeq that is not INVITE's, an unreadable top Via).

    It runs for every INVITE while overloaded, so it does no more than that: one
    regular expression pass over the header block, then a look at five values."""
    if not data.startswith(b"INVITE "):
        return None
    end = data.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end < 0:
        return None
    head = data[: end + 2]
    if b"\r\n " in head or b"\r\n\t" in head:
        return None  # folded lines (RFC 3261 7.3.1): the full parser's business
    matches = _HEADER.findall(head)
    vias: list[bytes] = []
    found: dict[int, bytes] = {}
    for name, value in matches:
        key = _NAMES[name.lower()]
        if key == _VIA:
            vias.append(value.rstrip())
        else:
            found[key] = value.rstrip()
    if not vias or len(found) != 4 or len(matches) - len(vias) != 4 or not all(found.values()):
        return None  # one missing, empty or twice
    to = found[_TO]
    if b"tag" in to.lower() and _TAG.search(to, to.rfind(b">") + 1):
        return None  # in a dialog: not a new call
    cseq = found[_CSEQ_KEY]
    if _CSEQ.fullmatch(cseq) is None:
        return None
    top = vias[0]
    comma = top.find(b",")
    sent = _SENT_BY.match(top if comma < 0 else top[:comma].rstrip())
    if sent is None:
        return None
    host, port, params = sent.group(2, 3, 4)
    return ShedHead(vias, found[_FROM], to, found[_CALL_ID], cseq,
                    (host.decode("ascii").strip("[]"), int(port) if port else None),
                    bool(params) and _RPORT.search(params) is not None)


def shed_response(head: ShedHead, source_host: str, source_port: int, to_tag: str,
                  retry_after: int, *, server: bytes = b"") -> bytes:
    """The 503 (RFC 3261 8.2.6.2, 18.2.1; RFC 3581 4 for received and rport)."""
    top, sep, rest = head.vias[0].partition(b",")
    host = source_host.encode("ascii")
    if head.rport:
        top = _RPORT.sub(lambda _m: b";rport=%d" % source_port, top.rstrip(), 1)
        top += b";received=" + host
    elif head.sent_by[0] != source_host:
        top = top.rstrip() + b";received=" + host
    lines = [b"SIP/2.0 503 " + REASON.encode("ascii"), b"Via: " + top + sep + rest]
    lines.extend(b"Via: " + v for v in head.vias[1:])
    lines.append(b"From: " + head.from_)
    lines.append(b"To: " + head.to + b";tag=" + to_tag.encode("ascii"))
    lines.append(b"Call-ID: " + head.call_id)
    lines.append(b"CSeq: " + head.cseq)
    lines.append(b"Retry-After: %d" % retry_after)
    if server:
        lines.append(b"Server: " + server)
    lines.append(b"Content-Length: 0\r\n\r\n")
    return b"\r\n".join(lines)


def shed_target(head: ShedHead, source_host: str, source_port: int) -> tuple[str, int]:
    """Where the 503 goes over UDP (RFC 3261 18.2.2, RFC 3581 4): the source address
    with rport, else the source host at the sent-by port."""
    if head.rport:
        return source_host, source_port
    return source_host, head.sent_by[1] or 5060
