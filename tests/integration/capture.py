"""What crosses the loopback interface, as a wire tap sees it: ``capture(ports)`` is a
context manager that records every UDP datagram and TCP segment payload on ``lo`` to or
from one of ``ports`` (an AF_PACKET raw socket: needs root, or CAP_NET_RAW), so that a
test can show what is and is not in clear on the wire. ``spoof_udp`` sends a datagram
with a source address of our choosing (a raw IP socket, root too): an attacker on the
path, sending as the peer a session has latched onto."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

ETH_P_ALL = 0x0003
_ETH_HEADER = 14


@dataclass(frozen=True)
class Seen:
    """One payload on the wire: transport ("udp"/"tcp"), ports, and the bytes."""

    transport: str
    source_port: int
    dest_port: int
    payload: bytes


def can_capture() -> bool:
    return hasattr(socket, "AF_PACKET") and os.geteuid() == 0


def _parse(frame: bytes) -> Seen | None:
    """An Ethernet frame on lo: its UDP or TCP payload over IPv4 or IPv6, or None."""
    ethertype = int.from_bytes(frame[12:14], "big")
    ip = frame[_ETH_HEADER:]
    if ethertype == 0x0800 and len(ip) >= 20:
        header = (ip[0] & 0x0F) * 4
        proto, total = ip[9], int.from_bytes(ip[2:4], "big")
        body = ip[header:total]
    elif ethertype == 0x86DD and len(ip) >= 40:
        proto, body = ip[6], ip[40:40 + int.from_bytes(ip[4:6], "big")]
    else:
        return None
    if proto == 17 and len(body) >= 8:
        sport, dport = struct.unpack_from("!HH", body)
        return Seen("udp", sport, dport, bytes(body[8:]))
    if proto == 6 and len(body) >= 20:
        sport, dport = struct.unpack_from("!HH", body)
        return Seen("tcp", sport, dport, bytes(body[(body[12] >> 4) * 4:]))
    return None


@contextmanager
def capture(ports: Iterable[int] | None = None) -> Iterator[list[Seen]]:
    """Record what crosses ``lo`` to or from ``ports`` (all ports if None) while the block
    runs; the list fills as packets come (each packet is seen once: outgoing copies on lo
    are skipped) and is complete when the block ends."""
    wanted = None if ports is None else set(ports)
    seen: list[Seen] = []
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind(("lo", 0))
    sock.settimeout(0.05)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                frame, address = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == socket.PACKET_OUTGOING:
                continue
            packet = _parse(frame)
            if packet is not None and (wanted is None or packet.source_port in wanted
                                       or packet.dest_port in wanted):
                seen.append(packet)

    thread = threading.Thread(target=run, name="lo-capture", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(2.0)
        sock.close()


def spoof_udp(payload: bytes, source: tuple[str, int], dest: tuple[str, int]) -> None:
    """One IPv4 UDP datagram to ``dest`` that claims to come from ``source`` (checksum 0:
    none, which IPv4 allows)."""
    header = struct.pack("!HHHH", source[1], dest[1], 8 + len(payload), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(header) + len(payload), 0, 0, 64, 17,
                     0, socket.inet_aton(source[0]), socket.inet_aton(dest[0]))
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(ip + header + payload, (dest[0], 0))
