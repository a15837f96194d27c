"""The compiled packet I/O (sipbridge.media._rtpio) against the Python reference: the RTP
header parse against parse_rtp on random, truncated and hostile datagrams; the batch read
and send on loopback sockets; and pooled endpoints, which never hand a past call's
packets to the next one."""

from __future__ import annotations

import errno
import random
import socket
import struct
import time

import pytest

from sipbridge.media import speed
from sipbridge.media.ports import SO_TIMESTAMPNS, PortPool
from sipbridge.media.rtp import RtpError, build_rtp, parse_rtp

rtpio = speed.load("rtpio")
pytestmark = pytest.mark.skipif(rtpio is None, reason="sipbridge.media._rtpio not built")


def reference(data: bytes) -> object:
    """What the Python path makes of a datagram on the RTP port, in parse()'s terms."""
    if data < b"\x04":  # STUN's first octet (or empty): not parsed as RTP
        return None
    try:
        p = parse_rtp(data)
    except RtpError as exc:
        return exc.reason
    return (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc, p.payload, p.csrcs)


def hostile(rng: random.Random) -> bytes:
    """An RTP-looking datagram with random flags, CSRC count, extension and padding,
    often lying about its lengths."""
    first = 0x80 | rng.getrandbits(6) if rng.random() < 0.85 else rng.getrandbits(8)
    head = bytes([first, rng.getrandbits(8)]) + rng.randbytes(10)
    body = rng.randbytes(4 * (first & 0x0F)) if rng.random() < 0.7 else b""
    if first & 0x10 and rng.random() < 0.8:
        words = rng.choice((0, 1, 2, rng.getrandbits(16)))
        body += rng.randbytes(2) + struct.pack("!H", words) + rng.randbytes(4 * min(words, 4))
    body += rng.randbytes(rng.choice((0, 1, 3, 160, rng.randrange(0, 300))))
    if first & 0x20 and rng.random() < 0.7:
        body += bytes([rng.choice((0, 1, 4, 255, rng.getrandbits(8)))])
    return head + body


def test_parse_matches_parse_rtp_on_random_truncated_and_hostile_datagrams() -> None:
    assert rtpio is not None
    rng = random.Random(17)
    cases = [b"", b"\x00", b"\x03" * 30, b"\x04" * 30, b"\x80" * 11, b"\x80" * 12,
             b"\xbf" + b"\x00" * 11 + b"\x00" * 60 + b"\x01"]
    valid = build_rtp(0, 7, 1234, 0xDEADBEEF, bytes(range(160)), marker=True)
    cases += [valid[:n] for n in range(len(valid) + 1)]
    for _ in range(20000):
        data = hostile(rng)
        cases.append(data)
        cases.append(data[: rng.randrange(len(data) + 1)])  # truncated anywhere
        if rng.random() < 0.1:
            cases.append(rng.randbytes(rng.randrange(0, 64)))  # noise
    outcomes: dict[str, int] = {}
    for data in cases:
        want = reference(data)
        got = rtpio.parse(data)
        assert got == want, data.hex()
        kind = want if isinstance(want, str) else "ok" if want else "stun"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    # Every outcome was met, many times: the comparison covered each branch.
    for kind in ("ok", "stun", "short", "version", "truncated", "padding"):
        assert outcomes.get(kind, 0) > 20, outcomes


def test_parse_reads_every_field_of_a_full_header() -> None:
    assert rtpio is not None
    csrcs = struct.pack("!3I", 1, 2, 0xFFFFFFFF)
    extension = struct.pack("!HH", 0xBEDE, 2) + b"\xaa" * 8
    payload = b"voice" * 10
    data = (bytes([0x80 | 0x20 | 0x10 | 3, 0x80 | 101]) + struct.pack("!HII", 65535,
            0xFFFFFFFF, 0x01020304) + csrcs + extension + payload + b"\x00\x00\x03")
    assert rtpio.parse(data) == (101, True, 65535, 0xFFFFFFFF, 0x01020304, payload,
                                 (1, 2, 0xFFFFFFFF))
    assert rtpio.parse(data) == reference(data)
    assert rtpio.parse(bytearray(data)) == reference(data)  # any buffer


def pair() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    return rx, tx


Entry = tuple[int, float | None, tuple[str, int] | None, bytes | None, object]


def wait_readable(poller: object, want: int, timeout: float = 2.0) -> list[Entry]:
    """Poll until `want` datagrams were read (fails loudly after `timeout`); the entries
    of sockets only told readable come with them, once per poll while they are."""
    got: list[Entry] = []
    deadline = time.monotonic() + timeout
    while sum(e[3] is not None for e in got) < want:
        got += poller.poll()  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            pytest.fail(f"{len(got)} of {want} datagrams read in {timeout} s")
        time.sleep(0.001)
    return got


