"""The figures of the dashboard's overview (`/dashboard/overview`, refreshed from
`/dashboard/api/overview`): the cluster's nodes and their state, the calls under way,
calls per minute over a window (answered, failed, refused with 503), the transfers by
mode and outcome, and the set-up and agent-turn latencies.

Any node shows the whole cluster: the calls' figures come from the store the nodes share
(`Store.call_stats`, worked out in SQL, what counts as what in `sipbridge.callstats`),
the nodes and their refusals from `ApiState.nodes`. Without a store the calls' figures
are this node's, from the calls it holds in memory (those under way and the last
`RECENT_CALLS` ended); without `nodes` (the fakes of unit tests) the nodes and the
refusals are not known (None). The calls under way are those the nodes last reported,
gone nodes left out; without `nodes`, this node's.

The agent-turn latency is not on the calls' records: it is this node's histogram since
it started (`sipbridge_model_response_seconds`: the caller's speech stopped to the
model's first audio), each percentile the bound of the bucket it falls under (None:
above the last bound, `top`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from sipbridge.api.calllookup import manager
from sipbridge.api.state import ApiState
from sipbridge.callstats import (
    MINUTE,
    UNDER_WAY,
    CallStats,
    Percentiles,
    bucket_percentiles,
    from_records,
)
from sipbridge.metrics import Metrics
from sipbridge.records import NodeRecord

DEFAULT_MINUTES = 60
WINDOWS = (15, 60, 180, 360)  # the windows the page offers, in minutes
MAX_MINUTES = 360
KINDS = ("answered", "failed", "refused")  # the chart's bars, bottom up


def window_start(now: float, minutes: int) -> float:
    """The start of a window of `minutes` whole minutes, the last one `now`'s."""
    return float(math.floor(now / MINUTE) * MINUTE - (minutes - 1) * MINUTE)


def frame(base: str, minutes: int) -> str:
    """The overview page's content, without figures: its script fills it in from the
    JSON of `figures` (every value set as text)."""
    current = ' aria-current="true"'
    windows = "".join(f'<a href="{base}/overview?minutes={m}"{current if m == minutes else ""}>'
                      f"{_span(m)}</a>" for m in WINDOWS)
    return (
        '<section class="panel" id="cluster"><div class="panel-head"><h1>Overview</h1>'
        '<span id="status" class="muted" role="status">loading...</span></div>'
        '<h2>Nodes</h2><div class="table-wrap"><table class="nodes"><thead><tr>'
        '<th>Node</th><th>State</th><th class="num">Live calls</th>'
        '<th class="num">Refused (503)</th><th class="num">Heartbeat</th><th>Up since</th>'
        '<th>API</th></tr></thead><tbody id="nodes"></tbody></table></div>'
        '<p id="nodes-unknown" class="empty" hidden>The nodes are not known.</p></section>'
        '<div class="cards">'
        '<section class="panel card" id="live"><h2>Live calls</h2>'
        '<p class="big" id="live-calls">-</p><p class="muted" id="source"></p></section>'
        '<section class="panel card" id="setup"><h2>Set-up latency</h2>'
        '<dl class="figures" id="setup-figures"></dl><p class="muted">INVITE received to '
        '200 OK sent, inbound calls answered in the window</p></section>'
        '<section class="panel card" id="turns"><h2>Agent turn latency</h2>'
        '<dl class="figures" id="turn-figures"></dl><p class="muted" id="turn-note">'
        "</p></section></div>"
        '<section class="panel" id="per-minute"><div class="panel-head">'
        f"<h2>Calls per minute, last {_span(minutes)}</h2>"
        f'<nav class="windows">{windows}</nav></div>'
        '<div id="chart" class="chart-wrap"></div><ul class="legend" id="legend"></ul>'
        "</section>"
        '<section class="panel" id="transfers"><h2>Transfers in the window</h2>'
        '<table class="outcomes"><thead><tr><th>Mode</th><th>Outcome</th>'
        '<th class="num">Transfers</th></tr></thead><tbody id="transfer-outcomes"></tbody>'
        '</table><p id="no-transfers" class="empty" hidden>No transfers.</p></section>'
        '<noscript><p class="empty">This page draws its figures with JavaScript; they are '
        f'at <a href="{base}/api/overview">{base}/api/overview</a>.</p></noscript>')


def _span(minutes: int) -> str:
    """"15 min", "1 h"."""
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"


async def figures(state: ApiState, minutes: int, now: float,
                  tone: Callable[[object, bool], str]) -> dict[str, object]:
    """The overview's figures over the last `minutes` minutes, as its JSON, each transfer
    outcome with its `tone(status, final)` (the dashboard's colour); ApiError 503 while
    the gateway starts."""
    calls = manager(state.control)
    since = window_start(now, minutes)
    store = state.control.store
    if store is not None:
        stats = await asyncio.to_thread(store.call_stats, since, now)
    else:
        held = (*calls.calls.values(), *calls.recent.values())
        stats = from_records((c.to_dict(timeline=False) for c in held), since, now)
    nodes: list[NodeRecord] | None = None
    refusals: dict[int, int] | None = None
    if state.nodes is not None:
        nodes = await state.nodes.nodes()
        refusals = await state.nodes.refusals(since)
    live = (len(calls.calls) if nodes is None
            else sum(n["live_calls"] for n in nodes if n["state"] != "gone"))
    turns = _turns(state.control.metrics)
    if turns is not None:
        turns["node"] = next((n["name"] for n in nodes or [] if n["this"]), None)
    return {
        "now": now, "since": since, "minutes": minutes,
        "source": "store" if store is not None else "memory",
        "nodes": nodes, "live_calls": live,
        **_per_minute(stats, minutes, refusals),
        "setup": _percentiles(stats.setup),
        "transfers": [{"mode": mode, "outcome": outcome, "count": n,
                       "tone": tone(outcome, outcome != UNDER_WAY)}
                      for (mode, outcome), n in sorted(stats.transfers.items())],
        "agent_turns": turns,
    }


def _per_minute(stats: CallStats, minutes: int, refusals: dict[int, int] | None
                ) -> dict[str, object]:
    """Each minute of the window, the empty ones too, and the window's totals."""
    first = int(stats.since)
    rows = [{"minute": m, "answered": stats.answered.get(m, 0), "failed": stats.failed.get(m, 0),
             "refused": None if refusals is None else refusals.get(m, 0)}
            for m in range(first, first + minutes * MINUTE, MINUTE)]
    totals: dict[str, int | None] = {kind: sum(int(r[kind] or 0) for r in rows)
                                     for kind in KINDS}
    if refusals is None:
        totals["refused"] = None
    return {"per_minute": rows, "totals": totals}


def _percentiles(found: Percentiles) -> dict[str, object]:
    return {"count": found.count, **{f"p{p}": v for p, v in found.values.items()}}


def _turns(metrics: Metrics | None) -> dict[str, object] | None:
    """This node's agent-turn latency: its histogram's count and percentiles."""
    if metrics is None:
        return None
    buckets = sorted(
        (float(s.labels["le"]), s.value) for m in metrics.model_latency.collect()
        for s in m.samples if s.name.endswith("_bucket"))
    n, bounds = bucket_percentiles(buckets)
    finite = [b for b, _ in buckets if math.isfinite(b)]
    return {"count": n, "top": finite[-1] if finite else None,
            **{f"p{p}": b if math.isfinite(b) else None for p, b in bounds.items()}}
