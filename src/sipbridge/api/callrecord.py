"""The call record as the OpenAPI document describes it (`GET /v1/realtime/calls/{call_id}`
and the list): what each field means, and the unit of every time in it.

Every time in a record, a timeline, a transfer or a webhook delivery is Unix time in
seconds, a float, the clock of `created_at`. These models describe the responses; they do
not build them (`Call.to_dict` does) and do not filter them. The record's shape is declared
once, in `sipbridge.records`; these models name the same keys, part by part (a test holds
them to it), and say what each means.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

UNIX_TIME = "Unix time, seconds (a float, the clock of created_at)"


def _when(what: str, *, null: str = "") -> Any:
    """A timestamp field: Unix time, seconds; `null` says when it is null."""
    return Field(description=f"{UNIX_TIME}: {what}." + (f" Null {null}." if null else ""))


class _Described(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class SipDetails(_Described):
    call_id: str = Field(description="The SIP Call-ID of the caller's leg.")
    from_: str = Field(alias="from", description="The caller's URI (From).")
    to: str = Field(description="The called URI (To).")
    source: str = Field(description="host:port the INVITE came from.")
    final_status: int | None = Field(
        description="The SIP status the gateway refused the call with (486, 603, ...); null "
        "for a call it answered.")
    rtp_port: int | None = Field(description="The gateway's RTP port for the call.")
    codec: str | None = Field(description="The negotiated audio codec.")
    on_hold: bool = Field(description="Whether the caller has put the call on hold.")


class TransferStep(_Described):
    at: float = _when("when the transfer reached this status")
    status: str = Field(description="requested, sent, accepted, progress, succeeded, failed, "
                        "rejected, timed_out, unconfirmed or cancelled; a warm transfer: "
                        "requested, dialing, ringing, answered, briefing, connecting, "
                        "connected, returned or cancelled.")
    sip_status: int | None = Field(
        description="The last SIP status the carrier reported (REFER response or NOTIFY "
        "sipfrag).")
    reason: str | None = Field(description="Why, in words (a reason phrase or the gateway's).")
    final: bool = Field(description="Whether this step is the transfer's outcome.")


class Transfer(_Described):
    id: str = Field(description="The transfer's id (xfer_...).")
    target_uri: str = Field(description="Where the caller is transferred to.")
    status: str = Field(description="The transfer's status: its last step's.")
    final: bool = Field(description="Whether the status is the outcome.")
    sip_status: int | None = Field(description="The last SIP status the carrier reported.")
    reason: str | None = Field(description="Why the transfer is in its status, in words.")
    requested_at: float = _when("when the transfer was requested")
    steps: list[TransferStep] = Field(description="Every change of status, oldest first.")
    fallback: dict[str, object] | None = Field(
        description="What the gateway did when the transfer failed (mode, status, ...).")
    requested_by: str = Field(description="app (the API), agent (the model's transfer tool) "
                              "or gateway.")
    mode: str = Field("blind", description="blind (a REFER) or warm (the gateway dials the "
                      "person and the agent briefs them before the caller is connected).")


class WebhookAttempt(_Described):
    number: int = Field(description="1 for the first attempt.")
    started_at: float = _when("when the attempt started")
    duration_ms: float = Field(description="How long the attempt took, in milliseconds.")
    status_code: int | None = Field(description="The HTTP status; null with no answer.")
    error: str | None = Field(description="Why the attempt failed; null when it succeeded.")


class WebhookDelivery(_Described):
    event_id: str = Field(description="The event's id (evt_...).")
    event_type: str = Field(description="The event's type (realtime.call.incoming, ...).")
    outcome: str = Field(description="pending, delivered, failed or cancelled.")
    attempts: list[WebhookAttempt] = Field(description="Each HTTP attempt, oldest first.")
    url: str = Field("", description="The endpoint it went to (a webhook_url or [[webhook]]), "
                     "without credentials or query.")


class TimelineEntry(_Described):
    """One thing that happened to the call; its other fields depend on `kind`."""

    at: float = _when("when it happened")
    kind: str = Field(description="sip (a SIP message in or out: dir, peer, line, text), api, "
                      "webhook, sideband, agent, transcript, dtmf (a digit received: digit, "
                      "duration_ms; or digits sent: direction out, dtmf_id, digits, method, "
                      "status, reason), transfer, fallback, media, call, ...")


MEDIA_FIGURES = """A call record's `media` is null until the call's RTP starts; then, updated
as the call runs and final once it ends: `packets_in` (datagrams received on the RTP port,
STUN aside), `packets_out`, `lost` (sequence numbers that never arrived: a duplicate does
not offset a loss as in RFC 3550's cumulative loss), `duplicates`, `reordered` (arrived
after a later packet), `jitter_ms` (RFC 3550 interarrival jitter), `late` and `concealed`
(frames), `skipped` (queued frames the jitter buffer dropped to shrink its delay) and
`stalled` (ticks it played nothing to grow it): each a 20 ms step in what is heard;
`rtcp_in`, `rtcp_out`, `stun` (STUN messages
received on the media ports, RFC 7983), `stun_answered` (Binding Success Responses sent),
`dtmf` (the digits), `dropped` (packets dropped, by reason: `version`, `short`,
`payload_type`, `source`, `flood`, `srtp_auth`, `srtp_replay`, ...) and `srtp` (whether the
media is SRTP)."""


class CallSummary(_Described):
    """A call without its timeline, as the list shows it."""

    id: str = Field(description="The call's id (rtc_...).")
    object: str = Field(description="Always realtime.call.")
    state: str = Field(description="ringing, active or ended.")
    created_at: float = _when("when the INVITE arrived")
    answered_at: float | None = _when("when the gateway answered", null="until then")
    ended_at: float | None = _when("when the call ended", null="while it lasts")
    end_reason: str | None = Field(description="Why the call ended (remote_bye, hangup, "
                                   "transferred, ...).")
    sip: SipDetails
    transfers: list[Transfer] = Field(description="The call's transfers, oldest first.")
    recording: str | None = Field(description="The path of the call's WAV, when recorded.")
    media: dict[str, Any] | None = Field(description=MEDIA_FIGURES)
    webhooks: list[WebhookDelivery] = Field(description="The call's webhook deliveries.")
    direction: str = Field("inbound", description="inbound, or outbound: placed by the "
                           "gateway (POST /v1/realtime/calls).")
    outbound: dict[str, Any] | None = Field(None, description=(
        "An outbound call's progress: status (dialing, ringing, answered, busy, no_answer, "
        "rejected, failed, cancelled), sip_status, reason, trunk, to; null for inbound "
        "calls."))


class CallRecord(CallSummary):
    """One call with its timeline."""

    timeline: list[TimelineEntry] = Field(
        description="Everything that happened to the call, in order: every SIP message in "
        "and out (those after the end too), API requests, webhooks, sideband and model "
        "events, transfer steps.")


class CallList(_Described):
    object: str = Field(description="Always list.")
    data: list[CallSummary] = Field(description="Calls, newest first.")
