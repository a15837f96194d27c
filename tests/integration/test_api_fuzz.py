"""Schemathesis fuzzes the REST API from its own OpenAPI document: whatever it sends,
the gateway answers without a server error, and every error is in OpenAI's shape."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from tests.integration.gateway import Gateway

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"sipbridge fuzz secret").decode()
KEY = "sk-sipbridge-fuzz"


def test_no_server_errors_and_openai_error_shape(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(webhook_url="http://127.0.0.1:9/unused", webhook_secret=SECRET,
                            api_key=[KEY])
    schema = schemathesis.openapi.from_url(
        f"http://127.0.0.1:{gateway.http_port}/openapi.json",
        headers={"Authorization": f"Bearer {KEY}"})  # the schema wants the key too
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an operation it cannot read: {result}"
        operations.append(result.ok())
    assert len(operations) >= 6  # accept, reject, refer, hangup, list, get
    calls = 0
    # One session for the run: the requests go over kept-alive connections instead of a
    # new session and connection each; each request is still sent and checked alone.
    with requests.Session() as session:
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck),
                      database=None)
            def fuzz(case: Any) -> None:
                nonlocal calls
                for key in (KEY, "wrong"):
                    response = case.call(session=session,
                                         headers={"Authorization": f"Bearer {key}"}, timeout=10)
                    calls += 1
                    assert response.status_code < 500, (case.as_curl_command(),
                                                        response.text[:500])
                    if response.status_code >= 400:
                        error = response.json()["error"]
                        assert isinstance(error["message"], str) and error["message"]
                        assert set(error) == {"message", "type", "param", "code"}
                    if key == "wrong":
                        assert response.status_code == 401

            fuzz()
    print(f"schemathesis: {calls} requests over {len(operations)} operations")
    assert calls >= 2 * len(operations)
    assert gateway.process.poll() is None  # still serving
