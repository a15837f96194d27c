"""One call's media session on real loopback sockets, driven by hand with a fake clock:
bad packets dropped and counted, symmetric RTP, timeout, DTMF, RTCP, echo, recording."""

from __future__ import annotations

import asyncio
import socket
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sipbridge.media.dtmf import DtmfDigit, dtmf_payloads
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.media.g711 import ulaw_decode, ulaw_encode
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.recorder import Recorder
from sipbridge.media.rtp import ReceiverReport, SenderReport, build_rtp, parse_rtcp, parse_rtp
from sipbridge.media.session import MediaSession
from sipbridge.sip.sdp import Codec, Direction, NegotiatedAudio

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
                                 * np.dot(ref[800 - delay:7200 - delay], ref[800 - delay:7200 - delay]))
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
    assert abs(s._last_rx - sent_at) < 0.01 and read_at - s._last_rx > 0.04
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
