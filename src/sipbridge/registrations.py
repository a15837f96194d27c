"""The gateway's registrations to providers: runs one `sip.registration.Registration`
machine per `[[registration]]` entry on the SIP driver (its REGISTERs go through the UA's
client transactions and the transport; their outcomes come back as the UA's events), arms
each machine's deadline, and is the one place the API, the metrics and `sipbridge status`
read the registrations' state from."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from sipbridge.sip.address import Address
from sipbridge.sip.driver import Cancellable, SipDriver, Upper
from sipbridge.sip.events import Event, RequestOutcome
from sipbridge.sip.registration import Registration, RegistrationSpec, RegState, RegStatus

log = logging.getLogger("sipbridge")

OWNER_PREFIX = "reg:"  # the UA's owner ids of registration transactions


class Registrations:
    """The registration machines on one SIP driver. It sits between the UA's events and
    the calls: outcomes of REGISTERs are its own, every other event goes on to the calls."""

    def __init__(self, driver: SipDriver, specs: Iterable[RegistrationSpec], *,
                 host: Callable[[RegistrationSpec], str], port: Callable[[str], int]) -> None:
        """`host(spec)`: the address our Contact and Via name for that registrar;
        `port(transport)`: our port for that transport."""
        self.driver = driver
        self.machines: dict[str, Registration] = {}
        for spec in specs:
            self.machines[spec.name] = Registration(spec, host=host(spec),
                                                    port=port(spec.transport))
        self._timers: dict[str, tuple[float, Cancellable]] = {}
        self._logged: dict[str, tuple[RegState, int | None]] = {}
        self._inner: Upper = driver.upper
        self._stopped = asyncio.Event()  # every machine stopped (un-REGISTERs answered)
        self.unregister_wait = 2.0  # seconds shutdown waits for the un-REGISTERs' answers

    # ---- the driver's upper layer ---------------------------------------------------

    def attach(self) -> None:
        """Take the UA's events before the calls do (after the calls attached)."""
        self._inner = self.driver.upper
        self.driver.attach(self)

    def handle(self, event: Event) -> None:
        if isinstance(event, RequestOutcome) and event.leg_id.startswith(OWNER_PREFIX):
            machine = self.machines.get(event.leg_id[len(OWNER_PREFIX):])
            if machine is not None:
                reason = ""
                if event.timed_out:
                    reason = "no response (timed out)"
                machine.receive(event.request, event.response, self.driver.now(), reason)
                self._run(machine)
                self._check_stopped()
            return
        self._inner.handle(event)

    def trace(self, data: bytes, peer: Address, direction: str, *, early: bool = False
              ) -> bool:
        return self._inner.trace(data, peer, direction, early=early)

    def unsent(self, data: bytes, dest: Address, reason: str) -> None:
        self._inner.unsent(data, dest, reason)

    # ---- running --------------------------------------------------------------------

    def start(self) -> None:
        now = self.driver.now()
        for machine in self.machines.values():
            machine.start(now)
            self._run(machine)

    async def stop(self) -> None:
        """Un-REGISTER every binding (Expires: 0) and wait for the answers, at most
        `unregister_wait` seconds: shutdown is not held up by a registrar gone quiet."""
        now = self.driver.now()
        for machine in self.machines.values():
            machine.stop(now)
            self._run(machine)
        self._check_stopped()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), self.unregister_wait)
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _run(self, machine: Registration) -> None:
        """Send what the machine queued, log a change of state, re-arm its deadline."""
        name = machine.spec.name
        out = machine.outgoing()
        if out:
            with self.driver.command() as ua:
                for request, dest in out:
                    ua.send_standalone(OWNER_PREFIX + name, request, dest, self.driver.now())
        self._log_change(machine)
        at = machine.deadline
        current = self._timers.get(name)
        if current is not None and current[0] == at:
            return
        if current is not None:
            current[1].cancel()
            del self._timers[name]
        if at is not None:
            self._timers[name] = (at, self.driver.clock.call_at(
                at, lambda: self._fire(name)))

    def _check_stopped(self) -> None:
        if all(m.state is RegState.STOPPED for m in self.machines.values()):
            self._stopped.set()

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        machine = self.machines[name]
        machine.handle_timer(self.driver.now())
        self._run(machine)

    def _log_change(self, machine: Registration) -> None:
        """One line per change of state (or of the failure's status), not per retry."""
        name = machine.spec.name
        key = (machine.state, machine.last_status if machine.state is RegState.FAILING
               else None)
        if self._logged.get(name) == key:
            return
        self._logged[name] = key
        spec = machine.spec
        now = self.driver.now()
        if machine.state is RegState.REGISTERED and machine.expires_at is not None:
            log.info("registration %s: %s registered at %s for %d s", name, spec.aor,
                     spec.registrar, round(machine.expires_at - now))
        elif machine.state is RegState.FAILING:
            retry = machine.retry_at
            log.warning("registration %s: %s failing at %s: %s %s; retrying with backoff "
                        "(next in %.1f s)", name, spec.aor, spec.registrar,
                        machine.last_status, machine.last_reason,
                        (retry - now) if retry is not None else 0)
        elif machine.state in (RegState.STOPPED, RegState.UNREGISTERING):
            log.info("registration %s: %s %s", name, spec.aor, machine.state.value)

    # ---- reading --------------------------------------------------------------------

    def statuses(self) -> list[RegStatus]:
        return [m.status() for m in self.machines.values()]

    def report(self) -> list[dict[str, Any]]:
        """Each registration's state, times as Unix times (the API's and CLI's shape)."""
        offset = time.time() - self.driver.now()

        def wall(t: float | None) -> int | None:
            return None if t is None else round(t + offset)

        return [{"name": s.name, "aor": s.aor, "registrar": s.registrar,
                 "transport": s.transport, "state": s.state.value,
                 "expires_at": wall(s.expires_at), "last_status": s.last_status,
                 "last_reason": s.last_reason, "next_attempt_at": wall(s.next_attempt_at),
                 "attempts": s.attempts, "failures": s.failures}
                for s in self.statuses()]
