"""What the HTTP API shows to a stranger once API keys are set, and how it refuses bodies.

`/metrics` and `/openapi.json` sit outside `/v1/` but tell a stranger how busy the gateway
is and what it can do: with keys set they want one, as a Bearer token (Prometheus'
`authorization`) or as the password of HTTP Basic auth (Prometheus' `basic_auth`, a
browser). `metrics_auth` relaxes that for `/metrics` alone: "auto" (the default) leaves it
open while the API listens on loopback only, where Prometheus scrapes it without
credentials; "key" always wants the key, "open" never. A body over the limit gets 413 in
OpenAI's error shape whether or not it says its length: a chunked upload is counted as it
arrives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sipbridge.api.app import MAX_BODY, BodyLimit, create_app
from sipbridge.config import ConfigError, load_config
from sipbridge.gateway import metrics_open
from sipbridge.metrics import Metrics
from tests.unit.apifakes import KEY, Control, Manager, Store, basic

KEYED = ["/metrics", "/openapi.json"]


class Calls(Manager):
    """No calls at all: accepting one is the manager's "not found"."""

    def accept(self, call_id: str, *_: object) -> None:
        self.get(call_id)


def control() -> Control:
    return Control(calls=Calls(), store=Store(), metrics=Metrics(lambda: 0))


def client(keys: list[str], *, open_metrics: bool = False) -> TestClient:
    return TestClient(BodyLimit(create_app(control(), keys, open_metrics=open_metrics),
                                MAX_BODY))


@pytest.mark.parametrize("path", KEYED)
@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer sk-wrong"},
    basic("prometheus", "sk-wrong"),
    {"Authorization": f"Token {KEY}"},
    {"Authorization": "Basic %%%"},
], ids=["none", "wrong-bearer", "wrong-basic", "other-scheme", "garbage"])
def test_with_keys_set_metrics_and_the_schema_want_one(path: str,
                                                       headers: dict[str, str]) -> None:
    reply = client([KEY]).get(path, headers=headers)
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"
    assert "Basic" in reply.headers["www-authenticate"]
    assert "sipbridge_" not in reply.text and "paths" not in reply.text


@pytest.mark.parametrize("path", KEYED)
@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {KEY}"},
    basic("prometheus", KEY),
], ids=["bearer", "basic"])
def test_the_key_as_bearer_or_basic_password_opens_them(path: str,
                                                        headers: dict[str, str]) -> None:
    reply = client(["sk-other", KEY]).get(path, headers=headers)
    assert reply.status_code == 200, reply.text
    assert ("sipbridge_" in reply.text) if path == "/metrics" else ("paths" in reply.json())


@pytest.mark.parametrize("path", KEYED)
def test_with_no_keys_they_stay_open(path: str) -> None:
    assert client([]).get(path).status_code == 200


@pytest.mark.parametrize(("http", "metrics_auth", "is_open"), [
    ("127.0.0.1:8080", "auto", True),
    ("[::1]:8080", "auto", True),
    ("localhost:8080", "auto", True),
    ("0.0.0.0:8080", "auto", False),
    ("192.0.2.1:8080", "auto", False),
    ("127.0.0.1:8080", "key", False),
    ("0.0.0.0:8080", "open", True),
])
def test_metrics_auth_opens_metrics_on_loopback_by_default(http: str, metrics_auth: str,
                                                           is_open: bool) -> None:
    config = load_config(http=http, metrics_auth=metrics_auth, api_key=[KEY])
    assert metrics_open(config) is is_open


def test_open_metrics_opens_metrics_alone() -> None:
    http = client([KEY], open_metrics=True)
    reply = http.get("/metrics")
    assert reply.status_code == 200 and "sipbridge_" in reply.text
    assert http.get("/openapi.json").status_code == 401
    assert http.get("/v1/realtime/calls").status_code == 401


def test_metrics_auth_takes_only_its_three_values() -> None:
    with pytest.raises(ConfigError, match="metrics_auth"):
        load_config(metrics_auth="sometimes")


def test_v1_still_takes_bearer_only() -> None:
    assert client([KEY]).get("/v1/realtime/calls", headers=basic("x", KEY)).status_code == 401


def chunks(total: int, size: int = 64 << 10) -> Iterator[bytes]:
    """A JSON body of `total` bytes sent in pieces, so it goes without a Content-Length."""
    head = b'{"type": "realtime", "instructions": "'
    yield head
    left = total - len(head) - 2
    while left > 0:
        n = min(size, left)
        yield b"x" * n
        left -= n
    yield b'"}'


def test_a_chunked_body_over_the_limit_is_413_not_400() -> None:
    reply = client([KEY]).post("/v1/realtime/calls/rtc_x/accept", content=chunks(10 << 20),
                               headers={"Authorization": f"Bearer {KEY}",
                                        "Content-Type": "application/json"})
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"]["code"] == "request_too_large"


def test_a_chunked_body_under_the_limit_reaches_the_app_whole() -> None:
    body = json.dumps({"type": "realtime", "instructions": "y" * 300_000}).encode()
    pieces = iter([body[:1000], body[1000:200_000], body[200_000:]])
    reply = client([KEY]).post("/v1/realtime/calls/rtc_x/accept", content=pieces,
                               headers={"Authorization": f"Bearer {KEY}",
                                        "Content-Type": "application/json"})
    # The body was read whole and valid: the call, not the body, is what is missing.
    assert reply.status_code == 404, reply.text
    assert reply.json()["error"]["code"] == "not_found"
