"""Prometheus metrics for one gateway, served at `/metrics` by the HTTP API.

The RTP counters follow calls while they run: each scrape brings them up to the figures
of the calls in progress, and a call's end adds only what no scrape counted yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics"]

_SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_MODEL_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)


MediaFigures = Mapping[str, object]  # a call's media figures (MediaSession.figures)
M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A labelled metric's children by their label values, each made once: the metric's
    own `labels()` checks its arguments and takes a lock at every call (about 1 us, a
    call's end counts several). As many as the metric itself keeps: prometheus_client
    holds every child it made until it is removed."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


def _count(figures: MediaFigures, name: str) -> int:
    value = figures.get(name)
    return value if isinstance(value, int) else 0


class _RegistrationCollector(Collector):
    """Each registration's state, read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        source = self.metrics.registrations
        rows = source() if source is not None else []
        up = GaugeMetricFamily("sipbridge_registration_up",
                               "1 while registered (the last attempt succeeded)",
                               labels=["name"])
        attempts = CounterMetricFamily("sipbridge_registration_attempts",
                                       "REGISTER requests sent", labels=["name"])
        failures = CounterMetricFamily("sipbridge_registration_failures",
                                       "Registration attempts that failed", labels=["name"])
        for name, registered, sent, failed in rows:
            up.add_metric([name], 1.0 if registered else 0.0)
            attempts.add_metric([name], float(sent))
            failures.add_metric([name], float(failed))
        yield up
        yield attempts
        yield failures


