"""The asyncio transport with a gateway in-process: UDP, TCP framing, reuse, idle close."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from sipbridge.config import load_config
from sipbridge.gateway import Gateway
from sipbridge.sip.message import Response, parse_message


def options(branch: str, transport: str = "UDP", port: int = 5999, cseq: int = 1) -> bytes:
    return (
        f"OPTIONS sip:sipbridge@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=t{branch}\r\n"
        f"To: <sip:sipbridge@127.0.0.1>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def run_with_gateway(
    body: Callable[[Gateway], Awaitable[None]], **overrides: object
) -> Gateway:
    async def main() -> Gateway:
        gateway = Gateway(load_config(None, sip="127.0.0.1:0", http="off", store="off",
                                      **overrides))
        await gateway.start()
        try:
            await asyncio.wait_for(body(gateway), 20)
        finally:
            await gateway.stop()
        return gateway

    return asyncio.run(main())


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await reader.readexactly(length)
    msg = parse_message(head + body)
    assert isinstance(msg, Response)
    return msg


def test_udp_options_answered_with_capabilities() -> None:
    async def body(gw: Gateway) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(sock, options("udp1", port=sock.getsockname()[1]),
                               ("127.0.0.1", gw.port))
        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
        port = sock.getsockname()[1]
        sock.close()
        resp = parse_message(data)
        assert isinstance(resp, Response) and resp.status == 200
        assert "INVITE" in (resp.headers.get("Allow") or "")
        assert resp.headers.get("Accept") == "application/sdp"
        assert resp.top_via.rport == port  # RFC 3581 rport filled in

    run_with_gateway(body)


def test_tcp_framing_split_and_pipelined() -> None:
    """A message cut into single bytes and two messages in one write both frame."""

    async def body(gw: Gateway) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        for b in options("tcp1", "TCP"):
            writer.write(bytes([b]))
            await writer.drain()
        first = await asyncio.wait_for(read_response(reader), 5)
        assert first.status == 200 and first.call_id == "tcp1@127.0.0.1"
        writer.write(b"\r\n\r\n" + options("tcp2", "TCP") + options("tcp3", "TCP"))
        await writer.drain()
        second = await asyncio.wait_for(read_response(reader), 5)
        third = await asyncio.wait_for(read_response(reader), 5)
        assert [second.call_id, third.call_id] == ["tcp2@127.0.0.1", "tcp3@127.0.0.1"]
        assert len(gw.transport.connections) == 1  # one connection, reused for all answers
        writer.close()

    run_with_gateway(body)


def test_tcp_idle_connection_closed() -> None:
    async def body(gw: Gateway) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(options("idle", "TCP"))
        await writer.drain()
        assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
        # Idle timeout 0.3 s: the gateway closes the connection, we read EOF.
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert gw.transport.connections == {}

    run_with_gateway(body, tcp_idle_timeout=0.3)


def test_tcp_unframeable_stream_closes_connection_only() -> None:
    async def body(gw: Gateway) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"INVITE sip:x@y SIP/2.0\r\nContent-Length: banana\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        # The gateway still serves a new connection.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(options("after", "TCP"))
        await writer.drain()
        assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
        writer.close()
        assert gw.transport.stats_framing_errors == 1

    run_with_gateway(body)


def test_tcp_oversize_header_block_closes_connection() -> None:
    async def body(gw: Gateway) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"OPTIONS sip:x@y SIP/2.0\r\nX-Junk: " + b"a" * 70000)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""

    run_with_gateway(body)


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_loopback() -> None:
    async def main() -> None:
        gateway = Gateway(load_config(None, sip="[::1]:0", http="off", store="off"))
        try:
            await gateway.start()
        except OSError as exc:
            pytest.skip(f"cannot bind ::1: {exc}")
        try:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(("::1", 0))
            await loop.sock_sendto(sock, options("v6").replace(b"127.0.0.1:5999", b"[::1]:5999"),
                                   ("::1", gateway.port))
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
            sock.close()
            resp = parse_message(data)
            assert isinstance(resp, Response) and resp.status == 200
        finally:
            await gateway.stop()

    asyncio.run(main())


def test_tcp_crlf_ping_gets_a_pong_and_udp_keepalive_is_ignored() -> None:
    async def body(gw: Gateway) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"  # RFC 5626 3.5.1
        writer.write(options("after-ping", "TCP"))
        await writer.drain()
        assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
        writer.close()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"\r\n\r\n", ("127.0.0.1", gw.port))
        sock.close()
        await asyncio.sleep(0.2)
        assert gw.ua is not None
        assert gw.ua.stats["keepalives"] == 1 and gw.ua.stats["dropped_unparseable"] == 0

    run_with_gateway(body)
