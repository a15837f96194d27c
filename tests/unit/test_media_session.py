"""One call's media session on real loopback sockets, driven by hand with a fake clock:
bad packets dropped and counted, symmetric RTP, timeout, DTMF, RTCP, echo, recording,
STUN keep-alives counted and answered."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.media.dtmf import DtmfDigit, dtmf_payloads
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.media.g711 import ulaw_decode, ulaw_encode
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.recorder import Recorder
from sipbridge.media.rtp import ReceiverReport, SenderReport, build_rtp, parse_rtcp, parse_rtp
from sipbridge.media.session import STUN_BELOW, MediaSession
from sipbridge.media.stun import (
    BINDING,
    INDICATION,
    REQUEST,
    SUCCESS,
    XOR_MAPPED_ADDRESS,
    build_stun,
    parse_stun,
    xor_address,
)

PEER_SSRC = 0x1234


class Peer:
    """The caller's side: an RTP and an RTCP socket on loopback."""

    def __init__(self) -> None:
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.port = self.rtp.getsockname()[1]
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.rtcp.bind(("127.0.0.1", self.port + 1))
        except OSError:
            self.rtcp.bind(("127.0.0.1", 0))
        for s in (self.rtp, self.rtcp):
            s.settimeout(1.0)
        self.addr = ("127.0.0.1", self.port)

    def audio(self, direction: Direction = Direction.SENDRECV) -> NegotiatedAudio:
        return NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "127.0.0.1", self.port, direction, 20)

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


@pytest.fixture
def pool() -> PortPool:
    return PortPool(31000, 31999)


def make_session(pool: PortPool, peer: Peer, **kwargs: object) -> MediaSession:
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("jitter", JitterBuffer(initial_delay_ms=0))
    return MediaSession("rtc_test", pool.allocate("127.0.0.1"), peer.audio(), now=0.0,
                        wall=lambda: 1.7e9, **kwargs)  # type: ignore[arg-type]


def packet(seq: int, ts: int | None = None, pt: int = 0, ssrc: int = PEER_SSRC,
           payload: bytes | None = None) -> bytes:
    if payload is None:
        payload = ulaw_encode(np.full(160, 1000, np.int16))
    return build_rtp(pt, seq, seq * 160 if ts is None else ts, ssrc, payload)


def test_bad_packets_are_dropped_and_counted_and_the_call_goes_on(
    pool: PortPool, peer: Peer
) -> None:
    s = make_session(pool, peer)
    s.receive(packet(1), peer.addr, 0.00)  # latches the caller's address and SSRC
    bad = {
        "short": b"\x80\x00\x00",
        "version": b"\x40" + packet(2)[1:],
        "truncated": b"\x8f" + packet(2)[1:16],  # 15 CSRCs promised, 4 bytes given
        "padding": b"\xa0" + packet(2)[1:-1] + b"\xff",  # padding longer than the payload
        "payload_type": packet(2, pt=18),
        "ssrc": packet(2, ssrc=0xBAD),
    }
    for i, data in enumerate(bad.values()):
        s.receive(data, peer.addr, 0.001 * (i + 1))
    s.receive(packet(3), ("127.0.0.1", peer.port + 7), 0.01)  # a stranger, once latched
    for reason in bad:
        assert s.dropped[reason] == 1, (reason, s.dropped)
    assert s.dropped["source"] == 1
    assert s.jitter.received == 1
    s.receive(packet(2), peer.addr, 0.02)
    assert s.jitter.received == 2  # the good stream still flows
    s.tick(0.021)
    data, _ = peer.rtp.recvfrom(2048)
    assert parse_rtp(data).payload_type == 0  # and we still send
    s.close()


def test_figures_count_loss_duplicates_and_reordering(pool: PortPool, peer: Peer) -> None:
    s = make_session(pool, peer)
    arrivals = [0, 1, 2, 3, 3, 5, 4, 7, 7, 8, 10, 9, 9]  # 6 and 11..: lost, three doubled
    for k, seq in enumerate(arrivals):
        s.receive(packet(seq), peer.addr, 0.02 * k)
    figures = s.figures()
    # 1..10 expected (0 was the source's probation), 6 missing; RFC 3550's cumulative
    # loss (expected less received, duplicates counted) would say -2.
    assert (figures["lost"], figures["duplicates"], figures["reordered"]) == (1, 3, 2)
    assert s.rx.lost == -2
    assert "lost=1 dup=3 reordered=2 " in s.summary()
    s.close()


