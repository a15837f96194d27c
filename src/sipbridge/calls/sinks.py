"""The calls plane's own sinks: each call's record to the store (its timeline entry by
entry), and what happens to calls to the metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from sipbridge.calls.call import Call
from sipbridge.calls.events import CallEvent, Changed, Ended, Noted, TransferStepped
from sipbridge.metrics import Metrics

if TYPE_CHECKING:  # the store loads when one is opened
    from sipbridge.store import Store


class StoreSink:
    """The call's record to the store whenever it changes; its timeline goes there entry
    by entry, as each is added."""

    def __init__(self, store: Store, recordings: str | None) -> None:
        self.store = store
        self.recordings = recordings

    def observe(self, event: CallEvent) -> None:
        if not isinstance(event, Changed):
            return
        call, store = event.call, self.store
        if call.timeline.sink is None:
            def sink(entry: dict[str, object]) -> None:
                at = entry.get("at")
                store.add_event(call.id, at if isinstance(at, float) else time.time(),
                                str(entry.get("kind")), entry)

            call.timeline.sink = sink
        record = call.to_dict(timeline=False)
        if self.recordings:
            call.recording = str(Path(self.recordings) / f"{call.id}.wav")
            record["recording"] = call.recording
        store.upsert_call(record)


class MetricsSink:
    """Call setup times, calls ended by reason (with their media figures), transfers by
    outcome."""

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
                self.metrics.transfers.labels(step.status).inc()
            case Noted(entry={"kind": "outbound", "final": True, "status": str(outcome)}):
                self.metrics.outbound.labels(outcome).inc()
            case _:
                pass

    def _changed(self, call: Call) -> None:
        if call.answered_at is not None and call.id not in self._setup_seen:
            self._setup_seen.add(call.id)
            self.metrics.setup.observe(max(0.0, call.answered_at - call.created_at))

    def _ended(self, call: Call) -> None:
        self._setup_seen.discard(call.id)
        reason = (call.end_reason or "unknown").split(":")[0][:32]
        self.metrics.calls.labels(reason).inc()
        if call.media is not None:  # what scrapes during the call did not count yet
            self.metrics.media(call.id, call.media, ended=True)
