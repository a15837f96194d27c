"""The running gateway: builds the parts (transport, SIP driver, calls, sinks, agents, API)
in one event loop, starts and stops them."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp

from sipbridge.agent.lifecycle import Agents
from sipbridge.api.app import HttpServer, create_app, tls_context
from sipbridge.api.callevents import SidebandSink, WebhookSink
from sipbridge.api.webhooks import WebhookSender
from sipbridge.calls.call import Trunk
from sipbridge.calls.events import CallEvents
from sipbridge.calls.manager import AnswerPolicy, CallManager
from sipbridge.calls.outbound import OutboundPolicy
from sipbridge.calls.sinks import HOLD, MetricsSink, StoreSink
from sipbridge.calls.transfer_machine import TransferTimers
from sipbridge.calls.transfer_runner import TransferPolicy
from sipbridge.calls.trunks import Trunks
from sipbridge.cluster.forward import Forwarder
from sipbridge.cluster.local import LocalNode
from sipbridge.cluster.membership import ClusterNode
from sipbridge.config import Config, RegistrationConfig
from sipbridge.loopwatch import StallWatch
from sipbridge.media.engine import MediaConfig, MediaEngine, load_wav
from sipbridge.media.speed import missing, use_compiled
from sipbridge.metrics import Metrics
from sipbridge.realtime.sideband import SidebandHubs
from sipbridge.records import MediaFigures
from sipbridge.registrations import Registrations
from sipbridge.sip.access import AccessGuard, AuthLimits
from sipbridge.sip.address import Address, is_ip, next_hop
from sipbridge.sip.auth import DigestServer
from sipbridge.sip.dns import ResolveError, Resolver
from sipbridge.sip.driver import SipDriver
from sipbridge.sip.loadprobe import LoadProbe
from sipbridge.sip.overload import OverloadDetector, OverloadLimits
from sipbridge.sip.ratelimit import RateLimiter, RateLimits
from sipbridge.sip.registration import RegistrationSpec, RegState
from sipbridge.sip.tls import TlsConfig
from sipbridge.sip.transaction import TimerConfig
from sipbridge.sip.transport import SipTransport, local_address_for
from sipbridge.sip.ua import UaConfig, UserAgent
from sipbridge.sip.uri import parse_sip_uri
from sipbridge.webhookevents import INCOMING

if TYPE_CHECKING:
    from sipbridge.store import Store

log = logging.getLogger("sipbridge")

WILDCARDS = ("0.0.0.0", "::", "")
GC_THRESHOLDS = (20_000, 20, 20)  # the young generation's size, then passes per older one


class Gateway:
    """Builds the parts of one gateway, starts and stops them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        host, port = config.sip_bind
        self.overload = _overload_detector(config)
        if self.overload is not None:
            self.overload.starting()  # till `start` is done (`started`)
        self._compiled = use_compiled(config.media_path)  # MediaPathError: not built
        if not self._compiled and config.media_path == "auto":
            log.warning("media: the compiled path is not built (%s): calls take the Python "
                        "path; run scripts/setup.sh to build it", ", ".join(missing()))
        self._load_probe: LoadProbe | None = None
        self.resolver = Resolver(config.dns_servers, timeout=config.dns_timeout,
                                 ipv6=":" in host)
        self.transport = SipTransport(
            lambda data, source: self._driver().receive(data, source),
            max_size=config.max_message_size,
            idle_timeout=config.tcp_idle_timeout, resolver=self.resolver,
            on_error=lambda data, dest, reason: self._driver().send_failed(data, dest, reason),
            max_connections=config.tcp_max_connections,
            max_per_source=config.tcp_max_per_source,
            first_message_timeout=config.tcp_first_message_timeout,
            on_queue_delay=self._queue_delay if self.overload is not None else None,
            refuse=self._rate_blocked,
            tls=TlsConfig(config.tls_cert, config.tls_key, config.tls_ca,
                          config.tls_verify_client, config.tls_verify,
                          config.tls_handshake_timeout),
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
        self.sip: SipDriver | None = None
        self.calls: CallManager | None = None
        self.media: MediaEngine | None = None
        self.events = CallEvents()
        self.sideband = SidebandHubs()
        self.store: Store | None = None
        self._store_sink: StoreSink | None = None
        self._purging: asyncio.Task[None] | None = None
        self.metrics = Metrics(lambda: len(self.calls.calls) if self.calls is not None else 0,
                               self._live_media,
                               self._auth_blocks, self._rate_blocks, self._overload_figures,
                               tls_failures=lambda: self.transport.tls_failures.total)
        self.registrations: Registrations | None = None
        self.metrics.registrations = self._registration_figures
        self.agents: Agents | None = None
        self.local_model: Any = None
        self._preload: asyncio.Future[Any] | None = None
        self.agent_url = config.agent_url
        self.http: HttpServer | None = None
        # Each webhook endpoint, with the event types it gets.
        self.webhooks: list[tuple[WebhookSender, frozenset[str]]] = []
        self.stall_watch: StallWatch | None = None
        self.node: LocalNode | ClusterNode = LocalNode(
            config.node_name or "local", "", self._live_calls, self.refused_total,
            self._draining)
        self._sampling: asyncio.Task[None] | None = None
        self.forwarder: Forwarder | None = None
        # Set when the cluster asks this node to drain (`sipbridge drain`): as SIGTERM.
        self.drain_requested = asyncio.Event()

    @property
    def advertised_host(self) -> str:
        """The address in our Via, Contact and Call-ID: sip_public_address (else
        public_address), the bound host, or the local address that routes to loopback."""
        public = self.config.sip_public_address or self.config.public_address
        if public:
            return public
        return self._local_host()

    def _local_host(self) -> str:
        if self._bind_host not in WILDCARDS:
            return self._bind_host
        return _local_for("127.0.0.1")

    def media_host(self, peer_host: str) -> str:
        """The address we give a peer for media (SDP c= and o=): media_public_address
        (else public_address), the bound host, or the local address that routes to the
        peer."""
        public = self.config.media_public_address or self.config.public_address
        if public:
            return public
        if self._bind_host not in WILDCARDS:
            return self._bind_host
        if not is_ip(peer_host):  # a trunk named by host: no lookup on the event loop
            return self._local_host()
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
        if c.agent_url == "local" and (c.auto_answer == "agent" or c.webhook_endpoints
                                       or self._outbound_possible()):
            await self._start_local_model()
        if c.http != "off":
            await self._start_http()
        if isinstance(self.node, LocalNode):
            self._sampling = asyncio.create_task(self._sample_every(5.0))
        await self.transport.start(self._bind_host, self._bind_port)
        if c.sip_tls_bind is not None:
            await self.transport.listen_tls(*c.sip_tls_bind)
        if not c.tls_verify:
            log.warning("tls_verify = false: the certificates of TLS servers we connect to "
                        "are NOT verified; anyone on the path can read and change those calls")
        self.ua = UserAgent(
            UaConfig(host=self.advertised_host, port=self.transport.port,
                     tls_port=self.transport.tls_port,
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
                        codecs=tuple(c.codecs), compiled=self._compiled,
                        resolve=self._media_address if c.media_resolve_names else None),
            self.loop,
        )
        self.webhooks = [
            (WebhookSender(e.url, e.secret, timeout=e.timeout or c.webhook_timeout,
                           max_attempts=e.attempts or c.webhook_attempts), e.types)
            for e in c.webhook_endpoints]
        self.sip = SipDriver(self.ua, self.transport, self.loop)
        self.calls = self._call_plane()
        if c.registration:
            self.registrations = Registrations(
                self.sip, (registration_spec(r) for r in c.registration),
                host=self._contact_host, port=self._listening_port)
            self.registrations.attach()
            self.registrations.start()
        await self._import_ahead()
        # What start-up made lives as long as the process: keep it out of every
        # garbage collection, so full collections stay short under load.
        gc.collect()
        gc.freeze()
        # A call leaves no cyclic garbage (tests/unit/test_store_sink.py), so the collector
        # only finds garbage from rarer paths; at the default thresholds it ran every
        # ~20 calls at 1,000 calls/s and took ~45 us of CPU a call, at these ~22
        # (bench/README.md, "No garbage cycle per call, fewer collections").
        gc.set_threshold(*GC_THRESHOLDS)
        if self.overload is not None:
            self.overload.started(self.loop.time())
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

    def _call_plane(self) -> CallManager:
        """The calls, and the sinks their events go to: the timeline (always first), the
        store, the metrics, the sideband, the webhooks, the agents."""
        c = self.config
        assert self.sip is not None and self.media is not None and self.loop is not None
        if self.store is not None:
            loop = self.loop
            self._store_sink = StoreSink(
                self.store, c.recordings, lambda hand_over: loop.call_later(HOLD, hand_over))
            self.events.subscribe(self._store_sink)
        self.events.subscribe(MetricsSink(self.metrics))
        self.events.subscribe(SidebandSink(self.sideband))
        if self.webhooks:
            self.events.subscribe(WebhookSink(self.webhooks, self.events, self.metrics))
        calls = CallManager(
            self.sip, self.events,
            AnswerPolicy(auto_answer=c.auto_answer, ring_time=c.ring_time,
                         reject_code=c.reject_code, ask_app=self._asks_app(),
                         accept_timeout=c.accept_timeout,
                         accept_timeout_code=c.accept_timeout_code, max_calls=c.max_calls,
                         max_agent_calls=(c.agent_max_sessions if c.agent_url == "local"
                                          else None),
                         max_calls_per_source=c.max_calls_per_source,
                         srtp=c.srtp, srtp_over_cleartext=c.srtp_over_cleartext,
                         dtmf_method=c.dtmf_method),
            media=self.media, media_host=self.media_host,
            bind_host=self._bind_host or "0.0.0.0",
            transfers=TransferPolicy(
                TransferTimers(c.transfer_refer_timeout, c.transfer_notify_timeout,
                               c.transfer_bye_after_accept, c.transfer_ring_timeout,
                               c.transfer_brief_timeout),
                c.transfer_fallback, c.transfer_tel_uri, self._trunk(),
                c.transfer_warm_connect,
                load_wav(c.transfer_hold_audio) if c.transfer_hold_audio else None),
            outbound=OutboundPolicy(Trunks.from_config(c), c.outbound_max_calls,
                                    c.outbound_calls_per_second, c.outbound_ring_timeout),
            node=c.node_name or "",
        )
        self.agents = Agents(c, self.agent_url, calls, self.events, self.sideband,
                             self.metrics, self.media, self.loop)
        self.events.subscribe(self.agents)
        return calls

    def _driver(self) -> SipDriver:
        assert self.sip is not None
        return self.sip

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

    async def _start_http(self) -> None:
        """The API (and, in a cluster, the forwarding of other nodes' calls); then this
        node joins the cluster, its API's address known."""
        c = self.config
        host, port = c.http_bind
        if not c.api_key:
            log.warning("no api_key configured: the HTTP API on %s:%d is open", host, port)
        tls = tls_context(c.http_tls_cert, c.http_tls_key) if c.http_tls_cert else None
        cluster = self._cluster_node()
        app: ASGIApp = create_app(self, c.api_key, open_metrics=metrics_open(c),
                                  nodes=cluster or self.node)
        if cluster is not None:
            assert c.cluster_secret is not None  # Config checks it
            self.forwarder = Forwarder(app, cluster, c.cluster_secret,
                                       keys=tuple(k.encode() for k in c.api_key),
                                       verify=c.tls_verify)
            app = self.forwarder
        self.http = HttpServer(app, host, port, tls)
        await self.http.start()
        scheme = "https" if tls is not None else "http"
        self.node.api_url = c.node_api_url or \
            f"{scheme}://{_url_host(self.http.host)}:{self.http.port}"
        if cluster is not None:
            cluster.api_url = self.node.api_url
            await cluster.join()  # NodeNameTaken: another process has the name
            self.node = cluster

    def _cluster_node(self) -> ClusterNode | None:
        """This node of the cluster, before it joins (None: no cluster configured)."""
        c = self.config
        if c.node_name is None:
            return None
        from sipbridge.store.nodes import NodeTable

        return ClusterNode(NodeTable(c.store, c.node_name), "", heartbeat=c.cluster_heartbeat,
                           timeout=c.cluster_node_timeout, live_calls=self._live_calls,
                           refused=self.refused_total, draining=self._draining,
                           drain=self.drain_requested.set)

    async def _sample_every(self, interval: float) -> None:
        """The node's per-minute refusals, counted as they happen (to the minute)."""
        while True:
            await asyncio.sleep(interval)
            if isinstance(self.node, LocalNode):
                self.node.sample()

    def _live_calls(self) -> int:
        return len(self.calls.calls) if self.calls is not None else 0

    def _draining(self) -> bool:
        return self.ua is not None and self.ua.draining

    def refused_total(self) -> int:
        """New calls refused with 503 so far: overload, draining, call or agent limit."""
        stats = self.ua.stats if self.ua is not None else {}
        busy = self.calls.refused_busy if self.calls is not None else 0
        return stats.get("refused_draining", 0) + stats.get("overload_rejected", 0) + busy

    async def speech_ready(self) -> None:
        """Wait until the built-in model has loaded its speech models (at once without it;
        a load that fails is logged, and calls are served either way)."""
        if self._preload is not None:
            await asyncio.shield(self._preload)

    async def drain(self, wait_s: float) -> int:
        """Take no new calls (INVITEs and OPTIONS get 503 + Retry-After) and wait up to
        `wait_s` s for the calls under way to end; returns how many are still up (the
        `stop` that follows ends them)."""
        if self.ua is None or self.calls is None:
            return 0
        self.ua.draining = True
        calls = self.calls.calls
        log.warning("draining: no new calls; %d under way, waited for up to %.0f s",
                    len(calls), wait_s)
        deadline = time.monotonic() + wait_s
        # A poll, for the drain alone: the calls plane has no "last call ended" signal.
        while calls and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if calls:
            log.warning("draining: %d calls still up after %.0f s: ended", len(calls),
                        wait_s)
        else:
            log.warning("draining: every call has ended")
        return len(calls)

    async def stop(self) -> None:
        if self.registrations is not None:  # first: its un-REGISTERs need the SIP timers
            await self.registrations.stop()
        # No timer of the SIP core or the calls fires from here on: each await below lets
        # the loop run, and a call ended by a timer then would write to a closed store.
        if self.sip is not None:
            self.sip.stop()
        if self.stall_watch is not None:  # what shutdown itself takes is not a stall
            self.stall_watch.stop()
            if self.stall_watch.summary():
                log.warning("%s", self.stall_watch.summary())
        if self._purging is not None:
            self._purging.cancel()
        if self._sampling is not None:
            self._sampling.cancel()
        if self._load_probe is not None:
            self._load_probe.stop()
        if self.agents is not None:
            await self.agents.close()
        if self.http is not None:
            await self.http.stop()
        await self._leave_cluster()
        if self.local_model is not None:
            await self.local_model.stop()
        if self.media is not None:
            self.media.close()
        await self.transport.close()
        for sender, _ in self.webhooks:
            await sender.close()
        if self.store is not None:  # last: everything above may still record something
            if self._store_sink is not None:
                self._store_sink.hand_over()
            await asyncio.to_thread(self.store.close)

    async def _leave_cluster(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.close()
        if isinstance(self.node, ClusterNode):
            await self.node.leave()

    def summary(self) -> str:
        """Message counters (received, answered by status, dropped and why), one line."""
        stats = dict(self.ua.stats) if self.ua is not None else {}
        stats["tcp_framing_errors"] = self.transport.stats_framing_errors
        stats["tls_handshake_failures"] = self.transport.tls_failures.total
        return ", ".join(f"{k}={v}" for k, v in sorted(stats.items()) if v)

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
        self.local_model = LocalModelServer(policy=policy, preload=False,
                                            max_sessions=self.config.agent_max_sessions,
                                            voice_engine=self.config.agent_voice_engine)
        await self.local_model.start("127.0.0.1", 0)
        # Load the speech models while the gateway serves.
        self._preload = asyncio.get_running_loop().run_in_executor(None, self.local_model.load)
        self.agent_url = f"ws://127.0.0.1:{self.local_model.port}/v1/realtime?model=local"
        log.info("built-in model on %s", self.agent_url)

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

    def _contact_host(self, spec: RegistrationSpec) -> str:
        """The address our Contact gives a registrar, where it is to send our calls:
        public_address, the bound address, or the local address that routes to the
        registrar (when named by IP; a name is not looked up here)."""
        if self.config.public_address or self._bind_host not in WILDCARDS:
            return self.advertised_host
        host = next_hop(parse_sip_uri(spec.registrar)).host
        if is_ip(host):
            return _local_for(host)
        log.warning("registration %s: its registrar %s is named, not an IP, so our Contact "
                    "names %s: set public_address to the address it can reach us at",
                    spec.name, spec.registrar, self.advertised_host)
        return self.advertised_host

    def _listening_port(self, transport: str) -> int:
        """The port our Contact names for a transport: TLS has its own listener."""
        if transport == "tls" and self.transport.tls_port:
            return self.transport.tls_port
        return self.transport.port

    def _registration_figures(self) -> list[tuple[str, bool, int, int]]:
        """(name, registered, attempts, failures) of each registration, for the metrics."""
        if self.registrations is None:
            return []
        return [(s.name, s.state is RegState.REGISTERED, s.attempts, s.failures)
                for s in self.registrations.statuses()]

    def _live_media(self) -> Iterator[tuple[str, MediaFigures]]:
        """The media figures of the calls in progress, for the metrics."""
        for call in self.calls.calls.values() if self.calls is not None else ():
            if call.media_live is not None:
                yield call.id, call.media_live()

    def _asks_app(self) -> bool:
        """Whether calls ring for the application: an endpoint gets realtime.call.incoming."""
        return any(INCOMING in types for _, types in self.webhooks)

    def _outbound_possible(self) -> bool:
        """Whether the API may place outbound calls: it is on, and there is a trunk."""
        c = self.config
        return c.http != "off" and bool(c.trunk or c.trunks or c.registration)

    def _trunk(self) -> Trunk | None:
        t = self.config.trunk
        if t is None:
            return None
        host, port = t.bind
        credentials = (t.username, t.password or "") if t.username else None
        return Trunk(Address(t.transport, host, port), t.from_uri, t.domain or host,
                     credentials)



def registration_spec(r: RegistrationConfig) -> RegistrationSpec:
    """A `[[registration]]` entry as the registration machine takes it."""
    username = r.username
    if username is None and r.password:
        username = r.aor.split(":", 1)[1].split("@", 1)[0]
    return RegistrationSpec(r.name, r.registrar, r.aor, username, r.password, r.transport,
                            r.expires, r.contact_user, r.retry_min, r.retry_max)


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


def _overload_detector(config: Config) -> OverloadDetector | None:
    o = config.overload
    if not o.enabled:
        return None
    return OverloadDetector(OverloadLimits(
        queue_delay=o.queue_delay_ms / 1000, loop_lag=o.loop_lag_ms / 1000, max_cpu=o.max_cpu,
        max_rate=o.max_rate, retry_after=o.retry_after))


def metrics_open(config: Config) -> bool:
    """Whether /metrics goes without the API key: metrics_auth "open", or "auto" with the
    API on loopback only (where a local Prometheus scrapes it without credentials)."""
    if config.metrics_auth == "auto":
        return _is_loopback(config.http_bind[0])
    return config.metrics_auth == "open"


def _is_loopback(host: str) -> bool:
    """Whether an HTTP listener on `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    """A host as a URL names it: an IPv6 address in brackets, a wildcard as loopback."""
    if host in WILDCARDS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


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
