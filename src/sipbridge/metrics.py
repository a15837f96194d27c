"""Prometheus metrics for one gateway, served at `/metrics` by the HTTP API."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

_SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
_MODEL_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)


class Metrics:
    """The gateway's counters, gauges and histograms, in a registry of its own (several
    gateways in one process, as in tests, do not collide)."""

    def __init__(self, active_calls: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active = Gauge("sipbridge_calls_active", "Calls in progress", registry=r)
        self.active.set_function(lambda: float(active_calls()))
        self.calls = Counter("sipbridge_calls", "Calls ended, by end reason", ["reason"],
                             registry=r)
        self.setup = Histogram("sipbridge_call_setup_seconds",
                               "INVITE received to the call answered", buckets=_SETUP_BUCKETS,
                               registry=r)
        self.transfers = Counter("sipbridge_transfers", "Transfer outcomes, by status",
                                 ["status"], registry=r)
        self.webhook_failures = Counter("sipbridge_webhook_failures",
                                        "Webhook attempts that failed, by event type",
                                        ["type"], registry=r)
        self.rtp_lost = Counter("sipbridge_rtp_packets_lost", "RTP packets lost from callers",
                                registry=r)
        self.rtp_received = Counter("sipbridge_rtp_packets_received",
                                    "RTP packets received from callers", registry=r)
        self.jitter = Histogram("sipbridge_rtp_jitter_seconds",
                                "Interarrival jitter of each call at its end (RFC 3550)",
                                buckets=_JITTER_BUCKETS, registry=r)
        self.model_latency = Histogram("sipbridge_model_response_seconds",
                                       "End of caller speech (speech_stopped) to the model's "
                                       "first audio", buckets=_MODEL_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