def test_poll_reads_every_ready_socket_with_source_stamp_and_parse() -> None:
    assert rtpio is not None
    poller = rtpio.Poller()
    a, b = pair()
    c, d = pair()
    a.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    try:
        poller.add(a.fileno(), 4, True)
        poller.add(c.fileno(), 7, False)  # read by its owner: only told it is readable
        packets = [build_rtp(0, k, 160 * k, 99, bytes([k]) * 160) for k in range(40)]
        before = time.time()
        for p in packets:
            b.sendto(p, a.getsockname())
        b.sendto(b"\x00\x01\x00\x00", a.getsockname())  # STUN-like: raw
        b.sendto(b"\x40" * 20, a.getsockname())  # version 1
        d.sendto(b"rtcp", c.getsockname())
        got = wait_readable(poller, 42)
        after = time.time()
        raw = [e for e in got if e[0] == 7]
        assert raw and set(raw) == {(7, None, None, None, None)}  # level-triggered
        mine = [e for e in got if e[0] == 4]
        assert [e[3] for e in mine] == [*packets, b"\x00\x01\x00\x00", b"\x40" * 20]
        for _, stamp, addr, data, parsed in mine:
            assert addr == b.getsockname() and stamp is not None and data is not None
            assert before - 0.001 <= stamp <= after + 0.001
            assert parsed == reference(data)
        assert c.recv(100) == b"rtcp"  # left for its owner
        # Disabled: nothing read (it waits in the kernel); enabled again: read.
        poller.enable(a.fileno(), 4, True, False)
        b.sendto(packets[0], a.getsockname())
        time.sleep(0.02)
        assert poller.poll() == []
        poller.enable(a.fileno(), 4, True, True)
        assert [e[3] for e in wait_readable(poller, 1)] == [packets[0]]
        # One socket's whole queue, past one recvmmsg's worth.
        poller.enable(a.fileno(), 4, True, False)
        for p in packets[:20]:
            b.sendto(p, a.getsockname())
        time.sleep(0.02)
        assert [e[3] for e in poller.read(a.fileno(), 4)] == packets[:20]
        assert poller.read(a.fileno(), 4) == []
        poller.remove(a.fileno())
        b.sendto(packets[0], a.getsockname())
        time.sleep(0.02)
        assert poller.poll() == []
    finally:
        poller.close()
        for s in (a, b, c, d):
            s.close()


def test_send_sends_each_packet_and_reports_failures_by_index() -> None:
    assert rtpio is not None
    a, b = pair()
    host, port = b.getsockname()
    b.setblocking(False)
    try:
        out: list[tuple[object, int, bytes, tuple[str, int], int]] = [
            (None, a.fileno(), bytes([k]) * 10, (host, port), 10) for k in range(5)]
        out.insert(2, ("x", a.fileno(), b"lost", ("not an address", port), 4))
        out.insert(4, ("y", 10_000, b"lost", (host, port), 4))  # not an open fd
        failures = rtpio.send(out)
        assert failures == [(2, errno.EINVAL), (4, errno.EBADF)]
        got: list[bytes] = []
        deadline = time.monotonic() + 2
        while len(got) < 5 and time.monotonic() < deadline:
            try:
                got.append(b.recv(100))
            except BlockingIOError:
                time.sleep(0.001)
        assert got == [bytes([k]) * 10 for k in range(5)]
        with pytest.raises(TypeError):
            rtpio.send([(None, a.fileno(), "not bytes", (host, port), 1)])
    finally:
        a.close()
        b.close()


# ---- pooled endpoints ------------------------------------------------------------


def test_a_released_endpoint_stays_bound_and_comes_back_drained() -> None:
    pool = PortPool(31500, 31599, keep=1)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    try:
        first = pool.allocate("127.0.0.1")
        second = pool.allocate("127.0.0.1")
        assert pool.in_use == 2
        assert pool.release(first) is True  # kept bound: no socket closed
        assert pool.in_use == 1 and pool.idle == 1 and first.rtp.fileno() >= 0
        assert pool.release(second) is False  # past `keep`: closed
        assert second.rtp.fileno() == -1 and pool.idle == 1
        for _ in range(3):  # a late packet of the last call, on both sockets
            peer.sendto(b"late", ("127.0.0.1", first.port))
            peer.sendto(b"late", ("127.0.0.1", first.port + 1))
        time.sleep(0.02)
        again = pool.allocate("127.0.0.1")
        assert again is first and pool.in_use == 1 and pool.idle == 0
        for sock in (again.rtp, again.rtcp):
            with pytest.raises(BlockingIOError):
                sock.recv(100)  # drained: nothing of the last call is left
        # The range is still respected: a new port is a free one in it.
        third = pool.allocate("127.0.0.1")
        assert 31500 <= third.port <= 31598 and third.port != first.port
        pool.release(third)
        pool.release(again)
        for endpoint in pool.take_idle():
            endpoint.close()
        assert pool.idle == 0 and pool.in_use == 0
    finally:
        peer.close()
