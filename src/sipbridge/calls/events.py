"""What happens to a call, as small typed records, and the one observer interface through
which each becomes its timeline entry, sideband event, webhook, store write and metric.

The registry and the transfer runner emit; sinks subscribe to `CallEvents` (the call's
timeline first, so every other sink sees an event once it is on the timeline). An observer
that names the event types it takes (`wants`) is handed only those: a call makes about a
dozen events, most of them timeline entries that only the timeline and the store take."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from sipbridge.calls.call import Call, DtmfSend, TransferJob
from sipbridge.calls.transfer_machine import TransferStep
from sipbridge.media.session import MediaSession


@dataclass(frozen=True, slots=True)
class Noted:
    """An entry for the call's timeline and nothing else (a SIP message, an API request,
    a warning, the agent's words)."""

    call: Call
    entry: dict[str, object]


@dataclass(frozen=True, slots=True)
class OutboundNoted(Noted):
    """An outbound call's progress: its timeline entry of kind "outbound" (`final` on the
    last), which the sideband, the webhooks and the metrics take too, as no other entry."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """A call rings and waits for the application to accept or reject it."""

    call: Call


@dataclass(frozen=True, slots=True)
class Changed:
    """The call's record changed: created, answered, ended, or a transfer moved."""

    call: Call


@dataclass(frozen=True, slots=True)
class MediaStarted:
    """An answered call that is not echoed or played to: it talks with the agent."""

    call: Call
    media: MediaSession


@dataclass(frozen=True, slots=True)
class Digit:
    """A DTMF digit from the caller (RFC 4733)."""

    call: Call
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class DtmfSending:
    """Digits the call sends: queued, sending, then sent or failed (`send.status`)."""

    call: Call
    send: DtmfSend


@dataclass(frozen=True, slots=True)
class TransferStepped:
    """A step of a transfer (`step`), or a change of its fallback (`step` None)."""

    call: Call
    job: TransferJob
    step: TransferStep | None


@dataclass(frozen=True, slots=True)
class Ended:
    """The call ended; its record is final."""

    call: Call


CallEvent = (Noted | OutboundNoted | Incoming | Changed | MediaStarted | Digit | DtmfSending
             | TransferStepped | Ended)


class CallObserver(Protocol):
    """Takes a call's events. It may also have `wants`, a tuple of the event types it takes
    (the others never reach it); one without `wants` takes every event."""

    def observe(self, event: CallEvent) -> None: ...


def note(call: Call, kind: str, **data: object) -> Noted:
    """A timeline entry of `kind`, stamped now."""
    return Noted(call, {"at": time.time(), "kind": kind, **data})


class TimelineRecorder:
    """Each event that has one as its entry on the call's timeline."""

    wants: ClassVar[tuple[type, ...]] = (Noted, Digit, DtmfSending, TransferStepped)

    def observe(self, event: CallEvent) -> None:
        if type(event) is Noted:  # most events: a SIP message or a note
            event.call.timeline.append(event.entry)
            return
        match event:
            case Noted(call=call, entry=entry):
                call.timeline.append(entry)
            case Digit(call=call, digit=digit, duration_ms=duration_ms):
                call.timeline.append({"at": time.time(), "kind": "dtmf", "digit": digit,
                                      "duration_ms": duration_ms})
            case DtmfSending(call=call, send=send):
                call.timeline.append({
                    "at": time.time(), "kind": "dtmf", "direction": "out", "dtmf_id": send.id,
                    "digits": send.digits, "method": send.method, "status": send.status,
                    "reason": send.reason, "sent": send.sent,
                    "requested_by": send.requested_by})
            case TransferStepped(call=call, job=job, step=None):
                call.timeline.append({"at": time.time(), "kind": "fallback",
                                      "transfer_id": job.id, **(job.fallback or {})})
            case TransferStepped(call=call, job=job, step=step) if step is not None:
                call.timeline.append({"kind": "transfer", "transfer_id": job.id,
                                      **step.to_dict(job.machine.epoch)})
            case _:
                pass


class CallEvents:
    """The fan-out: each event to the observers that want it (`CallObserver`), in the
    order they subscribed, the call's timeline first. Who wants an event type is worked
    out once, at its first event after a subscription."""

    def __init__(self) -> None:
        self._observers: list[CallObserver] = [TimelineRecorder()]
        self._routes: dict[type, tuple[Callable[[CallEvent], None], ...]] = {}

    def subscribe(self, observer: CallObserver) -> None:
        self._observers.append(observer)
        self._routes = {}

    def emit(self, event: CallEvent) -> None:
        routes = self._routes.get(type(event))
        if routes is None:
            routes = self._route(type(event))
        for observe in routes:
            observe(event)

    def _route(self, kind: type) -> tuple[Callable[[CallEvent], None], ...]:
        """The `observe` of each observer that wants events of `kind`, in order."""
        routes = self._routes[kind] = tuple(
            observer.observe for observer in self._observers
            if (wants := getattr(observer, "wants", None)) is None or issubclass(kind, wants))
        return routes
