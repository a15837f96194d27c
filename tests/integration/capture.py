"""What crosses the loopback interface, as a wire tap sees it: ``capture(ports)`` is a
context manager that records every UDP datagram and TCP segment payload on ``lo`` to or
from one of ``ports`` (an AF_PACKET raw socket: needs root, or CAP_NET_RAW), so that a
test can show what is and is not in clear on the wire. ``spoof_udp`` sends a datagram
with a source address of our choosing (a raw IP socket, root too): an attacker on the
path, sending as the peer a session has latched onto.

The tap must not lose packets nor count other tests' packets when the machine is busy
(other processes share ``lo``), so:

- the kernel filters (a classic BPF program on the socket): only IPv4/IPv6 UDP and TCP to
  or from ``ports``, and each packet once (``lo`` shows every packet twice, outgoing and
  incoming; the outgoing copy is not taken);
- the socket's receive buffer is 16 MB (``SO_RCVBUFFORCE``), room for minutes of calls;
- the kernel's count of packets it dropped for the tap (``PACKET_STATISTICS``) is read
  when the block ends, and a lost packet fails the block (:class:`TapLost`): a check on
  what the tap saw cannot then pass or fail because the tap missed something.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

ETH_P_ALL = 0x0003
_ETH_HEADER = 14
RCVBUF = 16 << 20
SNAPLEN = 1 << 18  # more than lo's 64 KB MTU and a GSO segment on it
DRAIN_LIMIT = 5.0  # seconds to read what queued up once the block has ended

# Linux, not all in the socket module: <asm-generic/socket.h>, <linux/if_packet.h>,
# <linux/filter.h>.
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF (-0x1000) + 4: the packet's pkt_type
_CMSG_SPACE = socket.CMSG_SPACE(16)  # one struct timespec


class TapLost(AssertionError):
    """The tap did not see everything that crossed ``lo`` while it was on."""


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


# --- the kernel-side filter: classic BPF (Documentation/networking/filter.rst) ---------

_LD, _LDX, _JMP, _RET = 0x00, 0x01, 0x05, 0x06
_W, _H, _B = 0x00, 0x08, 0x10
_ABS, _IND, _MSH = 0x20, 0x40, 0xA0
_JEQ, _JGT, _JGE, _JSET = 0x10, 0x20, 0x30, 0x40

# An instruction (code, label if true, label if false, k), None going on to the next one,
# or a label: a name for the place of the instruction that follows it.
_Insn = tuple[int, str | None, str | None, int] | str


def port_runs(ports: Iterable[int]) -> list[tuple[int, int]]:
    """``ports`` as the fewest inclusive (low, high) runs: range(61000, 65536) is one."""
    runs: list[tuple[int, int]] = []
    for port in sorted(set(ports)):
        if runs and port == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], port)
        else:
            runs.append((port, port))
    return runs


def _port_in(runs: list[tuple[int, int]] | None, name: str) -> list[_Insn]:
    """With a port in A: on to "accept" if it is in one of ``runs`` (any port if None),
    else on to the instruction after these."""
    if runs is None:
        return [(_JMP | _JEQ, "accept", "accept", 0)]
    code: list[_Insn] = []
    for i, (low, high) in enumerate(runs):
        following = f"{name}{i}"
        if low == high:
            code.append((_JMP | _JEQ, "accept", None, low))
        else:
            code += [(_JMP | _JGE, None, following, low),
                     (_JMP | _JGT, following, "accept", high)]
        code.append(following)
    return code


def bpf_program(runs: list[tuple[int, int]] | None) -> list[tuple[int, int, int, int]]:
    """A socket filter for an AF_PACKET socket on lo: incoming IPv4/IPv6 UDP or TCP
    packets with a source or destination port in one of ``runs`` (inclusive (low, high);
    any port if None), whole; nothing else. Each instruction as (code, jt, jf, k)."""
    code: list[_Insn] = [
        (_LD | _W | _ABS, None, None, SKF_AD_PKTTYPE),
        (_JMP | _JEQ, "reject", None, PACKET_OUTGOING),
        (_LD | _H | _ABS, None, None, 12),  # ethertype
        (_JMP | _JEQ, None, "v6", 0x0800),
        (_LD | _B | _ABS, None, None, 14 + 9),  # IPv4 protocol
        (_JMP | _JEQ, "v4", None, 17),
        (_JMP | _JEQ, "v4", "reject", 6),
        "v4",
        (_LD | _H | _ABS, None, None, 14 + 6),
        (_JMP | _JSET, "reject", None, 0x1FFF),  # a later fragment: no ports in it
        (_LDX | _B | _MSH, None, None, 14),  # X = the IPv4 header's length
        (_LD | _H | _IND, None, None, 14),  # source port
        *_port_in(runs, "v4s"),
        (_LD | _H | _IND, None, None, 16),  # destination port
        *_port_in(runs, "v4d"),
        (_JMP | _JEQ, "reject", "reject", 0),
        "v6",
        (_JMP | _JEQ, None, "reject", 0x86DD),
        (_LD | _B | _ABS, None, None, 14 + 6),  # next header (no extension headers)
        (_JMP | _JEQ, "v6ports", None, 17),
        (_JMP | _JEQ, "v6ports", "reject", 6),
        "v6ports",
        (_LD | _H | _ABS, None, None, 14 + 40),
        *_port_in(runs, "v6s"),
        (_LD | _H | _ABS, None, None, 14 + 42),
        *_port_in(runs, "v6d"),
        "reject",
        (_RET, None, None, 0),
        "accept",
        (_RET, None, None, SNAPLEN),
    ]
    return _assemble(code)


def _assemble(code: list[_Insn]) -> list[tuple[int, int, int, int]]:
    """Labels resolved to the relative jumps classic BPF takes (forward, at most 255)."""
    labels: dict[str, int] = {}
    out: list[tuple[int, str | None, str | None, int]] = []
    for insn in code:
        if isinstance(insn, str):
            labels[insn] = len(out)
        else:
            out.append(insn)

    def offset(at: int, target: str | None) -> int:
        if target is None:
            return 0
        jump = labels[target] - at - 1
        assert 0 <= jump < 256, f"BPF jump to {target} out of range: {jump}"
        return jump

    return [(op, offset(i, jt), offset(i, jf), k) for i, (op, jt, jf, k) in enumerate(out)]


def _attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    raw = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(raw)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("HL", len(program), ctypes.addressof(buf)))


def _tap(runs: list[tuple[int, int]] | None) -> socket.socket:
    """An AF_PACKET socket on lo with its filter and buffer set before it binds (until
    then, with protocol 0, it receives nothing, so nothing unfiltered slips in)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        _attach(sock, bpf_program(runs))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:  # CAP_NET_RAW without CAP_NET_ADMIN: up to rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(("lo", ETH_P_ALL))
    except BaseException:
        sock.close()
        raise
    return sock


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive time of a packet (SO_TIMESTAMPNS: CLOCK_REALTIME)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            return float(seconds + nanoseconds / 1e9)
    return None