class Metrics:
    """The gateway's counters, gauges and histograms, in a registry of its own (several
    gateways in one process, as in tests, do not collide).

    `live_media` gives (call id, media figures) for each call in progress; `render` counts
    them before it writes the metrics out.
    """

    def __init__(self, active_calls: Callable[[], int],
                 live_media: Callable[[], Iterable[tuple[str, MediaFigures]]] | None = None,
                 auth_blocks: Callable[[], tuple[int, int]] | None = None,
                 rate_blocks: Callable[[], tuple[int, int, int]] | None = None,
                 overload: Callable[[], tuple[int, bool]] | None = None,
                 tls_failures: Callable[[], int] | None = None) -> None:
        self.tls_failures = tls_failures  # failed TLS handshakes so far
        self._tls_counted = 0
        self.live_media = live_media
        self.auth_blocks = auth_blocks  # (sources blocked so far, sources blocked now)
        self._auth_counted = 0
        # (sources rate-blocked so far, blocked now, messages dropped so far)
        self.rate_blocks = rate_blocks
        self._rate_counted = (0, 0)
        self.overload = overload  # (new calls refused for overload so far, refusing now)
        self._overload_counted = 0
        # What the counters already hold of each call in progress, by figure name: a
        # counter never goes down, although a call's loss can (a late packet arrives).
        self._counted: dict[str, dict[str, int]] = {}
        # (name, registered, REGISTERs sent, failed attempts) of each registration
        self.registrations: Callable[[], list[tuple[str, bool, int, int]]] | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(_RegistrationCollector(self))
        self.active = Gauge("sipbridge_calls_active", "Calls in progress", registry=r)
        self.active.set_function(lambda: float(active_calls()))
        self.calls = Counter("sipbridge_calls", "Calls ended, by end reason", ["reason"],
                             registry=r)
        self.setup = Histogram("sipbridge_call_setup_seconds",
                               "INVITE received to the call answered", buckets=_SETUP_BUCKETS,
                               registry=r)
        self.transfers = Counter("sipbridge_transfers", "Transfer outcomes, by status",
                                 ["status"], registry=r)
        self.outbound = Counter("sipbridge_outbound_calls", "Outbound calls, by outcome",
                                ["outcome"], registry=r)
        self.webhook_failures = Counter("sipbridge_webhook_failures",
                                        "Webhook attempts that failed, by event type",
                                        ["type"], registry=r)
        self.rtp_lost = Counter("sipbridge_rtp_packets_lost", "RTP packets lost from callers",
                                registry=r)
        self.rtp_received = Counter("sipbridge_rtp_packets_received",
                                    "RTP packets received from callers", registry=r)
        self.rtp_duplicates = Counter("sipbridge_rtp_packets_duplicated",
                                      "RTP packets from callers that came twice", registry=r)
        self.loop_lag = Histogram("sipbridge_event_loop_lag_seconds",
                                  "How late the event loop ran a callback due every 100 ms "
                                  "(while overload control is on)", buckets=_LAG_BUCKETS,
                                  registry=r)
        self.stun = Counter("sipbridge_stun_messages",
                            "STUN messages received on media ports (RFC 7983)", registry=r)
        self.jitter = Histogram("sipbridge_rtp_jitter_seconds",
                                "Interarrival jitter of each call at its end (RFC 3550)",
                                buckets=_JITTER_BUCKETS, registry=r)
        self.jitter_now = Gauge("sipbridge_rtp_jitter_max_seconds",
                                "Highest interarrival jitter among the calls in progress "
                                "(RFC 3550)", registry=r)
        self.model_latency = Histogram("sipbridge_model_response_seconds",
                                       "End of caller speech (speech_stopped) to the model's "
                                       "first audio", buckets=_MODEL_BUCKETS, registry=r)
        self.auth_blocks_total = Counter("sipbridge_auth_blocks",
                                         "Sources blocked after repeated failed "
                                         "authentications", registry=r)
        self.auth_blocked = Gauge("sipbridge_auth_blocked_sources",
                                  "Sources blocked now after failed authentications",
                                  registry=r)
        self.rate_blocks_total = Counter("sipbridge_rate_blocks",
                                         "Sources blocked for sending faster than their rate "
                                         "limit", registry=r)
        self.rate_blocked = Gauge("sipbridge_rate_blocked_sources",
                                  "Sources blocked now for their message rate", registry=r)
        self.rate_dropped = Counter("sipbridge_rate_dropped_messages",
                                    "Messages dropped unread because their source was "
                                    "blocked for its rate", registry=r)
        self.overload_rejected = Counter("sipbridge_overload_rejected",
                                         "New calls answered 503 for overload", registry=r)
        self.overload_active = Gauge("sipbridge_overload_active",
                                     "1 while overloaded: new calls may be refused", registry=r)
        self.tls_handshake_failures = Counter(
            "sipbridge_tls_handshake_failures",
            "TLS handshakes that failed (no handshake in time, not TLS, a certificate that "
            "does not verify)", registry=r)

        self.srtp_dropped = Counter("sipbridge_srtp_packets_dropped",
                                    "SRTP and SRTCP packets dropped, by reason (auth: bad "
                                    "tag or wrong key; replay)", ["reason"], registry=r)
        self.srtp_calls = Counter("sipbridge_srtp_calls", "Calls ended whose media was SRTP",
                                  registry=r)
        # Their children by label values, made once (`Children`).
        self.calls_by = Children(self.calls)
        self.transfers_by = Children(self.transfers)
        self.outbound_by = Children(self.outbound)
        self.srtp_dropped_by = Children(self.srtp_dropped)
        # The media figures that feed a counter.
        self._media_counters = (("packets_in", self.rtp_received), ("lost", self.rtp_lost),
                                ("duplicates", self.rtp_duplicates), ("stun", self.stun))

    def media(self, call_id: str, figures: MediaFigures, *, ended: bool = False) -> None:
        """Bring the RTP counters up to a call's media figures, adding only what they do
        not hold yet; at the call's `ended` its jitter goes to the histogram too."""
        counted = self._counted.pop(call_id, {})
        for name, counter in self._media_counters:
            value, before = _count(figures, name), counted.get(name, 0)
            if value > before:
                counter.inc(value - before)
                counted[name] = value
        dropped = figures.get("dropped")
        for reason, value in (dropped.items() if isinstance(dropped, dict) else ()):
            name = reason.removeprefix("rtcp_")
            if name in ("srtp_auth", "srtp_replay") and isinstance(value, int):
                before = counted.get(reason, 0)
                if value > before:
                    self.srtp_dropped_by(name.removeprefix("srtp_")).inc(value - before)
                    counted[reason] = value
        if not ended:
            self._counted[call_id] = counted
            return
        if figures.get("srtp") is True:
            self.srtp_calls.inc()
        jitter = figures.get("jitter_ms")
        if _count(figures, "packets_in") > 0 and isinstance(jitter, int | float):
            self.jitter.observe(jitter / 1000)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format, the calls in progress counted."""
        if self.live_media is not None:
            live = dict(self.live_media())
            for call_id in self._counted.keys() - live.keys():
                del self._counted[call_id]  # ended without its media figures
            highest = 0.0
            for call_id, figures in live.items():
                self.media(call_id, figures)
                jitter = figures.get("jitter_ms")
                if isinstance(jitter, int | float):
                    highest = max(highest, jitter / 1000)
            self.jitter_now.set(highest)
        if self.auth_blocks is not None:
            total, now = self.auth_blocks()
            if total > self._auth_counted:
                self.auth_blocks_total.inc(total - self._auth_counted)
                self._auth_counted = total
            self.auth_blocked.set(now)
        if self.rate_blocks is not None:
            blocks, blocked, dropped = self.rate_blocks()
            counted_blocks, counted_dropped = self._rate_counted
            self.rate_blocks_total.inc(max(0, blocks - counted_blocks))
            self.rate_dropped.inc(max(0, dropped - counted_dropped))
            self._rate_counted = (max(blocks, counted_blocks), max(dropped, counted_dropped))
            self.rate_blocked.set(blocked)
        if self.overload is not None:
            rejected, active = self.overload()
            if rejected > self._overload_counted:
                self.overload_rejected.inc(rejected - self._overload_counted)
                self._overload_counted = rejected
            self.overload_active.set(1 if active else 0)
        if self.tls_failures is not None:
            failures = self.tls_failures()
            if failures > self._tls_counted:
                self.tls_handshake_failures.inc(failures - self._tls_counted)
                self._tls_counted = failures
        return generate_latest(self.registry)
