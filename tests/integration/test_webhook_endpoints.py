"""Webhook endpoints as OpenAI configures them: an application written after OpenAI's Flask
sample (one handler that knows `realtime.call.incoming` and answers 500 to anything
else) at `webhook_url`, and a second endpoint (`[[webhook]]`, its own secret) that asked
for the transfer events. The sample never sees an event it did not ask for, the call's
trace shows no failed webhook, and the second endpoint gets the transfer's outcome,
signed with its secret."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import openai
import pytest

from sipbridge.records import CallRecord
from sipbridge.trace import steps
from tests.integration.appside import KEY, SECRET, App, WebhookSink, api_base
from tests.integration.gateway import Gateway
from tests.integration.sipp import SCENARIOS

pytestmark = pytest.mark.integration

OPS_SECRET = "whsec_" + base64.b64encode(b"the operations team's own secret").decode()


def test_the_flask_sample_pattern_gets_only_its_event_and_a_second_endpoint_the_transfer(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    sample = WebhookSink(known=frozenset({"realtime.call.incoming"}))
    ops = WebhookSink()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        gateway = start_gateway(
            webhook_url=sample.url, webhook_secret=SECRET, api_key=[KEY], accept_timeout=20,
            transfer_fallback="none",
            webhook=[{"url": ops.url + "?token=not-for-the-record", "secret": OPS_SECRET,
                      "events": ["realtime.call.transfer.*"]}])
        client = openai.OpenAI(api_key=KEY, base_url=api_base(gateway), webhook_secret=SECRET,
                               max_retries=0, timeout=10)
        app = App(gateway, client, sample, pool, tmp_path)
        sipp = app.call(SCENARIOS / "transfer_success.xml", timeout=40, recv_timeout=20)
        call_id = app.incoming().data.call_id  # the sample's handler, signature verified
        client.realtime.calls.accept(call_id, type="realtime", instructions="Acme")
        app.wait_for(call_id, lambda r: r["state"] == "active", "active")
        client.realtime.calls.refer(call_id, target_uri="tel:+61420351258")
        result = sipp.result(timeout=60)
        assert result.ok, result.describe()
        record = app.wait_for(call_id, lambda r: r["state"] == "ended" and all(
            w["outcome"] != "pending" for w in r["webhooks"]), "ended, its webhooks done")

        # The second endpoint got the outcome, signed with its own secret.
        body, headers = ops.next()
        ops_client = openai.OpenAI(api_key=KEY, base_url=api_base(gateway),
                                   webhook_secret=OPS_SECRET)
        ops_client.webhooks.verify_signature(body, headers)
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.verify_signature(body, headers)  # not the sample's secret
        assert b'"type":"realtime.call.transfer.succeeded"' in body
        assert call_id.encode() in body

        # The sample got nothing else, and refused nothing: no event it did not ask for.
        time.sleep(0.5)
        assert sample.received.empty() and sample.refused == []
        assert ops.received.empty()  # and the other endpoint no realtime.call.incoming

        # Every delivery delivered at the first attempt; the trace shows no failed webhook.
        deliveries = [(w["event_type"], w["url"], w["outcome"], len(w["attempts"]))
                      for w in record["webhooks"]]
        assert deliveries == [
            ("realtime.call.incoming", sample.url, "delivered", 1),
            ("realtime.call.transfer.succeeded", ops.url, "delivered", 1),
        ]
        hooks = [s for s in steps(cast(CallRecord, record)) if s.kind == "webhook"]
        assert len(hooks) == 2 and not any(s.failing for s in hooks), hooks
        assert "not-for-the-record" not in repr(record)  # the URL's query stays out
        client.close()
        ops_client.close()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        sample.close()
        ops.close()
