"""A CallManager on the SIP driver over a fake clock (`Harness`: the driver's clock and its
wire), the carrier's requests that drive it (`invite`, `ack`, `notify`) and calls brought
to a state (`app_call`: ringing for the application; `answered_app_call`: accepted)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sipbridge.calls.call import Call
from sipbridge.calls.events import CallEvent, CallEvents, Incoming
from sipbridge.calls.manager import AnswerPolicy, CallManager
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.driver import SipDriver
from sipbridge.sip.events import CallEnded, Event
from sipbridge.sip.message import Request, Response, parse_message
from sipbridge.sip.ua import UaConfig, UserAgent

PEER = Address("udp", "127.0.0.1", 5062)
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na={direction}\r\n"
)


class FakeTimer:
    def __init__(self, at: float, callback: Callable[[], object]) -> None:
        self.at = at
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Harness:
    """A CallManager on the SIP driver, over a fake clock (the harness is the driver's
    clock, and its wire: what the driver sends is parsed and kept, requests and
    responses apart)."""

    incoming: list[Call]

    def __init__(self, *, auto_answer: str | None = "silence", ring_time: float = 0.0,
                 reject_code: int = 480, app: bool = False, max_calls: int | None = None,
                 max_calls_per_source: int | None = None, sip_host: str = "127.0.0.1",
                 media_host: Callable[[str], str] = lambda peer: "127.0.0.1") -> None:
        self.now = 0.0
        self.incoming = []
        self.timers: list[FakeTimer] = []
        self.ua = UserAgent(UaConfig(host=sip_host, port=5060), AccessGuard(["127.0.0.0/8"]))
        # A loop that never runs: media sockets are bound and registered, ticks never fire.
        self.loop = asyncio.new_event_loop()
        self.media = MediaEngine(MediaConfig(ports=(20000, 20100)), self.loop)
        self.driver = SipDriver(self.ua, _Wire(self), self)
        self.events = CallEvents()
        self.events.subscribe(self)
        self.manager = CallManager(
            self.driver, self.events,
            AnswerPolicy(auto_answer=auto_answer, ring_time=ring_time, reject_code=reject_code,
                         ask_app=app, accept_timeout=20.0, accept_timeout_code=408,
                         max_calls=max_calls, max_calls_per_source=max_calls_per_source),
            media=self.media, media_host=media_host, bind_host="127.0.0.1",
        )
        self.driver.attach(Watched(self.manager, self))
        self.sent: list[Response] = []
        self.requests: list[Request] = []
        self.ended: list[CallEnded] = []

    # The driver's clock.
    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in list(self.timers):
            if timer.at <= self.now and not timer.cancelled:
                self.timers.remove(timer)
                timer.callback()

    def send(self, text: str | bytes, source: Address = PEER) -> None:
        """A message from `source` to the gateway."""
        data = text if isinstance(text, bytes) else text.replace("\n", "\r\n").encode()
        self.driver.receive(data, source)

    def observe(self, event: CallEvent) -> None:
        if isinstance(event, Incoming):
            self.incoming.append(event.call)

    def statuses(self) -> list[int]:
        return [r.status for r in self.sent]


class _Wire:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    def send(self, data: bytes, dest: Address) -> None:
        msg = parse_message(data)
        if isinstance(msg, Response):
            self.harness.sent.append(msg)
        else:
            self.harness.requests.append(msg)

    def drop(self, source: Address) -> None:
        pass


class Watched:
    """The manager as the driver's upper, each ended leg noted."""

    def __init__(self, manager: CallManager, harness: Harness) -> None:
        self.manager = manager
        self.harness = harness

    def handle(self, event: Event) -> None:
        if isinstance(event, CallEnded):
            self.harness.ended.append(event)
        self.manager.handle(event)

    def trace(self, data: bytes, peer: Address, direction: str, *, early: bool = False
              ) -> bool:
        return self.manager.trace(data, peer, direction, early=early)

    def unsent(self, data: bytes, dest: Address, reason: str) -> None:
        self.manager.unsent(data, dest, reason)


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
    assert h.statuses() == [180] and len(h.incoming) == 1
    return h, h.incoming[0]


def answered_app_call() -> tuple[Harness, Call]:
    h, call = app_call()
    h.manager.accept(call.id, {"type": "realtime"},
                     {"transfer_targets": {"sales": "tel:+14155550123",
                                           "support": "sip:support@127.0.0.1:5090"}})
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
