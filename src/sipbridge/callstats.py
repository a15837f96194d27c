"""Figures over the calls of a window, as the dashboard's overview shows them (`CallStats`):
calls per minute answered and failed, the set-up latency's percentiles, and the
transfers' outcomes. The store works them out in SQL (`SqlStore.call_stats`); without a
store the same figures come from the records in memory (`from_records`). Both count by
the definitions here, in Python and in SQL side by side:

- a call counts in the minute it came in (`created_at`), the minute's start a multiple of
  60 in Unix time;
- answered: `answered_at` set, and not ended abnormally;
- failed: ended without being answered (rejected by the application or a policy, the
  caller's CANCEL, no accept in time, an outbound call the callee did not take), or ended
  abnormally (`end_reason` "abnormal: ...": its gateway stopped under it);
- a call still ringing is neither, yet;
- set-up: an inbound call's INVITE received (`created_at`) to its 200 OK sent
  (`answered_at`), over the answered ones; outbound calls are left out (theirs is the
  callee's ringing);
- transfers: each transfer of the window's calls, by mode ("blind", "warm") and outcome:
  its final status ("succeeded", "failed", "connected", ...), `UNDER_WAY` until it has one.

Percentiles are nearest-rank: of n values in order, the p-th is the ceil(p n / 100)-th.

The records carry no latency of the agent's turns: the model's response time (the
caller's speech stopped to its first audio) is only in each node's Prometheus histogram,
from which `bucket_percentiles` reads the bucket bound each percentile falls under.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sipbridge.records import CallRecord

MINUTE = 60
PERCENTILES = (50, 95, 99)
UNDER_WAY = "under way"  # the outcome of a transfer without a final status yet

ABNORMAL_SQL = "substr(end_reason, 1, 8) = 'abnormal'"
ANSWERED_SQL = f"answered_at IS NOT NULL AND NOT COALESCE({ABNORMAL_SQL}, FALSE)"
FAILED_SQL = f"(ended_at IS NOT NULL AND answered_at IS NULL OR COALESCE({ABNORMAL_SQL}, FALSE))"


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Percentiles of `count` values: p -> value (none when there were no values)."""

    count: int
    values: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallStats:
    """The figures of the calls that came in from `since` to `until` (see the module)."""

    since: float
    until: float
    answered: dict[int, int]  # the minute's start -> calls answered (minutes with any)
    failed: dict[int, int]
    setup: Percentiles  # seconds
    transfers: dict[tuple[str, str], int]  # (mode, outcome) -> transfers


def minute_of(at: float) -> int:
    """The start of the minute `at` falls in."""
    return math.floor(at / MINUTE) * MINUTE


def rank(p: int, n: int) -> int:
    """The nearest rank of the p-th percentile of n values (1 for the first)."""
    return max(1, -(-p * n // 100))


def nearest_rank(ordered: list[float]) -> Percentiles:
    """`PERCENTILES` of values in ascending order."""
    n = len(ordered)
    return Percentiles(n, {p: ordered[rank(p, n) - 1] for p in PERCENTILES} if n else {})


def abnormal(call: Mapping[str, object]) -> bool:
    return str(call.get("end_reason") or "").startswith("abnormal")


def answered(call: Mapping[str, object]) -> bool:
    return call.get("answered_at") is not None and not abnormal(call)


def failed(call: Mapping[str, object]) -> bool:
    return ((call.get("ended_at") is not None and call.get("answered_at") is None)
            or abnormal(call))


def transfer_key(transfer: Mapping[str, object]) -> tuple[str, str]:
    """A transfer's (mode, outcome)."""
    mode = str(transfer.get("mode") or "blind")
    return mode, str(transfer.get("status")) if transfer.get("final") else UNDER_WAY


def count_transfers(transfers: Iterable[object], into: dict[tuple[str, str], int]) -> None:
    """Add each transfer of a call's list to the counts by (mode, outcome)."""
    for t in transfers:
        if isinstance(t, Mapping):
            key = transfer_key(t)
            into[key] = into.get(key, 0) + 1


def from_records(calls: Iterable[CallRecord], since: float, until: float) -> CallStats:
    """The figures of the records that came in from `since` to `until`."""
    answers: dict[int, int] = {}
    failures: dict[int, int] = {}
    setup: list[float] = []
    transfers: dict[tuple[str, str], int] = {}
    for call in calls:
        created = call.get("created_at")
        if not isinstance(created, (int, float)) or not since <= created < until:
            continue
        minute = minute_of(created)
        if answered(call):
            answers[minute] = answers.get(minute, 0) + 1
        elif failed(call):
            failures[minute] = failures.get(minute, 0) + 1
        at = call.get("answered_at")
        if isinstance(at, (int, float)) and call.get("direction") != "outbound":
            setup.append(at - created)
        count_transfers(call.get("transfers") or [], transfers)
    return CallStats(since, until, answers, failures, nearest_rank(sorted(setup)), transfers)


def bucket_percentiles(buckets: list[tuple[float, float]]) -> tuple[int, dict[int, float]]:
    """From a histogram's cumulative buckets, (upper bound, count so far) in ascending
    order and the last one +Inf: how many values, and for each of `PERCENTILES` the
    upper bound of the bucket its nearest rank falls in (math.inf: above every finite
    bound)."""
    n = int(buckets[-1][1]) if buckets else 0
    if not n:
        return 0, {}
    found: dict[int, float] = {}
    for p in PERCENTILES:
        wanted = rank(p, n)
        found[p] = next(bound for bound, count in buckets if count >= wanted)
    return n, found
