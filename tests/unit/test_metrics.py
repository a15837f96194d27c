"""The RTP counters follow calls while they run, and a call's end adds only the rest; a
labelled metric's children are made once."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from sipbridge.calls.call import Call
from sipbridge.calls.events import Ended
from sipbridge.calls.sinks import MetricsSink
from sipbridge.metrics import Metrics


def scrape(metrics: Metrics) -> dict[str, float]:
    return {s.name + "".join(f"{{{k}={v}}}" for k, v in s.labels.items()): s.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for s in family.samples}


def figures(packets: int, lost: int = 0, stun: int = 0, jitter_ms: float = 0.0,
            duplicates: int = 0) -> dict[str, object]:
    return {"packets_in": packets, "lost": lost, "stun": stun, "jitter_ms": jitter_ms,
            "duplicates": duplicates, "dropped": {}}


def test_live_calls_are_counted_at_each_scrape_and_their_end_adds_only_the_rest() -> None:
    live = {"rtc_a": figures(100, lost=3, stun=1, jitter_ms=4.0, duplicates=2),
            "rtc_b": figures(50, duplicates=1)}
    metrics = Metrics(lambda: len(live), lambda: live.items())
    values = scrape(metrics)
    assert values["sipbridge_rtp_packets_received_total"] == 150
    assert values["sipbridge_rtp_packets_lost_total"] == 3
    assert values["sipbridge_stun_messages_total"] == 1
    assert values["sipbridge_rtp_packets_duplicated_total"] == 3
    assert values["sipbridge_rtp_jitter_max_seconds"] == 0.004
    assert values["sipbridge_rtp_jitter_seconds_count"] == 0  # no call has ended
    live["rtc_a"] = figures(200, lost=2, stun=1, jitter_ms=2.0)  # a late packet came in
    values = scrape(metrics)
    assert values["sipbridge_rtp_packets_received_total"] == 250
    assert values["sipbridge_rtp_packets_lost_total"] == 3  # a counter never goes down
    del live["rtc_a"]
    metrics.media("rtc_a", figures(210, lost=4, stun=2, jitter_ms=2.0, duplicates=5),
                  ended=True)
    values = scrape(metrics)
    assert values["sipbridge_rtp_packets_received_total"] == 260  # 210 + 50, once each
    assert values["sipbridge_rtp_packets_lost_total"] == 4
    assert values["sipbridge_stun_messages_total"] == 2
    assert values["sipbridge_rtp_packets_duplicated_total"] == 6  # 5 + 1
    assert values["sipbridge_rtp_jitter_seconds_count"] == 1
    assert values["sipbridge_rtp_jitter_max_seconds"] == 0.0


def test_a_call_never_scraped_is_counted_whole_at_its_end() -> None:
    metrics = Metrics(lambda: 0)
    metrics.media("rtc_a", figures(80, lost=1, jitter_ms=3.0), ended=True)
    metrics.media("rtc_b", figures(0), ended=True)  # no RTP: no jitter to observe
    values = scrape(metrics)
    assert values["sipbridge_rtp_packets_received_total"] == 80
    assert values["sipbridge_rtp_packets_lost_total"] == 1
    assert values["sipbridge_rtp_jitter_seconds_count"] == 1


def test_a_labelled_child_is_made_once_per_label_values_and_counts_under_them() -> None:
    metrics = Metrics(lambda: 0)
    made: list[tuple[str, ...]] = []
    labels = metrics.calls.labels

    def counting(*values: str) -> Counter:
        made.append(values)
        return labels(*values)

    metrics.calls.labels = counting  # type: ignore[method-assign,assignment]
    sink = MetricsSink(metrics)
    for n, reason in enumerate(["remote_bye", "remote_bye", "error: 500 from x", "remote_bye",
                                "error: timeout"]):
        call = Call(id=f"rtc_{n}", leg_id=f"leg{n}", caller="sip:a@b", callee="sip:c@d",
                    created_at=0.0, end_reason=reason)
        sink.observe(Ended(call))
    assert made == [("remote_bye",), ("error",)]  # each label value's child made once
    assert metrics.calls_by("remote_bye") is metrics.calls_by("remote_bye")
    values = scrape(metrics)
    assert values["sipbridge_calls_total{reason=remote_bye}"] == 3
    assert values["sipbridge_calls_total{reason=error}"] == 2
