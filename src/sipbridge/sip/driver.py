"""The SIP driver: runs the sans-IO UA core in an event loop. It feeds the core what the
transport received, the core's timers and the calls' commands, and after every one of
these inputs flushes the core: its events to the calls, what it queued to the transport
(each message traced first), its next timer re-armed. No caller has to remember to."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from sipbridge.sip.address import Address
from sipbridge.sip.events import Event
from sipbridge.sip.ua import UserAgent

log = logging.getLogger("sipbridge")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """The time and timers the driver runs on: an asyncio event loop, or a fake one."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> Cancellable: ...


class Wire(Protocol):
    """Where the core's messages go: the transport."""

    def send(self, data: bytes, dest: Address) -> None: ...

    def drop(self, source: Address) -> None:
        """Close a stream connection (its source is blocked)."""


class Upper(Protocol):
    """What sits on the core: the calls. It takes the core's events and says which call
    a message belongs to, for that call's timeline."""

    def handle(self, event: Event) -> None: ...

    def trace(self, data: bytes, peer: Address, direction: str, *, early: bool = False
              ) -> bool:
        """Put a message on its call's timeline; False when it belongs to no call (yet).
        `early`: not yet read by the core (a new call's INVITE is traced once it exists)."""

    def unsent(self, data: bytes, dest: Address, reason: str) -> None:
        """A message the transport could not send, for its call's timeline."""


class _NoCalls:
    def handle(self, event: Event) -> None:
        pass

    def trace(self, data: bytes, peer: Address, direction: str, *, early: bool = False
              ) -> bool:
        return False

    def unsent(self, data: bytes, dest: Address, reason: str) -> None:
        pass


class SipDriver:
    """Moves bytes, events and timers between the UA core and the world."""

    def __init__(self, ua: UserAgent, wire: Wire, clock: Clock) -> None:
        self.ua = ua
        self.wire = wire
        self.clock = clock
        self.upper: Upper = _NoCalls()
        self._timer: Cancellable | None = None
        self._timer_at: float | None = None
        self._inbound: tuple[bytes, Address] | None = None
        self._commands = 0  # commands under way; the outermost one flushes
        self._stopped = False  # no timer fires, no timer is armed

    def now(self) -> float:
        return self.clock.time()

    def attach(self, upper: Upper) -> None:
        self.upper = upper

    def receive(self, data: bytes, source: Address) -> None:
        """A message from the transport."""
        ua = self.ua
        now = self.clock.time()
        if not ua.admit(source, now):
            # Dropped unread (its source is over its rate): nothing to trace or send, and
            # a stream connection is closed (new ones from there are, while it is blocked).
            if source.reliable:
                self.wire.drop(source)
            return
        if ua.shed(data, source, now):  # refused for overload: no call, no timeline
            for out, dest in ua.outgoing():
                self.wire.send(out, dest)
            return
        # Traced before the UA acts on it; a new call's INVITE once the call exists.
        if not self.upper.trace(data, source, "in", early=True):
            self._inbound = (data, source)
        ua.receive(data, source, now, screened=True)
        self.flush()

    def send_failed(self, data: bytes, dest: Address, reason: str) -> None:
        """A message the transport could not send: on its call's timeline, and its request
        fails in the core as 503 (a transfer whose REFER had nowhere to go says why)."""
        line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")[:200]
        log.info("not sent to %s: %s (%s)", dest, line, reason)
        self.upper.unsent(data, dest, reason)
        self.ua.transport_error(data, dest, reason, self.clock.time())
        self.flush()

    @contextmanager
    def command(self) -> Iterator[UserAgent]:
        """A call-control command on the core; what it queued is sent when it is done."""
        self._commands += 1
        try:
            yield self.ua
        finally:
            self._commands -= 1
            if self._commands == 0:
                self.flush()

    def schedule(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` after `delay` seconds as a command; returns a cancel function."""
        def run() -> None:
            if self._stopped:
                return
            with self.command():
                callback()

        return self.clock.call_at(self.clock.time() + delay, run).cancel

    def flush(self) -> None:
        """Hand the core's events to the calls, send what it queued, re-arm its timer."""
        ua, upper = self.ua, self.upper
        self._commands += 1  # a command the calls issue meanwhile is sent by this loop
        try:
            while True:
                events = ua.events()
                for event in events:
                    try:
                        upper.handle(event)
                    except Exception:
                        log.exception("error handling %s", type(event).__name__)
                if self._inbound is not None:  # after the events: an INVITE's call exists
                    upper.trace(*self._inbound, "in")
                    self._inbound = None
                for data, dest in ua.outgoing():
                    upper.trace(data, dest, "out")
                    self.wire.send(data, dest)
                if not events:
                    break
        finally:
            self._commands -= 1
        deadline = None if self._stopped else ua.deadline
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = None if deadline is None else self.clock.call_at(deadline,
                                                                            self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._stopped:
            return
        self.ua.handle_timer(self.clock.time())
        self.flush()

    def stop(self) -> None:
        """No timer fires from now on (the gateway is closing)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
