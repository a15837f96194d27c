"""The call record's shape: what `Call.to_dict` builds, the store keeps and gives back, the
API's record routes answer, and `sipbridge trace` and the dashboard draw.

Every time in a record is Unix time in seconds, a float. The OpenAPI document describes the
same fields (`sipbridge.api.callrecord`, whose models say what each one means); a test
holds the two to the same keys. This module imports nothing of sipbridge, so every plane
may use it.
"""

# No `from __future__ import annotations`: TypedDict reads NotRequired from evaluated
# annotations only, and the keys it declares are used at run time (tests, documentation).
from typing import NotRequired, TypeAlias, TypedDict

# One thing that happened to a call: always "at" (Unix time, float) and "kind" (str: sip,
# api, webhook, sideband, agent, transcript, dtmf, transfer, fallback, media, call, ...),
# then fields that depend on the kind (a SIP message's dir, peer, line and text, say).
TimelineEntry: TypeAlias = dict[str, object]

# SIP details of a call. "from" is a keyword, hence the functional form.
SipRecord = TypedDict("SipRecord", {
    "call_id": str,
    "from": str,
    "to": str,
    "source": str,
    "final_status": int | None,  # the status a refused call was answered with
    "rtp_port": int | None,
    "codec": str | None,
    "on_hold": bool,
})


class TransferStepRecord(TypedDict):
    """One change of a transfer's status."""

    at: float
    status: str
    sip_status: int | None
    reason: str | None
    final: bool


class TransferState(TypedDict):
    """A transfer as its state machine knows it (`Transfer.to_dict`)."""

    id: str
    target_uri: str
    status: str
    final: bool
    sip_status: int | None
    reason: str | None
    requested_at: float
    steps: list[TransferStepRecord]


class TransferRecord(TransferState):
    """A transfer of the call, with what the gateway did when it failed."""

    fallback: dict[str, object] | None  # mode, status, reason, ... of the fallback
    requested_by: str  # "app" (the API), "agent" (its transfer tool) or "gateway"
    mode: str  # "blind" (REFER) or "warm" (dialled and briefed by the gateway first)


class WebhookAttemptRecord(TypedDict):
    number: int
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None


class WebhookRecord(TypedDict):
    """One webhook delivery of the call's events and its attempts."""

    event_id: str
    event_type: str
    outcome: str  # pending, delivered, failed or cancelled
    attempts: list[WebhookAttemptRecord]
    url: NotRequired[str]  # the endpoint, without credentials or query


class MediaFigures(TypedDict):
    """A call's RTP figures (`MediaSession.figures`), live while it runs, final at its end."""

    packets_in: int
    packets_out: int
    lost: int
    duplicates: int
    reordered: int
    jitter_ms: float
    late: int
    concealed: int
    skipped: int  # queued frames the jitter buffer dropped to shrink its delay
    stalled: int  # ticks it held back, playing nothing, to grow its delay
    rtcp_in: int
    rtcp_out: int
    stun: int
    stun_answered: int
    dtmf: str
    dropped: dict[str, int]
    srtp: bool


class CallRecord(TypedDict):
    """One call. Lists and the store's rows leave out the timeline (the store keeps it
    entry by entry and puts it back when it reads one call)."""

    id: str
    object: str  # "realtime.call"
    state: str  # ringing, active or ended
    created_at: float
    answered_at: float | None
    ended_at: float | None
    end_reason: str | None
    sip: SipRecord
    media: MediaFigures | None
    transfers: list[TransferRecord]
    recording: str | None
    webhooks: list[WebhookRecord]
    direction: str  # "inbound" or "outbound"
    outbound: dict[str, object] | None  # an outbound call's status
    timeline: NotRequired[list[TimelineEntry]]


class NodeRecord(TypedDict):
    """One node of a cluster as the store knows it (`sipbridge cluster`, the dashboard's
    overview). A gateway on its own is a cluster of one node."""

    name: str
    api_url: str  # where the other nodes reach its API (forwarded requests)
    state: str  # "up", "draining" or "gone"
    started_at: float
    heartbeat_age: float  # seconds since its last heartbeat, by the store's clock
    live_calls: int  # its calls under way, as of its last heartbeat
    refused: int  # new calls it refused with 503 (overload, draining) since it started
    this: bool  # the node that answers the request
