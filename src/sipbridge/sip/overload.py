"""Overload control, RFC 7339's local form: shed new calls at once while the server lags.

Sans-IO. The `OverloadDetector` is fed measurements with the time they were taken: how
long each datagram waited in the socket before it was read (the kernel's receive time
against ours), how late the event loop ran a callback it had scheduled, the process's
share of a CPU core; and, with `max_rate`, it meters new INVITEs through a token bucket.
While a bound is passed it is *active*, and `admit` answers False: the new INVITE gets a stateless 503 with Retry-After (RFC 3261 21.5.4,
RFC 7339 5.1) and never reaches call state.

`shed_head` and `shed_response` build that 503 from the raw request, copying its Via,
From, To, Call-ID and CSeq lines (RFC 3261 8.2.6.2) without the full parser: under
overload the answer must cost a small share of what the call it refuses would cost.
Whatever they cannot read with certainty is left to the full parser (None).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

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


QUEUE_LOW = 0.5  # the queue sign ends when a datagram waited under this share of its bound
QUEUE_STALE = 1.0  # seconds: a queue sign with no datagram since is over
SUSTAINED = 2  # probes in a row past the loop lag or CPU bound that make a sign


class OverloadDetector:
    """Whether new calls are admitted now. One per gateway; every method takes `now`
    (a monotonic clock, seconds).

    The queue delay comes with every datagram, so its sign holds while they keep
    coming late, with hysteresis: it starts above the bound and ends below half of it.
    New calls are then refused while a backlog remains, and admitted again before the
    backlog is gone, so the server never idles while there are calls to serve. The loop
    lag and the CPU share come from a probe every so often: past the bound in SUSTAINED
    probes in a row (one late callback is a stall that is over, not overload), their
    sign holds for `hold`.
    """

    def __init__(self, limits: OverloadLimits) -> None:
        self.limits = limits
        self._until = float("-inf")  # the loop lag, CPU or rate sign holds until then
        self._queue_high = False
        self._queue_seen = float("-inf")  # when the last datagram above QUEUE_LOW came
        self._burst = limits.burst or max(1.0, limits.max_rate)
        self._tokens = self._burst
        self._filled_at: float | None = None
        self.sign: Sign | None = None  # the last sign seen
        self.rejected = 0  # new INVITEs refused
        self.activations = 0  # times it went from inactive to active
        self.signs: dict[Sign, int] = dict.fromkeys(Sign, 0)  # activations by sign
        self._past: dict[Sign, int] = dict.fromkeys((Sign.LOOP_LAG, Sign.CPU), 0)

    # ---- measurements ----------------------------------------------------------------

    def queue_delay(self, delay: float, now: float) -> None:
        """A received datagram waited `delay` seconds in the socket before it was read."""
        bound = self.limits.queue_delay
        if not bound:
            return
        if delay > bound:
            if not self.active(now):
                self._count(Sign.QUEUE_DELAY)
            self._queue_high = True
            self._queue_seen = now
        elif delay > bound * QUEUE_LOW:
            self._queue_seen = now
        else:
            self._queue_high = False

    def loop_lag(self, lag: float, now: float) -> None:
        """A callback scheduled for a time ran `lag` seconds after it."""
        self._probe(Sign.LOOP_LAG, lag, self.limits.loop_lag, now)

    def cpu(self, share: float, now: float) -> None:
        """The process used `share` of one core since the last measurement."""
        self._probe(Sign.CPU, share, self.limits.max_cpu, now)

    def _probe(self, sign: Sign, value: float, bound: float, now: float) -> None:
        if not bound or value <= bound:
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
        """Whether new calls are refused now."""
        if self._queue_high and now - self._queue_seen < QUEUE_STALE:
            return True
        return now < self._until

    @property
    def metered(self) -> bool:
        """Whether every new INVITE must be asked about (a rate bound is set)."""
        return self.limits.max_rate > 0

    def admit(self, now: float) -> bool:
        """Whether a new INVITE may become a call; False counts it as rejected. With
        `max_rate` it takes a token, and the bucket running dry is a sign of its own."""
        if self.active(now):
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
_NAMES = {b"via": b"Via", b"v": b"Via", b"from": b"From", b"f": b"From", b"to": b"To",
          b"t": b"To", b"call-id": b"Call-ID", b"i": b"Call-ID", b"cseq": b"CSeq"}
_CSEQ = re.compile(rb"[0-9]{1,10}[ \t]+INVITE[ \t]*")
_SENT_BY = re.compile(rb"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z]+)[ \t]+"
                      rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
                      rb"[ \t]*(;[^,]*)?$", re.IGNORECASE)
_RPORT = re.compile(rb";[ \t]*rport(?=[ \t]*(?:;|$))", re.IGNORECASE)
_TAG = re.compile(rb";[ \t]*tag[ \t]*=", re.IGNORECASE)
MAX_HEAD = 16384  # bytes searched for the end of the header block


@dataclass(frozen=True, slots=True)
class ShedHead:
    """What a stateless answer to an INVITE copies, as raw header values."""

    vias: tuple[bytes, ...]  # every Via value, in order (a line may hold several)
    from_: bytes
    to: bytes
    call_id: bytes
    cseq: bytes
    sent_by: tuple[str, int | None]  # the top Via's host and port
    rport: bool  # the top Via asks for rport (RFC 3581)


def shed_head(data: bytes) -> ShedHead | None:
    """The header values of a new INVITE (no To tag) read from raw bytes; None when it
    is anything else, or when its headers are not plain enough to read this way (folded
    lines, a header twice, a CSeq that is not INVITE's, an unreadable top Via)."""
    if not data.startswith(b"INVITE "):
        return None
    end = data.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end < 0:
        return None
    head = data[: end + 2]
    if b"\r\n " in head or b"\r\n\t" in head:
        return None  # folded lines (RFC 3261 7.3.1): the full parser's business
    vias: list[bytes] = []
    found: dict[bytes, bytes] = {}
    for match in _HEADER.finditer(head):
        name = _NAMES[match.group(1).lower()]
        value = match.group(2).rstrip(b" \t")
        if name == b"Via":
            vias.append(value)
        elif name in found:
            return None
        else:
            found[name] = value
    if not vias or len(found) != 4 or not all(found.values()):
        return None
    to = found[b"To"]
    if _TAG.search(to, to.rfind(b">") + 1):
        return None  # in a dialog: not a new call
    if _CSEQ.fullmatch(found[b"CSeq"]) is None:
        return None
    top = vias[0].split(b",", 1)[0].strip()
    sent = _SENT_BY.match(top)
    if sent is None:
        return None
    host = sent.group(2).decode("ascii")
    port = int(sent.group(3)) if sent.group(3) else None
    params = sent.group(4) or b""
    return ShedHead(vias=tuple(vias), from_=found[b"From"], to=to,
                    call_id=found[b"Call-ID"], cseq=found[b"CSeq"],
                    sent_by=(host.strip("[]"), port),
                    rport=_RPORT.search(params) is not None)


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
