"""The thin asyncio layer: UDP and TCP sockets on one port (and TLS on another), moving bytes
to and from the core.

No parsing and no policy here (STYLE 3): datagrams go up whole, TCP streams are cut
into messages by Content-Length (RFC 3261 18.3), and outgoing bytes go to the address
the core names, over an existing TCP connection when there is one (RFC 3261 18.2.2).
A name the core could not turn into an address (a Route or Contact's host) is looked up
first, without blocking (`sip.dns`). What cannot be sent (no address, a refused
connection, a transport we do not offer) is reported to `on_error`, never raised.
TLS connections (RFC 3261 26.2) are TCP connections with `sip.tls`'s contexts: framed,
limited, swept and reused the same way, under the transport name "tls".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import cast

from sipbridge.sip.address import Address, is_ip
from sipbridge.sip.dns import ResolveError, Resolver
from sipbridge.sip.errors import ParseError
from sipbridge.sip.message import DEFAULT_MAX_SIZE, StreamFramer
from sipbridge.sip.tls import (
    HandshakeFailures,
    TlsConfig,
    client_context,
    failure_reason,
    server_context,
)

log = logging.getLogger("sipbridge.transport")

OnMessage = Callable[[bytes, Address], None]
OnError = Callable[[bytes, Address, str], None]  # what could not be sent, where, and why
MAX_QUEUED = 32  # messages held for one destination while it is looked up or connected
LOG_INTERVAL = 10.0  # seconds between two log lines about refused connections
ACCEPT_BACKLOG = 128


# SO_TIMESTAMPNS (Linux, socket(7)): each datagram comes with the time the kernel
# received it, so the time it then waited in the socket's buffer is known.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
READ_BATCH = 64  # datagrams read in one wake-up of the loop, at most
MAX_DATAGRAM = 65535


class _Udp:
    """The UDP socket, read straight from the loop: up to READ_BATCH datagrams each
    time it is readable (one system call each, no per-datagram trip through the loop),
    each with how long it waited in the socket (`on_queue_delay`)."""

    def __init__(self, sock: socket.socket, on_message: OnMessage,
                 on_queue_delay: Callable[[float], None] | None) -> None:
        self.sock = sock
        self.on_message = on_message
        self.on_queue_delay = on_queue_delay
        self.stamped = False
        self.send_dropped = 0
        if on_queue_delay is not None and sys.platform == "linux":
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.stamped = True
            except OSError:
                pass
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queued: list[tuple[bytes, tuple[str, int]]] = []  # sent at the turn's end

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sock.setblocking(False)
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        recvmsg, on_message, on_delay = self.sock.recvmsg, self.on_message, self.on_queue_delay
        ancillary = _ANCILLARY if self.stamped else 0
        for _ in range(READ_BATCH):
            try:
                data, anc, _flags, addr = recvmsg(MAX_DATAGRAM, ancillary)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("udp error: %s", exc)  # ICMP unreachable from a peer gone away
                return
            if anc and on_delay is not None:
                level, kind, stamp = anc[0]
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(stamp)
                    on_delay(max(0.0, time.time() - (sec + nsec * 1e-9)))
            try:
                on_message(data, Address("udp", addr[0], addr[1]))
            except Exception as exc:  # noqa: BLE001 - the batch goes on; the loop logs it
                assert self.loop is not None
                self.loop.call_exception_handler({
                    "message": "error handling a datagram", "exception": exc})

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send at the end of this turn of the loop, with what else the turn sends.

        A datagram to a peer that sleeps waiting for it costs the sender a wake-up of
        that peer (an inter-processor interrupt: ~30 us of CPU on a VM, against ~8 us
        for the send itself); the datagrams of one turn go out back to back, so that a
        burst of messages read in one turn wakes each peer once, not once per answer."""
        if self.loop is None:
            self._send(data, addr)
            return
        self._queued.append((data, addr))
        if len(self._queued) == 1:
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what this turn queued, in order."""
        queued, self._queued = self._queued, []
        send = self._send
        for data, addr in queued:
            send(data, addr)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.send_dropped += 1  # buffer full: a retransmission will come
        except OSError as exc:
            log.debug("udp send to %s failed: %s", addr[0], exc)

    def close(self) -> None:
        self.flush()  # what was answered before the close goes out
        if self.loop is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.loop = None
        self.sock.close()


class _TcpConnection(asyncio.Protocol):
    """One TCP or TLS connection. An inbound TLS connection is admitted as TCP, then its
    handshake runs (`_handshake`) with this protocol waiting for what it brings."""

    def __init__(self, owner: SipTransport, *, outbound: bool = False,
                 kind: str = "tcp") -> None:
        self.owner = owner
        self.outbound = outbound  # ours: not refused, and no first-message deadline
        self.kind = kind  # "tcp" or "tls"
        self.framer = StreamFramer(owner.max_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Address | None = None
        self.opened = self.last_active = time.monotonic()
        self.messages = 0
        self.admitted = False
        # An inbound TLS connection's handshake under way: what it decrypts before the
        # handshake's end is handed over (TLS 1.3 clients send right after their
        # Finished) waits here until the connection can answer.
        self.early: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Address(self.kind, host, port)
        if not self.outbound and (self.owner.refuse(host) or not self.owner.admit(host)):
            self.transport.abort()  # at once: the descriptor is what is scarce
            return
        self.admitted = True
        self.owner.per_source[host] += 1
        self.owner.connections[self.peer] = self
        if self.kind == "tls" and not self.outbound:
            plain, self.transport = self.transport, None  # nothing goes out in clear
            self.early = []
            plain.pause_reading()  # the handshake reads the first bytes
            self.owner.handshake(self, plain)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if self.early is not None:
            self.early.append(data)
            return
        pings = self.framer.keepalives
        try:
            messages = self.framer.feed(data)
        except ParseError as exc:
            self.owner.stats_framing_errors += 1
            log.info("closing TCP connection from %s: %s", self.peer, exc.reason)
            if self.transport is not None:
                self.transport.close()
            return
        if self.framer.keepalives != pings:
            self.send(b"\r\n")  # RFC 5626 3.5.1: a CRLF pong for each CRLFCRLF ping
        if messages:
            # Only whole messages keep a connection open: bytes trickled in do not.
            self.last_active = time.monotonic()
            self.messages += len(messages)
        assert self.peer is not None
        for message in messages:
            if self.transport is None or self.transport.is_closing():
                break  # dropped by the owner (`SipTransport.drop`): the rest goes unread
            self.owner.on_message(message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.admitted:
            self.admitted = False  # once: a failed handshake comes here by two ways
            key = self.peer
            if self.owner.connections.get(key) is self:
                del self.owner.connections[key]
            left = self.owner.per_source[self.peer.host] - 1
            if left > 0:
                self.owner.per_source[self.peer.host] = left
            else:
                del self.owner.per_source[self.peer.host]

    def send(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class SipTransport:
    """UDP and TCP listeners on one host and port, a TLS listener on another, and
    outbound TCP and TLS connections."""

    def __init__(self, on_message: OnMessage, *, max_size: int = DEFAULT_MAX_SIZE,
                 idle_timeout: float = 300.0, resolver: Resolver | None = None,
                 on_error: OnError | None = None, max_connections: int = 1000,
                 max_per_source: int = 64, first_message_timeout: float = 10.0,
                 on_queue_delay: Callable[[float], None] | None = None,
                 refuse: Callable[[str], bool] = lambda host: False,
                 tls: TlsConfig | None = None) -> None:
        self.on_message = on_message
        self.tls = tls or TlsConfig()
        self.tls_failures = HandshakeFailures()
        self._tls_server: ssl.SSLContext | None = None
        self._tls_client: ssl.SSLContext | None = None
        self._tls_listener: asyncio.Server | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self.tls_port = 0
        self.refuse = refuse  # a source refused now: its new connections are closed at once
        self.on_queue_delay = on_queue_delay  # how long each datagram waited, seconds
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.first_message_timeout = first_message_timeout
        self.per_source: Counter[str] = Counter()
        self.stats_refused = 0
        self._refused_logged = 0  # the refusals counted when the last line was logged
        self._refused_log_at = 0.0
        self.resolver = resolver or Resolver()
        self.on_error = on_error
        self._lookups: dict[Address, list[bytes]] = {}
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.connections: dict[Address, _TcpConnection] = {}
        self.stats_framing_errors = 0
        self._udp: _Udp | None = None
        self._server: asyncio.Server | None = None
        self._pending: dict[Address, list[bytes]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Bind UDP and TCP on the same port (port 0: the UDP port the OS picks)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for attempt in range(20):
            udp_sock = socket.socket(family, socket.SOCK_DGRAM)
            udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            udp_sock.bind((host, port))
            self.port = udp_sock.getsockname()[1]
            try:
                # The backlog is also how many connections asyncio accepts in one go:
                # kept small, so that connections refused over the limits are closed
                # before a burst of accepts can run the process out of descriptors.
                self._server = await loop.create_server(
                    lambda: _TcpConnection(self), host, self.port, reuse_address=True,
                    backlog=ACCEPT_BACKLOG,
                )
                break
            except OSError:
                udp_sock.close()
                # Port 0: the UDP port the OS picked may be taken for TCP; pick again.
                if port != 0 or attempt == 19:
                    raise
        self.host = host
        self._udp = _Udp(udp_sock, self.on_message, self.on_queue_delay)
        self._udp.start(loop)
        self._sweeper = asyncio.create_task(self._sweep_idle())

    async def listen_tls(self, host: str, port: int) -> None:
        """Listen for SIP over TLS (port 0: one the OS picks, in `tls_port`). Raises
        ValueError/OSError/ssl.SSLError when the certificate or key cannot be used."""
        try:
            self._tls_server = server_context(self.tls)
        except OSError as exc:  # ssl.SSLError too: a file missing, a key that does not fit
            raise ValueError(f"tls_cert/tls_key/tls_ca cannot be used: {exc}") from exc
        self._tls_listener = await asyncio.get_running_loop().create_server(
            lambda: _TcpConnection(self, kind="tls"), host, port, reuse_address=True,
            backlog=ACCEPT_BACKLOG)
        self.tls_port = self._tls_listener.sockets[0].getsockname()[1]

    def handshake(self, conn: _TcpConnection, plain: asyncio.Transport) -> None:
        task = asyncio.get_running_loop().create_task(self._handshake(conn, plain))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: _TcpConnection, plain: asyncio.Transport) -> None:
        """An inbound connection's TLS handshake, bounded by tls.handshake_timeout. A
        failure closes the connection, is counted and logged (rate-limited)."""
        assert self._tls_server is not None
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(plain, conn, self._tls_server, server_side=True,
                                          ssl_handshake_timeout=self.tls.handshake_timeout)
        except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
            self.tls_failures.failed(str(conn.peer), failure_reason(exc), time.monotonic())
            plain.abort()
            conn.connection_lost(None)
            return
        if secure is None or secure.is_closing():
            conn.connection_lost(None)
            return
        conn.transport = secure
        early, conn.early = conn.early or [], None
        for data in early:
            conn.data_received(data)

    def send(self, data: bytes, dest: Address) -> None:
        """Send bytes to a peer; TCP and TLS reuse the peer's connection or open one."""
        if dest.port == 0 or not _is_ip(dest.host):
            self._send_named(data, dest)
            return
        self._send_to(data, dest, None)

    def _send_to(self, data: bytes, dest: Address, name: str | None) -> None:
        """Send to an IP address; `name` is the host name it was found by (a TLS
        server's certificate must name it)."""
        if dest.transport not in ("udp", "tcp", "tls"):
            self._failed(data, dest, f"no {dest.transport.upper()} transport here")
            return
        if dest.transport == "udp":
            if self._udp is not None:
                self._udp.sendto(data, (dest.host, dest.port))
            return
        conn = self.connections.get(dest)
        if conn is not None:
            conn.send(data)
            return
        queued = self._pending.get(dest)
        if queued is not None:
            queued.append(data)
            return
        self._pending[dest] = [data]
        asyncio.get_running_loop().create_task(self._connect(dest, name))

    def _send_named(self, data: bytes, dest: Address) -> None:
        """A destination named by host name: send at once when its address is known, else
        hold the message (a few per name) while it is looked up."""
        known = self.resolver.cached(dest)
        if isinstance(known, Address):
            self._send_to(data, known, dest.host)
            return
        if isinstance(known, str):
            self._failed(data, dest, known)
            return
        queued = self._lookups.get(dest)
        if queued is not None:
            if len(queued) < MAX_QUEUED:
                queued.append(data)  # else dropped: a retransmission will come
            return
        self._lookups[dest] = [data]
        asyncio.get_running_loop().create_task(self._resolve(dest))

    async def _resolve(self, dest: Address) -> None:
        try:
            address = await self.resolver.resolve(dest)
        except ResolveError as exc:
            for data in self._lookups.pop(dest, []):
                self._failed(data, dest, str(exc))
            return
        for data in self._lookups.pop(dest, []):
            self._send_to(data, address, dest.host)

    def _failed(self, data: bytes, dest: Address, reason: str) -> None:
        """Report a message that could not be sent, after the current call stack (the
        core may be in the middle of handing us its output)."""
        if self.on_error is not None:
            asyncio.get_running_loop().call_soon(self.on_error, data, dest, reason)

    async def _connect(self, dest: Address, name: str | None) -> None:
        loop = asyncio.get_running_loop()
        tls = dest.transport == "tls"
        kind = dest.transport.upper()
        try:
            if tls:
                if self._tls_client is None:
                    self._tls_client = client_context(self.tls)
                connecting = loop.create_connection(
                    lambda: _TcpConnection(self, outbound=True, kind="tls"), dest.host,
                    dest.port, ssl=self._tls_client, server_hostname=name or dest.host,
                    ssl_handshake_timeout=self.tls.handshake_timeout)
                bound = 5.0 + self.tls.handshake_timeout
            else:
                connecting = loop.create_connection(
                    lambda: _TcpConnection(self, outbound=True), dest.host, dest.port)
                bound = 5.0
            _, conn = await asyncio.wait_for(connecting, bound)
        except (TimeoutError, OSError, ValueError) as exc:
            if tls and isinstance(exc, ssl.SSLError | ValueError):
                self.tls_failures.failed(f"{dest} ({name or dest.host})", failure_reason(exc),
                                         time.monotonic(), inbound=False)
            else:
                log.info("%s connect to %s failed: %s", kind, dest, exc)
            why = (failure_reason(exc) if isinstance(exc, ssl.SSLError | ValueError)
                   else "connection refused" if isinstance(exc, ConnectionRefusedError)
                   else "no connection within the bound" if isinstance(exc, TimeoutError)
                   else str(exc) or exc.__class__.__name__)
            for data in self._pending.pop(dest, []):
                self._failed(data, dest, f"{kind} connection failed: {why}")
            return
        for data in self._pending.pop(dest, []):
            conn.send(data)

    def drop(self, source: Address) -> None:
        """Close the inbound stream connection a message came on (its source is refused:
        over its rate); what it sent after that message is not read."""
        conn = self.connections.get(source)
        if conn is not None and not conn.outbound and conn.transport is not None:
            conn.transport.abort()

    def admit(self, host: str) -> bool:
        """Whether a new inbound connection from `host` fits the limits (in total, per
        source address). A refusal is counted; the log has one line per 10 s at most."""
        if (len(self.connections) < self.max_connections
                and self.per_source[host] < self.max_per_source):
            return True
        self.stats_refused += 1
        now = time.monotonic()
        if now - self._refused_log_at >= LOG_INTERVAL:
            log.warning("TCP connections refused: %d in all (%s: %d open from it, %d open; "
                        "limits %d per source, %d in all)",
                        self.stats_refused, host, self.per_source[host],
                        len(self.connections), self.max_per_source, self.max_connections)
            self._refused_log_at = now
        return False

    async def _sweep_idle(self) -> None:
        """Close TCP connections whose first message has not come within
        first_message_timeout, or with no whole message for idle_timeout (one task)."""
        interval = max(0.05, min(self.idle_timeout, self.first_message_timeout) / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            idle, silent = now - self.idle_timeout, now - self.first_message_timeout
            for conn in list(self.connections.values()):
                quiet = (conn.messages == 0 and not conn.outbound and conn.opened < silent)
                if (quiet or conn.last_active < idle) and conn.transport is not None:
                    conn.transport.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._handshakes):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for server in (self._server, self._tls_listener):
            if server is not None:
                server.close()
                await server.wait_closed()


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    return is_ip(host)  # once per host: this runs for every message sent


def local_address_for(peer_host: str) -> str:
    """The local IP the OS would use to reach `peer_host` (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in peer_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((peer_host, 9))
            return str(s.getsockname()[0])
        except OSError:
            return "::1" if family == socket.AF_INET6 else "127.0.0.1"
