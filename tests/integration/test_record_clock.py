"""One clock in every record: a real transfer's `requested_at` and steps' `at` are Unix time,
like `created_at` and the timeline, in the API's record, the store and the transfer webhook."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from sipbridge.store import SqliteStore
from tests.integration.appside import App, start_app
from tests.integration.gateway import Gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def app(start_gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[App]:
    yield from start_app(start_gateway, tmp_path, transfer_fallback="none")


def times(record: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The first transfer's times: the API's record (JSON) or the store's (a CallRecord)."""
    transfer = record["transfers"][0]
    return [("requested_at", transfer["requested_at"]),
            *((f"steps[{s['status']}].at", s["at"]) for s in transfer["steps"])]


def test_a_real_transfers_times_are_unix_time(app: App) -> None:
    sipp = app.call("transfer_success.xml", timeout=40, recv_timeout=20)
    call_id = app.incoming().data.call_id
    app.client.realtime.calls.accept(call_id, type="realtime")
    app.wait_for(call_id, lambda r: r["state"] == "active", "active")
    app.client.realtime.calls.refer(call_id, target_uri="tel:+61420351258")
    assert sipp.result(timeout=60).ok
    record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended")
    now = time.time()
    created = record["created_at"]
    assert record["transfers"][0]["status"] == "succeeded"
    for name, at in times(record):
        assert created <= at <= now and now - at < 10, (name, at, created, now)
    steps = [e["at"] for e in record["timeline"] if e["kind"] == "transfer"]
    assert steps == [at for name, at in times(record)[1:]]  # the timeline's, the same
    hook = app.webhook()
    event = hook if isinstance(hook, dict) else hook.model_dump()
    assert event["type"] == "realtime.call.transfer.succeeded"
    assert abs(event["created_at"] - now) < 10
    store = SqliteStore(str(app.gateway.config["store"]))
    try:
        deadline = time.monotonic() + 10
        while (stored := store.get_call(call_id)) is None or stored["state"] != "ended":
            if time.monotonic() > deadline:
                pytest.fail(f"the store has no ended record of {call_id}: {stored}")
            time.sleep(0.1)
    finally:
        store.close()
    assert times(stored) == times(record)
