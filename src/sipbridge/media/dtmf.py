"""DTMF as RTP telephone-events (RFC 4733): the payload, a receiver, a sender's packets.

Sans-IO and independent of the RTP packet class: the receiver is fed each packet's
RTP timestamp, marker bit and payload, and the sender side only says which payloads
to send, with which marker bit, at which duration; the caller owns sequence numbers,
timestamps and the clock.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

DIGITS = "0123456789*#ABCD"  # RFC 4733 3.2: DTMF digits are events 0-15, in this order
END_REPEATS = 3  # RFC 4733 2.5.1.4: the final packet is sent three times
MAX_DURATION = 0xFFFF  # RFC 4733 2.3.5: 16 bits of timestamp units
_RECENT = 8  # finished events remembered, to recognise their late packets
_PAYLOAD = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One telephone-event payload block (RFC 4733 2.3).

    `volume` is the power level in -dBm0 (0 to 63, RFC 4733 2.3.4); `duration` is in
    RTP timestamp units since the event's timestamp (RFC 4733 2.3.5)."""

    event: int
    end: bool
    volume: int
    duration: int

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code {self.event} is not 0-255 (RFC 4733 2.3.1)")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"telephone-event volume {self.volume} is not 0-63 (RFC 4733 2.3.4)")
        if not 0 <= self.duration <= MAX_DURATION:
            raise ValueError(
                f"telephone-event duration {self.duration} is not 0-65535 (RFC 4733 2.3.5)"
            )

    def to_bytes(self) -> bytes:
        """The 4-octet block: event, E|R|volume, duration (RFC 4733 2.3); R is sent as 0."""
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


def parse_event(payload: bytes) -> TelephoneEvent:
    """Parse a telephone-event payload (RFC 4733 2.3). The R bit is ignored on receipt
    (2.3.3); octets after the first block are not read (several events in one packet
    travel as RFC 2198 redundancy, 2.5.1.5, under a payload type of their own)."""
    if len(payload) < 4:
        raise ValueError(f"telephone-event payload has {len(payload)} octets, needs 4")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A digit the caller pressed. `timestamp` is its event's RTP timestamp: its identity."""

    digit: str
    duration_ms: int
    timestamp: int


@dataclass(slots=True)
class _Event:
    """What the receiver knows of the event in progress."""

    timestamp: int  # the first segment's: the event's identity
    event: int
    segment: int  # the timestamp of the segment now being received (RFC 4733 2.5.1.3)
    base: int = 0  # timestamp units in the segments before this one
    duration: int = 0  # the largest duration seen in this segment
    ended: bool = False
    reported: bool = False


def _note(current: _Event, ev: TelephoneEvent) -> None:
    # A sender's durations only grow within an event (RFC 4733 2.5.1.2): a smaller one
    # is a reordered update and must not shorten it.
    current.duration = max(current.duration, ev.duration)
    current.ended = current.ended or ev.end


