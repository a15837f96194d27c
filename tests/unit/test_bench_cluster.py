"""bench/cluster.py's arithmetic: the rate search, percentiles, a step's verdict, and the
store's work per call and per second from PostgreSQL's counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ is not a package: its scripts import each other by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from cluster import (
    Rest,
    StoreCounts,
    highest_passing,
    next_rate,
    percentile,
    rest_rate,
    store_load,
    verdict,
)


def search(limit: int) -> tuple[tuple[int, bool], list[int]]:
    """The search against a server that passes every rate up to `limit`; the rates tried."""
    tried: list[int] = []

    def passes(rate: int) -> bool:
        tried.append(rate)
        return rate <= limit

    found = highest_passing(passes, start=300, maximum=3000, resolution=25,
                            resolution_pct=8.0)
    return found, tried


def test_the_search_doubles_then_bisects_to_the_resolution() -> None:
    (found, capped), tried = search(1000)
    assert tried[:3] == [300, 600, 1200]  # doubling until the first failure
    assert tried[3:] == [900, 1050, 975]  # halving the gap between 600 and 1200
    assert (found, capped) == (975, False)  # 1050 - 975 = 75 <= 8 % of 975


def test_the_search_stops_at_the_maximum_as_a_lower_bound() -> None:
    (found, capped), tried = search(10_000)
    assert tried == [300, 600, 1200, 2400, 3000]
    assert (found, capped) == (3000, True)


def test_the_search_below_the_first_rate_bisects_from_zero() -> None:
    (found, capped), tried = search(100)
    assert tried[:2] == [300, 150]
    assert found <= 100 < found + 25 and not capped


def test_next_rate_within_the_resolution_is_the_end() -> None:
    assert next_rate(1000, 1020, start=300, maximum=3000, resolution=25,
                     resolution_pct=1) is None
    assert next_rate(1000, 1100, start=300, maximum=3000, resolution=25,
                     resolution_pct=1) == 1050


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_verdict_names_every_failed_criterion() -> None:
    assert verdict(returncode=0, calls=100, successful=100, failed=0, retransmissions=0,
                   wall=10.2, duration=10, late_p99=12.0, alive=True) == "ok"
    bad = verdict(returncode=1, calls=100, successful=97, failed=3, retransmissions=5,
                  wall=20.0, duration=10, late_p99=800.0, alive=False)
    assert bad == ("sipp exit 1, 3 failed, 5 retransmissions, 97/100 successful, rate not "
                   "kept (20.0 s), 200 after 800 ms at p99, a node exited")
    assert verdict(returncode=0, calls=100, successful=100, failed=0, retransmissions=0,
                   wall=10.2, duration=10, late_p99=None, alive=True) == "no 200 timed"


def counts(xacts: int, wal: int, calls: tuple[int, int, int], events: int,
           nodes_updated: int) -> StoreCounts:
    return StoreCounts(xacts, wal, {"calls": calls, "events": (events, 0, 0),
                                    "nodes": (2, nodes_updated, 0)})


def test_rest_rate_is_per_heartbeat_counted_not_per_clock_second() -> None:
    # 10 heartbeats of 2 s counted (whatever the clock said): 20 node-seconds.
    rest = rest_rate(counts(100, 0, (0, 0, 0), 0, 5), counts(130, 2000, (0, 0, 0), 0, 15),
                     heartbeat=2.0)
    assert rest == Rest(xacts=1.5, rows=0.5, wal=100.0)
    assert rest_rate(counts(1, 0, (0, 0, 0), 0, 5), counts(9, 0, (0, 0, 0), 0, 5),
                     heartbeat=2.0) == Rest(0.0, 0.0, 0.0)


def test_store_load_takes_the_rest_out_per_call_and_puts_it_back_per_second() -> None:
    # 1000 calls at 500/s counted over 20 s by 2 nodes each resting at 1.5 xact/s,
    # 0.5 row/s and 100 WAL bytes/s: the rest is 60 xacts, 20 rows, 4000 bytes of it.
    before = counts(1000, 10_000, (5, 1, 0), 50, 100)
    after = counts(1000 + 60 + 50, 10_000 + 4000 + 8_000_000, (1005, 201, 0), 7050, 120)
    load = store_load(before, after, 20.0, 1000, 500, Rest(1.5, 0.5, 100.0), 2)
    assert load.xacts_per_call == pytest.approx(0.05)
    assert load.rows_per_call == pytest.approx(8.2)  # 1000 + 200 + 7000 + 20 - 20 rows
    assert load.wal_per_call == pytest.approx(8000.0)
    assert load.table_rows_per_call["calls"] == pytest.approx((1.0, 0.2, 0.0))
    assert load.table_rows_per_call["events"] == pytest.approx((7.0, 0.0, 0.0))
    xacts, rows, wal = load.per_second()
    assert (xacts, rows, wal) == pytest.approx((0.05 * 500 + 3.0, 8.2 * 500 + 1.0,
                                                8000.0 * 500 + 200.0))
    shares = load.rest_shares()
    assert shares == pytest.approx((3.0 / 28.0, 1.0 / 4101.0))
