"""The API, the sideband and the dashboard over HTTPS (`http_tls_cert`, `http_tls_key`).

OpenAI's own sample, as an application writes it, talks to `https://` and `wss://`: here
the official `openai` SDK drives a SIPp call with only its `base_url` changed to
`https://127.0.0.1:PORT/v1`, trusting a throwaway CA the way any OpenSSL client does
(`SSL_CERT_FILE`), which also makes the gateway's webhooks to an `https://` receiver
verify against it. A plain-HTTP request, garbage, or a client that never finishes its
handshake at the HTTPS port is closed and leaves the server serving.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.appside import KEY, App, WebhookSink, accept_then_hang_up, start_app
from tests.integration.gateway import Gateway
from tests.tlscerts import CA, make_ca

pytestmark = pytest.mark.integration

HANDSHAKE_BOUND = 10.0  # seconds: the gateway's TLS_HANDSHAKE_TIMEOUT


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CA:
    """A throwaway CA that this process and the gateway it starts trust (and nothing else:
    SSL_CERT_FILE replaces the system's store)."""
    authority = make_ca(tmp_path / "ca")
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.cert))
    return authority


@pytest.fixture
def app(start_gateway: Callable[..., Gateway], tmp_path: Path, ca: CA) -> Iterator[App]:
    cert, key = ca.issue("gateway", dns=["localhost"], ip=["127.0.0.1"])
    sink = WebhookSink(tls=ca.issue("receiver", ip=["127.0.0.1"]))
    assert sink.url.startswith("https://")
    yield from start_app(start_gateway, tmp_path, sink=sink,
                         http_tls_cert=str(cert), http_tls_key=str(key))


def test_the_sdk_accepts_refers_and_watches_the_sideband_over_https_and_wss(app: App) -> None:
    assert app.base_url.startswith("https://127.0.0.1:")
    assert "HTTP API on https://" in app.gateway.log()
    sipp = app.call("app_refer.xml", timeout=40, recv_timeout=20)
    call_id = app.incoming().data.call_id  # delivered to the https:// receiver, verified
    app.client.realtime.calls.accept(call_id, type="realtime", instructions="Hello.")
    app.wait_for(call_id, lambda r: r["state"] == "active", "active")
    with app.client.realtime.connect(call_id=call_id) as conn:  # wss://, from the base_url
        created = conn.recv()
        assert created.type == "session.created"
        conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
        assert conn.recv().type == "session.updated"
    app.client.realtime.calls.refer(call_id, target_uri="tel:+61420351258")
    result = sipp.result(timeout=60)
    assert result.ok, result.describe()
    record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended")
    assert record["end_reason"] == "transferred"
    assert record["webhooks"][0]["outcome"] == "delivered"


def test_the_sdk_hangs_up_over_https_and_the_dashboard_is_served(app: App) -> None:
    accept_then_hang_up(app)
    origin = app.base_url.removesuffix("/v1")
    page = httpx.get(f"{origin}/dashboard", auth=("ops", KEY), timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_a_client_that_does_not_trust_the_ca_is_refused(app: App,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    untrusting = httpx.Client(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # trusts none
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.get(f"{app.base_url}/realtime/calls",
                       headers={"Authorization": f"Bearer {KEY}"})
    untrusting.close()
    monkeypatch.delenv("SSL_CERT_FILE")  # the SDK with the usual public CAs only
    sdk = openai.OpenAI(api_key=KEY, base_url=app.base_url, max_retries=0, timeout=5)
    with pytest.raises(openai.APIConnectionError):
        sdk.realtime.calls.hangup("rtc_x")
    sdk.close()


def _serving(app: App) -> None:
    listed = httpx.get(f"{app.base_url}/realtime/calls",
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert listed.status_code == 200, listed.text


def test_plain_http_and_garbage_at_the_https_port_are_closed_and_it_serves_on(app: App) -> None:
    plain = app.base_url.replace("https://", "http://")
    for _ in range(20):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{plain}/realtime/calls", timeout=5)
    for junk in (b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.0\r\n\r\n", b"\x00" * 4096):
        with socket.create_connection(("127.0.0.1", app.gateway.http_port), timeout=5) as s:
            s.sendall(junk)
            try:
                assert s.recv(4096) is not None  # an alert, or nothing: then closed
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    _serving(app)
    log = app.gateway.log()
    assert "Traceback" not in log
    assert sum("ssl" in line.lower() or "handshake" in line.lower()
               for line in log.splitlines()) <= 1, log


def test_a_client_that_never_handshakes_is_closed(app: App) -> None:
    with socket.create_connection(("127.0.0.1", app.gateway.http_port), timeout=5) as idle:
        idle.settimeout(HANDSHAKE_BOUND + 5)
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):  # or reset: closed all the same
            assert idle.recv(1) == b""  # closed by the gateway
        waited = time.monotonic() - started
    assert HANDSHAKE_BOUND - 1 < waited < HANDSHAKE_BOUND + 5
    _serving(app)
