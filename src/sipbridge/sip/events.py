"""What the UA core tells the rest of the program: small typed events about call legs."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sipbridge.sip.address import Address
from sipbridge.sip.message import Request, Response


class EndReason(enum.Enum):
    REMOTE_BYE = "remote_bye"  # the peer sent BYE
    LOCAL_BYE = "local_bye"  # we sent BYE
    CANCELLED = "cancelled"  # the caller sent CANCEL before the answer
    REJECTED = "rejected"  # we answered with a final non-2xx
    NO_ACK = "no_ack"  # our 2xx was never acknowledged (RFC 3261 13.3.1.4)


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A new INVITE passed the access check; the TU must ring, answer or reject it."""

    leg_id: str
    request: Request
    source: Address
    username: str | None  # the digest user, when the caller authenticated


@dataclass(frozen=True, slots=True)
class CallConfirmed:
    """The ACK for our 2xx arrived (RFC 3261 13.3.1.4); `body` holds a late-offer answer."""

    leg_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class CallEnded:
    leg_id: str
    reason: EndReason
    status: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ReInvite:
    """A re-INVITE in the dialog (RFC 3261 14.2); the TU answers it with `UserAgent.respond`."""

    leg_id: str
    request: Request


@dataclass(frozen=True, slots=True)
class InDialogRequest:
    """A request in the dialog. `answered` is True when the UA already sent 200 (INFO,
    OPTIONS); otherwise the TU must answer it with `UserAgent.respond`."""

    leg_id: str
    request: Request
    answered: bool


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """A response (provisional or final) to a request the TU sent, or its timeout."""

    leg_id: str
    request: Request
    response: Response | None
    timed_out: bool = False

    @property
    def final(self) -> bool:
        return self.timed_out or (self.response is not None and self.response.status >= 200)


@dataclass(frozen=True, slots=True)
class OutgoingProgress:
    """A provisional response to a call we placed (`UserAgent.invite`)."""

    leg_id: str
    response: Response


@dataclass(frozen=True, slots=True)
class OutgoingAnswered:
    """A call we placed was answered (2xx, already ACKed); the body holds the SDP answer.
    A call that fails ends with CallEnded(REJECTED, status) instead."""

    leg_id: str
    response: Response


Event = (IncomingCall | CallConfirmed | CallEnded | ReInvite | InDialogRequest | RequestOutcome
         | OutgoingProgress | OutgoingAnswered)
