"""One typed config, loaded once: command-line flags over SIPBRIDGE_ variables over the
TOML file over defaults."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import wave
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sipbridge.media.codecs import canonical_name
from sipbridge.sip.address import split_host_port
from sipbridge.sip.errors import SipError
from sipbridge.sip.headers import UA_WRITTEN_HEADERS
from sipbridge.sip.uri import parse_sip_uri
from sipbridge.webhookevents import OPENAI_EVENTS, expand

AUTO_ANSWER_MODES = ("silence", "echo", "agent", "play:FILE")


class ConfigError(Exception):
    """A config that cannot be used; the message says which key and why."""


def parse_host_port(value: str, default_port: int) -> tuple[str, int]:
    """`HOST:PORT`, `HOST`, `[V6]:PORT` or `:PORT` into (host, port); no host: all
    addresses (0.0.0.0)."""
    host, port = split_host_port(value)
    return host or "0.0.0.0", default_port if port is None else port


class AuthConfig(BaseModel):
    """Digest authentication for callers outside `allow` (RFC 3261 22, RFC 8760)."""

    realm: str = "sipbridge"
    users: dict[str, str] = Field(default_factory=dict)
    algorithms: list[str] = Field(default_factory=lambda: ["SHA-256", "MD5"])
    nonce_ttl: float = Field(300.0, gt=0)
    # A source with `max_failures` failed authentications within `window` seconds is
    # refused (403) for `block_time` seconds.
    max_failures: int = Field(10, ge=1)
    window: float = Field(60.0, gt=0)
    block_time: float = Field(600.0, gt=0)

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        known = {"MD5", "SHA-256", "SHA-512-256"}
        bad = [a for a in value if a.upper() not in known]
        if bad or not value:
            raise ValueError(f"algorithms must be among {sorted(known)}, got {value}")
        return [a.upper() for a in value]


class RateLimitConfig(BaseModel):
    """Per-source message rate limit: a source sending faster than `requests_per_second`
    (with bursts of `burst`) is dropped unanswered for `block_time` seconds. Sources in
    `allow`, in `exempt` and the trunk's address are never limited."""

    enabled: bool = True
    requests_per_second: float = Field(default=20.0, gt=0)
    burst: int = Field(default=60, ge=1)
    block_time: float = Field(default=60.0, gt=0)
    exempt: list[str] = Field(default_factory=list)  # networks, like `allow`
    max_sources: int = Field(default=20_000, ge=1)  # source addresses remembered at most

    @field_validator("exempt")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value


