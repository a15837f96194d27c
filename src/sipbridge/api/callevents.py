"""What the application hears of a call's events: sideband events to the call's
WebSocket clients, and webhooks (each delivery attempt on the call's timeline)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import ClassVar

from sipbridge.api.webhooks import WebhookAttempt, WebhookDelivery, WebhookSender, make_event
from sipbridge.calls.call import Call
from sipbridge.calls.events import (
    CallEvent,
    CallEvents,
    DtmfSending,
    Ended,
    Incoming,
    OutboundNoted,
    TransferStepped,
    note,
)
from sipbridge.calls.transfer_machine import SUCCEEDED
from sipbridge.calls.warm import CONNECTED
from sipbridge.metrics import Metrics
from sipbridge.realtime.sideband import SidebandHubs


class SidebandSink:
    """Every transfer step to the call's sideband clients; at the end they are let go."""

    # of a call's events (CallEvents)
    wants: ClassVar[tuple[type, ...]] = (TransferStepped, OutboundNoted, DtmfSending, Ended)

    def __init__(self, hubs: SidebandHubs) -> None:
        self.hubs = hubs

    def observe(self, event: CallEvent) -> None:
        match event:
            case TransferStepped(call=call, job=job):
                machine = job.machine
                self.hubs.publish(call.id, {
                    "type": "call.transfer.updated",
                    "event_id": "event_" + secrets.token_hex(12),
                    "call_id": call.id, "transfer_id": job.id, "status": machine.status,
                    "final": machine.final, "sip_status": machine.sip_status,
                    "reason": machine.reason, "target_uri": machine.target,
                    "fallback": job.fallback, "mode": job.mode,
                })
            case OutboundNoted(call=call, entry=entry):
                self.hubs.publish(call.id, {
                    "type": "call.outbound.updated",
                    "event_id": "event_" + secrets.token_hex(12), "call_id": call.id,
                    "status": entry.get("status"), "final": entry.get("final"),
                    "sip_status": entry.get("sip_status"), "reason": entry.get("reason"),
                })
            case DtmfSending(call=call, send=send):
                self.hubs.publish(call.id, {
                    "type": "call.dtmf.updated",
                    "event_id": "event_" + secrets.token_hex(12),
                    "call_id": call.id, "dtmf_id": send.id, "digits": send.digits,
                    "method": send.method, "status": send.status, "reason": send.reason,
                    "sent": send.sent,
                })
            case Ended(call=call):
                self.hubs.close(call.id)
            case _:
                pass


class WebhookSink:
    """realtime.call.incoming when a call waits for the application; a transfer's outcome
    as realtime.call.transfer.succeeded or .failed; an outbound call's as
    realtime.call.outbound.<outcome>: each to every endpoint that asked for its type."""

    # of a call's events (CallEvents)
    wants: ClassVar[tuple[type, ...]] = (Incoming, TransferStepped, OutboundNoted)

    def __init__(self, endpoints: Sequence[tuple[WebhookSender, frozenset[str]]],
                 events: CallEvents, metrics: Metrics) -> None:
        self.endpoints = endpoints  # each sender, with the event types it gets
        self.events = events
        self.metrics = metrics

    def observe(self, event: CallEvent) -> None:
        match event:
            case Incoming(call=call):
                self._send(call, "realtime.call.incoming", {
                    "call_id": call.id,
                    "sip_headers": [{"name": n, "value": v} for n, v in call.sip_headers],
                    "sip_media_security": "srtp" if call.audio is not None
                    and call.audio.srtp is not None else "rtp",
                })
            case TransferStepped(call=call, job=job, step=step) if step is not None \
                    and step.final:
                kind = "succeeded" if step.status in (SUCCEEDED, CONNECTED) else "failed"
                self._send(call, f"realtime.call.transfer.{kind}", {
                    "call_id": call.id, "transfer_id": job.id, "status": step.status,
                    "sip_status": step.sip_status, "reason": step.reason,
                    "target_uri": job.machine.target, "mode": job.mode,
                })
            case OutboundNoted(call=call, entry={"final": True, **entry}):
                self._send(call, f"realtime.call.outbound.{entry.get('status')}", {
                    "call_id": call.id, "status": entry.get("status"),
                    "sip_status": entry.get("sip_status"), "reason": entry.get("reason"),
                    "to": call.callee, "from": call.caller,
                })
            case _:
                pass

    def _send(self, call: Call, kind: str, data: dict[str, object]) -> None:
        event: dict[str, object] | None = None
        for sender, types in self.endpoints:
            if kind in types:  # the same event (one id) to each, signed with its secret
                event = event or make_event(kind, data)
                call.webhooks.append(sender.send(event, on_attempt=self._attempt(call)))

    def _attempt(self, call: Call) -> Callable[[WebhookDelivery, WebhookAttempt], None]:
        def attempt(delivery: WebhookDelivery, result: WebhookAttempt) -> None:
            if result.error or not 200 <= (result.status_code or 0) < 300:
                self.metrics.webhook_failures.labels(delivery.event_type).inc()
            self.events.emit(note(call, "webhook", type=delivery.event_type,
                                  attempt=result.number, status_code=result.status_code,
                                  error=result.error,
                                  duration_ms=round(result.duration_ms, 1), url=delivery.url))
        return attempt