def dropped(sock: socket.socket) -> int:
    """Packets the kernel dropped for ``sock`` (a full buffer) since the last call."""
    _, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return int(drops)


@contextmanager
def capture(ports: Iterable[int] | None = None) -> Iterator[list[Seen]]:
    """Record what crosses ``lo`` to or from ``ports`` (all ports if None; a ``range``
    is fine and costs the filter two instructions) while the block runs; the list fills
    as packets come (each packet is seen once) and is complete when the block ends.
    Raises :class:`TapLost` after the block if the kernel dropped a packet for the tap or
    the tap could not read what had queued up."""
    wanted = None if ports is None else port_runs(ports)
    seen: list[Seen] = []
    sock = _tap(wanted)
    sock.settimeout(0.05)
    stop = threading.Event()
    drained = threading.Event()
    ended = [0.0]  # when the block ended, by the clock of the kernel's stamps

    def keep(packet: Seen) -> bool:
        return wanted is None or any(low <= port <= high for low, high in wanted
                                     for port in (packet.source_port, packet.dest_port))

    def run() -> None:
        # Read until the block has ended and what queued up while it ran is read: until a
        # packet the kernel stamped after the end, or the socket is idle for a timeout.
        limit = None
        buffer = bytearray(SNAPLEN)
        view = memoryview(buffer)
        while limit is None or time.monotonic() < limit:
            try:
                size, ancillary, _, address = sock.recvmsg_into([buffer], _CMSG_SPACE)
            except TimeoutError:
                if stop.is_set():
                    drained.set()
                    return
                continue
            except OSError:
                return
            if stop.is_set():
                if (_stamp(ancillary) or 0.0) > ended[0]:
                    drained.set()
                    return
                limit = limit or time.monotonic() + DRAIN_LIMIT
            if address[2] == socket.PACKET_OUTGOING:
                continue
            packet = _parse(bytes(view[:size]))
            if packet is not None and keep(packet):
                seen.append(packet)

    thread = threading.Thread(target=run, name="lo-capture", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        ended[0] = time.time()
        stop.set()
        thread.join(DRAIN_LIMIT + 1.0)
        lost = dropped(sock)
        sock.close()
    if lost:
        raise TapLost(f"the tap on lo lost {lost} packets (kernel drops): its view is partial")
    if not drained.is_set():
        raise TapLost(f"the tap on lo did not read all it had queued within {DRAIN_LIMIT} s")


def spoof_udp(payload: bytes, source: tuple[str, int], dest: tuple[str, int]) -> None:
    """One IPv4 UDP datagram to ``dest`` that claims to come from ``source`` (checksum 0:
    none, which IPv4 allows)."""
    header = struct.pack("!HHHH", source[1], dest[1], 8 + len(payload), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(header) + len(payload), 0, 0, 64, 17,
                     0, socket.inet_aton(source[0]), socket.inet_aton(dest[0]))
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(ip + header + payload, (dest[0], 0))