def test_a_flood_is_cut_by_the_token_bucket(pool: PortPool, peer: Peer) -> None:
    s = make_session(pool, peer)
    for i in range(5000):
        s.receive(packet(i % 65536), peer.addr, 1.0)  # all at once
    assert s.dropped["flood"] >= 4900
    assert s.jitter.depth <= 10  # the buffer stays bounded
    s.receive(packet(6000), peer.addr, 2.0)  # a second later the caller is heard again
    assert s.dropped["flood"] < 5000 and s.stats.packets_in == 5001
    s.close()


def test_a_new_ssrc_is_adopted_after_a_steady_run(pool: PortPool, peer: Peer) -> None:
    s = make_session(pool, peer)
    s.receive(packet(1), peer.addr, 0.0)
    for i in range(12):  # the peer restarted its stream with a new SSRC
        s.receive(packet(100 + i, ssrc=0x5678), peer.addr, 0.02 * (i + 1))
    assert s.dropped["ssrc"] == 9
    assert s.jitter.received > 1
    s.close()


def test_symmetric_rtp_answers_where_the_caller_sends_from(pool: PortPool, peer: Peer) -> None:
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.settimeout(1.0)
    s = make_session(pool, peer)  # the SDP named peer.port
    s.receive(packet(1), other.getsockname(), 0.0)  # but packets come from elsewhere (NAT)
    s.tick(0.001)
    data, _ = other.recvfrom(2048)
    assert parse_rtp(data).ssrc != PEER_SSRC
    other.close()
    s.close()


def test_no_rtp_for_the_timeout_ends_the_call_once(pool: PortPool, peer: Peer) -> None:
    reasons: list[str] = []
    s = make_session(pool, peer, timeout=2.0, on_timeout=reasons.append)
    s.receive(packet(1), peer.addr, 0.0)
    for k in range(1, 200):
        s.tick(k * 0.02)
    assert reasons == ["no RTP for 2 s"]
    s.close()


def test_no_timeout_while_the_caller_holds(pool: PortPool, peer: Peer) -> None:
    reasons: list[str] = []
    s = make_session(pool, peer, timeout=1.0, on_timeout=reasons.append)
    s.update(peer.audio(Direction.SENDONLY))  # we send, the caller does not (RFC 3264)
    for k in range(1, 200):
        s.tick(k * 0.02)
    assert reasons == []
    s.close()


def test_dtmf_digits_are_reported(pool: PortPool, peer: Peer) -> None:
    digits: list[DtmfDigit] = []
    s = make_session(pool, peer, on_dtmf=digits.append)
    seq = 1
    for n, digit in enumerate("12#"):
        ts = 8000 * (n + 1)
        for payload, marker, _ in dtmf_payloads(digit, duration_ms=120):
            data = bytearray(packet(seq, ts=ts, pt=101, payload=payload))
            if marker:
                data[1] |= 0x80
            s.receive(bytes(data), peer.addr, seq * 0.02)
            seq += 1
    assert [(d.digit, d.duration_ms) for d in digits] == [("1", 120), ("2", 120), ("#", 120)]
    s.close()


def test_rtcp_sender_report_carries_a_report_block(pool: PortPool, peer: Peer) -> None:
    s = make_session(pool, peer)
    for k in range(1, 300):
        s.receive(packet(k), peer.addr, k * 0.02)
        s.tick(k * 0.02 + 0.001)
    s.close()
    data, _ = peer.rtcp.recvfrom(2048)
    packets = parse_rtcp(data)
    report = packets[0]
    assert isinstance(report, SenderReport | ReceiverReport)
    assert isinstance(report, SenderReport) and report.packet_count >= 240
    assert report.reports[0].ssrc == PEER_SSRC and report.reports[0].fraction_lost == 0


