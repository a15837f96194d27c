"""A caller's side of the UA core on a fake clock: the requests a SIPp UAC would send
(`sip`, `ack_2xx`, `in_dialog`) and `Phone`, a UserAgent whose messages and events are
parsed and recorded; `Phone.advance` fires the UA's timers at their deadlines."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.events import CallConfirmed, Event, IncomingCall
from sipbridge.sip.message import Request, Response, parse_message
from sipbridge.sip.transaction import TimerConfig
from sipbridge.sip.ua import UaConfig, UserAgent

UAC = Address("udp", "127.0.0.1", 5061)
TIMERS = TimerConfig(t1=0.5, t2=4, t4=5)
RURI = "sip:agent@127.0.0.1:5060"
OFFER = (
    b"v=0\r\no=sipp 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
ANSWER = (
    b"v=0\r\no=sipbridge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def sip(
    method: str,
    *,
    call_id: str = "call-1@127.0.0.1",
    branch: str = "z9hG4bK-inv-1",
    cseq: int = 1,
    cseq_method: str | None = None,
    from_tag: str = "uac-tag",
    to: str | None = None,
    uri: str = RURI,
    via: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5061,
    transport: str = "UDP",
    contact: bool = True,
    headers: Iterable[str] = (),
    body: bytes = b"",
) -> bytes:
    """A request as a SIPp UAC scenario would send it."""
    lines = [
        f"{method} {uri} SIP/2.0",
        via if via is not None else f"Via: SIP/2.0/{transport} {host}:{port};branch={branch}",
        f"From: sipp <sip:sipp@{host}:{port}>;tag={from_tag}",
        to if to is not None else "To: <sip:agent@127.0.0.1:5060>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
    ]
    if contact:
        lines.append(f"Contact: <sip:sipp@{host}:{port}>")
    lines.append("Max-Forwards: 70")
    lines += list(headers)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Sent:
    at: float
    msg: Request | Response
    addr: Address
    data: bytes

    @property
    def status(self) -> int:
        assert isinstance(self.msg, Response), self.msg
        return self.msg.status

    @property
    def method(self) -> str:
        assert isinstance(self.msg, Request), self.msg
        return self.msg.method


class Phone:
    """A UserAgent on a fake clock, with what it sent and told parsed and recorded."""

    def __init__(self, guard: AccessGuard | None = None, timers: TimerConfig = TIMERS) -> None:
        counter = itertools.count(1)
        self.now = 0.0
        self.ua = UserAgent(
            UaConfig(timers=timers),
            guard or AccessGuard(["127.0.0.0/8"]),
            token=lambda: f"tok{next(counter)}",
        )
        self.sent: list[Sent] = []
        self.events: list[Event] = []

    def receive(self, data: bytes, source: Address = UAC) -> None:
        self.ua.receive(data, source, self.now)
        self.collect()

    def collect(self) -> None:
        for data, addr in self.ua.outgoing():
            msg = parse_message(data)
            self.sent.append(Sent(self.now, msg, addr, data))
        self.events += self.ua.events()

    def advance(self, until: float) -> None:
        """Move the clock to `until`, firing each timer at its own deadline."""
        for _ in range(10_000):
            at = self.ua.deadline
            if at is None or at > until:
                break
            self.now = max(self.now, at)
            self.ua.handle_timer(self.now)
            self.collect()
        self.now = max(self.now, until)

    def take(self) -> list[Sent]:
        sent, self.sent = self.sent, []
        return sent

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def one(self) -> Sent:
        sent = self.take()
        assert len(sent) == 1, [s.msg for s in sent]
        return sent[0]

    def empty(self) -> bool:
        held = self.ua.held
        return not (held["server_transactions"] or held["client_transactions"]
                    or held["legs"] or held["dialogs"])

    # --- a caller's side of the common flows ---

    def call(self, source: Address = UAC, **kwargs: object) -> str:
        """Send an INVITE; return the new leg's id (and drop the 100 Trying)."""
        self.receive(sip("INVITE", body=OFFER, **kwargs), source)  # type: ignore[arg-type]
        events = self.take_events()
        assert len(events) == 1 and isinstance(events[0], IncomingCall), events
        trying = self.one()
        assert trying.status == 100
        return events[0].leg_id

    def answered_call(self) -> tuple[str, Response]:
        """INVITE, 200 with SDP, ACK: a confirmed call and the 200 that made it."""
        leg = self.call()
        self.ua.answer(leg, ANSWER, self.now)
        self.collect()
        ok = self.one().msg
        assert isinstance(ok, Response)
        self.receive(ack_2xx(ok))
        assert self.take_events() == [CallConfirmed(leg, b"")]
        return leg, ok


def to_of(resp: Response) -> str:
    return f"To: {resp.headers.get('To')}"


def ack_2xx(ok: Response, branch: str = "z9hG4bK-ack-1", cseq: int = 1, **kwargs: object) -> bytes:
    return sip("ACK", branch=branch, to=to_of(ok), cseq=cseq, contact=False, **kwargs)  # type: ignore[arg-type]


def in_dialog(method: str, ok: Response, cseq: int, branch: str, **kwargs: object) -> bytes:
    return sip(method, to=to_of(ok), cseq=cseq, branch=branch, **kwargs)  # type: ignore[arg-type]
