"""A call as the rest of sipbridge sees it: its record, its timeline, its transfers."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sipbridge.audiostream import NegotiatedAudio
from sipbridge.calls.transfer_machine import FAILED, REJECTED, TIMED_OUT, UNCONFIRMED, Transfer
from sipbridge.calls.warm import WarmLeg, WarmTransfer
from sipbridge.records import CallRecord, MediaFigures, TimelineEntry, TransferRecord, WebhookRecord
from sipbridge.sip.address import Address
from sipbridge.sip.tokens import token_hex


class Timeline(list[TimelineEntry]):
    """A call's timeline; `sink` (the store) sees each entry as it is added."""

    sink: Callable[[TimelineEntry], None] | None = None

    def append(self, entry: TimelineEntry) -> None:
        list.append(self, entry)
        sink = self.sink
        if sink is not None:
            sink(entry)


def new_call_id(now: float | None = None, node: str = "") -> str:
    """A call's id: "rtc_" and 32 hex digits, the first 12 the milliseconds since the
    epoch at `now` (time.time()), the other 20 random (80 bits). Ids in the order the
    calls came make the store's index of them grow at its end: with random ids each
    call dirtied a page of the index somewhere in it, and the store's writer spent ~25 us
    a call more (bench/README.md). In a cluster, "_" and the node's name follow
    (`call_node`): any node knows from the id alone which node holds the call, with no
    lookup and no wait for the store to have the call."""
    ms = int((time.time() if now is None else now) * 1000) & 0xFFFF_FFFF_FFFF
    return f"rtc_{ms:012x}{token_hex(10)}_{node}" if node else f"rtc_{ms:012x}{token_hex(10)}"


def call_node(call_id: str) -> str | None:
    """The name of the node that holds the call, from its id; None for a call id of a
    gateway outside a cluster (or not one of ours)."""
    if len(call_id) < 38 or call_id[36] != "_" or not call_id.startswith("rtc_"):
        return None
    return call_id[37:]


RECENT_CALLS = 1000  # ended calls kept for GET /v1/realtime/calls until the store has them
PRIVATE_HEADERS = {"authorization", "proxy-authorization"}  # never shown to the application


class Delivery(Protocol):
    """A webhook delivery as a call keeps it."""

    def to_dict(self) -> WebhookRecord: ...


class CallState(enum.Enum):
    RINGING = "ringing"
    ACTIVE = "active"
    ENDED = "ended"


