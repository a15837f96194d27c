"""The overview's figures over a window of calls (`sipbridge.callstats`): what counts as
answered, failed and set-up, the minute a call counts in (at the edges of minutes too),
nearest-rank percentiles and histogram bounds, and the store's SQL (`call_stats`) on
SQLite and on PostgreSQL giving the same figures as the records counted in Python."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sipbridge.callstats import (
    UNDER_WAY,
    CallStats,
    Percentiles,
    answered,
    bucket_percentiles,
    failed,
    from_records,
    minute_of,
    nearest_rank,
    rank,
)
from sipbridge.records import CallRecord
from sipbridge.store import SqliteStore, Store
from tests.unit.storerecords import call

M = 1_700_000_040.0  # a minute's start
SINCE, UNTIL = M, M + 180


def ended(call_id: str, at: float, *, setup: float | None, reason: str = "remote_bye",
          direction: str = "inbound", **fields: Any) -> CallRecord:
    """A call that came in at `at`, answered `setup` seconds later (None: never), ended."""
    return call(call_id, state="ended", created_at=at,
                answered_at=None if setup is None else at + setup, ended_at=at + 30.0,
                end_reason=reason, direction=direction, **fields)


def transfer(mode: str, status: str, final: bool = True) -> dict[str, object]:
    return {"id": f"tr_{mode}_{status}", "mode": mode, "status": status, "final": final,
            "sip_status": 486 if status == "failed" else None, "target_uri": "tel:+1"}


def window() -> list[CallRecord]:
    """Calls around a window of three minutes from M; the figures they make are
    `EXPECTED`'s."""
    return [
        # minute M: 3 answered, 1 failed; at its first instant and its last ones
        ended("rtc_a1", M, setup=0.25, transfers=[transfer("blind", "failed")]),
        ended("rtc_a2", M + 30.0, setup=0.5,
              transfers=[transfer("blind", "succeeded"), transfer("warm", "connected")]),
        ended("rtc_a3", M + 59.9, setup=1.0),  # PostgreSQL's cast would round it up
        ended("rtc_f1", M + 59.999, setup=None, reason="cancelled"),
        # minute M + 60: an answered call that ended abnormally fails; a ringing one is
        # neither (its transfer is under way); an outbound call answered after ringing 20 s
        # counts as answered, not as set-up
        ended("rtc_f2", M + 60.0, setup=8.0, reason="abnormal: gateway_restarted"),
        call("rtc_ringing", created_at=M + 61.0,
             transfers=[transfer("blind", "accepted", final=False)]),
        ended("rtc_out", M + 90.0, setup=20.0, direction="outbound"),
        # minute M + 120: an older record without a direction (inbound), rejected
        ended("rtc_old", M + 150.0, setup=2.0),
        ended("rtc_rejected", M + 179.5, setup=None, reason="rejected"),
        # outside: just before and at the window's end
        ended("rtc_before", M - 0.001, setup=0.1, transfers=[transfer("blind", "failed")]),
        ended("rtc_after", M + 180.0, setup=0.1, reason="abnormal: x"),
    ]


EXPECTED = CallStats(
    SINCE, UNTIL,
    answered={int(M): 3, int(M) + 60: 1, int(M) + 120: 1},
    failed={int(M): 1, int(M) + 60: 1, int(M) + 120: 1},
    # inbound set-ups 0.25, 0.5, 1.0, 2.0, 8.0: the 3rd, the 5th, the 5th
    setup=Percentiles(5, {50: 1.0, 95: 8.0, 99: 8.0}),
    transfers={("blind", "failed"): 1, ("blind", "succeeded"): 1, ("warm", "connected"): 1,
               ("blind", UNDER_WAY): 1},
)


def without_direction(record: CallRecord) -> CallRecord:
    fields: dict[str, Any] = dict(record)
    del fields["direction"]
    return fields  # type: ignore[return-value]


def records() -> list[CallRecord]:
    return [without_direction(r) if r["id"] == "rtc_old" else r for r in window()]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "calls.db")
    else:
        from sipbridge.store.postgres import PostgresStore

        opened = PostgresStore(request.getfixturevalue("pg_url"))
    yield opened
    opened.close()


