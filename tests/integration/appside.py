"""The application side for integration tests: a webhook endpoint (a real HTTP server),
the official `openai` SDK as the client, and SIPp calls placed in the background."""

from __future__ import annotations

import base64
import json
import queue
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from tests.integration.callrecords import call_record, wait_record
from tests.integration.gateway import Gateway
from tests.integration.sipp import SCENARIOS, SippResult, run_sipp

SECRET = "whsec_" + base64.b64encode(b"sipbridge integration test secret").decode()
KEY = "sk-sipbridge-test"


class WebhookSink:
    """The application's webhook endpoint: a real HTTP server that keeps what it gets;
    with `tls` (a certificate and its key), over HTTPS. With `known`, it answers 500 to
    any other event type, as OpenAI's Flask sample does, and keeps only the types in
    `known` (`refused` counts the others)."""

    def __init__(self, tls: tuple[Path, Path] | None = None,
                 known: frozenset[str] | None = None) -> None:
        self.received: queue.Queue[tuple[bytes, dict[str, str]]] = queue.Queue()
        self.refused: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                kind = json.loads(body).get("type")
                if known is not None and kind not in known:
                    sink.refused.append(str(kind))
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                sink.received.put((body, dict(self.headers.items())))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/webhooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 10.0) -> tuple[bytes, dict[str, str]]:
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class App:
    gateway: Gateway
    client: openai.OpenAI
    sink: WebhookSink
    pool: ThreadPoolExecutor
    tmp: Path

    def call(self, scenario: str | Path, **options: Any) -> Future[SippResult]:
        """SIPp places one call in the background."""
        workdir = self.tmp / f"sipp-{time.monotonic_ns()}"
        return self.pool.submit(run_sipp, self.gateway.address, scenario, workdir, **options)

    def incoming(self) -> RealtimeCallIncomingWebhookEvent:
        event = self.webhook()
        assert isinstance(event, RealtimeCallIncomingWebhookEvent)
        return event

    def webhook(self) -> Any:
        """The next webhook, verified with the SDK (`client.webhooks.unwrap`)."""
        body, headers = self.sink.next()
        try:
            return self.client.webhooks.unwrap(body, headers)  # verifies the signature
        except openai.APIError:  # an event type the SDK does not know: verify, then parse
            self.client.webhooks.verify_signature(body, headers)
            return json.loads(body)

    def record(self, call_id: str) -> dict[str, Any]:
        return call_record(self.base_url, KEY, call_id)

    def wait_for(self, call_id: str, check: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float = 10.0) -> dict[str, Any]:
        """The call's record once ``check`` holds; fails naming ``what`` and the last record."""
        return wait_record(self.base_url, KEY, call_id, check, what, timeout)

    @property
    def base_url(self) -> str:
        return api_base(self.gateway)


def api_base(gateway: Gateway) -> str:
    """The gateway's API as the SDK's `base_url`: https:// when it serves HTTPS."""
    scheme = "https" if gateway.config.get("http_tls_cert") else "http"
    return f"{scheme}://127.0.0.1:{gateway.http_port}/v1"


def start_app(start_gateway: Callable[..., Gateway], tmp_path: Path,
              sink: WebhookSink | None = None, **config: Any) -> Iterator[App]:
    """A gateway in webhook mode and the application side that drives it (with
    `http_tls_cert` in `config`, over HTTPS)."""
    sink = sink if sink is not None else WebhookSink()
    config.setdefault("accept_timeout", 20)
    # OpenAI's event at webhook_url, the gateway's own (transfer and outbound outcomes)
    # through a [[webhook]] endpoint that asks for them: both to this one receiver.
    config.setdefault("webhook", [{"url": sink.url, "secret": SECRET,
                                   "events": ["realtime.call.transfer.*",
                                              "realtime.call.outbound.*"]}])
    gateway = start_gateway(webhook_url=sink.url, webhook_secret=SECRET, api_key=[KEY],
                            **config)
    client = openai.OpenAI(api_key=KEY, base_url=api_base(gateway),
                           webhook_secret=SECRET, max_retries=0, timeout=10)
    pool = ThreadPoolExecutor(max_workers=2)
    yield App(gateway, client, sink, pool, tmp_path)
    pool.shutdown(wait=True, cancel_futures=True)
    client.close()
    sink.close()


def refused_scenario(tmp: Path, code: int) -> Path:
    path = tmp / f"app_refused_{code}.xml"
    path.write_text((SCENARIOS / "app_refused.xml").read_text().replace("__CODE__", str(code)))
    return path


def accept_then_hang_up(app: App) -> SippResult:
    """A call the application accepts and then hangs up (`calls.hangup`: our BYE): SIPp's
    verdict, checked, once the call's record says it ended by hangup."""
    sipp = app.call("uac_wait_bye.xml")
    call_id = app.incoming().data.call_id
    app.client.realtime.calls.accept(call_id, type="realtime")
    app.wait_for(call_id, lambda r: r["state"] == "active", "active")
    app.client.realtime.calls.hangup(call_id)
    result = sipp.result(timeout=60)
    assert result.ok, result.describe()
    assert "BYE sip:" in result.messages
    assert app.wait_for(call_id, lambda r: r["state"] == "ended", "ended")["end_reason"] == "hangup"
    return result
