"""The SIP driver over a real UA core with a fake clock: it flushes the core after every
input (a message, a timer, a command) without being asked, runs the core's timers, and
stops them when told."""

from __future__ import annotations

from collections.abc import Callable

from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.driver import SipDriver
from sipbridge.sip.events import Event
from sipbridge.sip.message import Request, Response, parse_message
from sipbridge.sip.ua import UaConfig, UserAgent
from tests.unit.callharness import FakeTimer

PEER = Address("udp", "127.0.0.1", 5062)
OPTIONS = (b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1"
           b"\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: o1\r\n"
           b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


class World:
    """The driver's clock, wire and upper layer at once, each recording what it saw."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []
        self.sent: list[Request | Response] = []
        self.events: list[Event] = []
        self.traced: list[tuple[str, str]] = []
        ua = UserAgent(UaConfig(host="127.0.0.1", port=5060), AccessGuard(["127.0.0.0/8"]))
        self.driver = SipDriver(ua, self, self)
        self.driver.attach(self)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in sorted(self.timers, key=lambda t: t.at):
            if timer.at <= self.now and not timer.cancelled:
                self.timers.remove(timer)
                timer.callback()

    def send(self, data: bytes, dest: Address) -> None:
        self.sent.append(parse_message(data))

    def drop(self, source: Address) -> None:
        pass

    def handle(self, event: Event) -> None:
        self.events.append(event)

    def trace(self, data: bytes, peer: Address, direction: str, *, early: bool = False
              ) -> bool:
        self.traced.append((direction, data.split(b"\r\n", 1)[0].decode()))
        return True

    def unsent(self, data: bytes, dest: Address, reason: str) -> None:
        pass


def invite(world: World) -> str:
    ua = world.driver.ua
    return ua.invite("sip:bob@127.0.0.1:5090", Address("udp", "127.0.0.1", 5090), world.now,
                     body=b"", from_uri="sip:gw@127.0.0.1")


def test_a_received_message_is_answered_and_traced_without_a_flush() -> None:
    world = World()
    world.driver.receive(OPTIONS, PEER)
    assert [m.status for m in world.sent if isinstance(m, Response)] == [200]
    assert world.traced == [("in", "OPTIONS sip:gw@127.0.0.1 SIP/2.0"),
                            ("out", "SIP/2.0 200 OK")]


def test_a_command_is_sent_when_the_outermost_one_ends() -> None:
    world = World()
    with world.driver.command():
        with world.driver.command():
            invite(world)
        assert world.sent == []  # the outer command is still under way
    assert [m.method for m in world.sent if isinstance(m, Request)] == ["INVITE"]


def test_the_cores_timers_run_and_stop_with_the_driver() -> None:
    world = World()
    with world.driver.command():
        invite(world)
    world.advance(0.5)  # RFC 3261 17.1.1.2 Timer A: the INVITE again after T1
    assert [m.method for m in world.sent if isinstance(m, Request)] == ["INVITE", "INVITE"]
    world.driver.stop()
    world.advance(10.0)
    assert len(world.sent) == 2  # stopped: no timer fires


def void(_: object) -> None:
    """A callback's result dropped (a scheduled callback returns nothing)."""


def test_a_scheduled_callback_runs_as_a_command_and_not_after_stop() -> None:
    world = World()
    world.driver.schedule(2.0, lambda: void(invite(world)))
    world.advance(1.0)
    assert world.sent == []
    world.advance(1.0)
    assert [m.method for m in world.sent if isinstance(m, Request)] == ["INVITE"]
    world.driver.schedule(1.0, lambda: void(invite(world)))
    world.driver.stop()
    world.advance(5.0)
    assert len(world.sent) == 1