def test_echo_sends_the_callers_audio_back(pool: PortPool, peer: Peer) -> None:
    loop = asyncio.new_event_loop()
    engine = MediaEngine(MediaConfig(), loop)
    s = make_session(pool, peer)
    engine.echo(s)
    t = np.arange(160 * 50) / 8000
    speech = (6000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
    got = []
    for k in range(50):
        frame = ulaw_encode(speech[k * 160:(k + 1) * 160])
        s.receive(packet(k + 1, payload=frame), peer.addr, k * 0.02)
        s.tick(k * 0.02 + 0.001)
        data, _ = peer.rtp.recvfrom(2048)
        got.append(ulaw_decode(parse_rtp(data).payload))
    echoed = np.concatenate(got).astype(float)
    ref = speech.astype(float)
    lags = [float(np.dot(echoed[800:7200], ref[800 - d:7200 - d])) for d in range(40)]
    delay = int(np.argmax(lags))
    corr = lags[delay] / np.sqrt(np.dot(echoed[800:7200], echoed[800:7200])
                                 * np.dot(ref[800 - delay:7200 - delay],
                                          ref[800 - delay:7200 - delay]))
    assert corr > 0.99 and delay <= 32  # the same frame's tick, plus ~3 ms of filter delay
    s.close()
    engine.close()
    loop.close()


def test_recording_has_caller_and_agent_channels(tmp_path: Path, pool: PortPool,
                                                  peer: Peer) -> None:
    s = make_session(pool, peer, recorder=Recorder(tmp_path / "call.wav"))
    s.play_phone(np.full(1600, 3000, np.int16))
    for k in range(1, 60):
        s.receive(packet(k), peer.addr, k * 0.02)
        s.tick(k * 0.02 + 0.001)
    s.close()
    with wave.open(str(tmp_path / "call.wav"), "rb") as w:
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    assert len(data) == 59 * 160
    assert np.abs(data[:, 0]).mean() > 900  # the caller's 1000-level frames
    assert (np.abs(data[:1600, 1]) > 2500).all() and not data[1600:, 1].any()


def test_arrival_time_is_the_kernels_not_when_the_loop_reads(pool: PortPool, peer: Peer) -> None:
    """A packet read 50 ms after it arrived counts as arrived then (SO_TIMESTAMPNS)."""
    import time

    s = MediaSession("rtc_ts", pool.allocate("127.0.0.1"), peer.audio(), now=time.monotonic(),
                     wall=time.time, timeout=5.0, jitter=JitterBuffer(initial_delay_ms=0))
    if not s.endpoint.timestamps:
        pytest.skip("no kernel receive timestamps on this platform")
    sent_at = time.monotonic()
    peer.rtp.sendto(packet(1), ("127.0.0.1", s.endpoint.port))
    time.sleep(0.05)
    read_at = time.monotonic()
    s.readable(read_at)
    assert s.jitter.received == 1
    assert abs(s.last_rx - sent_at) < 0.01 and read_at - s.last_rx > 0.04
    s.close()


def test_echo_keeps_one_frame_in_one_frame_out(pool: PortPool, peer: Peer) -> None:
    """A replayed or concealed frame must not leave the echo 20 ms later for good."""
    loop = asyncio.new_event_loop()
    engine = MediaEngine(MediaConfig(), loop)
    s = make_session(pool, peer)
    engine.echo(s)
    assert s.on_audio is not None
    frame = np.full(160, 500, np.int16)
    s.on_audio(frame)
    assert s.queued_ms == 20
    s.on_audio(frame)  # a second frame before the tick sent the first
    assert s.queued_ms == 20
    s.close()
    engine.close()
    loop.close()


def test_ticks_are_aligned_to_the_callers_first_packet_only(
    pool: PortPool, peer: Peer
) -> None:
    phases: list[float] = []
    s = make_session(pool, peer, on_phase=phases.append)
    s.receive(packet(1), peer.addr, 0.0137)  # an off-grid first packet
    for k in range(2, 80):
        s.receive(packet(k), peer.addr, 0.005 + k * 0.02)  # then the steady grid
    # Moving the grid mid-call would play a frame twice or drop one.
    assert phases == [0.0137]
    s.close()


def echo_session(pool: PortPool, peer: Peer) -> tuple[MediaSession, MediaEngine,
                                                       asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    engine = MediaEngine(MediaConfig(), loop)
    s = make_session(pool, peer)
    engine.echo(s)
    peer.rtp.setblocking(False)
    return s, engine, loop


def sent(peer: Peer) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(peer.rtp.recv(2048))
        except BlockingIOError:
            return out


def test_an_echo_leaves_as_soon_as_its_packet_is_in_not_at_the_tick(
    pool: PortPool, peer: Peer
) -> None:
    s, engine, loop = echo_session(pool, peer)
    s.next_tick = 0.010  # ticks 10 ms after the packets: the deadline for late ones
    for k in range(20):
        s.receive(packet(k), peer.addr, k * 0.02)
        s.pump()
        assert len(sent(peer)) == 1, k  # the echo is out before its tick comes
        s.tick(k * 0.02 + 0.010)
        s.next_tick = (k + 1) * 0.02 + 0.010
        s.pump()
        assert sent(peer) == [], k  # and the tick sends nothing more
    assert s.jitter.played == 20 and s.jitter.concealed == 0
    s.close()
    engine.close()
    loop.close()


def test_a_burst_runs_at_most_one_tick_ahead(pool: PortPool, peer: Peer) -> None:
    s, engine, loop = echo_session(pool, peer)
    s.next_tick = 0.010
    for k in range(4):  # four frames in the buffer before the first tick comes
        s.receive(packet(k), peer.addr, k * 0.02)
    s.pump()
    s.pump()
    assert len(sent(peer)) == 1
    for k in range(1, 4):  # each tick lets the next frame out, one at a time
        s.tick(0.010 + (k - 1) * 0.02)
        s.next_tick = 0.010 + k * 0.02
        s.pump()
        assert len(sent(peer)) == 1
    assert s.jitter.played == 4
    s.close()
    engine.close()
    loop.close()


def test_a_late_frame_is_concealed_at_its_deadline(pool: PortPool, peer: Peer) -> None:
    s, engine, loop = echo_session(pool, peer)
    s.next_tick = 0.010
    s.receive(packet(0), peer.addr, 0.0)
    s.pump()
    s.tick(0.010)
    s.next_tick = 0.030
    s.pump()  # frame 1 has not come: nothing runs ahead
    assert len(sent(peer)) == 1
    s.tick(0.030)  # its deadline: concealed, and the echo still leaves on time
    assert len(sent(peer)) == 1 and s.jitter.concealed == 1
    s.close()
    engine.close()
    loop.close()


def test_own_audio_leaves_on_the_grid_while_input_runs_ahead(pool: PortPool, peer: Peer) -> None:
    s = make_session(pool, peer)
    heard: list[np.ndarray] = []
    s.on_audio = heard.append
    peer.rtp.setblocking(False)
    s.next_tick = 0.010
    s.receive(packet(0), peer.addr, 0.0)
    s.pump()
    assert len(heard) == 1 and sent(peer) == []  # the caller's frame is already passed on
    s.tick(0.010)
    assert len(heard) == 1 and len(sent(peer)) == 1  # the output waits for its tick
    s.close()


def binding_request(n: int = 1, kind: int = BINDING | REQUEST) -> bytes:
    return build_stun(kind, n.to_bytes(12, "big"))


def mapped(data: bytes, n: int = 1) -> tuple[str, int]:
    """Where a Binding Success Response says the request came from."""
    message = parse_stun(data)
    assert message.type == BINDING | SUCCESS and message.transaction_id == n.to_bytes(12, "big")
    value = message.attribute(XOR_MAPPED_ADDRESS)
    assert value is not None
    return xor_address(value, message.transaction_id)


def test_a_stun_binding_request_is_answered_and_counted_as_stun_not_malformed(
    pool: PortPool, peer: Peer
) -> None:
    s = make_session(pool, peer)
    s.receive(binding_request(1), peer.addr, 0.0)  # before any RTP: the SDP's address
    data, source = peer.rtp.recvfrom(2048)
    assert source == ("127.0.0.1", s.endpoint.port)  # from the RTP port itself
    assert mapped(data, 1) == peer.addr and len(data) == 32
    s.receive(packet(1), peer.addr, 0.01)
    s.receive(binding_request(2), peer.addr, 0.02)  # mid-call keep-alive
    assert mapped(peer.rtp.recvfrom(2048)[0], 2) == peer.addr
    assert (s.stats.stun, s.stats.stun_answered, s.stats.packets_in) == (2, 2, 1)
    assert not s.dropped
    figures = s.figures()
    assert figures["stun"] == 2 and figures["stun_answered"] == 2
    assert figures["packets_in"] == 1 and figures["dropped"] == {}
    assert "stun=2" in s.summary()
    s.close()


def test_stun_on_the_rtcp_port_is_answered_from_it(pool: PortPool, peer: Peer) -> None:
    if peer.rtcp.getsockname()[1] != peer.port + 1:
        pytest.skip("the port after the peer's RTP port was taken")
    s = make_session(pool, peer)
    peer.rtcp.sendto(binding_request(3), ("127.0.0.1", s.endpoint.port + 1))
    s.rtcp_readable(0.0)
    data, source = peer.rtcp.recvfrom(2048)
    assert source == ("127.0.0.1", s.endpoint.port + 1)
    assert mapped(data, 3) == ("127.0.0.1", peer.port + 1)
    assert s.stats.stun == 1 and s.stats.rtcp_in == 0 and not s.dropped
    s.close()


def test_only_the_calls_peer_is_answered(pool: PortPool, peer: Peer) -> None:
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.settimeout(0.2)
    s = make_session(pool, peer)
    s.receive(binding_request(1), other.getsockname(), 0.0)  # a stranger: counted, not answered
    with pytest.raises(TimeoutError):
        other.recvfrom(2048)
    s.receive(packet(1), other.getsockname(), 0.01)  # the peer's RTP comes from there (NAT)
    s.receive(binding_request(2), other.getsockname(), 0.02)  # now it is the latched address
    assert mapped(other.recvfrom(2048)[0], 2) == other.getsockname()
    s.receive(binding_request(3), peer.addr, 0.03)  # and the SDP's address still is the peer
    assert mapped(peer.rtp.recvfrom(2048)[0], 3) == peer.addr
    assert s.stats.stun == 3 and s.stats.stun_answered == 2
    other.close()
    s.close()


def test_only_well_formed_binding_requests_are_answered(pool: PortPool, peer: Peer) -> None:
    peer.rtp.settimeout(0.2)
    s = make_session(pool, peer)
    s.receive(binding_request(1, BINDING | INDICATION), peer.addr, 0.0)  # RFC 6263 keep-alive
    s.receive(binding_request(2, BINDING | SUCCESS), peer.addr, 0.0)
    assert s.stats.stun == 2 and not s.dropped
    bad = binding_request(3)
    s.receive(bad[:4] + b"\x21\x12\xa4\x43" + bad[8:], peer.addr, 0.0)  # a wrong cookie
    s.receive(bad[:3] + b"\x04" + bad[4:], peer.addr, 0.0)  # a length the datagram lacks
    s.receive(bad[:12], peer.addr, 0.0)  # short for STUN, the size of an RTP header
    s.receive(b"", peer.addr, 0.0)
    with pytest.raises(TimeoutError):
        peer.rtp.recvfrom(2048)
    # Not STUN after all: dropped as malformed RTP, as any other such datagram.
    assert s.stats.stun == 2 and s.stats.stun_answered == 0
    assert s.dropped == {"version": 3, "short": 1} and s.stats.packets_in == 4
    s.close()


def test_stun_answers_are_rate_limited(pool: PortPool, peer: Peer) -> None:
    peer.rtp.setblocking(False)
    s = make_session(pool, peer)
    for n in range(50):  # a burst, as a spoofed source would send
        s.receive(binding_request(n), peer.addr, 1.0)
    assert s.stats.stun == 50 and s.stats.stun_answered == 5
    s.receive(binding_request(99), peer.addr, 2.0)  # a second later it is answered again
    assert s.stats.stun_answered == 6
    assert len(sent(peer)) == 6
    s.close()


def test_stun_over_ipv6_is_answered_with_an_ipv6_address() -> None:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    sock.settimeout(1.0)
    port = sock.getsockname()[1]
    audio = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "::1", port, Direction.SENDRECV, 20)
    s = MediaSession("rtc_test", PortPool(31000, 31999).allocate("::1"), audio, now=0.0,
                     wall=lambda: 1.7e9, timeout=5.0, jitter=JitterBuffer())
    sock.sendto(binding_request(7), ("::1", s.endpoint.port))
    s.readable(0.0)
    assert mapped(sock.recvfrom(2048)[0], 7) == ("::1", port)
    assert s.stats.stun == 1 and s.stats.packets_in == 0
    sock.close()
    s.close()


def test_the_stun_test_is_rfc_7983s_first_octet_range() -> None:
    assert [b for b in range(256) if bytes([b, 0x80]) < STUN_BELOW] == [0, 1, 2, 3]
    assert STUN_BELOW > b""  # an empty datagram: tried as STUN, then dropped as short RTP


@pytest.mark.parametrize("address", ["media.example.com", "999.1.1.1"])
def test_a_name_in_c_is_never_looked_up_the_first_packet_shows_the_peer(
        pool: PortPool, peer: Peer, address: str) -> None:
    """A host name (or a non-address) in the SDP's c= line is not resolved: a lookup would
    block the loop at every packet. Nothing is sent (no sendto, so no lookup: neither a
    packet out nor a send error) until the caller's first packet; then symmetric RTP
    answers there."""
    audio = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, address, peer.port,
                            Direction.SENDRECV, 20)
    s = MediaSession("rtc_test", pool.allocate("127.0.0.1"), audio, now=0.0,
                     wall=lambda: 1.7e9, timeout=5.0, jitter=JitterBuffer(initial_delay_ms=0))
    for k in range(1, 300):  # six seconds of ticks, RTCP's time included
        s.tick(k * 0.02)
    assert s.stats.packets_out == 0 and s.stats.rtcp_out == 0 and not s.dropped
    s.receive(packet(1), peer.addr, 6.0)
    s.tick(6.02)
    assert parse_rtp(peer.rtp.recvfrom(2048)[0]).ssrc != PEER_SSRC
    assert s.stats.packets_out == 1
    s.close()


