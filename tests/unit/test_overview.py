"""The dashboard's overview against the API app with a fake gateway: its figures' JSON with
known calls (answered and failed per minute, refusals from the nodes, set-up percentiles,
transfer outcomes, the agent's turns from the node's histogram), the nodes as the store
knows them (their names never in the page's HTML), the figures without a store or
without nodes, the links between the views, and bad input."""

from __future__ import annotations

import math
import re
import time

import pytest
from fastapi.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.calls.call import Call, CallState
from sipbridge.metrics import Metrics
from sipbridge.records import CallRecord, NodeRecord
from tests.unit.apifakes import KEY, Control, Manager, Nodes, Store, basic
from tests.unit.storerecords import call

HOSTILE = '<img src=x onerror="alert(1)">'


def record(call_id: str, at: float, setup: float | None, *, reason: str = "remote_bye",
           transfers: list[dict[str, object]] | None = None, direction: str = "inbound"
           ) -> CallRecord:
    return call(call_id, state="ended", created_at=at,
                answered_at=None if setup is None else at + setup, ended_at=at + 20,
                end_reason=reason, direction=direction, transfers=transfers or [])


def transfer(mode: str, status: str, final: bool = True) -> dict[str, object]:
    return {"id": f"tr_{status}", "mode": mode, "status": status, "final": final}


def stored(m0: int) -> list[CallRecord]:
    """In minute m0 three calls answered and one failed; in the next one a call answered
    that ended abnormally (failed); before them an outbound call; and one two hours ago."""
    return [
        record("rtc_a", m0 + 1, 0.2, transfers=[transfer("blind", "failed")]),
        record("rtc_b", m0 + 20, 0.4, transfers=[transfer("warm", "connected")]),
        record("rtc_c", m0 + 40, 0.6, transfers=[transfer("blind", "succeeded")]),
        record("rtc_d", m0 + 50, None, reason="cancelled"),
        record("rtc_e", m0 + 61, 1.0, reason="abnormal: gateway_restarted",
               transfers=[transfer("blind", "accepted", final=False)]),
        record("rtc_out", m0 - 60, 30.0, direction="outbound"),
        record("rtc_old", m0 - 7200, 5.0, transfers=[transfer("blind", "failed")]),
    ]


def node(name: str, state: str, live: int, *, this: bool = False) -> NodeRecord:
    return {"name": name, "api_url": f"http://{name}.example:8080", "state": state,
            "started_at": 1_700_000_000.0, "heartbeat_age": 1.5, "live_calls": live,
            "refused": 7, "this": this}


@pytest.fixture
def m0() -> int:
    """The start of the minute before last: in a window of an hour whatever the clock does
    while a test runs."""
    return math.floor(time.time() / 60) * 60 - 120


@pytest.fixture
def nodes(m0: int) -> Nodes:
    return Nodes([node(HOSTILE, "up", 1, this=True), node("node-b", "draining", 2),
                  node("node-c", "gone", 5)],
                 refused={m0: 2, m0 + 60: 1, m0 - 7200: 9})


@pytest.fixture
def control(m0: int) -> Control:
    return Control(calls=Manager(), store=Store(*stored(m0)))


def client(control: Control, nodes: Nodes | None = None) -> TestClient:
    return TestClient(create_app(control, [KEY], nodes=nodes), headers=basic("ops", KEY))


def minute(data: dict[str, object], at: float) -> dict[str, object]:
    rows = data["per_minute"]
    assert isinstance(rows, list)
    found: dict[str, object] = next(r for r in rows if r["minute"] == at)
    return found


def test_the_figures_of_known_calls(control: Control, nodes: Nodes, m0: int) -> None:
    reply = client(control, nodes).get("/dashboard/api/overview")
    assert reply.status_code == 200 and reply.headers["x-content-type-options"] == "nosniff"
    data = reply.json()
    assert data["minutes"] == 60 and data["source"] == "store"
    rows = data["per_minute"]
    assert len(rows) == 60 and rows[-1]["minute"] == math.floor(data["now"] / 60) * 60
    assert [r["minute"] for r in rows] == list(range(rows[0]["minute"], rows[0]["minute"]
                                                     + 3600, 60))
    assert data["since"] == rows[0]["minute"] and nodes.asked == [data["since"]]
    assert minute(data, m0) == {"minute": m0, "answered": 3, "failed": 1, "refused": 2}
    assert minute(data, m0 + 60) == {"minute": m0 + 60, "answered": 0, "failed": 1,
                                     "refused": 1}
    assert minute(data, m0 - 60) == {"minute": m0 - 60, "answered": 1, "failed": 0,
                                     "refused": 0}
    assert data["totals"] == {"answered": 4, "failed": 2, "refused": 3}
    setup = data["setup"]
    assert setup["count"] == 4  # the outbound call's 30 s of ringing is no set-up
    assert (setup["p50"], setup["p95"], setup["p99"]) == pytest.approx((0.4, 1.0, 1.0))
    assert data["transfers"] == [
        {"mode": "blind", "outcome": "failed", "count": 1, "tone": "bad"},
        {"mode": "blind", "outcome": "succeeded", "count": 1, "tone": "good"},
        {"mode": "blind", "outcome": "under way", "count": 1, "tone": "pending"},
        {"mode": "warm", "outcome": "connected", "count": 1, "tone": "good"},
    ]
    assert data["live_calls"] == 3  # the gone node's five are not under way any more
    assert [n["name"] for n in data["nodes"]] == [HOSTILE, "node-b", "node-c"]
    assert data["nodes"][0] == node(HOSTILE, "up", 1, this=True)
    assert data["agent_turns"] is None  # the fake gateway has no metrics
    assert control.store.stats_reads == 1


