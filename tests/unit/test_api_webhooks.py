"""WebhookSender against a real HTTP server on loopback, checked with the official OpenAI SDK."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import openai
import pytest
import uvicorn
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sipbridge.api.webhooks import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookSender,
    make_event,
    parse_retry_after,
)
from tests.polling import until_async

SECRET = "whsec_" + base64.b64encode(b"sipbridge test secret, 32 bytes!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some other secret, also 32 bytes").decode()
SIP_HEADERS = [
    {"name": "From", "value": '"Zoë Ω" <sip:+4930123456@carrier.example>;tag=a1'},
    {"name": "To", "value": "<sip:+4930999@gw.example>"},
    {"name": "X-Tenant", "value": "acme"},
]


def incoming_call_event() -> dict[str, object]:
    return make_event(
        "realtime.call.incoming",
        {"call_id": "rtc_0123abcd", "sip_headers": SIP_HEADERS, "sip_media_security": "rtp"},
    )


def unwrap(body: bytes, headers: dict[str, str], secret: str = SECRET) -> object:
    """What the application does with a webhook: verify and parse it with the official SDK."""
    return openai.OpenAI(api_key="test", webhook_secret=secret).webhooks.unwrap(body, headers)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (cut short when the server stops)


@dataclass
class Seen:
    body: bytes
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival


class Receiver:
    """A real HTTP server (starlette under uvicorn) on an ephemeral port of 127.0.0.1 that
    answers POST /hook with the scripted replies in order, the last one repeating."""

    url: str

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies) or [Reply()]
        self.seen: list[Seen] = []
        self._stop = asyncio.Event()
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        self.seen.append(Seen(body, dict(request.headers), time.monotonic()))
        reply = self.replies[min(len(self.seen), len(self.replies)) - 1]
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), reply.delay)
        return Response(status_code=reply.status, headers=reply.headers)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what went wrong
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._server.should_exit = True
        await self._task

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests."""
        return [b.at - a.at for a, b in zip(self.seen, self.seen[1:], strict=False)]


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_make_event_builds_an_openai_envelope() -> None:
    event = make_event("realtime.call.incoming", {"call_id": "rtc_1"}, now=1_700_000_000.9)
    assert list(event) == ["id", "object", "created_at", "type", "data"]
    assert re.fullmatch(r"evt_[0-9a-f]{24}", str(event["id"]))
    assert event["object"] == "event" and event["created_at"] == 1_700_000_000
    assert event["type"] == "realtime.call.incoming" and event["data"] == {"call_id": "rtc_1"}
    assert make_event("x", {})["id"] != make_event("x", {})["id"]
    assert abs(int(str(make_event("x", {})["created_at"])) - time.time()) < 2


def test_delivery_verifies_with_the_openai_sdk() -> None:
    event = incoming_call_event()

    async def scenario() -> tuple[WebhookDelivery, list[Seen]]:
        async with Receiver() as receiver:
            sender = WebhookSender(receiver.url, SECRET)
            delivery = await sender.deliver(event)
            await sender.close()
        return delivery, receiver.seen

    delivery, seen = asyncio.run(scenario())
    assert delivery.outcome == "delivered"
    assert [(a.number, a.status_code, a.error) for a in delivery.attempts] == [(1, 200, None)]
    assert len(seen) == 1
    body, headers = seen[0].body, seen[0].headers
    assert body == json.dumps(event, separators=(",", ":")).encode()
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "sipbridge"
    assert headers["webhook-id"] == event["id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", headers["webhook-signature"])

    parsed = unwrap(body, headers)
    assert isinstance(parsed, RealtimeCallIncomingWebhookEvent)
    assert parsed.id == event["id"] and parsed.created_at == event["created_at"]
    assert parsed.data.call_id == "rtc_0123abcd"
    assert [{"name": h.name, "value": h.value} for h in parsed.data.sip_headers] == SIP_HEADERS
    assert parsed.data.sip_media_security == "rtp"
    Webhook(SECRET).verify(body, headers)  # the Standard Webhooks reference verifier agrees

    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(body, headers, OTHER_SECRET)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(body.replace(b"rtc_0123abcd", b"rtc_0123abce"), headers)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(body, {**headers, "webhook-id": "evt_" + "0" * 24})


