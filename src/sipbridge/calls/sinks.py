"""The calls plane's own sinks: each call's record to the store (its timeline entry by
entry), and what happens to calls to the metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sipbridge.calls.call import Call
from sipbridge.calls.events import CallEvent, Changed, Ended, OutboundNoted, TransferStepped
from sipbridge.metrics import Metrics

if TYPE_CHECKING:  # the store loads when one is opened
    from sipbridge.store import Store


# Seconds a gateway's store sink holds what is written before handing it over: a call's
# changes within it make one record (a call answered at once and hung up soon after,
# one in all), and what the store's writer lingers for comes in fewer, larger pieces.
HOLD = 0.02


class StoreSink:
    """The call's record to the store whenever it changes; its timeline goes there entry
    by entry, as each is added.

    With `defer` (the loop's `call_soon`, or a `call_later` that holds writes a while),
    what is written until the deferred hand-over runs is handed to the store then, in
    order, and a call whose record changed several times meanwhile has only its last
    record stored (at the place of the first): the store would replace the others before
    anyone could read them. The record is made at the hand-over (`Call.to_dict`, with
    its live media figures), so a change costs nothing until then: a call changes about
    four times, mostly within a few milliseconds (bench/README.md, sip_cps). Timeline
    entries are taken as they are when added; `hand_over()` sends what waits at once
    (before the store closes)."""

    # the timeline's entries come through its `sink`, not as events
    wants: ClassVar[tuple[type, ...]] = (Changed,)

    def __init__(self, store: Store, recordings: str | None,
                 defer: Callable[[Callable[[], None]], object] | None = None) -> None:
        self.store = store
        self.recordings = recordings
        self._defer = defer
        self._pending: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._changed: dict[str, Call] = {}  # calls changed since the last hand-over

    def _write(self, method: Callable[..., None], *args: Any) -> None:
        if self._defer is None:
            method(*args)
            return
        if not self._pending:
            self._defer(self.hand_over)
        self._pending.append((method, args))

    def _upsert_last(self, call_id: str) -> None:
        self.store.upsert_call(self._changed.pop(call_id).to_dict(timeline=False))

    def hand_over(self) -> None:
        """Give the store what was written since the last hand-over (see the class)."""
        pending, self._pending = self._pending, []
        for method, args in pending:
            method(*args)

    def observe(self, event: CallEvent) -> None:
        if not isinstance(event, Changed):  # as `wants` says, for a caller that ignores it
            return
        call, store = event.call, self.store
        if call.timeline.sink is None:
            call.timeline.sink = _TimelineSink(self, call.id)
            if self.recordings:
                call.recording = str(Path(self.recordings) / f"{call.id}.wav")
        if self._defer is None:
            store.upsert_call(call.to_dict(timeline=False))
        elif call.id not in self._changed:
            self._changed[call.id] = call
            self._write(self._upsert_last, call.id)


class _TimelineSink:
    """A call's timeline entries into the store, through its `StoreSink`. It holds the
    call's id, not the call: the call holds its timeline, and a cycle through them (a
    closure over the call, as the compiled module makes of any nested function's
    locals) would leave each ended call to the garbage collector."""

    __slots__ = ("call_id", "owner")

    def __init__(self, owner: StoreSink, call_id: str) -> None:
        self.owner = owner
        self.call_id = call_id

    def __call__(self, entry: dict[str, object]) -> None:
        at = entry.get("at")
        owner = self.owner
        owner._write(owner.store.add_event, self.call_id,
                     at if isinstance(at, float) else time.time(), str(entry.get("kind")),
                     entry)


class MetricsSink:
    """Call setup times, calls ended by reason (with their media figures), transfers by
    outcome, outbound calls by outcome."""

    wants: ClassVar[tuple[type, ...]] = (OutboundNoted, Changed, Ended, TransferStepped)

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._setup_seen: set[str] = set()

    def observe(self, event: CallEvent) -> None:
        match event:
            case Changed(call=call):
                self._changed(call)
            case Ended(call=call):
                self._ended(call)
            case TransferStepped(step=step) if step is not None and step.final:
                self.metrics.transfers_by(step.status).inc()
            case OutboundNoted(entry={"final": True, "status": str(outcome)}):
                self.metrics.outbound_by(outcome).inc()
            case _:
                pass

    def _changed(self, call: Call) -> None:
        if call.answered_at is not None and call.id not in self._setup_seen:
            self._setup_seen.add(call.id)
            self.metrics.setup.observe(max(0.0, call.answered_at - call.created_at))

    def _ended(self, call: Call) -> None:
        self._setup_seen.discard(call.id)
        reason = (call.end_reason or "unknown").split(":")[0][:32]
        self.metrics.calls_by(reason).inc()
        if call.media is not None:  # what scrapes during the call did not count yet
            self.metrics.media(call.id, call.media, ended=True)
