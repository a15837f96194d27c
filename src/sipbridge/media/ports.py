"""RTP ports: an even port for RTP and the next odd one for RTCP (RFC 3550 11), bound
as non-blocking UDP sockets from the configured range.

A call's endpoint is bound once and reused: when the call ends its sockets stay bound
(and registered with the event loop) in a bounded pool of idle endpoints, and the next
call takes the one idle longest, its queued datagrams drained and dropped first, so a
late packet of the last call never reaches the next one. Binding, registering and
closing two sockets per call is most of what setting up a call's media costs.
"""

from __future__ import annotations

import socket
import sys
from collections import deque
from dataclasses import dataclass, field

SO_TIMESTAMPNS = 35  # Linux <asm-generic/socket.h>; Python's socket module does not name it
IDLE_ENDPOINTS = 256  # endpoints kept bound between calls (two sockets each)
DRAIN_MAX = 1024  # datagrams read and dropped from a reused endpoint, at most


class NoMediaPort(Exception):
    """Every port of the range is in use (the call is refused with 503)."""


@dataclass(slots=True)
class Endpoint:
    """A bound RTP/RTCP socket pair."""

    host: str
    port: int
    rtp: socket.socket
    rtcp: socket.socket
    timestamps: bool = field(default=False)  # the kernel stamps each datagram's arrival
    # The event loop's watch of its sockets (the engine's), kept while it idles in the pool.
    watch: object = field(default=None)

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()

    def drain(self) -> int:
        """Read and drop what is queued on both sockets (a past call's late packets)."""
        dropped = 0
        for sock in (self.rtp, self.rtcp):
            while dropped < DRAIN_MAX:
                try:
                    sock.recv(1)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # an ICMP error queued on the socket: read, go on
                    continue
                dropped += 1
        return dropped


class PortPool:
    """Hands out bound endpoints: an idle one (the longest idle first), else the next
    free port of the range round-robin, skipping ports that are busy. `keep` endpoints
    at most stay bound while idle; past that a released one is closed."""

    def __init__(self, low: int, high: int, keep: int = IDLE_ENDPOINTS) -> None:
        self.low = low + (low % 2)
        self.high = high
        self.keep = keep
        self._next = self.low
        self._in_use: set[int] = set()
        self._idle: dict[str, deque[Endpoint]] = {}  # by host, the longest idle first
        self._idle_count = 0

    @property
    def in_use(self) -> int:
        """Ports held by calls (idle endpoints are not counted)."""
        return len(self._in_use)

    @property
    def idle(self) -> int:
        """Endpoints bound and waiting for a call."""
        return self._idle_count

    @property
    def full(self) -> bool:
        """Whether the next endpoint released is closed rather than kept."""
        return self._idle_count >= self.keep

    def allocate(self, host: str) -> Endpoint:
        """An idle endpoint on `host`, drained, or else bind the next free even port
        and its RTCP neighbour."""
        idle = self._idle.get(host)
        if idle:
            endpoint = idle.popleft()
            self._idle_count -= 1
            endpoint.drain()
            self._in_use.add(endpoint.port)
            return endpoint
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        span = (self.high - self.low) // 2
        busy = self._in_use | self._idle_ports if self._idle_count else self._in_use
        for _ in range(span):
            port = self._next
            self._next = self._next + 2 if self._next + 3 <= self.high else self.low
            if port in busy:
                continue
            try:
                rtp = socket.socket(family, socket.SOCK_DGRAM)
            except OSError as exc:  # out of file descriptors (EMFILE, ENFILE) or buffers
                raise NoMediaPort(f"cannot open an RTP socket: {exc.strerror}") from None
            try:
                rtcp = socket.socket(family, socket.SOCK_DGRAM)
            except OSError as exc:
                rtp.close()
                raise NoMediaPort(f"cannot open an RTCP socket: {exc.strerror}") from None
            try:
                rtp.bind((host, port))
                rtcp.bind((host, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            for s in (rtp, rtcp):
                s.setblocking(False)
            self._in_use.add(port)
            return Endpoint(host, port, rtp, rtcp, _enable_timestamps(rtp))
        raise NoMediaPort(f"no free RTP port in {self.low}-{self.high}")

    @property
    def _idle_ports(self) -> set[int]:
        return {e.port for queue in self._idle.values() for e in queue}

    def release(self, endpoint: Endpoint) -> bool:
        """The call is done with `endpoint`: kept bound for the next call (True), or
        closed when `keep` are idle already (False)."""
        self._in_use.discard(endpoint.port)
        if self._idle_count >= self.keep or endpoint.rtp.fileno() < 0:
            endpoint.close()
            return False
        self._idle.setdefault(endpoint.host, deque()).append(endpoint)
        self._idle_count += 1
        return True

    def take_idle(self) -> list[Endpoint]:
        """Every idle endpoint, out of the pool (for its owner to close)."""
        idle = [endpoint for queue in self._idle.values() for endpoint in queue]
        self._idle.clear()
        self._idle_count = 0
        return idle


def _enable_timestamps(sock: socket.socket) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True