def close(stats: CallStats) -> CallStats:
    """The figures, set-up times to the microsecond (a difference of two epoch floats)."""
    values = {p: round(v, 6) for p, v in stats.setup.values.items()}
    return CallStats(stats.since, stats.until, stats.answered, stats.failed,
                     Percentiles(stats.setup.count, values), stats.transfers)


def test_what_counts_as_answered_and_failed() -> None:
    by_id = {r["id"]: r for r in window()}
    assert [i for i, r in by_id.items() if answered(r)] == [
        "rtc_a1", "rtc_a2", "rtc_a3", "rtc_out", "rtc_old", "rtc_before"]
    assert [i for i, r in by_id.items() if failed(r)] == [
        "rtc_f1", "rtc_f2", "rtc_rejected", "rtc_after"]
    assert not answered(by_id["rtc_ringing"]) and not failed(by_id["rtc_ringing"])


def test_the_records_counted_in_python() -> None:
    assert close(from_records(records(), SINCE, UNTIL)) == EXPECTED


def test_the_store_counts_the_same_in_sql(store: Store) -> None:
    for record in records():
        store.upsert_call(record)
    assert store.flush()
    assert close(store.call_stats(SINCE, UNTIL)) == EXPECTED
    empty = store.call_stats(M + 3600, M + 7200)
    assert empty == CallStats(M + 3600, M + 7200, {}, {}, Percentiles(0, {}), {})


def test_the_store_ranks_many_set_up_times(store: Store) -> None:
    """200 set-ups of 0.01 to 2.00 s, stored in a shuffled order: p50 is the 100th, p95
    the 190th, p99 the 198th; the calls spread over four minutes."""
    order = [(i * 73) % 200 for i in range(200)]
    for i in order:
        store.upsert_call(ended(f"rtc_{i:03d}", M + i, setup=(i + 1) / 100))
    assert store.flush()
    stats = close(store.call_stats(M, M + 240))
    assert stats.setup == Percentiles(200, {50: 1.0, 95: 1.9, 99: 1.98})
    assert stats.answered == {int(M): 60, int(M) + 60: 60, int(M) + 120: 60, int(M) + 180: 20}
    assert stats.failed == {}


def test_a_call_under_way_counts_once_answered(tmp_path: Path) -> None:
    """The store holds the last record of each call, those under way too."""
    with SqliteStore(tmp_path / "calls.db") as store:
        store.upsert_call(call("rtc_live", state="active", created_at=M + 5, answered_at=M + 5.5))
        assert store.flush()
        stats = store.call_stats(M, M + 60)
    assert stats.answered == {int(M): 1} and stats.setup.values == {50: 0.5, 95: 0.5, 99: 0.5}


@pytest.mark.parametrize(("n", "ranks"), [(1, (1, 1, 1)), (4, (2, 4, 4)), (20, (10, 19, 20)),
                                          (100, (50, 95, 99)), (101, (51, 96, 100))])
def test_nearest_rank(n: int, ranks: tuple[int, int, int]) -> None:
    assert (rank(50, n), rank(95, n), rank(99, n)) == ranks
    values = [float(v) for v in range(1, n + 1)]
    assert nearest_rank(values) == Percentiles(n, dict(zip((50, 95, 99), map(float, ranks),
                                                           strict=True)))


def test_no_values_no_percentiles() -> None:
    assert nearest_rank([]) == Percentiles(0, {})
    assert bucket_percentiles([]) == (0, {})
    assert bucket_percentiles([(0.5, 0.0), (float("inf"), 0.0)]) == (0, {})


def test_bucket_percentiles_are_the_bounds_they_fall_under() -> None:
    inf = float("inf")
    # 0.3, 0.3, 0.6, 12: cumulative counts per upper bound
    buckets = [(0.25, 0.0), (0.5, 2.0), (0.75, 3.0), (10.0, 3.0), (inf, 4.0)]
    assert bucket_percentiles(buckets) == (4, {50: 0.5, 95: inf, 99: inf})
    hundred = [(0.1, 50.0), (1.0, 95.0), (2.0, 99.0), (inf, 100.0)]
    assert bucket_percentiles(hundred) == (100, {50: 0.1, 95: 1.0, 99: 2.0})


def test_minute_of() -> None:
    assert minute_of(M) == M and minute_of(M + 59.999) == M and minute_of(M - 0.001) == M - 60