class DtmfReceiver:
    """Turns received telephone-event packets into digits, each reported exactly once.

    A digit is reported when its end packet arrives (RFC 4733 2.5.2); if all its end
    packets are lost, when the next event starts, with the last duration known; and at
    the end of the call by `flush`. Events other than DTMF (16 and up) are counted in
    `ignored`, payloads that do not parse in `malformed`; `feed` never raises for them.
    """

    def __init__(self, clock_rate: int = 8000) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate {clock_rate} is not positive")
        self.clock_rate = clock_rate
        self.ignored = 0
        self.malformed = 0
        self._current: _Event | None = None
        self._finished: deque[tuple[int, int]] = deque(maxlen=_RECENT)  # (segment, event)

    def feed(self, timestamp: int, marker: bool, payload: bytes) -> DtmfDigit | None:
        """One telephone-event packet: its RTP timestamp, marker bit and payload."""
        try:
            ev = parse_event(payload)
        except ValueError:
            self.malformed += 1
            return None
        current = self._current
        if current is not None and (timestamp, ev.event) == (current.segment, current.event):
            return self._record(current, ev)  # an update, or a repeated end packet
        if (timestamp, ev.event) in self._finished:
            return None  # a late packet of an event already reported
        if ev.event >= len(DIGITS):
            self.ignored += 1
            return None
        if current is not None and self._continues(current, timestamp, marker, ev):
            self._finished.append((current.segment, current.event))  # its late packets
            current.base += MAX_DURATION
            current.segment, current.duration = timestamp, 0
            return self._record(current, ev)
        # A new event. The one before it is over even if no end packet said so.
        previous = self._report(current) if current is not None else None
        self._current = _Event(timestamp, ev.event, timestamp)
        if previous is None:
            return self._record(self._current, ev)
        # If this one ended too, it waits for a repeat of its end packet, or for flush.
        _note(self._current, ev)
        return previous

    def flush(self) -> DtmfDigit | None:
        """The digit still in progress when the call ends, if it was never reported."""
        return self._report(self._current) if self._current is not None else None

    def _record(self, current: _Event, ev: TelephoneEvent) -> DtmfDigit | None:
        _note(current, ev)
        return self._report(current) if current.ended else None

    def _report(self, current: _Event) -> DtmfDigit | None:
        if current.reported:
            return None
        current.reported = True
        self._finished.append((current.segment, current.event))
        samples = current.base + current.duration
        duration_ms = (samples * 1000 + self.clock_rate // 2) // self.clock_rate
        return DtmfDigit(DIGITS[current.event], duration_ms, current.timestamp)

    @staticmethod
    def _continues(current: _Event, timestamp: int, marker: bool, ev: TelephoneEvent) -> bool:
        """RFC 4733 2.5.1.3, 2.5.2.3: an event longer than 0xFFFF units goes on in a new
        segment whose timestamp is the old one plus 0xFFFF, with no marker bit."""
        return (
            not marker
            and not current.ended
            and ev.event == current.event
            and timestamp == (current.segment + MAX_DURATION) & 0xFFFFFFFF
        )


def dtmf_payloads(
    digit: str,
    *,
    duration_ms: int = 100,
    volume: int = 10,
    interval_ms: int = 50,
    clock_rate: int = 8000,
) -> list[tuple[bytes, bool, int]]:
    """The packets a sender emits for one digit, as (payload, marker, duration in
    timestamp units); send each when that much time has passed since the event began.

    RFC 4733 2.5.1.2: all share the event's RTP timestamp (the caller's), the first
    carries the marker bit, updates follow every `interval_ms` with the duration so far;
    2.5.1.4: the final packet, E bit set and the full duration, goes three times."""
    if len(digit) != 1 or digit not in DIGITS:
        raise ValueError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
    if duration_ms <= 0 or interval_ms <= 0 or clock_rate <= 0:
        raise ValueError("duration, interval and clock rate must be positive")
    total = duration_ms * clock_rate // 1000
    step = interval_ms * clock_rate // 1000
    if not 0 < total <= MAX_DURATION:
        raise ValueError(
            f"a {duration_ms} ms digit is {total} timestamp units; one event carries 1-65535"
        )
    if step <= 0:
        raise ValueError(f"an interval of {interval_ms} ms is less than one timestamp unit")
    event = DIGITS.index(digit)
    updates = [TelephoneEvent(event, False, volume, d) for d in range(step, total, step)]
    final = TelephoneEvent(event, True, volume, total)
    blocks = updates + [final] * END_REPEATS
    return [(b.to_bytes(), i == 0, b.duration) for i, b in enumerate(blocks)]


MIN_DURATION_MS = 40  # ITU-T Q.24: shorter tones may not be recognised
MAX_DURATION_MS = 1000  # within one event's 16-bit duration at a 48 kHz clock (1365 ms)
MAX_GAP_MS = 5000


def dtmf_digits(digits: str) -> str:
    """`digits` as RFC 4733 DTMF digits (a-d taken as A-D); ValueError names what is wrong."""
    if not digits:
        raise ValueError("no digits; give 0-9, *, # or A-D")
    upper = digits.upper()
    bad = next((c for c in upper if c not in DIGITS), None)
    if bad is not None:
        raise ValueError(f"{bad!r} is not a DTMF digit; use 0-9, *, # and A-D")
    return upper


@dataclass(slots=True)
class _Tone:
    packets: list[tuple[bytes, bool, int]]  # dtmf_payloads: (payload, marker, duration)
    gap_ticks: int  # voice ticks after its last packet
    on_done: Callable[[], None] | None  # after the last digit of a `queue` call


class DtmfSender:
    """Digits played out as telephone-events, one packet per media tick (RFC 4733 2.5.1).

    `tick(timestamp)` is asked once per outgoing frame with the RTP timestamp that frame
    would carry; it answers the event packet to send instead, or None for a frame of
    voice. An event's timestamp is the one of
    its first tick and stays fixed (2.5.1.2); updates grow its duration each tick; the
    end packet goes three times (2.5.1.4); then `gap_ms` of voice before the next digit.
    Durations count the audio's clock (`clock_rate`), as timestamps do (RFC 4733 2.1).
    """

    def __init__(self, clock_rate: int, frame_ms: int, volume: int = 10) -> None:
        self.clock_rate = clock_rate
        self.frame_ms = frame_ms
        self.volume = volume
        self._tones: deque[_Tone] = deque()
        self._current: _Tone | None = None
        self._index = 0
        self._timestamp = 0
        self._gap = 0

    @property
    def idle(self) -> bool:
        """Nothing playing and nothing queued."""
        return self._current is None and not self._tones and self._gap == 0

    def queue(self, digits: str, *, duration_ms: int = 100, gap_ms: int = 100,
              on_done: Callable[[], None] | None = None) -> None:
        """Queue `digits` (checked first: nothing is queued when one is bad); `on_done`
        runs once the last one's last end packet is out."""
        digits = dtmf_digits(digits)
        if not MIN_DURATION_MS <= duration_ms <= MAX_DURATION_MS:
            raise ValueError(f"duration_ms {duration_ms} is not {MIN_DURATION_MS}-"
                             f"{MAX_DURATION_MS}")
        if not 0 <= gap_ms <= MAX_GAP_MS:
            raise ValueError(f"gap_ms {gap_ms} is not 0-{MAX_GAP_MS}")
        step = self.clock_rate * self.frame_ms // 1000
        total = duration_ms * self.clock_rate // 1000
        tones = []
        for i, digit in enumerate(digits):
            packets = dtmf_payloads(digit, duration_ms=duration_ms, volume=self.volume,
                                    interval_ms=self.frame_ms, clock_rate=self.clock_rate)
            # The next event starts `gap_ms` or more after this one's end (its duration).
            wanted = total + gap_ms * self.clock_rate // 1000
            gap_ticks = max(0, -(-wanted // step) - len(packets))
            last = i == len(digits) - 1
            tones.append(_Tone(packets, gap_ticks, on_done if last else None))
        self._tones.extend(tones)

    def tick(self, timestamp: int
             ) -> tuple[int, bool, bytes, Callable[[], None] | None] | None:
        """The packet for this tick, or None for voice: (event timestamp, marker, payload,
        and the `on_done` to run once it is sent when it is the batch's last)."""
        if self._gap > 0:
            self._gap -= 1
            return None
        tone = self._current
        if tone is None:
            if not self._tones:
                return None
            tone = self._current = self._tones.popleft()
            self._index = 0
            self._timestamp = timestamp
        payload, marker, _ = tone.packets[self._index]
        self._index += 1
        if self._index < len(tone.packets):
            return self._timestamp, marker, payload, None
        self._current = None
        self._gap = tone.gap_ticks
        return self._timestamp, marker, payload, tone.on_done

    def clear(self) -> None:
        """Drop what is queued (the digit playing is cut short: no end packet)."""
        self._tones.clear()
        self._current = None
        self._gap = 0
