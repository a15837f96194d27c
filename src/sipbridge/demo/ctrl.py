"""baresip's control socket (its ``ctrl_tcp`` module): JSON commands, replies and events
in netstrings.

One thread reads the socket and keeps every message: events in an append-only log,
replies by their command's token. Any number of threads wait on that record for what
each wants, each up to a deadline; reading a message takes it from no one, so a thread
waiting for a call's CALL_CLOSED sees it even while another thread waits for the reply
to its ``hangup``."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

Message = dict[str, Any]


class ControlClosed(ConnectionError):
    """The control socket closed before what was waited for came."""


class Control:
    """A connected ctrl_tcp socket, read by a thread of its own.

    ``events`` is every event baresip sent, in order (appended to, never changed);
    :meth:`wait` finds one after an index in it, :meth:`reply` a command's answer."""

    def __init__(self, sock: socket.socket, name: str = "baresip-ctrl") -> None:
        self.events: list[Message] = []
        self._sock = sock
        self._changed = threading.Condition()
        self._replies: dict[str, Message] = {}
        self._ended = False  # the socket closed: nothing more will come
        self._send_lock = threading.Lock()
        self._token = 0
        self._reader = threading.Thread(target=self._read_loop, name=name, daemon=True)
        self._reader.start()

    def send(self, command: str, params: str | None = None) -> str:
        """Send a command; its token, for :meth:`reply`."""
        with self._send_lock:
            self._token += 1
            token = str(self._token)
            body = json.dumps({"command": command, "params": params, "token": token}).encode()
            self._sock.sendall(b"%d:%s," % (len(body), body))
        return token

    def reply(self, token: str, deadline: float) -> Message | None:
        """The reply to the command sent with ``token``, waiting until ``deadline``
        (``time.monotonic()``); None if it has not come by then."""
        with self._changed:
            while token not in self._replies:
                if not self._wait_locked(deadline):
                    return None
            return self._replies.pop(token)

    def wait(self, match: Callable[[Message], bool], deadline: float,
             since: int = 0) -> Message | None:
        """The first event at or after index ``since`` of :attr:`events` for which
        ``match`` is true, waiting until ``deadline`` (``time.monotonic()``); None if
        none has come by then."""
        seen = since
        with self._changed:
            while True:
                for event in self.events[seen:]:
                    if match(event):
                        return event
                seen = len(self.events)
                if not self._wait_locked(deadline):
                    return None

    def _wait_locked(self, deadline: float) -> bool:
        """Wait for the next message; False once ``deadline`` has passed. Raises
        :class:`ControlClosed` when nothing more can come."""
        if self._ended:
            raise ControlClosed("baresip closed its control socket")
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self._changed.wait(left)
        return True

    def close(self) -> None:
        """Close the socket and wait (1 s at most) for the reader to end."""
        with contextlib.suppress(OSError):  # wakes the reader's recv
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(1.0)

    def _read_loop(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    length, colon, rest = buf.partition(b":")
                    if not colon or len(rest) < int(length) + 1:
                        break
                    self._keep(json.loads(rest[: int(length)]))
                    buf = rest[int(length) + 1 :]
        except (OSError, ValueError):
            pass
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _keep(self, message: Message) -> None:
        with self._changed:
            if message.get("event"):
                self.events.append(message)
            elif message.get("response"):
                self._replies[str(message.get("token"))] = message
            self._changed.notify_all()
