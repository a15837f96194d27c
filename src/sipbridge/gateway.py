"""The running gateway: one event loop driving the sans-IO UA core, its transport and calls."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from sipbridge.api.app import HttpServer, SidebandHubs, create_app
from sipbridge.api.webhooks import WebhookSender, make_event
from sipbridge.calls.manager import Call, CallManager, TransferJob, Trunk
from sipbridge.calls.transfer import SUCCEEDED, TransferStep, TransferTimers
from sipbridge.config import Config
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.auth import DigestServer
from sipbridge.sip.transaction import TimerConfig
from sipbridge.sip.transport import SipTransport, local_address_for
from sipbridge.sip.ua import UaConfig, UserAgent

log = logging.getLogger("sipbridge")

WILDCARDS = ("0.0.0.0", "::", "")


class Gateway:
    """Owns the UA core and moves bytes, events and timers between it and the world."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        host, port = config.sip_bind
        self.transport = SipTransport(
            self._on_message, max_size=config.max_message_size,
            idle_timeout=config.tcp_idle_timeout,
        )
        auth = config.auth
        digest = None
        if auth is not None and auth.users:
            digest = DigestServer(auth.realm, auth.users, algorithms=auth.algorithms,
                                  nonce_ttl=auth.nonce_ttl)
        self.guard = AccessGuard(config.allow, digest)
        self._bind_host = host
        self._bind_port = port
        self.ua: UserAgent | None = None
        self.calls: CallManager | None = None
        self.media: MediaEngine | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.sideband = SidebandHubs()
        self.http: HttpServer | None = None
        self.webhooks: WebhookSender | None = None

    @property
    def advertised_host(self) -> str:
        if self.config.public_address:
            return self.config.public_address
        if self._bind_host not in WILDCARDS:
            return self._bind_host
        return _local_for("127.0.0.1")

    def media_host(self, peer_host: str) -> str:
        """The address we give a peer for media: public_address, the bound host, or the
        local address that routes to the peer."""
        if self.config.public_address:
            return self.config.public_address
        if self._bind_host not in WILDCARDS:
            return self._bind_host
        return _local_for(peer_host)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.transport.start(self._bind_host, self._bind_port)
        c = self.config
        self.ua = UserAgent(
            UaConfig(host=self.advertised_host, port=self.transport.port,
                     timers=TimerConfig(c.t1, c.t2, c.t4), max_message_size=c.max_message_size),
            self.guard,
        )
        self.media = MediaEngine(
            MediaConfig(ports=c.rtp_port_range, timeout=c.media_timeout,
                        jitter_min_ms=c.jitter_min_ms, jitter_max_ms=c.jitter_max_ms,
                        recordings=Path(c.recordings) if c.recordings else None),
            self.loop,
        )
        if c.webhook_url:
            if not c.webhook_secret:
                raise ValueError("webhook_url needs webhook_secret (whsec_...) to sign with")
            self.webhooks = WebhookSender(c.webhook_url, c.webhook_secret,
                                          timeout=c.webhook_timeout,
                                          max_attempts=c.webhook_attempts)
        self.calls = CallManager(
            self.ua, self._schedule, media_host=self.media_host, media=self.media,
            bind_host=self._bind_host or "0.0.0.0", auto_answer=c.auto_answer,
            ring_time=c.ring_time, reject_code=c.reject_code, clock=self.loop.time,
            wake=self._pump,
            on_incoming=self._on_incoming if self.webhooks is not None else None,
            accept_timeout=c.accept_timeout, accept_timeout_code=c.accept_timeout_code,
            on_end=lambda call: self.sideband.close(call.id),
            on_transfer=self._on_transfer,
            transfer_timers=TransferTimers(c.transfer_refer_timeout, c.transfer_notify_timeout,
                                           c.transfer_bye_after_accept),
            transfer_fallback=c.transfer_fallback, tel_uri=c.transfer_tel_uri,
            trunk=self._trunk(),
        )
        if c.http != "off":
            host, port = c.http_bind
            if not c.api_key:
                log.warning("no api_key configured: the HTTP API on %s:%d is open", host, port)
            self.http = HttpServer(create_app(self, c.api_key), host, port)
            await self.http.start()
        # What start-up made lives as long as the process: keep it out of every
        # garbage collection, so full collections stay short under load.
        gc.collect()
        gc.freeze()

    @property
    def port(self) -> int:
        return self.transport.port

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self._timer is not None:
            self._timer.cancel()
        if self.media is not None:
            self.media.close()
        await self.transport.close()

    def summary(self) -> str:
        """Message counters (received, answered by status, dropped and why), one line."""
        stats = dict(self.ua.stats) if self.ua is not None else {}
        stats["tcp_framing_errors"] = self.transport.stats_framing_errors
        return ", ".join(f"{k}={v}" for k, v in sorted(stats.items()) if v)

    def pump(self) -> None:
        """Send what the SIP core queued after a call-control request."""
        self._pump()

    def _on_incoming(self, call: Call) -> None:
        """realtime.call.incoming to the application; the call rings meanwhile."""
        assert self.webhooks is not None
        event = make_event("realtime.call.incoming", {
            "call_id": call.id,
            "sip_headers": [{"name": n, "value": v} for n, v in call.sip_headers],
            "sip_media_security": "rtp",
        })
        call.webhooks.append(self.webhooks.send(event))

    def _trunk(self) -> Trunk | None:
        t = self.config.trunk
        if t is None:
            return None
        host, port = t.bind
        credentials = (t.username, t.password or "") if t.username else None
        return Trunk(Address(t.transport, host, port), t.from_uri, t.domain or host,
                     credentials)

    def _on_transfer(self, call: Call, job: TransferJob, step: TransferStep | None) -> None:
        """Every transfer step to the call's sideband clients; the outcome as a webhook."""
        machine = job.machine
        self.sideband.publish(call.id, {
            "type": "call.transfer.updated", "event_id": "event_" + secrets.token_hex(12),
            "call_id": call.id, "transfer_id": job.id, "status": machine.status,
            "final": machine.final, "sip_status": machine.sip_status, "reason": machine.reason,
            "target_uri": machine.target, "fallback": job.fallback,
        })
        if step is None or not step.final or self.webhooks is None:
            return
        kind = "succeeded" if step.status == SUCCEEDED else "failed"
        event = make_event(f"realtime.call.transfer.{kind}", {
            "call_id": call.id, "transfer_id": job.id, "status": step.status,
            "sip_status": step.sip_status, "reason": step.reason, "target_uri": machine.target,
        })
        call.webhooks.append(self.webhooks.send(event))

    def _on_message(self, data: bytes, source: Address) -> None:
        assert self.ua is not None and self.loop is not None
        self.ua.receive(data, source, self.loop.time())
        self._pump()

    def _schedule(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        assert self.loop is not None

        def run() -> None:
            callback()
            self._pump()

        handle = self.loop.call_later(delay, run)
        return handle.cancel

    def _pump(self) -> None:
        """Hand the core's events to the calls, send what it queued, re-arm its timer."""
        ua, calls, loop = self.ua, self.calls, self.loop
        assert ua is not None and calls is not None and loop is not None
        while True:
            events = ua.events()
            for event in events:
                try:
                    calls.handle(event)
                except Exception:
                    log.exception("error handling %s", type(event).__name__)
            for data, dest in ua.outgoing():
                self.transport.send(data, dest)
            if not events:
                break
        deadline = ua.deadline
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = None if deadline is None else loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        assert self.ua is not None and self.loop is not None
        self._timer = None
        self._timer_at = None
        self.ua.handle_timer(self.loop.time())
        self._pump()


@lru_cache(maxsize=1024)
def _local_for(peer_host: str) -> str:
    return local_address_for(peer_host)