class TrunkConfig(BaseModel):
    """The outbound trunk the gateway dials through (the `bridge` transfer fallback)."""

    address: str  # HOST:PORT where outbound INVITEs go
    transport: str = Field("udp", pattern="^(udp|tcp|tls)$")
    username: str | None = None  # digest credentials, answered once per call
    password: str | None = None
    from_uri: str = "sip:sipbridge@localhost"  # our From in outbound calls
    domain: str | None = None  # tel: targets become sip:NUMBER@domain (default: the address)
    pai: str | None = None  # P-Asserted-Identity on outbound INVITEs, e.g. "<tel:+1415...>"
    dtmf: str = Field("rfc4733", pattern="^(rfc4733|info)$")  # how outbound calls send DTMF
    headers: dict[str, str] = Field(default_factory=dict)  # extra headers on every INVITE

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[A-Za-z0-9!%*_+`'~.-]{1,64}", name) \
                    or re.search(r"[\x00-\x1f\x7f]", text):
                raise ValueError(f"header {name!r}: a token name and a single-line value")
            if name.lower() in UA_WRITTEN_HEADERS:
                raise ValueError(f"header {name!r}: the gateway writes it")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_host_port(value, 5060)
        return value

    @property
    def bind(self) -> tuple[str, int]:
        return parse_host_port(self.address, 5061 if self.transport == "tls" else 5060)


def check_webhook_secret(value: str, key: str) -> str:
    """`whsec_` followed by non-empty base64 (Standard Webhooks), or ValueError."""
    body = value.removeprefix("whsec_")
    try:
        if value == body or not base64.b64decode(body, validate=True):
            raise ValueError
    except (binascii.Error, ValueError):
        raise ValueError(f"{key} must be whsec_ followed by base64") from None
    return value


def check_webhook_url(value: str, key: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{key} must be an http:// or https:// URL")
    return value


class WebhookConfig(BaseModel):
    """A `[[webhook]]` endpoint: where events go, the secret they are signed with, and
    which event types it gets (`sipbridge.webhookevents`: by default only what OpenAI
    sends, `realtime.call.incoming`; the gateway's own are opt-in)."""

    url: str
    secret: str = Field(repr=False)
    events: list[str] = Field(default_factory=lambda: list(OPENAI_EVENTS), min_length=1)
    timeout: float | None = Field(None, gt=0, le=60)  # default: webhook_timeout
    attempts: int | None = Field(None, ge=1, le=20)  # default: webhook_attempts

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_webhook_url(value, "url")

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        return check_webhook_secret(value, "secret")

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        expand(value)
        return value

    @property
    def types(self) -> frozenset[str]:
        """The event types it gets."""
        return expand(self.events)


class RegistrationConfig(BaseModel):
    """A `[[registration]]` entry: keep `aor` bound to this gateway at a provider's
    registrar (RFC 3261 10), refreshed before it expires, retried with backoff."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    registrar: str  # HOST[:PORT] or a sip: URI
    aor: str  # sip:user@domain
    username: str | None = None  # digest credentials (default: the AOR's user)
    password: str | None = Field(None, repr=False)
    transport: str = Field("udp", pattern="^(udp|tcp|tls)$")
    expires: int = Field(3600, ge=60, le=86400)  # seconds asked for
    contact_user: str = Field("sipbridge", pattern=r"^[A-Za-z0-9_.!~*'()&=+$,;?/%-]{1,64}$")
    retry_min: float = Field(5.0, gt=0, le=3600)  # seconds: backoff after a failure ...
    retry_max: float = Field(300.0, gt=0, le=86400)  # ... doubling up to this

    @field_validator("registrar")
    @classmethod
    def _registrar(cls, value: str) -> str:
        text = value if value.lower().startswith(("sip:", "sips:")) else f"sip:{value}"
        try:
            uri = parse_sip_uri(text)
        except SipError as exc:
            raise ValueError(f"not HOST[:PORT] or a sip: URI: {exc}") from None
        if uri.user is not None:
            raise ValueError("a registrar is HOST[:PORT] or sip:HOST[:PORT], without a user")
        return text

    @field_validator("aor")
    @classmethod
    def _aor(cls, value: str) -> str:
        try:
            uri = parse_sip_uri(value)
        except SipError as exc:
            raise ValueError(f"not a sip:user@domain URI: {exc}") from None
        if not uri.user:
            raise ValueError("an AOR is sip:user@domain")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> RegistrationConfig:
        if self.retry_max < self.retry_min:
            raise ValueError("retry_max must not be below retry_min")
        return self


class OverloadConfig(BaseModel):
    """Overload control: while a bound is passed, new INVITEs get 503 + Retry-After at
    once (RFC 7339's local form); calls in progress go on. 0 turns a bound off."""

    enabled: bool = True
    queue_delay_ms: float = Field(default=200.0, ge=0)  # a datagram waited this long unread
    loop_lag_ms: float = Field(default=100.0, ge=0)  # the event loop ran a callback this late
    max_cpu: float = Field(default=0.0, ge=0, le=1)  # the process's share of one core, e.g. 0.9
    max_rate: float = Field(default=0.0, ge=0)  # new INVITEs per second admitted
    retry_after: int = Field(default=2, ge=0, le=3600)  # seconds, in the 503's Retry-After


TRANSFER_FALLBACKS = ("none", "announce", "bridge")


class Config(BaseSettings):
    """Everything `sipbridge serve` can be told."""

    model_config = SettingsConfigDict(
        env_prefix="SIPBRIDGE_", env_nested_delimiter="__", extra="forbid"
    )
    toml_path: ClassVar[Path | None] = None

    sip: str = "0.0.0.0:5060"
    http: str = "127.0.0.1:8080"
    auto_answer: str | None = None
    ring_time: float = Field(0.0, ge=0, le=300)
    reject_code: int = Field(480, ge=300, le=699)
    allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    auth: AuthConfig | None = None
    rate_limit: RateLimitConfig = Field(default_factory=lambda: RateLimitConfig())
    public_address: str | None = None
    # Behind NAT, when signalling and media leave by different addresses: the address in
    # Via, Contact and Call-ID, and the one in the SDP's c= and o= lines (each defaults
    # to public_address).
    sip_public_address: str | None = None
    media_public_address: str | None = None
    rtp_ports: str = "10000-20000"
    media_timeout: float = Field(30.0, ge=0)  # seconds without RTP before hanging up; 0: never
    jitter_min_ms: int = Field(0, ge=0, le=1000)
    jitter_max_ms: int = Field(200, ge=20, le=2000)
    # The media hot path: "compiled" (the C modules set-up builds), "python" (the
    # reference), "auto" (compiled when built).
    media_path: Literal["auto", "compiled", "python"] = "auto"
    recordings: str | None = None  # a directory for one stereo WAV per call
    # Voice codecs in preference order (opus, G722, PCMU, PCMA; any case)
    codecs: list[str] = Field(default_factory=lambda: ["opus", "G722", "PCMU", "PCMA"])
    max_message_size: int = Field(65535, ge=1024, le=1 << 20)
    # SIP over TLS (RFC 3261 26.2): HOST:PORT to listen on (unset: no TLS listener), our
    # certificate and key (PEM), the CA that signs peers' certificates (else the system's).
    sip_tls: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify_client: bool = False  # mutual TLS: clients must show a cert signed by tls_ca
    tls_verify: bool = True  # verify servers we connect to, by name (false: lab use only)
    tls_handshake_timeout: float = Field(10.0, gt=0, le=120)
    tcp_idle_timeout: float = Field(300.0, gt=0)  # seconds with no whole message
    tcp_first_message_timeout: float = Field(10.0, gt=0)  # seconds to the first message
    tcp_max_connections: int = Field(512, ge=1)  # inbound TCP connections in all ...
    tcp_max_per_source: int = Field(64, ge=1)  # ... and from one source address
    max_calls: int = Field(800, ge=1)  # calls at once; more get 503 + Retry-After ...
    max_calls_per_source: int | None = Field(None, ge=1)  # ... and from one source address
    t1: float = Field(0.5, gt=0)
    t2: float = Field(4.0, gt=0)
    t4: float = Field(5.0, gt=0)
    # Where in-dialog requests go: by the book (Record-Route, else Contact), except for
    # peers in these networks, which get them where their INVITE came from (behind NAT).
    rewrite_contact: list[str] = Field(default_factory=list)
    # Name servers for host names in Route and Contact ("IP" or "IP:PORT"; none: those of
    # /etc/resolv.conf), and how long one lookup may take.
    dns_servers: list[str] = Field(default_factory=list)
    dns_timeout: float = Field(2.0, gt=0, le=30)
    # Whether a host name in a caller's SDP c= line is looked up (the same way, without
    # blocking); no: RTP waits for the caller's first packet to show where to go.
    media_resolve_names: bool = False
    # SRTP (RFC 3711, SDES keys RFC 4568): "off" (RTP/SAVP offers get 488), "optional"
    # (answer in kind), "required" (RTP/AVP offers get 488). Keys travel in the SDP, so
    # SRTP is taken only over TLS signalling unless srtp_over_cleartext (lab use).
    srtp: str = Field("optional", pattern="^(off|optional|required)$")
    srtp_over_cleartext: bool = False
    # How a call sends DTMF when the request does not say: "rfc4733" (telephone-events
    # in its RTP stream) or "info" (SIP INFO, application/dtmf-relay).
    dtmf_method: str = Field("rfc4733", pattern="^(rfc4733|info)$")
    log_level: str = "info"
    # HTTPS for the API, the sideband WebSocket and the dashboard: PEM files (the cert file
    # may hold the chain); TLS 1.2 and later only.
    http_tls_cert: str | None = None
    http_tls_key: str | None = None
    # /metrics with API keys set: "auto" wants a key unless the API listens on loopback
    # only (where Prometheus scrapes it), "key" always wants one, "open" never does.
    metrics_auth: str = Field("auto", pattern="^(auto|key|open)$")
    # The event loop stalling longer than this (ms) is logged as a warning naming the code
    # it was in, at most one line per 10 s; 0: not watched.
    slow_callback_ms: int = Field(0, ge=0, le=60_000)
    # The event loop: "uvloop" (libuv's, in C: cheaper per wake-up, reader and timer),
    # "asyncio" (Python's own), "auto" (uvloop when installed, else asyncio). Not uvloop
    # with sip_tls (see sipbridge.eventloop): "auto" then takes asyncio. Default asyncio:
    # uvloop measured no faster here (bench/README.md, sip_cps).
    event_loop: Literal["auto", "uvloop", "asyncio"] = "asyncio"
    # The application side (OpenAI's Realtime API for SIP calls).
    api_key: Annotated[list[str], NoDecode] = Field(default_factory=list)  # Bearer keys
    webhook_url: str | None = None  # realtime.call.incoming goes here; calls then wait
    webhook_secret: str | None = None  # whsec_...: signs webhooks (Standard Webhooks)
    webhook_timeout: float = Field(5.0, gt=0, le=60)  # seconds per delivery attempt
    webhook_attempts: int = Field(5, ge=1, le=20)
    # More endpoints ([[webhook]] tables), each with the event types it wants.
    webhook: list[WebhookConfig] = Field(default_factory=list)
    accept_timeout: float = Field(30.0, gt=0, le=600)  # seconds a call rings for the app
    accept_timeout_code: int = Field(480, ge=400, le=699)
    # Transfers (REFER, RFC 3515): every one reaches an outcome within these bounds.
    transfer_refer_timeout: float = Field(8.0, gt=0, le=64)  # REFER unanswered -> timed_out
    # 202 and no final NOTIFY in this time: unconfirmed
    transfer_notify_timeout: float = Field(30.0, gt=0, le=600)
    transfer_bye_after_accept: str = Field("unconfirmed", pattern="^(unconfirmed|succeeded)$")
    # A warm transfer: how long the target may ring, and how long the briefing may last.
    transfer_ring_timeout: float = Field(30.0, gt=0, le=300)
    transfer_brief_timeout: float = Field(60.0, gt=0, le=600)
    # A warm transfer: what the caller hears on hold (a 16-bit PCM WAV, looped; None: a
    # soft beep), and how the caller is connected (auto: REFER with Replaces when the
    # caller supports it, else the gateway bridges the two calls).
    transfer_hold_audio: Path | None = None
    transfer_warm_connect: str = Field("auto", pattern="^(auto|replaces|bridge)$")
    transfer_fallback: str = "announce"  # none | announce | bridge, when a transfer fails
    transfer_tel_uri: str | None = None  # e.g. "sip:{number}@trunk.example.com" for Refer-To
    # The agent's transfer tool: the REFER waits (at most this many seconds; 0: not at
    # all) until the words the agent says with it are played out to the caller;
    # transfer_refer_timeout counts from when it is sent.
    transfer_speech_wait: float = Field(5.0, ge=0, le=30)
    trunk: TrunkConfig | None = None
    # Named trunks ([trunks.NAME] tables) that outbound calls may name; a [[registration]]
    # name is a trunk too (its registrar, its credentials, its AOR as From).
    trunks: dict[str, TrunkConfig] = Field(default_factory=dict)
    outbound_max_calls: int = Field(50, ge=1)  # outbound calls at once; more: HTTP 429
    outbound_calls_per_second: float = Field(10.0, gt=0)  # placed per second (token bucket)
    outbound_ring_timeout: float = Field(30.0, gt=0, le=600)  # default ring time, seconds
    overload: OverloadConfig = Field(default_factory=lambda: OverloadConfig())
    # Registrations to providers ([[registration]] tables), each kept up while we run.
    registration: list[RegistrationConfig] = Field(default_factory=list)
    # The call store: every call and its timeline. A SQLite file's path, or a
    # postgresql://user:pass@host/db URL (pip install 'sipbridge[postgres]'; several
    # gateways may share the database). "off": in memory only.
    store: str = "sipbridge.db"
    store_retention_days: float | None = Field(None, gt=0)
    store_purge_interval: float = Field(3600.0, gt=0)  # seconds between purges by age
    # SIGTERM drains: new INVITEs and OPTIONS get 503 + Retry-After while the calls under
    # way go on, for up to this many seconds; then the gateway stops (exit 0). SIGINT, or
    # a second SIGTERM, stops at once.
    drain_timeout: float = Field(300.0, ge=0)
    # A cluster (README "Running several nodes"): nodes sharing a PostgreSQL store, each
    # named; any node answers the API for any call, forwarding to the node that holds it.
    node_name: str | None = Field(None, pattern=r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
    node_api_url: str | None = None  # where the other nodes reach this one's API
    cluster_secret: str | None = None  # shared by the nodes: authenticates forwarded requests
    cluster_heartbeat: float = Field(2.0, gt=0, le=60)  # s between a node's heartbeats
    cluster_node_timeout: float = Field(15.0, gt=0)  # s without one: the node is gone
    # The agent: the model each answered call talks to.
    agent_url: str = "local"  # "local": the built-in model; or ws(s)://.../v1/realtime?model=...
    agent_api_key: str | None = None  # Bearer key for agent_url (OpenAI's, say)
    agent_policy: str | None = None  # the local model's dialog policy (YAML); None: built in
    agent_llm_url: str | None = None  # an OpenAI-compatible chat-completions base URL ...
    agent_llm_model: str = "gpt-4o-mini"  # ... that answers callers instead of the YAML
    agent_llm_api_key: str | None = None  # policy (which still greets)
    agent_reconnects: int = Field(3, ge=0, le=20)  # a dropped model connection is retried
    agent_on_failure: str = Field("hangup", pattern="^(hangup|transfer)$")  # then this
    # How the default agent (auto_answer = "agent") finds the end of a caller's turn:
    # "semantic_vad" (a short pause after complete words ends it; eagerness auto) or
    # "server_vad" (500 ms of silence, as OpenAI's default).
    agent_turn_detection: str = Field("semantic_vad", pattern="^(semantic_vad|server_vad)$")
    # Calls at once that talk with the built-in model (agent_url = "local"): with
    # auto_answer = "agent", more are refused 503 (agents busy); a session past it that
    # the API accepted gets the model's refusal, and agent_on_failure.
    agent_max_sessions: int = Field(8, ge=1, le=1000)
    # The built-in model's voice: "auto" (the natural voice, piper-tts, when the `voice`
    # extra is installed; else espeak-ng), "piper" (the same, warning when it is missing),
    # "espeak" (espeak-ng only). espeak-ng speaks whenever the natural voice fails.
    agent_voice_engine: str = Field("auto", pattern="^(auto|piper|espeak)$")
    transfer_to: str | None = None  # --transfer-to: the human the default agent transfers to
    # --transfer-mode: how the default agent transfers to transfer_to: "blind" (REFER) or
    # "warm" (the gateway dials the person and the agent briefs them first: the text
    # transfer_brief, or "summary": the agent sums up the conversation)
    transfer_mode: str = Field("blind", pattern="^(blind|warm)$")
    transfer_brief: str = Field("summary", min_length=1, max_length=2000)

    @field_validator("sip", "http")
    @classmethod
    def _host_port(cls, value: str, info: ValidationInfo) -> str:
        if info.field_name == "http" and value.strip().lower() in ("", "off", "none"):
            return "off"  # no HTTP API
        parse_host_port(value, 0)
        return value

    @field_validator("sip_tls")
    @classmethod
    def _tls_bind(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "off", "none"):
            return None
        parse_host_port(value, 5061)
        return value

    @field_validator("codecs")
    @classmethod
    def _codecs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("codecs needs at least one codec")
        names = [canonical_name(name) for name in value]  # ValueError names the unknown one
        if len(set(names)) != len(names):
            raise ValueError(f"codecs lists a codec twice: {value!r}")
        return names

    @field_validator("auto_answer")
    @classmethod
    def _mode(cls, value: str | None) -> str | None:
        if value in (None, "", "none", "off"):
            return None
        if value.startswith("play:"):
            path = Path(value[5:])
            if not path.is_file():
                raise ValueError(f"auto_answer {value!r}: no such file {str(path)!r}")
            return value
        if value not in AUTO_ANSWER_MODES:
            raise ValueError(f"auto_answer must be one of {', '.join(AUTO_ANSWER_MODES)}")
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, str):  # SIPBRIDGE_API_KEY=key1,key2
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else check_webhook_secret(value, "webhook_secret")

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_webhook_url(value, "webhook_url")

    @model_validator(mode="after")
    def _webhook_signed(self) -> Config:
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("webhook_url needs webhook_secret (whsec_...) to sign with")
        return self

    @model_validator(mode="after")
    def _cluster(self) -> Config:
        if self.node_name is None:
            return self
        if not self.store.lower().startswith(("postgresql://", "postgres://")):
            raise ValueError("node_name (a cluster) needs a PostgreSQL store "
                             "(store = \"postgresql://...\"), shared by the nodes")
        if self.http == "off":
            raise ValueError("node_name (a cluster) needs the HTTP API (http): the nodes "
                             "forward requests to each other")
        if not self.cluster_secret or len(self.cluster_secret) < 16:
            raise ValueError("node_name (a cluster) needs cluster_secret, at least 16 "
                             "characters, the same on every node")
        if self.node_api_url is not None and not self.node_api_url.startswith(
                ("http://", "https://")):
            raise ValueError("node_api_url must be an http:// or https:// URL")
        if self.cluster_node_timeout < 3 * self.cluster_heartbeat:
            raise ValueError("cluster_node_timeout must be at least 3 x cluster_heartbeat")
        return self

    @field_validator("transfer_fallback")
    @classmethod
    def _fallback(cls, value: str) -> str:
        if value not in TRANSFER_FALLBACKS:
            raise ValueError(f"transfer_fallback must be one of {', '.join(TRANSFER_FALLBACKS)}")
        return value

    @field_validator("transfer_hold_audio")
    @classmethod
    def _hold_audio(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                with wave.open(str(value), "rb") as w:
                    if w.getsampwidth() != 2:
                        raise ValueError("transfer_hold_audio must be a 16-bit PCM WAV file")
            except (OSError, EOFError, wave.Error) as exc:
                raise ValueError(f"transfer_hold_audio: cannot read {value}: {exc}") from None
        return value

    @field_validator("transfer_tel_uri")
    @classmethod
    def _tel_uri(cls, value: str | None) -> str | None:
        if value is not None and ("{number}" not in value
                                  or not value.startswith(("sip:", "sips:"))):
            raise ValueError("transfer_tel_uri must be a sip: URI containing {number}")
        return value

    @field_validator("registration")
    @classmethod
    def _registration_names(cls, value: list[RegistrationConfig]) -> list[RegistrationConfig]:
        names = [r.name for r in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # a name is the key of its state, metrics and API entry
            raise ValueError(f"registration names must differ: {', '.join(twice)} repeated")
        return value

    @field_validator("dns_servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        from sipbridge.sip.dns import parse_server

        for server in value:
            parse_server(server)
        return value

    @field_validator("allow", "rewrite_contact")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value

    @field_validator("rtp_ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high) < 65536):
            raise ValueError("rtp_ports must be LOW-HIGH, within 1024-65535")
        return value

    @field_validator("http_tls_cert", "http_tls_key")
    @classmethod
    def _http_tls(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.field_name == "http_tls_key" and not info.data.get("http_tls_cert"):
            raise ValueError("http_tls_key needs http_tls_cert (the certificate it goes with)")
        if not Path(value).is_file():
            raise ValueError(f"no such file {value!r}")
        return value

    @property
    def webhook_endpoints(self) -> list[WebhookConfig]:
        """Every webhook endpoint, timeouts and attempts filled in: `webhook_url` (with
        `webhook_secret`, OpenAI's event types only) first, then each [[webhook]]."""
        flat = [] if self.webhook_url is None or self.webhook_secret is None else [
            WebhookConfig(url=self.webhook_url, secret=self.webhook_secret,
                          events=list(OPENAI_EVENTS), timeout=None, attempts=None)]
        return [e.model_copy(update={
            "timeout": self.webhook_timeout if e.timeout is None else e.timeout,
            "attempts": self.webhook_attempts if e.attempts is None else e.attempts})
            for e in flat + self.webhook]

    @property
    def sip_bind(self) -> tuple[str, int]:
        return parse_host_port(self.sip, 5060)

    @property
    def sip_tls_bind(self) -> tuple[str, int] | None:
        return None if self.sip_tls is None else parse_host_port(self.sip_tls, 5061)

    @property
    def http_bind(self) -> tuple[str, int]:
        return parse_host_port(self.http, 8080)

    @property
    def rtp_port_range(self) -> tuple[int, int]:
        low, _, high = self.rtp_ports.partition("-")
        return int(low), int(high)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_path))
        return tuple(sources)


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Load the config: `overrides` (flags) > environment > TOML file > defaults."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
    try:
        Config.toml_path = Path(path) if path is not None else None
        return Config(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid config: {problems}") from None
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"invalid config file {path}: {exc}") from None
    finally:
        Config.toml_path = None
