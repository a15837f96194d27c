"""The demo's baresip control socket (sipbridge.demo.ctrl) against a fake baresip on a
socket pair: threads waiting at once each get what they wait for, whoever's wait the
message came during; a wait ends at its deadline; a closed socket ends every wait."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sipbridge.demo.ctrl import Control, ControlClosed, Message

WAIT = 10.0  # each wait's deadline: far beyond what delivery takes


class FakeBaresip:
    """The baresip end of the socket: reads commands, writes events and replies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, message: Message) -> None:
        body = json.dumps(message).encode()
        self.sock.sendall(b"%d:%s," % (len(body), body))

    def event(self, kind: str, call_id: str) -> None:
        self.send({"event": True, "type": kind, "class": "call", "direction": "outgoing",
                   "id": call_id, "param": ""})

    def command(self) -> Message:
        while True:
            length, colon, rest = self.buf.partition(b":")
            if colon and len(rest) > int(length):
                self.buf = rest[int(length) + 1:]
                message: Message = json.loads(rest[: int(length)])
                return message
            self.buf += self.sock.recv(4096)


@pytest.fixture
def pair() -> Iterator[tuple[Control, FakeBaresip]]:
    ours, theirs = socket.socketpair()
    ctrl = Control(ours)
    try:
        yield ctrl, FakeBaresip(theirs)
    finally:
        ctrl.close()
        theirs.close()


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


def of(kind: str, call_id: str) -> Callable[[Message], bool]:
    return lambda e: e.get("type") == kind and e.get("id") == call_id


def done_soon(thread: threading.Thread) -> bool:
    """Whether ``thread`` ends within a second (each wait's deadline is WAIT)."""
    thread.join(1.0)
    return not thread.is_alive()


def test_two_waiters_each_get_their_own_event(pair: tuple[Control, FakeBaresip]) -> None:
    """Each event comes while both threads wait, and the first to start waiting does not
    want it: a design where a reader takes the message away would leave the other
    thread waiting until its deadline."""
    ctrl, baresip = pair
    b, got_b = in_thread(lambda: ctrl.wait(of("CALL_CLOSED", "b"), time.monotonic() + WAIT))
    time.sleep(0.1)
    a, got_a = in_thread(lambda: ctrl.wait(of("CALL_CLOSED", "a"), time.monotonic() + WAIT))
    time.sleep(0.1)
    baresip.event("CALL_CLOSED", "a")
    assert done_soon(a) and got_a[0]["id"] == "a"
    assert b.is_alive()
    baresip.event("CALL_CLOSED", "b")
    assert done_soon(b) and got_b[0]["id"] == "b"


def test_an_event_during_a_command_reaches_the_thread_waiting_for_it(
        pair: tuple[Control, FakeBaresip]) -> None:
    """The demo's case: a thread sends ``hangup`` and waits for the reply while the
    call's thread waits for its CALL_CLOSED, which comes first."""
    ctrl, baresip = pair
    hangup, reply = in_thread(lambda: ctrl.reply(ctrl.send("hangup"),
                                                 time.monotonic() + WAIT))
    command = baresip.command()
    assert command["command"] == "hangup"
    time.sleep(0.1)
    call, closed = in_thread(lambda: ctrl.wait(of("CALL_CLOSED", "a"), time.monotonic() + WAIT))
    time.sleep(0.1)
    baresip.event("CALL_CLOSED", "a")
    assert done_soon(call) and closed[0]["id"] == "a"
    baresip.send({"response": True, "ok": True, "data": "", "token": command["token"]})
    assert done_soon(hangup) and reply[0]["ok"] is True


def test_an_event_wanted_by_both_is_seen_by_both(pair: tuple[Control, FakeBaresip]) -> None:
    ctrl, baresip = pair
    waits = [in_thread(lambda: ctrl.wait(of("CALL_ESTABLISHED", "a"), time.monotonic() + WAIT))
             for _ in range(2)]
    time.sleep(0.1)
    baresip.event("CALL_RINGING", "a")
    baresip.event("CALL_ESTABLISHED", "a")
    for thread, _ in waits:
        thread.join(WAIT / 2)
    assert [r[0]["type"] if r else None for _, r in waits] == ["CALL_ESTABLISHED"] * 2
    # and it stays in the log for a later wait from an earlier index
    again = ctrl.wait(of("CALL_ESTABLISHED", "a"), time.monotonic())
    assert again is not None and again["type"] == "CALL_ESTABLISHED"
    assert ctrl.wait(of("CALL_ESTABLISHED", "a"), time.monotonic(), since=2) is None


def test_a_wait_past_its_deadline_fails(pair: tuple[Control, FakeBaresip]) -> None:
    ctrl, baresip = pair
    baresip.event("CALL_CLOSED", "b")
    started = time.monotonic()
    assert ctrl.wait(of("CALL_CLOSED", "a"), started + 0.3) is None
    assert ctrl.reply(ctrl.send("hangup"), time.monotonic() + 0.3) is None
    assert 0.6 <= time.monotonic() - started < 2.0


def test_a_closed_socket_ends_every_wait(pair: tuple[Control, FakeBaresip]) -> None:
    ctrl, baresip = pair

    def wait() -> str:
        try:
            ctrl.wait(of("CALL_CLOSED", "a"), time.monotonic() + WAIT)
        except ControlClosed:
            return "closed"
        return "returned"

    waits = [in_thread(wait) for _ in range(2)]
    time.sleep(0.1)
    baresip.event("CALL_CLOSED", "b")
    baresip.sock.close()
    for thread, _ in waits:
        thread.join(WAIT / 2)
    assert [r for _, r in waits] == [["closed"], ["closed"]]
    # what came before the close is still there
    before = ctrl.wait(of("CALL_CLOSED", "b"), time.monotonic())
    assert before is not None and before["id"] == "b"
