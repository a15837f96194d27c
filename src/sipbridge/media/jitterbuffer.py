"""An adaptive jitter buffer over encoded RTP frames (RFC 3550), sans-IO.

`put(sequence, timestamp, payload, now)` files a packet in the slot its RTP
timestamp names (one slot per frame, fixed packetization assumed); `get(now)`,
called at each playout tick, hands back the frame at the playout point, which
advances one slot per call. Nothing here reads a clock.

Delay policy. A packet's relative transit is `arrival - slot * frame`; its
jitter is that minus the smallest transit of the last 2 s (the fastest packet
stands for "no queueing"; the window follows clock drift). The target delay
`delay_ms` is the 99th percentile of the last 256 jitter samples plus 1/8 as a
guard, within [min_delay, max_delay - frame]; slot s is due at the first tick
at or after `min_transit + target + s * frame`, so the tick grid adds up to
one frame (the "+1 frame") and the total stays within max_delay.

- Grow quickly: a late packet lifts the target to its own jitter (plus the
  guard) at once, for 5 s, and `get` answers `buffering` until the playout
  point is behind the target again. If the buffer had run dry and the late
  packets are for the slots it just concealed (a stall, then a burst), it
  steps back over those slots and plays them instead. While the buffer first
  fills (50 samples) the target is at least `initial_delay_ms`.
- Shrink slowly: once more than 1.05 frames behind the target, `get` skips a
  missing slot (free: nothing to conceal) or drops one queued frame, at most
  one a second. With no jitter the target is `min_delay_ms` and each frame
  plays at the first tick after it arrives: an echo adds under a frame.
- Restart: a packet more than max_delay ahead of the playout point or 1 s
  behind it is dropped as `overflow` (a flood or a new stream). If the next
  out-of-window packet follows it (sequence + 1, timestamp a little ahead),
  the stream has restarted (RFC 3550 A.1 probation): the queue is flushed and
  the buffer re-anchors on that packet and fills to the current target,
  keeping its jitter estimate. A random flood never forms such a pair, and
  the queue never holds more than max_delay worth of frames.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_WINDOW = 256  # jitter samples behind the percentile, about 5 s of 20 ms frames
_QUANTILE = 0.99  # nearest-rank percentile
_GUARD = 1.125
_RECOMPUTE = 16  # samples between percentile updates
_WARMUP = 50  # samples before the target may drop below initial_delay_ms
_MIN_SPAN = 2.0  # seconds over which the fastest transit is the reference
_LATE_HOLD = 5.0  # seconds a late packet props up the target
_SHRINK_EVERY = 50  # ticks between dropped frames when shrinking: one a second
_HYSTERESIS = 1.05  # frames behind target before shrinking: a frame given back once it can be
_BEHIND = 50  # slots behind the playout point still counted late, not a restart
_HISTORY = 64  # played slots remembered, to tell a duplicate from a late packet
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Frame:
    """What one playout tick yields: a frame, a gap to conceal, or nothing yet."""

    payload: bytes | None
    sequence: int | None
    lost: bool = False
    buffering: bool = False


_BUFFERING = Frame(None, None, buffering=True)
_LOST = Frame(None, None, lost=True)


def _unwrap(value: int, ref: int, bits: int) -> int:
    """The extended counter nearest `ref` whose low `bits` are `value` (RFC 3550 A.1)."""
    half = 1 << (bits - 1)
    return ref + ((value - ref + half) % (1 << bits)) - half


class JitterBuffer:
    """Reorders, times and adaptively delays one RTP stream's frames (policy above)."""

    def __init__(
        self,
        *,
        frame_ms: int = 20,
        clock_rate: int = 8000,
        min_delay_ms: int = 0,
        max_delay_ms: int = 200,
        initial_delay_ms: int = 40,
    ) -> None:
        if frame_ms <= 0 or clock_rate <= 0 or clock_rate * frame_ms % 1000:
            raise ValueError("frame_ms and clock_rate must give a whole number of samples")
        if not 0 <= min_delay_ms <= max_delay_ms - frame_ms:
            raise ValueError("need 0 <= min_delay_ms <= max_delay_ms - frame_ms")
        self._frame = frame_ms / 1000
        self._spf = clock_rate * frame_ms // 1000
        self._window = max_delay_ms // frame_ms  # slots accepted ahead of the playout point
        self._min = min_delay_ms / 1000
        self._max = (max_delay_ms - frame_ms) / 1000
        self._initial = min(max(initial_delay_ms / 1000, self._min), self._max)
        self.received = self.late = self.duplicates = self.reordered = self.overflow = 0
        self.played = self.concealed = self.restarts = 0
        self.skipped = 0  # queued frames dropped to shrink the delay
        self.stalled = 0  # ticks held back (answered `buffering`) to grow it
        self._queue: dict[int, tuple[int, bytes]] = {}  # slot -> (sequence, payload)
        self._late: dict[int, tuple[int, bytes]] = {}  # late, for slots just concealed
        self._run = 0  # slots concealed in a row just behind the playout point
        self._history: deque[int] = deque()
        self._played: set[int] = set()
        self._mins: deque[tuple[float, float]] = deque()  # (arrival, transit), rising
        self._jitter: npt.NDArray[np.float64] | None = None  # allocated by the first sample
        self._samples, self._estimate = 0, 0.0
        self._hold, self._hold_until = 0.0, float("-inf")
        self._since_skip, self._now = 0, 0.0
        self._reset_stream()

    @property
    def clock_rate(self) -> int:
        return self._spf * 1000 // round(self._frame * 1000)

    def set_clock_rate(self, clock_rate: int) -> None:
        """A re-negotiated codec with another RTP clock: slots are counted anew."""
        frame_ms = round(self._frame * 1000)
        if clock_rate <= 0 or clock_rate * frame_ms % 1000:
            raise ValueError("frame_ms and clock_rate must give a whole number of samples")
        if clock_rate * frame_ms // 1000 != self._spf:
            self._spf = clock_rate * frame_ms // 1000
            self._reset_stream()

    def _reset_stream(self) -> None:
        self._base: int | None = None  # extended timestamp of slot 0
        self._probe: tuple[int, int] | None = None  # last out-of-window (sequence, timestamp)
        self._ts_ref = self._seq_ref = self._next = 0
        self._started = False
        self._queue.clear()
        self._late.clear()
        self._run = 0
        self._history.clear()
        self._played.clear()
        self._mins.clear()

    @property
    def delay_ms(self) -> float:
        """The current target delay beyond the fastest transit, in milliseconds."""
        return self._target() * 1000

    @property
    def depth(self) -> int:
        """Frames queued."""
        return len(self._queue)

    @property
    def held(self) -> dict[str, int]:
        """What it keeps besides the queue, each bounded whatever arrives: late frames kept
        for slots just concealed, the slots recently played, the transit minima."""
        return {"late": len(self._late), "played": len(self._played), "minima": len(self._mins)}

    def put(self, sequence: int, timestamp: int, payload: bytes, now: float) -> bool:
        """Files one packet; False if dropped: a duplicate, out of window, or late (counted
        in `late`), except that a late one for a slot just concealed is kept for `get`."""
        self.received += 1
        self._now = now
        return self._file(sequence, timestamp, payload, now)

    def _file(self, sequence: int, timestamp: int, payload: bytes, now: float) -> bool:
        if self._base is None:
            self._base = self._ts_ref = timestamp
            self._seq_ref = sequence
        ts = _unwrap(timestamp, self._ts_ref, 32)
        seq = _unwrap(sequence, self._seq_ref, 16)
        slot = (ts - self._base + self._spf // 2) // self._spf
        ahead = slot - self._next
        if ahead >= self._window or ahead < -_BEHIND:
            return self._out_of_window(sequence, timestamp, payload, now)
        self._probe = None
        if slot in self._queue or slot in self._played or slot in self._late:
            self.duplicates += 1
            return False
        if seq < self._seq_ref:
            self.reordered += 1
        self._seq_ref = max(self._seq_ref, seq)
        self._ts_ref = max(self._ts_ref, ts)
        jitter = self._observe(slot, now)
        if ahead < 0:
            if self._started:
                self.late += 1
                if now >= self._hold_until:
                    self._hold = 0.0
                self._hold = max(self._hold, jitter * _GUARD)
                self._hold_until = now + _LATE_HOLD
                if slot < self._next - self._run or self.depth + len(self._late) >= self._window:
                    return False
                self._late[slot] = (sequence, payload)  # `get` may yet step back to it
                return True
            if max(self._queue, default=slot) - slot >= self._window:
                self.overflow += 1
                return False
            self._next = slot  # not playing yet: the stream may begin earlier
        self._queue[slot] = (sequence, payload)
        return True

    def _out_of_window(self, sequence: int, timestamp: int, payload: bytes, now: float) -> bool:
        self.overflow += 1
        probe, self._probe = self._probe, (sequence, timestamp)
        if probe is None or sequence != (probe[0] + 1) & 0xFFFF:
            return False
        if not 0 < (timestamp - probe[1]) % (1 << 32) <= self._window * self._spf:
            return False
        self.overflow -= 1  # it starts the new stream instead
        self.restarts += 1
        self._reset_stream()
        return self._file(sequence, timestamp, payload, now)

    def _observe(self, slot: int, now: float) -> float:
        """Records one transit sample and returns its jitter (RFC 3550 6.4.1, as a spread)."""
        transit = now - slot * self._frame
        mins = self._mins
        while mins and mins[-1][1] >= transit:
            mins.pop()
        mins.append((now, transit))
        while mins[0][0] < now - _MIN_SPAN or len(mins) > _WINDOW:
            mins.popleft()
        jitter = transit - mins[0][1]
        if self._jitter is None:  # not at set-up: a call may end before its first packet
            self._jitter = np.zeros(_WINDOW)
        self._jitter[self._samples % _WINDOW] = jitter
        self._samples += 1
        if self._samples % _RECOMPUTE == 0 or self._samples == _WARMUP:
            # nearest rank: the rank-th smallest sample (the compiled buffer picks the same)
            window = self._jitter[: min(self._samples, _WINDOW)]
            rank = math.ceil(_QUANTILE * len(window)) - 1
            self._estimate = float(np.partition(window, rank)[rank]) * _GUARD
        return jitter

    def _target(self) -> float:
        target = self._estimate
        if self._samples < _WARMUP:
            target = max(target, self._initial)
        if self._now < self._hold_until:
            target = max(target, self._hold)
        return min(max(target, self._min), self._max)

    def ready(self, now: float) -> bool:
        """Whether `get(now)` would hand back the frame queued at the playout point, with
        no stall and no skip. A session uses it to run a tick as soon as its packet is in,
        ahead of the tick's time (see MediaSession.pump)."""
        if not self._mins or self._next not in self._queue:
            return False
        excess = now - self._mins[0][1] - self._target() - self._next * self._frame
        return -_EPS <= excess < _HYSTERESIS * self._frame

    def get(self, now: float) -> Frame:
        """The frame for this playout tick (by timestamp order); advances the playout point."""
        self._now = now
        if not self._mins:
            return _BUFFERING
        frame = self._frame
        excess = now - self._mins[0][1] - self._target() - self._next * frame
        if excess < -_EPS and self._started and self._late:  # grow over concealed slots
            need = min(self._run, math.ceil(-excess / frame - _EPS))
            back = [s for s in self._late if s >= self._next - need]
            if back:
                first = min(back)
                excess += (self._next - first) * frame
                self._next = first
                self._queue.update((s, self._late[s]) for s in back)
                self._late.clear()
                self._run = 0
        if excess < -_EPS:  # the playout point is ahead of the target: fill or grow
            if self._started:
                self.stalled += 1
            return _BUFFERING
        self._started = True
        self._since_skip += 1
        if excess > self._window * frame:  # ticks stopped or the clock jumped: catch up
            jump = int(excess // frame)
            self._next += jump
            excess -= jump * frame
            for slot in [s for s in self._queue if s < self._next]:
                del self._queue[slot]
                self.skipped += 1
            self._late.clear()
            self._run = 0
        while excess >= _HYSTERESIS * frame:
            if self._next in self._queue:
                if self._since_skip < _SHRINK_EVERY:
                    break
                del self._queue[self._next]
                self._remember(self._next)
                self.skipped += 1
                self._since_skip = 0
            elif not self._queue:
                break
            self._late.clear()
            self._run = 0
            self._next += 1
            excess -= frame
        slot = self._next
        self._next += 1
        item = self._queue.pop(slot, None)
        if item is None:
            self.concealed += 1
            self._run += 1
            return _LOST
        self._late.clear()
        self._run = 0
        self._remember(slot)
        self.played += 1
        return Frame(item[1], item[0])

    def _remember(self, slot: int) -> None:
        self._history.append(slot)
        self._played.add(slot)
        if len(self._history) > _HISTORY:
            self._played.discard(self._history.popleft())


def conceal(last: npt.NDArray[np.int16] | None, count: int) -> npt.NDArray[np.int16]:
    """A stand-in for the `count`-th (1 = first) of a run of lost int16 PCM frames.

    Repeats the last good frame, its gain ramping down 6 dB a frame (0.5**(count-1)
    to 0.5**count, no steps), to zero over the third; then silence, as also when
    there is no last frame (160 samples: 20 ms at 8 kHz).
    """
    if count < 1:
        raise ValueError("count starts at 1")
    size = 160 if last is None else len(last)
    if last is None or count > 3:
        return np.zeros(size, dtype=np.int16)
    end = 0.0 if count == 3 else 0.5**count
    gain = np.linspace(0.5 ** (count - 1), end, size, endpoint=False)
    return np.round(last.astype(np.float64) * gain).astype(np.int16)
