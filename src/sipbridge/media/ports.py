"""RTP ports: an even port for RTP and the next odd one for RTCP (RFC 3550 11), bound
as non-blocking UDP sockets from the configured range."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field

SO_TIMESTAMPNS = 35  # Linux <asm-generic/socket.h>; Python's socket module does not name it


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

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


class PortPool:
    """Hands out bound endpoints round-robin, skipping ports that are busy."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low + (low % 2)
        self.high = high
        self._next = self.low
        self._in_use: set[int] = set()

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self, host: str) -> Endpoint:
        """Bind the next free even port and its RTCP neighbour on `host`."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        span = (self.high - self.low) // 2
        for _ in range(span):
            port = self._next
            self._next = self._next + 2 if self._next + 3 <= self.high else self.low
            if port in self._in_use:
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

    def release(self, endpoint: Endpoint) -> None:
        endpoint.close()
        self._in_use.discard(endpoint.port)


def _enable_timestamps(sock: socket.socket) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True