class CallError(Exception):
    """A call-control request that cannot be carried out: `kind` is "not_found" or
    "conflict" (the call is in the wrong state); the message says which and why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


FALLBACK_STATES = (FAILED, REJECTED, TIMED_OUT, UNCONFIRMED)  # outcomes that run the fallback


@dataclass(frozen=True, slots=True)
class Trunk:
    """Where the gateway dials out (the `bridge` fallback), and as whom."""

    address: Address
    from_uri: str
    domain: str
    credentials: tuple[str, str] | None = None
    name: str = "default"
    pai: str | None = None  # P-Asserted-Identity sent on its INVITEs
    dtmf: str = "rfc4733"  # how its calls send DTMF: "rfc4733" or "info"
    headers: tuple[tuple[str, str], ...] = ()  # extra headers on every INVITE


@dataclass(slots=True)
class TransferJob:
    """One transfer of a call: the REFER's state machine plus what the gateway did
    about it (the fallback), and the timer that bounds it."""

    machine: Transfer | WarmTransfer
    fallback_mode: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    fallback: dict[str, object] | None = None
    bridge_leg: str | None = None
    requested_by: str = "app"  # "app" (the API), "agent" (its transfer tool), "gateway"
    mode: str = "blind"  # "blind" (REFER) or "warm" (the gateway dials and briefs first)
    cancel_timer: Callable[[], None] | None = field(default=None, repr=False)
    warm: WarmLeg | None = None  # a warm transfer's person side

    @property
    def id(self) -> str:
        return self.machine.id

    @property
    def status(self) -> str:
        return self.machine.status

    @property
    def final(self) -> bool:
        return self.machine.final

    def to_dict(self) -> TransferRecord:
        return {**self.machine.to_dict(),
                "fallback": dict(self.fallback) if self.fallback is not None else None,
                "requested_by": self.requested_by, "mode": self.mode}


@dataclass(slots=True)
class Call:
    """One call as the rest of sipbridge sees it."""

    id: str
    leg_id: str
    caller: str
    callee: str
    created_at: float
    state: CallState = CallState.RINGING
    audio: NegotiatedAudio | None = None
    local_sdp: bytes = field(default=b"", repr=False)  # may hold our SRTP key
    rtp_port: int = 0
    sdp_version: int = 0
    on_hold: bool = False
    end_reason: str | None = None
    cancel_timer: Callable[[], None] | None = field(default=None, repr=False)
    sip_call_id: str = ""
    source: str = ""
    sip_headers: list[tuple[str, str]] = field(default_factory=list)
    mode: str = "auto"  # "auto": answered by policy; "app": waits for accept or reject
    answered_at: float | None = None
    ended_at: float | None = None
    final_status: int | None = None  # the SIP status a rejected call was answered with
    session: dict[str, object] | None = None  # the accepted session config
    options: dict[str, object] = field(default_factory=dict)  # accept's "sipbridge" extension
    dtmf_method: str = "rfc4733"  # how digits are sent: "rfc4733" (RTP events) or "info"
    transfers: list[TransferJob] = field(default_factory=list)
    timeline: Timeline = field(default_factory=Timeline)
    webhooks: list[Delivery] = field(default_factory=list)  # the webhook deliveries
    recording: str | None = None  # the stereo WAV's path, when calls are recorded
    media: MediaFigures | None = None  # the media figures at the call's end
    # While media runs: its figures now (packets, loss, jitter, STUN, drops).
    media_live: Callable[[], MediaFigures] | None = field(default=None, repr=False)
    direction: str = "inbound"  # "outbound": placed by the gateway (POST /v1/realtime/calls)
    outbound: dict[str, object] | None = None  # an outbound call's status, sip_status, reason

    def to_dict(self, *, timeline: bool = True) -> CallRecord:
        """The call record the API shows (GET /v1/realtime/calls/{id}); lists and the store
        take it without the timeline (the store gets that entry by entry)."""
        audio = self.audio
        record: CallRecord = {
            "id": self.id, "object": "realtime.call", "state": self.state.value,
            "created_at": self.created_at, "answered_at": self.answered_at,
            "ended_at": self.ended_at, "end_reason": self.end_reason,
            "sip": {
                "call_id": self.sip_call_id, "from": self.caller, "to": self.callee,
                "source": self.source, "final_status": self.final_status,
                "rtp_port": self.rtp_port or None,
                "codec": audio.codec.name if audio is not None else None,
                "on_hold": self.on_hold,
            },
            "media": self.media_live() if self.media_live is not None else self.media,
            "transfers": [t.to_dict() for t in self.transfers],
            "recording": self.recording,
            "webhooks": [w.to_dict() for w in self.webhooks],
            "direction": self.direction,
            "outbound": dict(self.outbound) if self.outbound is not None else None,
        }
        if timeline:
            record["timeline"] = list(self.timeline)
        return record


@dataclass(slots=True)
class DtmfSend:
    """One request to send digits, and how far it got."""

    id: str
    digits: str
    method: str
    duration_ms: int
    gap_ms: int
    requested_by: str = "app"  # "app" (the API) or "agent" (the send_dtmf tool)
    status: str = "queued"
    reason: str | None = None
    sent: int = 0  # digits sent so far (INFO: answered 2xx)
    on_done: Callable[[DtmfSend], None] | None = field(default=None, repr=False)
    info_cseq: int | None = None  # the INFO awaiting its final response
    info_at: float = 0.0  # when the last INFO went
    cancel_timer: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def final(self) -> bool:
        return self.status in ("sent", "failed")

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "object": "realtime.call.dtmf", "digits": self.digits,
                "method": self.method, "duration_ms": self.duration_ms,
                "gap_ms": self.gap_ms, "requested_by": self.requested_by,
                "status": self.status, "reason": self.reason, "sent": self.sent}
