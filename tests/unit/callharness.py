"""A CallManager over a real UA core with a fake clock and scheduler (`Harness`), the
carrier's requests that drive it (`invite`, `ack`, `notify`) and calls brought to a
state (`app_call`: ringing for the application; `answered_app_call`: accepted)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sipbridge.calls.call import Call
from sipbridge.calls.manager import CallManager
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.events import CallEnded
from sipbridge.sip.message import Request, Response, parse_message
from sipbridge.sip.ua import UaConfig, UserAgent

PEER = Address("udp", "127.0.0.1", 5062)
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na={direction}\r\n"
)


class Harness:
    incoming: list[Call]

    def __init__(self, *, auto_answer: str | None = "silence", ring_time: float = 0.0,
                 reject_code: int = 480, app: bool = False) -> None:
        self.now = 0.0
        self.incoming = []
        self.timers: list[tuple[float, Callable[[], None], list[bool]]] = []
        self.ua = UserAgent(UaConfig(host="127.0.0.1", port=5060), AccessGuard(["127.0.0.0/8"]))
        # A loop that never runs: media sockets are bound and registered, ticks never fire.
        self.loop = asyncio.new_event_loop()
        self.media = MediaEngine(MediaConfig(ports=(20000, 20100)), self.loop)
        self.manager = CallManager(
            self.ua, self.schedule, media_host=lambda peer: "127.0.0.1", media=self.media,
            bind_host="127.0.0.1", auto_answer=auto_answer, ring_time=ring_time,
            reject_code=reject_code, clock=lambda: self.now,
            on_incoming=self.incoming.append if app else None, accept_timeout=20.0,
            accept_timeout_code=408,
        )
        self.sent: list[Response] = []
        self.requests: list[Request] = []
        self.ended: list[CallEnded] = []

    def schedule(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        cancelled = [False]
        self.timers.append((self.now + delay, callback, cancelled))
        return lambda: cancelled.__setitem__(0, True)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for at, callback, cancelled in list(self.timers):
            if at <= self.now and not cancelled[0]:
                self.timers.remove((at, callback, cancelled))
                callback()
        self.pump()

    def pump(self) -> None:
        while events := self.ua.events():
            for event in events:
                if isinstance(event, CallEnded):
                    self.ended.append(event)
                self.manager.handle(event)
        for data, _ in self.ua.outgoing():
            msg = parse_message(data)
            if isinstance(msg, Response):
                self.sent.append(msg)
            else:
                self.requests.append(msg)

    def send(self, text: str) -> None:
        self.ua.receive(text.replace("\n", "\r\n").encode(), PEER, self.now)
        self.pump()

    def statuses(self) -> list[int]:
        return [r.status for r in self.sent]


def invite(body: str = "", content_type: str = "application/sdp", branch: str = "b1",
           cseq: int = 1, to_tag: str = "") -> str:
    body = body.replace("\r\n", "\n")
    ctype = f"Content-Type: {content_type}\n" if body else ""
    to = f"<sip:bot@127.0.0.1>{';tag=' + to_tag if to_tag else ''}"
    return (
        f"INVITE sip:bot@127.0.0.1 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{branch}\n"
        f"From: <sip:carrier@127.0.0.1>;tag=c1\nTo: {to}\nCall-ID: call-1\n"
        f"CSeq: {cseq} INVITE\nContact: <sip:carrier@127.0.0.1:5062>\nMax-Forwards: 70\n"
        f"{ctype}Content-Length: {len(body.replace(chr(10), chr(13) + chr(10)))}\n\n{body}"
    )


def ack(to_tag: str, body: str = "", cseq: int = 1, branch: str = "a1") -> str:
    body = body.replace("\r\n", "\n")
    ctype = "Content-Type: application/sdp\n" if body else ""
    return (
        f"ACK sip:sipbridge@127.0.0.1 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{branch}\n"
        f"From: <sip:carrier@127.0.0.1>;tag=c1\nTo: <sip:bot@127.0.0.1>;tag={to_tag}\n"
        f"Call-ID: call-1\nCSeq: {cseq} ACK\nMax-Forwards: 70\n"
        f"{ctype}Content-Length: {len(body.replace(chr(10), chr(13) + chr(10)))}\n\n{body}"
    )


def app_call() -> tuple[Harness, Call]:
    h = Harness(auto_answer=None, app=True)
    h.send(invite(OFFER.format(direction="sendrecv")).replace(
        "Max-Forwards: 70\n", "Max-Forwards: 70\nAuthorization: Digest secret\nX-Case: 42\n"))
    assert h.statuses() == [100, 180] and len(h.incoming) == 1
    return h, h.incoming[0]


def answered_app_call() -> tuple[Harness, Call]:
    h, call = app_call()
    h.manager.accept(call.id, {"type": "realtime"},
                     {"transfer_targets": {"sales": "tel:+14155550123",
                                           "support": "sip:support@127.0.0.1:5090"}})
    h.pump()
    h.send(ack(h.sent[-1].to.tag or ""))
    return h, call


def notify(h: Harness, event: str, body: str = "SIP/2.0 200 OK", cseq: int = 2,
           state: str = "active;expires=60") -> int:
    """The carrier's NOTIFY in the call's dialog; the status the gateway answered."""
    to_tag = next(r.to.tag for r in h.sent if r.status == 200)
    content = f"{body}\n"
    h.send(
        f"NOTIFY sip:sipbridge@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKn{cseq}\n"
        f"From: <sip:carrier@127.0.0.1>;tag=c1\nTo: <sip:bot@127.0.0.1>;tag={to_tag}\n"
        f"Call-ID: call-1\nCSeq: {cseq} NOTIFY\nMax-Forwards: 70\nEvent: {event}\n"
        f"Subscription-State: {state}\nContent-Type: message/sipfrag\n"
        f"Content-Length: {len(content) + 1}\n\n{content}"
    )
    return h.sent[-1].status
