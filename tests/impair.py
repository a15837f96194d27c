"""A UDP relay on loopback that impairs what it forwards, and keeps the truth of it.

The machine has no netem, so loss, delay, jitter, reordering and duplication come from
here. One side (A: a caller, a SIPp) sends to `Relay.address`; the relay forwards each
datagram to `target` (B: the gateway's SIP or RTP port) from a second socket, and what B
sends back to that socket goes to A (the address A first sent from). Each direction has
its own `Impairment` and its own random stream, seeded, so a test can name what it
wants and find afterwards exactly what was done: every datagram in, whether it was
dropped, each copy sent with the delay drawn for it and the time it left.

The relay's event loop runs in a thread of its own, so a synchronous test (or SIPp in a
subprocess) can use it: `with Relay(target, to_target=Impairment(loss=0.05)) as relay:`.
Delays follow netem's terms: every copy waits `delay` plus a uniform draw in
[-jitter, +jitter] (floored at zero), so packets overtake each other once the jitter
exceeds their spacing, as on a real path.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

Address = tuple[str, int]

START_TIMEOUT = 5.0  # seconds for the relay's loop to come up


@dataclass(frozen=True)
class Impairment:
    """What one direction suffers. Probabilities are per datagram, drawn independently."""

    loss: float = 0.0  # probability that a datagram is dropped
    delay: float = 0.0  # seconds every copy waits
    jitter: float = 0.0  # plus a uniform draw in [-jitter, +jitter] seconds, per copy
    reorder: float = 0.0  # probability that a datagram is held back a further ...
    reorder_delay: float = 0.05  # ... this many seconds, so later ones overtake it
    duplicate: float = 0.0  # probability that a second copy is sent (with its own delay)
    spare_first: int = 0  # the first datagrams pass at once, untouched (a receiver locks on)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value}")
        for name in ("delay", "jitter", "reorder_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def longest(self) -> float:
        """The longest any copy can wait."""
        return self.delay + self.jitter + (self.reorder_delay if self.reorder else 0.0)


@dataclass
class Copy:
    """One copy of a datagram sent on: the delay drawn and when it actually left."""

    delay: float
    sent_at: float | None = None  # time.monotonic(); None while it waits (or if cut off)


@dataclass
class Datagram:
    """One datagram the relay received, and what it did with it."""

    index: int  # 0, 1, ... in the order of arrival, per direction
    arrived: float  # time.monotonic()
    data: bytes
    dropped: bool
    copies: list[Copy] = field(default_factory=list)  # none when dropped, two if duplicated


class Direction:
    """The record of one direction: every datagram in, and every copy out in the order
    the copies left."""

    def __init__(self, name: str, impairment: Impairment) -> None:
        self.name = name
        self.impairment = impairment
        self._rng = random.Random(f"{impairment.seed}/{name}")
        self.datagrams: list[Datagram] = []
        self.sent: list[tuple[Copy, Datagram]] = []
        self.pending = 0

    def decide(self, data: bytes, now: float) -> Datagram:
        """Draw this datagram's fate: dropped, or one or two copies with their delays."""
        imp, rng = self.impairment, self._rng
        index = len(self.datagrams)
        spared = index < imp.spare_first
        # Every draw is made for every datagram, so one setting does not shift the
        # random stream of another: loss 5% drops the same datagrams with or without
        # duplication on.
        lose, dup, hold = rng.random(), rng.random(), rng.random()
        delays = [imp.delay + rng.uniform(-imp.jitter, imp.jitter) for _ in range(2)]
        if spared:
            datagram = Datagram(index, now, data, False, [Copy(0.0)])
        elif lose < imp.loss:
            datagram = Datagram(index, now, data, True)
        else:
            first = max(0.0, delays[0]) + (imp.reorder_delay if hold < imp.reorder else 0.0)
            copies = [Copy(first)]
            if dup < imp.duplicate:
                copies.append(Copy(max(0.0, delays[1])))
            datagram = Datagram(index, now, data, False, copies)
        self.datagrams.append(datagram)
        return datagram

    # ---- what a test compares against -------------------------------------------------

    @property
    def received(self) -> int:
        """Datagrams that came in."""
        return len(self.datagrams)

    @property
    def dropped(self) -> int:
        return sum(1 for d in self.datagrams if d.dropped)

    @property
    def duplicated(self) -> int:
        """Datagrams sent twice."""
        return sum(1 for d in self.datagrams if len(d.copies) > 1)

    @property
    def forwarded(self) -> int:
        """Copies that left, duplicates included."""
        return len(self.sent)

    def summary(self) -> dict[str, int]:
        return {"in": self.received, "out": self.forwarded, "dropped": self.dropped,
                "duplicated": self.duplicated, "pending": self.pending}


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay, from_a: bool) -> None:
        self.relay = relay
        self.from_a = from_a

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.relay._received(self.from_a, data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.relay.errors.append(repr(exc))  # ICMP unreachable from a peer gone


class Relay:
    """Forwards datagrams between A (`peer`, or whoever sends to `address` first) and
    `target`, impairing each direction as told and recording what it did. Datagrams from
    anyone else are counted in `strays` and dropped."""

    def __init__(
        self,
        target: Address,
        to_target: Impairment | None = None,
        from_target: Impairment | None = None,
        *,
        peer: Address | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.target = target
        self.host = host
        self.to_target = Direction("a->b", to_target or Impairment())
        self.from_target = Direction("b->a", from_target or Impairment())
        self.peer = peer  # A: as given, or whoever sends to `address` first
        self.strays = 0  # datagrams from neither side, ignored
        self.errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="impair-relay", daemon=True)
        self._a: asyncio.DatagramTransport | None = None
        self._b: asyncio.DatagramTransport | None = None
        self._ready = threading.Event()
        self._failure: Exception | None = None
        self.address: Address = (host, 0)  # where A sends
        self.b_address: Address = (host, 0)  # where B sees the relay

    # ---- life -------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"impairment relay did not start within {START_TIMEOUT} s")
        if self._failure is not None:
            raise RuntimeError(f"impairment relay failed to start: {self._failure!r}")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._open())
        except (OSError, RuntimeError) as exc:  # reported to start()
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        for transport in (self._a, self._b):
            if transport is not None:
                transport.close()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        a, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, True), local_addr=(self.host, 0), family=socket.AF_INET)
        b, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, False), local_addr=(self.host, 0), family=socket.AF_INET)
        self._a, self._b = a, b
        self.address = a.get_extra_info("sockname")[:2]
        self.b_address = b.get_extra_info("sockname")[:2]

    def drain(self, timeout: float | None = None) -> None:
        """Wait until no copy is waiting to be sent (at most `timeout`, by default the
        longest delay either direction can draw, plus a margin); AssertionError if
        copies are still waiting then."""
        if timeout is None:
            timeout = max(self.to_target.impairment.longest,
                          self.from_target.impairment.longest) + 1.0
        deadline = time.monotonic() + timeout
        while self.to_target.pending or self.from_target.pending:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"relay still holds copies after {timeout:.1f} s: "
                    f"{self.to_target.summary()} {self.from_target.summary()}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop forwarding; copies still waiting are not sent (their `sent_at` is None)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- forwarding (on the relay's loop) ----------------------------------------------

    def _received(self, from_a: bool, data: bytes, addr: Address) -> None:
        now = time.monotonic()
        if from_a:
            if self.peer is None:
                self.peer = addr
            elif addr != self.peer:
                self.strays += 1
                return
            direction, transport, dest = self.to_target, self._b, self.target
        else:
            if addr != self.target or self.peer is None:
                self.strays += 1
                return
            direction, transport, dest = self.from_target, self._a, self.peer
        assert transport is not None
        datagram = direction.decide(data, now)
        for copy in datagram.copies:
            if copy.delay <= 0.0:
                self._send(direction, transport, dest, copy, datagram, counted=False)
            else:
                direction.pending += 1
                self._loop.call_later(copy.delay, self._send, direction, transport, dest,
                                      copy, datagram, True)

    def _send(self, direction: Direction, transport: asyncio.DatagramTransport,
              dest: Address, copy: Copy, datagram: Datagram, counted: bool) -> None:
        if counted:
            direction.pending -= 1
        transport.sendto(datagram.data, dest)
        copy.sent_at = time.monotonic()
        direction.sent.append((copy, datagram))
