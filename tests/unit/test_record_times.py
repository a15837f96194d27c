"""One clock in every record: each time a call record shows (the call's, its timeline's, its
transfers' and their steps', its webhook deliveries') is Unix time in seconds, while the
call manager's clock is the event loop's; and the OpenAPI document says so for each."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.api.webhooks import WebhookAttempt, WebhookDelivery
from sipbridge.calls.manager import CallManager
from sipbridge.metrics import Metrics
from sipbridge.realtime.sideband import SidebandHubs
from sipbridge.records import CallRecord
from sipbridge.registrations import Registrations
from sipbridge.store import Store
from tests.unit.callharness import ack, app_call

TIMES = {
    "created_at", "answered_at", "ended_at", "timeline[].at", "transfers[].requested_at",
    "transfers[].steps[].at", "webhooks[].attempts[].started_at",
}


def is_time(key: str) -> bool:
    return key == "at" or key.endswith("_at")


def record_times(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every time field in a record, lists written `name[]`."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else key
            if is_time(key):
                yield name, item
            yield from record_times(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from record_times(item, f"{path}[]")


def schema_times(schema: dict[str, Any], components: dict[str, Any],
                 path: str = "") -> Iterator[tuple[str, str]]:
    """(path, description) of every time property a response schema documents."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    for option in schema.get("anyOf", ()):
        yield from schema_times(option, components, path)
    if "items" in schema:
        yield from schema_times(schema["items"], components, f"{path}[]")
    for key, prop in schema.get("properties", {}).items():
        name = f"{path}.{key}" if path else key
        if is_time(key):
            yield name, str(prop.get("description", ""))
        yield from schema_times(prop, components, name)


def a_call_with_a_transfer() -> CallRecord:
    h, call = app_call()
    h.now = 12.5  # the loop's clock: seconds since the host booted, not since 1970
    h.manager.accept(call.id, {"type": "realtime"})
    h.send(ack(h.sent[-1].to.tag or ""))
    job = h.manager.refer(call.id, "tel:+61420351258")
    h.advance(8.0)  # no answer to the REFER: timed out after refer_timeout
    h.manager.hangup(call.id)
    call.webhooks.append(WebhookDelivery("evt_1", "realtime.call.incoming", [
        WebhookAttempt(1, time.time(), 3.0, 200, None)], "delivered"))
    assert job.machine.requested_at == 12.5  # the machine keeps the loop's clock
    return call.to_dict()


def test_every_time_in_a_call_record_is_unix_time() -> None:
    record = a_call_with_a_transfer()
    now = time.time()
    times = list(record_times(record))
    assert {path for path, _ in times} == TIMES
    for path, value in times:
        assert isinstance(value, float), (path, value)
        assert abs(value - now) < 60 and abs(value - record["created_at"]) < 60, (path, value)
    transfer = record["transfers"][0]
    steps = transfer["steps"]
    assert [s["status"] for s in steps] == ["requested", "sent", "timed_out"]
    assert [round(s["at"] - transfer["requested_at"], 3) for s in steps] == [0.0, 0.0, 8.0]
    entries = [e for e in record["timeline"] if e["kind"] == "transfer"]
    assert [e["at"] for e in entries] == [s["at"] for s in steps]  # the same times
    assert all(set(e) <= {"at", "kind", "transfer_id", *steps[0]} for e in entries)


@dataclass
class Control:
    """A gateway that has no calls and no store: the app is made for its OpenAPI document."""

    calls: CallManager | None = None
    sideband: SidebandHubs = field(default_factory=SidebandHubs)
    store: Store | None = None
    metrics: Metrics = field(default_factory=lambda: Metrics(lambda: 0))
    registrations: Registrations | None = None


def test_the_openapi_document_says_every_time_is_unix_time() -> None:
    with TestClient(create_app(Control(), [])) as http:
        document = http.get("/openapi.json").json()
    components = document["components"]["schemas"]
    paths = document["paths"]

    def documented(path: str) -> dict[str, str]:
        response = paths[path]["get"]["responses"]["200"]["content"]["application/json"]
        return dict(schema_times(response["schema"], components))

    one = documented("/v1/realtime/calls/{call_id}")
    assert set(one) == TIMES
    listed = documented("/v1/realtime/calls")
    assert set(listed) == {f"data[].{p}" for p in TIMES if not p.startswith("timeline")}
    for path, description in (*one.items(), *listed.items()):
        assert description.startswith("Unix time, seconds"), (path, description)
    since = next(p for p in paths["/v1/realtime/calls"]["get"]["parameters"]
                 if p["name"] == "since")
    assert since["description"].startswith("Unix time, seconds")