def test_a_name_looked_up_is_sent_to_unless_the_callers_packets_came_first(
        pool: PortPool, peer: Peer) -> None:
    """With names looked up (media_resolve_names), the session asks once per c= name and
    sends to the address found; an answer for a name the SDP has left, or one that comes
    after the caller's packets showed the way, changes nothing."""
    asked: list[tuple[str, int]] = []
    audio = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "media.example.com", peer.port,
                            Direction.SENDRECV, 20)
    s = MediaSession("rtc_test", pool.allocate("127.0.0.1"), audio, now=0.0,
                     wall=lambda: 1.7e9, timeout=5.0, jitter=JitterBuffer(initial_delay_ms=0))
    s.on_named_peer = lambda host, port: asked.append((host, port))
    assert not s.peer_known and s.sdp_remote == ("media.example.com", peer.port)
    s.update(dataclasses.replace(audio, remote_address="other.example.com"))
    assert asked == [("other.example.com", peer.port)]
    s.peer_resolved("media.example.com", peer.port, ("127.0.0.1", peer.port))  # stale
    s.tick(0.02)
    assert s.stats.packets_out == 0
    s.peer_resolved("other.example.com", peer.port, ("127.0.0.1", peer.port))
    s.tick(0.04)
    assert s.peer_known and s.stats.packets_out == 1
    assert parse_rtp(peer.rtp.recvfrom(2048)[0]).ssrc != PEER_SSRC
    s.close()


def test_figures_count_the_jitter_buffers_steps(pool: PortPool, peer: Peer) -> None:
    """A network that holds packets back now and then makes the jitter buffer grow (ticks
    that play nothing: `stalled`) and, once it is steady again, shrink (queued frames
    dropped: `skipped`): each a 20 ms step in what is heard, in the figures and the log."""
    s = make_session(pool, peer)
    held: list[int] = []
    for k in range(1500):
        t = 0.02 * k
        if k < 400 and k % 40 in range(30, 36):  # 120 ms held back, then a burst
            held.append(k)
        else:
            for seq in held:
                s.receive(packet(seq), peer.addr, t)
            held = []
            s.receive(packet(k), peer.addr, t)
        s.tick(t + 0.001)
    figures = s.figures()
    assert figures["stalled"] == s.jitter.stalled >= 1
    assert figures["skipped"] == s.jitter.skipped >= 1
    assert f"skipped={s.jitter.skipped} stalled={s.jitter.stalled} " in s.summary()
    s.close()
