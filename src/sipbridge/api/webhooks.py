"""Signed webhooks to the application, OpenAI style (e.g. `realtime.call.incoming`).

Each event is POSTed as compact JSON and signed the Standard Webhooks way, so the official
SDK's `client.webhooks.unwrap(body, headers)` accepts it: `webhook-id` (the event id),
`webhook-timestamp` (unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 over
"id.timestamp.body">`). Failed attempts are retried with capped exponential back-off; every
attempt is recorded so the API can show what happened to a delivery.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import email.utils
import json
import logging
import math
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from sipbridge.records import WebhookAttemptRecord, WebhookRecord

log = logging.getLogger("sipbridge.webhooks")

RECENT_DELIVERIES = 1000  # deliveries kept for `WebhookSender.deliveries`
RETRY_STATUSES = frozenset({408, 409, 425, 429})  # plus every 5xx
JITTER = 0.1  # up to this fraction of the delay is added at random
DRAIN_LIMIT = 64 * 1024  # response bytes read (then dropped) so the connection can be reused


@dataclass(slots=True)
class WebhookAttempt:
    """One HTTP attempt of a delivery."""

    number: int  # 1-based
    started_at: float  # unix time
    duration_ms: float
    status_code: int | None  # None when there was no HTTP answer
    error: str | None  # None on a 2xx; else e.g. "timeout after 5.0 s", "HTTP 503"

    def to_dict(self) -> WebhookAttemptRecord:
        return {
            "number": self.number,
            "started_at": self.started_at,
            "duration_ms": self.duration_ms,
            "status_code": self.status_code,
            "error": self.error,
        }


@dataclass(slots=True)
class WebhookDelivery:
    """One event on its way to the application; filled in as the attempts happen.

    `outcome` is "pending", "delivered", "failed" (attempts exhausted, or an answer that
    retrying cannot fix, such as 400 or 401) or "cancelled" (the sender was closed).
    """

    event_id: str
    event_type: str
    attempts: list[WebhookAttempt] = field(default_factory=list)
    outcome: str = "pending"
    url: str = ""  # the endpoint, as `WebhookSender.label` shows it

    def to_dict(self) -> WebhookRecord:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "outcome": self.outcome,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "url": self.url,
        }


AttemptCallback = Callable[[WebhookDelivery, WebhookAttempt], None]
DoneCallback = Callable[[WebhookDelivery], None]


def make_event(
    event_type: str, data: dict[str, object], *, now: float | None = None
) -> dict[str, object]:
    """An event envelope: `{"id": "evt_<24 hex>", "object": "event", "created_at", "type",
    "data"}`; `now` (unix time) defaults to the current time."""
    return {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "created_at": int(time.time() if now is None else now),
        "type": event_type,
        "data": data,
    }


class WebhookSender:
    """Delivers signed events to one URL, retrying what is worth retrying.

    Network problems never raise: they end up in the delivery's attempts and outcome. A
    delivery takes at most about `max_attempts * (timeout + max_backoff)` seconds.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 5.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """`secret` is `whsec_<base64>`, as the application gives it to the SDK. `client`, if
        given, is used as is and left open by `close`. Raises ValueError on a bad argument."""
        try:
            scheme = httpx.URL(url).scheme
        except httpx.InvalidURL as exc:
            raise ValueError(f"invalid webhook URL {url!r}: {exc}") from None
        if scheme not in ("http", "https"):
            raise ValueError(f"webhook URL must be http:// or https://, got {url!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if not (backoff >= 0 and max_backoff >= 0):
            raise ValueError(f"backoff and max_backoff must be >= 0, got {backoff}, {max_backoff}")
        self._webhook = Webhook(_check_secret(secret))
        self._url = url
        parsed = httpx.URL(url)  # shown without credentials or query (a token may be there)
        self.label = f"{parsed.scheme}://{parsed.netloc.decode().rpartition('@')[2]}{parsed.path}"
        self._timeout = float(timeout)
        self._max_attempts = max_attempts
        self._backoff = float(backoff)
        self._max_backoff = float(max_backoff)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done
        self._recent: collections.deque[WebhookDelivery] = collections.deque(
            maxlen=RECENT_DELIVERIES
        )
        self._closed = False

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        """The most recent deliveries (at most 1000), oldest first."""
        return list(self._recent)

    def headers_for(self, event_id: str, body: bytes, timestamp: int) -> dict[str, str]:
        """The headers of one attempt: the signature over `id.timestamp.body`, and the rest."""
        sent_at = datetime.fromtimestamp(timestamp, tz=UTC)
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self._webhook.sign(event_id, sent_at, body.decode()),
            "content-type": "application/json",
            "user-agent": "sipbridge",
        }

    async def deliver(
        self, event: dict[str, object], on_attempt: AttemptCallback | None = None
    ) -> WebhookDelivery:
        """Delivers `event` (see `make_event`), retrying as needed, and returns the finished
        delivery. Raises only for an event that is not JSON or has no string "id"/"type";
        if cancelled, the outcome is "cancelled" and CancelledError propagates."""
        delivery, body = self._prepare(event)
        if self._closed:
            self._refuse(delivery)
        else:
            await self._run(delivery, body, on_attempt)
        return delivery

    def send(
        self,
        event: dict[str, object],
        on_done: DoneCallback | None = None,
        on_attempt: AttemptCallback | None = None,
    ) -> WebhookDelivery:
        """Starts delivering `event` on the running loop and returns the pending delivery, which
        fills in as attempts happen. `on_done` runs once it ends, whatever the outcome (also
        "cancelled"). Raises only as `deliver` does, or with no running loop."""
        delivery, body = self._prepare(event)
        if self._closed:
            self._refuse(delivery)
            _call(on_done, delivery)
            return delivery
        task = asyncio.get_running_loop().create_task(self._run(delivery, body, on_attempt))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(t, delivery, on_done))
        return delivery

    async def close(self) -> None:
        """Cancels the running deliveries (their outcome becomes "cancelled") and closes the
        HTTP client if this sender created it. Later events are refused as "cancelled"."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()

    def _prepare(self, event: dict[str, object]) -> tuple[WebhookDelivery, bytes]:
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
            raise ValueError("a webhook event needs a string 'id' and 'type' (see make_event)")
        # ASCII-only JSON: the signed bytes survive any re-encoding by the receiver.
        body = json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
        delivery = WebhookDelivery(event_id, event_type, url=self.label)
        self._recent.append(delivery)
        return delivery, body

    def _refuse(self, delivery: WebhookDelivery) -> None:
        delivery.outcome = "cancelled"
        log.warning(
            "webhook %s %s not sent: the sender is closed", delivery.event_type, delivery.event_id
        )

    async def _run(
        self, delivery: WebhookDelivery, body: bytes, on_attempt: AttemptCallback | None
    ) -> None:
        try:
            for number in range(1, self._max_attempts + 1):
                attempt, retryable, retry_after = await self._attempt(delivery, number, body)
                delivery.attempts.append(attempt)
                delay = 0.0
                if attempt.error is None:
                    delivery.outcome = "delivered"
                elif not retryable or number == self._max_attempts:
                    delivery.outcome = "failed"
                else:
                    delay = self._delay(number, retry_after)
                if attempt.error is not None:
                    log.warning(
                        "webhook %s %s attempt %d/%d failed: %s; %s",
                        delivery.event_type,
                        delivery.event_id,
                        number,
                        self._max_attempts,
                        attempt.error,
                        "giving up" if delivery.outcome == "failed" else f"retry in {delay:.2f} s",
                    )
                _call(on_attempt, delivery, attempt)
                if delivery.outcome != "pending":
                    return
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            delivery.outcome = "cancelled"
            raise
        except Exception:  # a bug here must not leave the delivery pending
            log.exception("webhook %s %s: delivery crashed", delivery.event_type, delivery.event_id)
            delivery.outcome = "failed"

    async def _attempt(
        self, delivery: WebhookDelivery, number: int, body: bytes
    ) -> tuple[WebhookAttempt, bool, float | None]:
        """One POST; returns the attempt, whether a retry may help, and Retry-After if any."""
        started_at = time.time()
        t0 = time.monotonic()
        headers = self.headers_for(delivery.event_id, body, int(started_at))
        status: int | None = None
        retry_after: float | None = None
        error: str | None = None
        retryable = False
        try:
            # httpx's timeout is per phase (connect, each read...); this bounds the whole attempt.
            async with asyncio.timeout(self._timeout):
                async with self._client.stream(
                    "POST", self._url, content=body, headers=headers, timeout=self._timeout
                ) as response:
                    status = response.status_code
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    await _drain(response)
        except asyncio.CancelledError:
            delivery.attempts.append(
                WebhookAttempt(number, started_at, _ms_since(t0), status, "cancelled")
            )
            raise
        except (TimeoutError, httpx.TimeoutException):
            if status is None:
                error, retryable = f"timeout after {self._timeout} s", True
        except httpx.TransportError as exc:
            if status is None:
                error, retryable = _describe_transport_error(exc), True
        except Exception as exc:  # not expected; recorded, and not retried
            log.exception("webhook %s %s: attempt crashed", delivery.event_type, delivery.event_id)
            error = f"unexpected error: {type(exc).__name__}: {exc}"
        if status is not None:
            if 200 <= status < 300:
                error = None
            else:
                error = f"HTTP {status}"
                retryable = status in RETRY_STATUSES or 500 <= status < 600
        attempt = WebhookAttempt(number, started_at, _ms_since(t0), status, error)
        return attempt, retryable, retry_after

    def _delay(self, number: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt `number`: Retry-After if the server gave one,
        else `backoff * 2**(number-1)`; capped at `max_backoff`, plus a little jitter."""
        if retry_after is not None:
            base = retry_after
        else:
            base = self._backoff * 2.0 ** min(number - 1, 62)
        base = min(base, self._max_backoff)
        return base + random.uniform(0.0, base * JITTER)

    def _finished(
        self, task: asyncio.Task[None], delivery: WebhookDelivery, on_done: DoneCallback | None
    ) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            delivery.outcome = "cancelled"  # also when cancelled before it ever ran
        elif (exc := task.exception()) is not None:  # not expected: _run catches everything
            log.error(
                "webhook %s %s: task failed", delivery.event_type, delivery.event_id, exc_info=exc
            )
            delivery.outcome = "failed"
        _call(on_done, delivery)


def _check_secret(secret: str) -> str:
    """Returns `secret` if it is `whsec_` followed by non-empty, padded, standard base64."""
    prefix = "whsec_"
    if not isinstance(secret, str) or not secret.startswith(prefix):
        raise ValueError("webhook secret must look like 'whsec_<base64>' (missing 'whsec_')")
    try:
        key = base64.b64decode(secret[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "webhook secret must look like 'whsec_<base64>' (the part after 'whsec_' is not"
            " valid base64)"
        ) from None
    if not key:
        raise ValueError("webhook secret must look like 'whsec_<base64>' (empty key)")
    return secret


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date); None if absent or unusable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
        return max(seconds, 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


async def _drain(response: httpx.Response) -> None:
    """Reads a little of the body, so a small answer leaves the connection reusable."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > DRAIN_LIMIT:
            break


def _describe_transport_error(exc: httpx.TransportError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    kind = "connection failed" if isinstance(exc, httpx.ConnectError) else "connection error"
    return f"{kind}: {exc or type(exc).__name__}"


def _ms_since(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000.0, 3)


def _call(callback: Callable[..., None] | None, *args: object) -> None:
    """Runs a user callback; what it raises is logged, never propagated."""
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        log.exception("webhook callback %r failed", callback)
