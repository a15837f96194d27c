"""The running gateway: one event loop driving the sans-IO UA core, its transport and calls."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipbridge.agent.bridge import AgentBridge
from sipbridge.api.app import HttpServer, SidebandHubs, create_app
from sipbridge.api.schemas import FunctionTool, SessionConfig
from sipbridge.api.webhooks import WebhookSender, make_event
from sipbridge.calls.call import Call, CallState, TransferJob, Trunk
from sipbridge.calls.manager import CallManager
from sipbridge.calls.tool import TOOL_NAME, tool_definition, tool_output
from sipbridge.calls.transfer import SUCCEEDED, TransferStep, TransferTimers
from sipbridge.config import Config
from sipbridge.loopwatch import StallWatch
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.media.session import MediaSession
from sipbridge.metrics import Metrics
from sipbridge.records import MediaFigures
from sipbridge.sip.access import AccessGuard, AuthLimits
from sipbridge.sip.address import Address, is_ip
from sipbridge.sip.auth import DigestServer
from sipbridge.sip.dns import ResolveError, Resolver
from sipbridge.sip.loadprobe import LoadProbe
from sipbridge.sip.overload import OverloadDetector, OverloadLimits
from sipbridge.sip.ratelimit import RateLimiter, RateLimits
from sipbridge.sip.transaction import TimerConfig
from sipbridge.sip.transport import SipTransport, local_address_for
from sipbridge.sip.ua import UaConfig, UserAgent

if TYPE_CHECKING:
    from sipbridge.store import Store

log = logging.getLogger("sipbridge")

WILDCARDS = ("0.0.0.0", "::", "")
_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
MAX_TRACE = 8192  # bytes of a SIP message kept on the timeline


class Gateway:
    """Owns the UA core and moves bytes, events and timers between it and the world."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        host, port = config.sip_bind
        self.overload = _overload_detector(config)
        self._load_probe: LoadProbe | None = None
        self.resolver = Resolver(config.dns_servers, timeout=config.dns_timeout,
                                 ipv6=":" in host)
        self.transport = SipTransport(
            self._on_message, max_size=config.max_message_size,
            idle_timeout=config.tcp_idle_timeout, resolver=self.resolver,
            on_error=self._on_send_error, max_connections=config.tcp_max_connections,
            max_per_source=config.tcp_max_per_source,
            first_message_timeout=config.tcp_first_message_timeout,
            on_queue_delay=self._queue_delay if self.overload is not None else None,
            refuse=self._rate_blocked,
        )
        auth = config.auth
        digest = None
        limits = None
        if auth is not None and auth.users:
            digest = DigestServer(auth.realm, auth.users, algorithms=auth.algorithms,
                                  nonce_ttl=auth.nonce_ttl)
            limits = AuthLimits(auth.max_failures, auth.window, auth.block_time)
        self.guard = AccessGuard(config.allow, digest, limits)
        self.limiter = rate_limiter(config)
        self._bind_host = host
        self._bind_port = port
        self.ua: UserAgent | None = None
        self.calls: CallManager | None = None
        self.media: MediaEngine | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopping = False  # set by stop(): no timer fires, no store write after close
        self.sideband = SidebandHubs()
        self._inbound: tuple[bytes, Address] | None = None
        self.store: Store | None = None
        self._purging: asyncio.Task[None] | None = None
        self.metrics = Metrics(lambda: len(self.calls.calls) if self.calls is not None else 0,
                               self._live_media,
                               self._auth_blocks, self._rate_blocks, self._overload_figures)
        self._setup_seen: set[str] = set()
        self.agents: dict[str, AgentBridge] = {}
        self._tool_calls: dict[str, tuple[str, str]] = {}  # transfer id -> (call id, tool call)
        self.local_model: Any = None
        self._preload: asyncio.Future[Any] | None = None
        self.agent_url = config.agent_url
        self.http: HttpServer | None = None
        self.webhooks: WebhookSender | None = None
        self.stall_watch: StallWatch | None = None

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
        if not is_ip(peer_host):  # a trunk named by host: no lookup on the event loop
            return self.advertised_host
        return _local_for(peer_host)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(LoopErrors().handle)
        c = self.config
        raise_file_limit(c)
        if c.store != "off":
            from sipbridge.store import open_store

            self.store = open_store(c.store, retention_days=c.store_retention_days)
            ended = await asyncio.to_thread(self.store.mark_unfinished)
            purged = await asyncio.to_thread(self.store.purge)
            if ended or purged:
                log.warning("store %s: %d calls left unfinished by the last run marked ended, "
                            "%d old calls purged", self.store.label, ended, purged)
            if c.store_retention_days is not None:
                self._purging = asyncio.create_task(
                    self._purge_every(self.store, c.store_purge_interval))
        # The model and the API first: once SIP answers, everything answers.
        if c.agent_url == "local" and (c.auto_answer == "agent" or c.webhook_url):
            await self._start_local_model()
        if c.http != "off":
            host, port = c.http_bind
            if not c.api_key:
                log.warning("no api_key configured: the HTTP API on %s:%d is open", host, port)
            self.http = HttpServer(create_app(self, c.api_key), host, port)
            await self.http.start()
        await self.transport.start(self._bind_host, self._bind_port)
        self.ua = UserAgent(
            UaConfig(host=self.advertised_host, port=self.transport.port,
                     timers=TimerConfig(c.t1, c.t2, c.t4), max_message_size=c.max_message_size,
                     rewrite_contact=tuple(ipaddress.ip_network(n, strict=False)
                                           for n in c.rewrite_contact)),
            self.guard,
            limiter=self.limiter, overload=self.overload,
        )
        if self.overload is not None:
            self._load_probe = LoadProbe(self.overload, self.loop, cpu=c.overload.max_cpu > 0,
                                        on_lag=self.metrics.loop_lag.observe)
            self._load_probe.start()
        self.media = MediaEngine(
            MediaConfig(ports=c.rtp_port_range, timeout=c.media_timeout,
                        jitter_min_ms=c.jitter_min_ms, jitter_max_ms=c.jitter_max_ms,
                        recordings=Path(c.recordings) if c.recordings else None,
                        resolve=self._media_address if c.media_resolve_names else None),
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
            on_end=self._on_end, on_media=self._on_media, on_change=self._on_change,
            on_digit=lambda call, digit: self._agent_digit(call.id, digit),
            on_transfer=self._on_transfer,
            transfer_timers=TransferTimers(c.transfer_refer_timeout, c.transfer_notify_timeout,
                                           c.transfer_bye_after_accept),
            transfer_fallback=c.transfer_fallback, tel_uri=c.transfer_tel_uri,
            trunk=self._trunk(), max_calls=c.max_calls,
            max_calls_per_source=c.max_calls_per_source,
        )
        await self._import_ahead()
        # What start-up made lives as long as the process: keep it out of every
        # garbage collection, so full collections stay short under load.
        gc.collect()
        gc.freeze()
        if c.slow_callback_ms:
            self.stall_watch = StallWatch(c.slow_callback_ms / 1000)
            self.stall_watch.start(self.loop)

    async def _media_address(self, host: str, port: int) -> tuple[str, int]:
        """A c= line's host name, looked up by the resolver SIP routing uses."""
        try:
            address = await self.resolver.resolve(Address("udp", host, port))
        except ResolveError as exc:
            raise OSError(str(exc)) from None
        return address.host, address.port

    async def _import_ahead(self) -> None:
        """Load now what the first call, request or lookup would import on the event loop
        (found by the stall watch: 100-270 ms each on a busy machine)."""
        import anyio.lowlevel

        await anyio.lowlevel.checkpoint()  # anyio (HTTP API, webhooks) loads its backend
        self.resolver.preload()

    @property
    def port(self) -> int:
        return self.transport.port

    async def _purge_every(self, store: Store, interval: float) -> None:
        """Retention by age while the gateway runs, not only at start-up."""
        while True:
            await asyncio.sleep(interval)
            purged = await asyncio.to_thread(store.purge)
            if purged:
                log.info("store %s: %d old calls purged", store.label, purged)

    async def stop(self) -> None:
        # No timer of the SIP core or the calls fires from here on: each await below lets
        # the loop run, and a call ended by a timer then would write to a closed store.
        self._stopping = True
        if self.stall_watch is not None:  # what shutdown itself takes is not a stall
            self.stall_watch.stop()
            if self.stall_watch.summary():
                log.warning("%s", self.stall_watch.summary())
        if self._purging is not None:
            self._purging.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._load_probe is not None:
            self._load_probe.stop()
        for bridge in list(self.agents.values()):
            await bridge.close()
        if self.http is not None:
            await self.http.stop()
        if self.local_model is not None:
            await self.local_model.stop()
        if self.media is not None:
            self.media.close()
        await self.transport.close()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.store is not None:  # last: everything above may still record something
            await asyncio.to_thread(self.store.close)

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
        call.webhooks.append(self.webhooks.send(event, on_attempt=self._webhook_attempt(call)))

    # ---- the agent -----------------------------------------------------------------

    async def _start_local_model(self) -> None:
        """The built-in model, in this process, on a loopback port of its own."""
        try:
            from sipbridge.localmodel.server import LocalModelServer
        except ImportError as exc:  # the agent extra is not installed
            log.warning("the built-in model is unavailable (%s): answered calls get silence", exc)
            self.agent_url = ""
            return
        from sipbridge.localmodel.policy import Policy

        policy = Policy.load(self.config.agent_policy)
        if self.config.agent_llm_url:
            from sipbridge.localmodel.chat import ChatPolicy

            policy = ChatPolicy(policy, self.config.agent_llm_url, self.config.agent_llm_model,
                                api_key=self.config.agent_llm_api_key)
        self.local_model = LocalModelServer(policy=policy, preload=False)
        await self.local_model.start("127.0.0.1", 0)
        transcriber = self.local_model.transcriber
        if transcriber.available():  # load the speech model while the gateway serves
            self._preload = asyncio.get_running_loop().run_in_executor(None, transcriber.load)
        self.agent_url = f"ws://127.0.0.1:{self.local_model.port}/v1/realtime?model=local"
        log.info("built-in model on %s", self.agent_url)

    def _on_media(self, call: Call, media: MediaSession) -> None:
        """An answered call that is not echoed or played to: it talks with the agent."""
        assert self.calls is not None
        if self.config.auto_answer == "agent":
            targets = {"human": self.config.transfer_to} if self.config.transfer_to else {}
            call.options = {"transfer_targets": targets} if targets else {}
            config = SessionConfig(type="realtime")
            if targets:
                config = config.model_copy(
                    update={"tools": [FunctionTool(**tool_definition(targets))]})
            call.session = config.session_object()
            self.sideband.open(call, config)
        if not self.agent_url or call.session is None:
            return
        bridge = AgentBridge(
            call.id, self.agent_url, dict(call.session), media,
            api_key=self.config.agent_api_key, greet=self.config.auto_answer == "agent",
            on_event=lambda event: self._agent_event(call, event),
            on_function_call=lambda name, tool_call, args: self._agent_tool(
                call, name, tool_call, args),
            on_status=lambda kind, detail: self._agent_status(call, kind, detail),
            on_latency=self.metrics.model_latency.observe,
            reconnects=self.config.agent_reconnects,
        )
        self.agents[call.id] = bridge
        self.sideband.attach_model(call.id, bridge.send)
        bridge.start()

    def _agent_event(self, call: Call, event: dict[str, Any]) -> None:
        """A model event: to the call's sideband clients; the words said (the caller's
        transcript, the agent's), function calls and errors onto its timeline too."""
        self.sideband.publish(call.id, event)
        entry = _timeline_entry(event)
        if entry is not None:
            call.timeline.append({"at": time.time(), **entry})

    def _agent_tool(self, call: Call, name: str, tool_call: str, arguments: str) -> None:
        """The model called a function: the built-in transfer tool runs here; the others
        are the application's (it sees the call on the sideband). The transfer is
        requested at once; its REFER waits until the words the agent says with the call
        are played out (`transfer_speech_wait`), since a phone puts the call on hold on
        REFER. While a transfer is under way, another call of the tool starts nothing
        and is answered `in_progress`; the model hears the outcome when there is one."""
        if name != TOOL_NAME or self.calls is None or "transfer_targets" not in call.options:
            return
        bridge = self.agents.get(call.id)
        wait = self.config.transfer_speech_wait if bridge is not None else 0.0
        held = (f"waiting for the agent's words to be played out (at most {wait:g} s)"
                if wait > 0 else None)
        run = self.calls.run_transfer_tool(call.id, arguments, held=held, hold_for=wait)
        self._pump()
        if not run.started or run.job is None:
            if bridge is not None:
                bridge.function_output(tool_call, run.output())
            return
        job = run.job
        self._tool_calls[job.id] = (call.id, tool_call)
        if held is not None and bridge is not None:
            bridge.after_speech(wait, lambda outcome, waited: self._release_transfer(
                call, job, outcome, waited))

    def _release_transfer(self, call: Call, job: TransferJob, outcome: str,
                          waited: float) -> None:
        """The agent's words are out (or the wait ran out): the held REFER goes, unless
        the caller hung up or the transfer ended meanwhile (its steps say so)."""
        if self.calls is None or job.final:
            return
        detail = {"played": f"the agent's words were played out after {waited:.2f} s",
                  "timed_out": f"the agent was still speaking after {waited:.2f} s",
                  "closed": "the model left the call"}.get(outcome, outcome)
        call.timeline.append({"at": time.time(), "kind": "agent", "status": "speech_wait",
                              "transfer_id": job.id, "outcome": outcome,
                              "waited": round(waited, 3), "detail": detail})
        if self.calls.send_held(call.id, job):
            log.info("call %s: transfer %s: %s; REFER sent", call.id, job.id, detail)
            self._pump()

    def _agent_status(self, call: Call, kind: str, detail: str) -> None:
        call.timeline.append({"at": time.time(), "kind": "agent", "status": kind,
                              "detail": detail})
        log.log(logging.INFO if kind == "connected" else logging.WARNING,
                "call %s: model %s (%s)", call.id, kind, detail)
        if kind != "failed" or self.calls is None or call.state.value == "ended":
            return
        if any(not job.final for job in call.transfers):
            # The caller is being handed on: the transfer's outcome decides the call.
            log.info("call %s: a transfer is under way; the call is left to it", call.id)
            return
        # The caller must not sit in silence: tell them, then hand them on or end the call.
        transfer = self.config.agent_on_failure == "transfer" and bool(self.config.transfer_to)
        message = ("Sorry, we are having technical difficulties. "
                   + ("Let me put you through to a person." if transfer else "Please call again."))
        assert self.loop is not None
        self.loop.create_task(self._after_agent_failure(call, message, transfer))

    async def _after_agent_failure(self, call: Call, message: str, transfer: bool) -> None:
        delay = 0.0
        media = self.media.sessions.get(call.id) if self.media is not None else None
        try:
            from sipbridge.localmodel.tts import synthesize

            pcm = await asyncio.to_thread(synthesize, message, None)
            if media is not None:
                media.clear_playout()
                media.play(pcm)
                delay = len(pcm) / 24000 + 0.3
        except Exception:  # noqa: BLE001 (no speech to be had: go on without the message)
            log.warning("call %s: no speech for the failure message", call.id)
        await asyncio.sleep(delay)
        if self.calls is None or call.state.value == "ended":
            return
        if transfer:
            try:
                self.calls.refer(call.id, str(self.config.transfer_to), requested_by="gateway")
            except Exception:
                log.exception("call %s: transfer after the model failed", call.id)
                self.calls.hangup(call.id)
        else:
            self.calls.hangup(call.id)
            call.end_reason = "agent_failed"
        self._pump()

    def _agent_digit(self, call_id: str, digit: str) -> None:
        bridge = self.agents.get(call_id)
        if bridge is not None:
            bridge.dtmf(digit)
        else:
            self.sideband.publish(call_id, {"type": "input_audio_buffer.dtmf_event_received",
                                            "event": digit, "received_at": int(time.time())})

    def _auth_blocks(self) -> tuple[int, int]:
        """Sources blocked so far, and blocked now, for the metrics."""
        now = self.loop.time() if self.loop is not None else 0.0
        return self.guard.blocks_total, self.guard.blocked(now)

    def _rate_blocked(self, host: str) -> bool:
        limiter = self.limiter
        return (limiter is not None and self.loop is not None
                and limiter.is_blocked(host, self.loop.time()))

    def _rate_blocks(self) -> tuple[int, int, int]:
        """Sources rate-blocked so far and now, and the messages dropped, for the metrics."""
        limiter = self.limiter
        if limiter is None:
            return 0, 0, 0
        now = self.loop.time() if self.loop is not None else 0.0
        return limiter.blocks_total, limiter.blocked(now), limiter.dropped_total

    def _queue_delay(self, delay: float) -> None:
        assert self.overload is not None and self.loop is not None
        self.overload.queue_delay(delay, self.loop.time())

    def _overload_figures(self) -> tuple[int, bool]:
        """New calls refused for overload so far, and whether it refuses them now."""
        if self.overload is None or self.loop is None:
            return 0, False
        return self.overload.rejected, self.overload.active(self.loop.time())

    def _live_media(self) -> Iterator[tuple[str, MediaFigures]]:
        """The media figures of the calls in progress, for the metrics."""
        for call in self.calls.calls.values() if self.calls is not None else ():
            if call.media_live is not None:
                yield call.id, call.media_live()

    def _count_end(self, call: Call) -> None:
        self._setup_seen.discard(call.id)
        reason = (call.end_reason or "unknown").split(":")[0][:32]
        self.metrics.calls.labels(reason).inc()
        if call.media is not None:  # what scrapes during the call did not count yet
            self.metrics.media(call.id, call.media, ended=True)

    def _on_end(self, call: Call) -> None:
        self._count_end(call)
        self.sideband.close(call.id)
        bridge = self.agents.pop(call.id, None)
        if bridge is not None and self.loop is not None:
            self.loop.create_task(bridge.close())

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
        if step is not None and step.final and job.id in self._tool_calls:
            call_id, tool_call = self._tool_calls.pop(job.id)
            bridge = self.agents.get(call_id)
            if bridge is not None:  # the model hears how its transfer went
                bridge.function_output(tool_call, tool_output(machine),
                                       respond=step.status != SUCCEEDED)
        if step is not None and step.final:
            self.metrics.transfers.labels(step.status).inc()
        if (job.fallback or {}).get("status") == "answered":
            # The caller talks with the target now: the model leaves the call.
            bridge = self.agents.pop(call.id, None)
            if bridge is not None and self.loop is not None:
                self.loop.create_task(bridge.close())
        if step is None or not step.final or self.webhooks is None:
            return
        kind = "succeeded" if step.status == SUCCEEDED else "failed"
        event = make_event(f"realtime.call.transfer.{kind}", {
            "call_id": call.id, "transfer_id": job.id, "status": step.status,
            "sip_status": step.sip_status, "reason": step.reason, "target_uri": machine.target,
        })
        call.webhooks.append(self.webhooks.send(event, on_attempt=self._webhook_attempt(call)))

    def _on_message(self, data: bytes, source: Address) -> None:
        ua = self.ua
        assert ua is not None and self.loop is not None
        now = self.loop.time()
        if not ua.admit(source, now):
            # Dropped unread (its source is over its rate): nothing to trace or send, and
            # a stream connection is closed (new ones from there are, while it is blocked).
            if source.reliable:
                self.transport.drop(source)
            return
        if ua.shed(data, source, now):  # refused for overload: no call, no timeline
            for out, dest in ua.outgoing():
                self.transport.send(out, dest)
            return
        # Traced before the UA acts on it; a new call's INVITE once the call exists.
        if not self._trace(data, source, "in", early=True):
            self._inbound = (data, source)
        ua.receive(data, source, now, screened=True)
        self._pump()

    def _on_send_error(self, data: bytes, dest: Address, reason: str) -> None:
        """A message the transport could not send: on its call's timeline, and its request
        fails in the core as 503 (a transfer whose REFER had nowhere to go says why)."""
        assert self.ua is not None and self.loop is not None
        line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")[:200]
        log.info("not sent to %s: %s (%s)", dest, line, reason)
        match = _CALL_ID.search(data)
        if match is not None and self.calls is not None:
            call = self.calls.by_sip_id.get(match.group(1).strip().decode("utf-8", "replace"))
            if call is not None:
                call.timeline.append({"at": time.time(), "kind": "warning",
                                      "detail": f"{line} to {dest} not sent: {reason}"})
        self.ua.transport_error(data, dest, reason, self.loop.time())
        self._pump()

    def _on_change(self, call: Call) -> None:
        """The call's record to the store (its timeline goes there entry by entry)."""
        if call.answered_at is not None and call.id not in self._setup_seen:
            self._setup_seen.add(call.id)
            self.metrics.setup.observe(max(0.0, call.answered_at - call.created_at))
        store = self.store
        if store is None:
            return
        if call.timeline.sink is None:
            def sink(entry: dict[str, object]) -> None:
                at = entry.get("at")
                store.add_event(call.id, at if isinstance(at, float) else time.time(),
                                str(entry.get("kind")), entry)

            call.timeline.sink = sink
        record = call.to_dict(timeline=False)
        if self.config.recordings:
            call.recording = str(Path(self.config.recordings) / f"{call.id}.wav")
            record["recording"] = call.recording
        store.upsert_call(record)

    def note(self, call_id: str, kind: str, **data: object) -> None:
        """One entry on a call's timeline (the API's sideband connections, say)."""
        if self.calls is None:
            return
        call = self.calls.calls.get(call_id) or self.calls.recent.get(call_id)
        if call is not None:
            call.timeline.append({"at": time.time(), "kind": kind, **data})

    def _webhook_attempt(self, call: Call) -> Callable[[Any, Any], None]:
        metrics = self.metrics

        def attempt(delivery: Any, result: Any) -> None:
            if result.error or not 200 <= (result.status_code or 0) < 300:
                metrics.webhook_failures.labels(delivery.event_type).inc()
            call.timeline.append({"at": time.time(), "kind": "webhook",
                                  "type": delivery.event_type, "attempt": result.number,
                                  "status_code": result.status_code, "error": result.error,
                                  "duration_ms": round(result.duration_ms, 1)})
        return attempt

    def _trace(self, data: bytes, peer: Address, direction: str, *, early: bool = False
               ) -> bool:
        """A SIP message of a known call onto its timeline (start line, full text), an ended
        call's too while its transactions last; False when it belongs to no call (yet).
        `early`: before the UA has read it, when an INVITE with an ended call's Call-ID may
        still make a new call (False then: it is traced once the UA has acted)."""
        calls = self.calls
        if calls is None or not calls.by_sip_id:
            return False
        match = _CALL_ID.search(data)
        if match is None:
            return False
        call = calls.by_sip_id.get(match.group(1).strip().decode("utf-8", "replace"))
        if call is None:
            return False
        if early and call.state is CallState.ENDED and data.startswith(b"INVITE "):
            return False
        text = data[:MAX_TRACE].decode("utf-8", "replace")
        call.timeline.append({"at": time.time(), "kind": "sip", "dir": direction,
                              "peer": str(peer), "line": text.split("\r\n", 1)[0],
                              "text": text})
        return True

    def _schedule(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        assert self.loop is not None

        def run() -> None:
            if self._stopping:
                return
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
            if self._inbound is not None:  # after the events: an INVITE's call exists now
                self._trace(*self._inbound, "in")
                self._inbound = None
            for data, dest in ua.outgoing():
                self._trace(data, dest, "out")
                self.transport.send(data, dest)
            if not events:
                break
        deadline = None if self._stopping else ua.deadline
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


def rate_limiter(config: Config) -> RateLimiter | None:
    """The per-source rate limit, or None when it is off. Exempt: the `exempt` networks,
    the allow-list (trusted as trunks already) and the trunk's address when an IP."""
    rl = config.rate_limit
    if not rl.enabled:
        return None
    exempt = [*rl.exempt, *config.allow]
    if config.trunk is not None and is_ip(config.trunk.bind[0]):
        exempt.append(config.trunk.bind[0])
    return RateLimiter(RateLimits(rl.requests_per_second, rl.burst, rl.block_time,
                                  rl.max_sources), exempt)


def _timeline_entry(event: dict[str, Any]) -> dict[str, Any] | None:
    """The timeline entry for a model event worth keeping (none for audio and the rest)."""
    kind = event.get("type")
    if kind == "conversation.item.input_audio_transcription.completed":
        return {"kind": "transcript", "role": "caller", "text": str(event.get("transcript")),
                "item_id": event.get("item_id")}
    if kind == "response.output_audio_transcript.done":
        return {"kind": "transcript", "role": "agent", "text": str(event.get("transcript")),
                "item_id": event.get("item_id")}
    if kind == "response.function_call_arguments.done":
        return {"kind": "agent", "status": "function_call", "name": event.get("name"),
                "arguments": str(event.get("arguments"))[:1000]}
    if kind == "conversation.item.input_audio_transcription.failed":
        error = event.get("error") or {}
        return {"kind": "agent", "status": "transcription_failed",
                "detail": str(error.get("message") if isinstance(error, dict) else error)}
    if kind == "error":
        error = event.get("error") or {}
        return {"kind": "agent", "status": "error",
                "detail": str(error.get("message") if isinstance(error, dict) else error)}
    return None


def _overload_detector(config: Config) -> OverloadDetector | None:
    o = config.overload
    if not o.enabled:
        return None
    return OverloadDetector(OverloadLimits(
        queue_delay=o.queue_delay_ms / 1000, loop_lag=o.loop_lag_ms / 1000, max_cpu=o.max_cpu,
        max_rate=o.max_rate, retry_after=o.retry_after))


@lru_cache(maxsize=1024)
def _local_for(peer_host: str) -> str:
    return local_address_for(peer_host)


FILES_PER_CALL = 4  # the call's RTP and RTCP sockets, and a bridge leg's
FILES_RESERVED = 256  # listeners, the store, the model's and the API's connections


def raise_file_limit(config: Config) -> int:
    """Raise the process's soft open-file limit to its hard limit (systemd and Debian
    start services at 1,024) and check that the configured limits fit in it: TCP
    connections and calls each hold descriptors. Returns the limit; ValueError, with the
    numbers, when the limits do not fit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    need = (config.tcp_max_connections + config.max_calls * FILES_PER_CALL + FILES_RESERVED)
    if soft != resource.RLIM_INFINITY and soft < need:
        raise ValueError(
            f"the open-file limit is {soft}, and the limits need {need} "
            f"(tcp_max_connections {config.tcp_max_connections} + max_calls "
            f"{config.max_calls} x {FILES_PER_CALL} + {FILES_RESERVED}): raise the limit "
            "(LimitNOFILE=, ulimit -n) or lower tcp_max_connections or max_calls")
    return int(soft)


class LoopErrors:
    """The event loop's error reports, logged so that they cannot flood the log: the
    first of a kind (its message and exception type) in full, then one line with the
    count per `interval` while it repeats. An OSError (out of descriptors, a peer gone)
    is the system's state, not a fault of ours: no traceback."""

    def __init__(self, interval: float = 10.0, kinds: int = 100) -> None:
        self.interval = interval
        self.kinds = kinds
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (logged at, since)

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "event loop error")
        exc = context.get("exception")
        key = (message, type(exc).__name__)
        now = time.monotonic()
        logged = self._seen.get(key)
        if logged is not None and now - logged[0] < self.interval:
            self._seen[key] = (logged[0], logged[1] + 1)
            return
        if len(self._seen) >= self.kinds and key not in self._seen:
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = (now, 0)
        repeated = f" ({logged[1]} more like it in the last {self.interval:g} s)" \
            if logged is not None and logged[1] else ""
        if isinstance(exc, OSError):
            log.error("%s: %s%s", message, exc, repeated)
        else:
            if repeated:
                log.error("%s%s", message, repeated)
            loop.default_exception_handler(context)