def test_a_shorter_window(control: Control, nodes: Nodes, m0: int) -> None:
    data = client(control, nodes).get("/dashboard/api/overview?minutes=1").json()
    assert [r["minute"] for r in data["per_minute"]] == [data["since"]]
    assert data["since"] == math.floor(data["now"] / 60) * 60 >= m0 + 120
    assert data["totals"] == {"answered": 0, "failed": 0, "refused": 0}
    assert data["setup"] == {"count": 0} and data["transfers"] == []


def test_node_names_stay_out_of_the_pages_html(control: Control, nodes: Nodes) -> None:
    http = client(control, nodes)
    page = http.get("/dashboard/overview")
    assert page.status_code == 200
    assert HOSTILE not in page.text and "<img" not in page.text and "node-b" not in page.text
    assert 'data-page="overview" data-source="/dashboard/api/overview?minutes=60"' in page.text
    assert re.findall(r"<script[^>]*>", page.text) == [
        '<script src="/dashboard/static/dashboard.js" defer>']
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    data = http.get("/dashboard/api/overview")
    assert data.headers["content-type"] == "application/json"
    assert data.json()["nodes"][0]["name"] == HOSTILE  # data, shown by the script as text
    script = http.get("/dashboard/static/dashboard.js").text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "outerHTML" not in script and "document.write" not in script


def test_without_a_store_the_figures_are_this_nodes(control: Control, m0: int) -> None:
    """Without a store, the calls in memory (live and recently ended); without nodes, the
    nodes and refusals are not known."""
    control.store = None
    live = Call(id="rtc_live", leg_id="l1", caller="sip:a@x", callee="sip:b@y",
                created_at=m0 + 5, state=CallState.ACTIVE, answered_at=m0 + 5.5)
    gone = Call(id="rtc_gone", leg_id="l2", caller="sip:a@x", callee="sip:b@y",
                created_at=m0 + 6, state=CallState.ENDED, ended_at=m0 + 9,
                end_reason="rejected")
    ringing = Call(id="rtc_ringing", leg_id="l3", caller="sip:a@x", callee="sip:b@y",
                   created_at=m0 + 7)
    control.calls = Manager(live, ringing)
    control.calls.recent[gone.id] = gone
    data = client(control).get("/dashboard/api/overview").json()
    assert data["source"] == "memory" and data["nodes"] is None
    assert data["live_calls"] == 2
    assert minute(data, m0) == {"minute": m0, "answered": 1, "failed": 1, "refused": None}
    assert data["totals"] == {"answered": 1, "failed": 1, "refused": None}
    assert data["setup"] == {"count": 1, "p50": 0.5, "p95": 0.5, "p99": 0.5}


def test_the_agents_turns_from_the_nodes_histogram(control: Control, nodes: Nodes) -> None:
    control.metrics = Metrics(active_calls=lambda: 0)
    for seconds in (0.3, 0.3, 0.6, 12.0):
        control.metrics.model_latency.observe(seconds)
    turns = client(control, nodes).get("/dashboard/api/overview").json()["agent_turns"]
    assert turns == {"count": 4, "top": 10.0, "p50": 0.5, "p95": None, "p99": None,
                     "node": HOSTILE}


def test_the_views_link_to_each_other(control: Control) -> None:
    http = client(control)
    calls = http.get("/dashboard").text
    assert ('<nav class="views"><a href="/dashboard" aria-current="page">Calls</a>'
            '<a href="/dashboard/overview">Overview</a></nav>') in calls
    overview = http.get("/dashboard/overview?minutes=15").text
    assert ('<a href="/dashboard">Calls</a><a href="/dashboard/overview" '
            'aria-current="page">Overview</a>') in overview
    assert '<a href="/dashboard/overview?minutes=15" aria-current="true">15 min</a>' in overview
    assert '<a href="/dashboard/overview?minutes=60">1 h</a>' in overview
    assert "Calls per minute, last 15 min" in overview
    assert 'data-source="/dashboard/api/overview?minutes=15"' in overview


def test_bad_input_and_a_gateway_starting(control: Control) -> None:
    http = client(control)
    for query in ("minutes=0", "minutes=abc", "minutes=361"):
        assert http.get(f"/dashboard/api/overview?{query}").status_code == 400
        assert http.get(f"/dashboard/overview?{query}").status_code == 400
    control.calls = None
    reply = http.get("/dashboard/api/overview")
    assert reply.status_code == 503 and reply.json()["error"]["type"] == "server_error"
