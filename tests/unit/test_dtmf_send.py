"""Sending DTMF as RFC 4733 telephone-events: the sans-IO sender's packets tick by tick,
and a media session on loopback sockets putting them in its RTP stream (same SSRC and
sequence numbers as the voice, the event's timestamp fixed, end packet three times, a
gap of voice between digits; SRTP protected like the voice)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio, SrtpKeys
from sipbridge.media.dtmf import DtmfReceiver, DtmfSender, dtmf_digits, parse_event
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.rtp import RtpPacket, parse_rtp
from sipbridge.media.session import MediaSession
from sipbridge.media.srtp import SrtpContext

TS = 1000


def ticks(sender: DtmfSender, count: int, ts: int = TS, step: int = 160
          ) -> list[tuple[int, bool, bytes] | None]:
    out: list[tuple[int, bool, bytes] | None] = []
    for k in range(count):
        event = sender.tick(ts + k * step)
        out.append(None if event is None else event[:3])
    return out


def test_one_digit_is_a_start_updates_and_three_ends_on_a_fixed_timestamp() -> None:
    sender = DtmfSender(8000, 20)
    sender.queue("5", duration_ms=100, gap_ms=0)
    assert not sender.idle
    assert ticks(sender, 9) == [
        (TS, True, b"\x05\x0a\x00\xa0"),  # 160: one frame, marker on the first
        (TS, False, b"\x05\x0a\x01\x40"),
        (TS, False, b"\x05\x0a\x01\xe0"),
        (TS, False, b"\x05\x0a\x02\x80"),
        (TS, False, b"\x05\x8a\x03\x20"),  # 800 = 100 ms, E bit: three times
        (TS, False, b"\x05\x8a\x03\x20"),
        (TS, False, b"\x05\x8a\x03\x20"),
        None, None,
    ]
    assert sender.idle


def test_digits_follow_in_order_with_a_gap_of_voice() -> None:
    sender = DtmfSender(8000, 20)
    sender.queue("1#", duration_ms=60, gap_ms=100)
    got = ticks(sender, 16)
    # "1": 3 frames of tone (160, 320, 480 end) + 2 more ends; then voice until the
    # gap since its end (480 units) reaches 800 units: ticks 5..7; "#" from tick 8.
    assert [parse_event(e[2]).event if e else None for e in got] == (
        [1] * 5 + [None] * 3 + [11] * 5 + [None] * 3)
    starts = [(k, e[0]) for k, e in enumerate(got) if e is not None and e[1]]
    assert starts == [(0, TS), (8, TS + 8 * 160)]
    gap_units = (TS + 8 * 160) - (TS + 480)
    assert gap_units >= 800
    assert sender.idle


def test_on_done_comes_with_the_last_end_packet_of_the_batch() -> None:
    sender = DtmfSender(8000, 20)
    done: list[int] = []
    sender.queue("12", duration_ms=40, gap_ms=0, on_done=lambda: done.append(1))
    # 40 ms: one update and the end three times, per digit.
    callbacks = [e[3] for e in (sender.tick(TS + k * 160) for k in range(8)) if e]
    assert callbacks[:-1] == [None] * 7 and callbacks[-1] is not None
    callbacks[-1]()
    assert done == [1]


def test_a_wideband_clock_counts_its_own_units() -> None:
    sender = DtmfSender(48000, 20)  # opus: timestamps and durations at 48 kHz
    sender.queue("9", duration_ms=100, gap_ms=0)
    durations = [parse_event(e[2]).duration for e in ticks(sender, 7, step=960) if e]
    assert durations == [960, 1920, 2880, 3840, 4800, 4800, 4800]


def test_what_the_sender_sends_the_receiver_reads_back() -> None:
    sender = DtmfSender(8000, 20)
    sender.queue("0123456789*#ABCD", duration_ms=80, gap_ms=60)
    rx = DtmfReceiver()
    heard = []
    for k in range(400):
        event = sender.tick(TS + k * 160)
        if event is not None:
            digit = rx.feed(event[0], event[1], event[2])
            if digit is not None:
                heard.append((digit.digit, digit.duration_ms))
    assert heard == [(d, 80) for d in "0123456789*#ABCD"]


@pytest.mark.parametrize("digits", ["", "12E", "1 2", "+1", "\u0661"])
def test_bad_digits_queue_nothing(digits: str) -> None:
    sender = DtmfSender(8000, 20)
    with pytest.raises(ValueError):
        sender.queue(digits)
    assert sender.idle


def test_lower_case_letters_are_the_digits_a_to_d() -> None:
    assert dtmf_digits("1abcd#") == "1ABCD#"


@pytest.mark.parametrize("options", [{"duration_ms": 39}, {"duration_ms": 1001},
                                     {"gap_ms": -1}, {"gap_ms": 5001}])
def test_bad_durations_queue_nothing(options: dict[str, int]) -> None:
    sender = DtmfSender(8000, 20)
    with pytest.raises(ValueError):
        sender.queue("1", **options)  # type: ignore[arg-type]
    assert sender.idle


# ---- in a media session's RTP stream ---------------------------------------------------


class Peer:
    def __init__(self) -> None:
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.settimeout(1.0)
        self.port = self.rtp.getsockname()[1]

    def audio(self, event_pt: int | None = 101) -> NegotiatedAudio:
        return NegotiatedAudio(Codec(0, "PCMU", 8000), event_pt, "127.0.0.1", self.port,
                               Direction.SENDRECV, 20)

    def packets(self, count: int) -> list[RtpPacket]:
        return [parse_rtp(self.rtp.recvfrom(2048)[0]) for _ in range(count)]


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.rtp.close()


def session(peer: Peer, audio: NegotiatedAudio | None = None) -> MediaSession:
    return MediaSession("rtc_dtmf", PortPool(32000, 32999).allocate("127.0.0.1"),
                        audio or peer.audio(), now=0.0, wall=lambda: 1.7e9, timeout=0.0,
                        jitter=JitterBuffer(initial_delay_ms=0))


def test_digits_go_in_the_voice_stream_and_voice_resumes(peer: Peer) -> None:
    s = session(peer)
    s.play_phone(np.full(160 * 20, 3000, np.int16))  # voice queued: it waits for the digit
    s.tick(0.0)
    done: list[float] = []
    s.send_dtmf("7", duration_ms=60, gap_ms=40, on_done=lambda: done.append(1.0))
    for k in range(1, 9):
        s.tick(k * 0.02)
    got = peer.packets(9)
    voice, events, after = got[0], got[1:6], got[6:]
    assert voice.payload_type == 0
    assert [p.payload_type for p in events] == [101] * 5
    assert [p.payload_type for p in after] == [0] * 3
    assert {p.ssrc for p in got} == {voice.ssrc}
    assert [p.sequence for p in got] == [(voice.sequence + k) & 0xFFFF for k in range(9)]
    assert {p.timestamp for p in events} == {voice.timestamp + 160}
    assert [p.marker for p in events] == [True, False, False, False, False]
    assert [(parse_event(p.payload).duration, parse_event(p.payload).end) for p in events] == [
        (160, False), (320, False), (480, True), (480, True), (480, True)]
    assert [p.timestamp for p in after] == [voice.timestamp + 160 * k for k in (6, 7, 8)]
    assert after[0].marker  # voice starts a new talkspurt after the digit
    assert after[0].payload == voice.payload  # the queued voice waited, none was lost
    assert done == [1.0]
    assert s._dtmf_out is None  # idle again: ticks cost nothing more
    s.close()


def test_no_telephone_event_negotiated_refuses(peer: Peer) -> None:
    s = session(peer, peer.audio(event_pt=None))
    with pytest.raises(ValueError, match="telephone-event"):
        s.send_dtmf("1")
    s.close()


def test_an_srtp_call_protects_the_event_packets(peer: Peer) -> None:
    keys = SrtpKeys("AES_CM_128_HMAC_SHA1_80", 1, bytes(range(30)), bytes(range(30, 60)))
    s = session(peer, dataclasses.replace(peer.audio(), srtp=keys))
    s.send_dtmf("3", duration_ms=40, gap_ms=0)
    s.tick(0.0)
    data = peer.rtp.recvfrom(2048)[0]
    theirs = SrtpContext(SrtpKeys(keys.suite, 1, keys.remote_key, keys.local_key))
    packet = parse_rtp(theirs.unprotect(data))
    assert packet.payload_type == 101 and parse_event(packet.payload).event == 3
    s.close()