def test_503_twice_then_200_is_delivered_on_the_third_attempt() -> None:
    event = incoming_call_event()
    seen_by_callback: list[tuple[int, str]] = []

    def on_attempt(delivery: WebhookDelivery, attempt: WebhookAttempt) -> None:
        seen_by_callback.append((attempt.number, delivery.outcome))

    async def scenario() -> tuple[WebhookDelivery, Receiver]:
        async with Receiver(Reply(503), Reply(503), Reply(200)) as receiver:
            sender = WebhookSender(receiver.url, SECRET, backoff=0.1, max_backoff=1.0)
            delivery = await sender.deliver(event, on_attempt)
            await sender.close()
        return delivery, receiver

    before = int(time.time())
    delivery, receiver = asyncio.run(scenario())
    after = int(time.time())
    assert delivery.outcome == "delivered"
    assert [(a.number, a.status_code, a.error) for a in delivery.attempts] == [
        (1, 503, "HTTP 503"),
        (2, 503, "HTTP 503"),
        (3, 200, None),
    ]
    assert seen_by_callback == [(1, "pending"), (2, "pending"), (3, "delivered")]
    assert len(receiver.seen) == 3
    assert {s.headers["webhook-id"] for s in receiver.seen} == {event["id"]}
    for s in receiver.seen:  # every attempt is signed afresh, and verifies on its own
        assert s.body == receiver.seen[0].body
        assert before <= int(s.headers["webhook-timestamp"]) <= after
        assert isinstance(unwrap(s.body, s.headers), RealtimeCallIncomingWebhookEvent)
    first, second = receiver.gaps()  # back-off 0.1 s, then 0.2 s (plus up to 10 % jitter)
    assert 0.1 <= first < 0.1 * 1.1 + 0.3
    assert 0.2 <= second < 0.2 * 1.1 + 0.3
    assert all(a.duration_ms >= 0 and a.started_at > 0 for a in delivery.attempts)


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_client_error_gives_up_at_once(status: int, caplog: pytest.LogCaptureFixture) -> None:
    event = incoming_call_event()

    async def scenario() -> tuple[WebhookDelivery, Receiver]:
        async with Receiver(Reply(status), Reply(200)) as receiver:
            sender = WebhookSender(receiver.url, SECRET, backoff=0.01)
            delivery = await sender.deliver(event)
            await sender.close()
        return delivery, receiver

    with caplog.at_level(logging.WARNING, logger="sipbridge.webhooks"):
        delivery, receiver = asyncio.run(scenario())
    assert delivery.outcome == "failed"
    assert [(a.status_code, a.error) for a in delivery.attempts] == [(status, f"HTTP {status}")]
    assert len(receiver.seen) == 1
    (record,) = [r for r in caplog.records if r.name == "sipbridge.webhooks"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "realtime.call.incoming" in message and str(event["id"]) in message
    assert "attempt 1/5" in message and f"HTTP {status}" in message and "giving up" in message


def test_an_unanswered_webhook_times_out_within_bounded_time() -> None:
    timeout, attempts, max_backoff = 0.3, 3, 0.1

    async def scenario() -> tuple[WebhookDelivery, Receiver, float]:
        async with Receiver(Reply(delay=30)) as receiver:
            sender = WebhookSender(
                receiver.url,
                SECRET,
                timeout=timeout,
                max_attempts=attempts,
                backoff=0.05,
                max_backoff=max_backoff,
            )
            t0 = time.monotonic()
            delivery = await sender.deliver(incoming_call_event())
            elapsed = time.monotonic() - t0
            await sender.close()
        return delivery, receiver, elapsed

    delivery, receiver, elapsed = asyncio.run(scenario())
    assert delivery.outcome == "failed"
    assert [(a.status_code, a.error) for a in delivery.attempts] == [
        (None, "timeout after 0.3 s")
    ] * attempts
    assert len(receiver.seen) == attempts
    assert all(a.duration_ms >= timeout * 1000 * 0.9 for a in delivery.attempts)
    assert attempts * timeout <= elapsed < attempts * (timeout + max_backoff) + 0.5


def test_connection_refused_fails_quietly_and_callbacks_cannot_break_it() -> None:
    calls: list[int] = []

    def bad_callback(delivery: WebhookDelivery, attempt: WebhookAttempt) -> None:
        calls.append(attempt.number)
        raise RuntimeError("callback bug")

    async def scenario() -> WebhookDelivery:
        sender = WebhookSender(
            f"http://127.0.0.1:{free_port()}/hook", SECRET, max_attempts=3, backoff=0.01
        )
        delivery = await sender.deliver(incoming_call_event(), bad_callback)
        await sender.close()
        return delivery

    delivery = asyncio.run(scenario())
    assert delivery.outcome == "failed"
    assert [(a.status_code, a.error) for a in delivery.attempts] == [
        (None, "connection refused")
    ] * 3
    assert calls == [1, 2, 3]


def test_retry_after_is_honoured_and_capped() -> None:
    replies = (
        Reply(429, {"Retry-After": "1"}),  # longer than the back-off: honoured
        Reply(503, {"Retry-After": "120"}),  # longer than max_backoff: capped
        Reply(200),
    )

    async def scenario() -> tuple[WebhookDelivery, Receiver]:
        async with Receiver(*replies) as receiver:
            sender = WebhookSender(receiver.url, SECRET, backoff=0.01, max_backoff=1.2)
            delivery = await sender.deliver(incoming_call_event())
            await sender.close()
        return delivery, receiver

    delivery, receiver = asyncio.run(scenario())
    assert delivery.outcome == "delivered"
    assert [a.status_code for a in delivery.attempts] == [429, 503, 200]
    first, second = receiver.gaps()
    assert 1.0 <= first < 1.0 * 1.1 + 0.4
    assert 1.2 <= second < 1.2 * 1.1 + 0.4


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("3", 3.0), (" 0 ", 0.0), ("1.5", 1.5), ("-1", None), ("nan", None),
     ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_as_an_http_date() -> None:
    when = time.time() + 30
    value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(when))
    seconds = parse_retry_after(value)
    assert seconds is not None and 28 <= seconds <= 31


def test_send_returns_the_delivery_and_fills_it_in() -> None:
    async def scenario() -> tuple[WebhookDelivery, list[WebhookDelivery], list[int], str]:
        done: list[WebhookDelivery] = []
        numbers: list[int] = []
        finished = asyncio.Event()

        def on_done(delivery: WebhookDelivery) -> None:
            done.append(delivery)
            finished.set()

        async with Receiver(Reply(500), Reply(204)) as receiver:
            sender = WebhookSender(receiver.url, SECRET, backoff=0.01)
            delivery = sender.send(
                incoming_call_event(), on_done, lambda d, a: numbers.append(a.number)
            )
            outcome_at_once = delivery.outcome
            assert sender.deliveries == [delivery]
            await asyncio.wait_for(finished.wait(), 5)
            await sender.close()
        return delivery, done, numbers, outcome_at_once

    delivery, done, numbers, outcome_at_once = asyncio.run(scenario())
    assert outcome_at_once == "pending"
    assert done == [delivery] and done[0] is delivery
    assert delivery.outcome == "delivered" and numbers == [1, 2]
    assert [a.status_code for a in delivery.attempts] == [500, 204]
    as_dict = json.loads(json.dumps(delivery.to_dict()))
    assert as_dict["outcome"] == "delivered" and as_dict["event_type"] == "realtime.call.incoming"
    assert [a["status_code"] for a in as_dict["attempts"]] == [500, 204]
    assert set(as_dict["attempts"][0]) == {
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "error",
    }


def test_close_cancels_a_running_delivery() -> None:
    async def scenario() -> tuple[WebhookDelivery, list[WebhookDelivery], WebhookDelivery, float]:
        done: list[WebhookDelivery] = []
        async with Receiver(Reply(delay=30)) as receiver:
            sender = WebhookSender(receiver.url, SECRET, timeout=10)
            delivery = sender.send(incoming_call_event(), done.append)
            await until_async("the request in flight", lambda: receiver.seen, bool, 5)
            t0 = time.monotonic()
            await sender.close()
            took = time.monotonic() - t0
            late = sender.send(incoming_call_event(), done.append)  # refused once closed
        return delivery, done, late, took

    delivery, done, late, took = asyncio.run(scenario())
    assert took < 1.0
    assert delivery.outcome == "cancelled"
    assert [(a.status_code, a.error) for a in delivery.attempts] == [(None, "cancelled")]
    assert late.outcome == "cancelled" and late.attempts == []
    assert done == [delivery, late]


def test_deliveries_keep_only_the_last_thousand() -> None:
    async def scenario() -> tuple[WebhookSender, list[str]]:
        sender = WebhookSender("http://127.0.0.1:9/hook", SECRET)
        await sender.close()  # no network: a closed sender records and refuses
        ids = []
        for n in range(1005):
            event = make_event("test.event", {"n": n})
            ids.append(str(event["id"]))
            await sender.deliver(event)
        return sender, ids

    sender, ids = asyncio.run(scenario())
    assert [d.event_id for d in sender.deliveries] == ids[-1000:]


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "c2VjcmV0",  # base64 without the prefix
        "sk_c2VjcmV0",
        "whsec_",  # empty key
        "whsec_not base64!",
        "whsec_c2VjcmV0Z",  # bad padding
    ],
)
def test_a_bad_secret_is_rejected_at_construction(secret: str) -> None:
    with pytest.raises(ValueError, match="whsec_") as info:
        WebhookSender("http://127.0.0.1:9/hook", secret)
    if secret.startswith("whsec_") and len(secret) > 6:
        assert secret[6:] not in str(info.value)  # the secret is not echoed


def test_other_bad_arguments_are_rejected() -> None:
    for url in ("ftp://example.com/hook", "not a url", ""):
        with pytest.raises(ValueError, match="URL"):
            WebhookSender(url, SECRET)
    for kwargs in ({"timeout": 0}, {"max_attempts": 0}, {"backoff": -1}):
        with pytest.raises(ValueError):
            WebhookSender("http://127.0.0.1:9/hook", SECRET, **kwargs)  # type: ignore[arg-type]
