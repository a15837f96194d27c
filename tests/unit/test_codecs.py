"""Wideband codecs: G.722 and Opus coders, their SDP, and a session that runs them."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.config import ConfigError, load_config
from sipbridge.demo.audio import xcorr_delay
from sipbridge.media.codecs import G722, Opus, audio_rate, canonical_name, open_codec
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.resample import Resampler
from sipbridge.media.rtp import build_rtp, parse_rtp
from sipbridge.media.session import MediaSession
from sipbridge.sip.sdp import answer_offer, build_offer, parse_sdp

G722_FORMAT = Codec(9, "G722", 8000)
OPUS_FORMAT = Codec(96, "opus", 48000, 2, "useinbandfec=1; stereo=1")


def tone(rate: int, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 8000 * np.sin(2 * np.pi * hz * t) + 2000 * np.sin(2 * np.pi * 3 * hz * t)
    out: np.ndarray = x.astype(np.int16)
    return out


def round_trip(fmt: Codec, x: np.ndarray) -> np.ndarray:
    coder = open_codec(fmt)
    n = coder.frame_samples
    out = []
    for i in range(0, len(x) - n + 1, n):
        pcm = coder.decode(coder.encode(x[i:i + n]))
        assert pcm is not None and len(pcm) == n
        out.append(pcm)
    return np.concatenate(out)


@pytest.mark.parametrize(("fmt", "rate", "frame", "step"),
                         [(G722_FORMAT, 16000, 320, 160), (OPUS_FORMAT, 24000, 480, 960)])
def test_a_tone_comes_back_through_the_codec(fmt: Codec, rate: int, frame: int,
                                             step: int) -> None:
    coder = open_codec(fmt)
    assert (coder.rate, coder.frame_samples, coder.timestamp_step) == (rate, frame, step)
    assert audio_rate(fmt) == rate
    x = tone(rate)
    y = round_trip(fmt, x)
    peak, delay = xcorr_delay(x, y, rate)
    assert peak > 0.98
    assert 0 <= delay < 0.010


def test_g722_packets_are_160_octets_per_20_ms() -> None:
    coder = G722()
    assert len(coder.encode(tone(16000)[:320])) == 160


def test_opus_fec_follows_the_peers_fmtp() -> None:
    fec = open_codec(OPUS_FORMAT)
    plain = open_codec(Codec(96, "opus", 48000, 2, "stereo=1"))
    assert isinstance(fec, Opus) and isinstance(plain, Opus)
    assert fec.fec and not plain.fec


def test_a_payload_that_does_not_decode_gives_none() -> None:
    opus = open_codec(OPUS_FORMAT)
    assert opus.decode(b"\xff\xff\xff") is None  # code 3, no frame count: invalid
    assert opus.decode(b"") is None
    assert G722().decode(b"") is None
    concealed = opus.conceal(None, 1)
    assert concealed.dtype == np.int16 and len(concealed) == 480


def test_resampler_2_to_3_keeps_a_tone_and_its_length() -> None:
    x = tone(16000)
    up = Resampler(16000, 24000)
    y = np.concatenate([up.process(x[i:i + 320]) for i in range(0, len(x), 320)])
    assert len(y) == 24000
    peak, delay = xcorr_delay(tone(24000), y, 24000)
    assert peak > 0.99 and delay < 0.003


# ---- SDP ---------------------------------------------------------------------------

def offer(formats: str, lines: str) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        f"m=audio 5000 RTP/AVP {formats}\r\n{lines}"
    ).encode()


OPUS_OFFER = offer("96 9 0 101 102", "a=rtpmap:96 opus/48000/2\r\n"
                   "a=fmtp:96 useinbandfec=1;maxplaybackrate=48000\r\n"
                   "a=rtpmap:101 telephone-event/48000\r\na=rtpmap:102 telephone-event/8000\r\n")


def answer(data: bytes, supported: tuple[str, ...]) -> tuple[bytes, NegotiatedAudio]:
    sdp, audio = answer_offer(parse_sdp(data), local_address="203.0.113.5", local_port=4000,
                              session_id=1, session_version=1, supported=supported)
    return sdp.to_bytes(), audio


def test_opus_is_answered_on_the_offered_type_with_our_fmtp() -> None:
    body, audio = answer(OPUS_OFFER, ("opus", "G722", "PCMU"))
    assert audio.codec.payload_type == 96 and audio.codec.name == "opus"
    assert audio.codec.fmtp is not None and "useinbandfec=1" in audio.codec.fmtp  # theirs
    assert b"a=rtpmap:96 opus/48000/2\r\n" in body
    assert b"a=fmtp:96 stereo=0;useinbandfec=1\r\n" in body
    assert audio.telephone_event_pt == 101  # on the codec's clock


def test_opus_fec_is_not_asked_for_unless_offered() -> None:
    body, _ = answer(offer("96", "a=rtpmap:96 opus/48000/2\r\n"), ("opus",))
    assert b"useinbandfec" not in body


def test_g722_keeps_its_8000_clock_in_the_answer() -> None:
    body, audio = answer(OPUS_OFFER, ("G722", "opus"))
    assert audio.codec == Codec(9, "G722", 8000)
    assert b"m=audio 4000 RTP/AVP 9 102\r\n" in body  # telephone-event on G.722's clock


def test_an_opus_rtpmap_that_is_not_48000_2_is_not_opus() -> None:
    data = offer("96 0", "a=rtpmap:96 opus/48000/1\r\n")
    _, audio = answer(data, ("opus", "PCMU"))
    assert audio.codec.name == "PCMU"


def test_a_wideband_only_offer_we_do_not_run_names_both_sides() -> None:
    from sipbridge.sip.errors import NotAcceptable

    with pytest.raises(NotAcceptable, match="offered opus/48000; supported PCMU, PCMA"):
        answer(offer("96", "a=rtpmap:96 opus/48000/2\r\n"), ("PCMU", "PCMA"))


def test_our_offer_lists_wideband_codecs_in_preference_order() -> None:
    sdp = build_offer(local_address="203.0.113.5", local_port=4000, session_id=1,
                      session_version=1, codecs=("opus", "G722", "PCMU"))
    body = sdp.to_bytes()
    assert b"m=audio 4000 RTP/AVP 111 9 0 101\r\n" in body
    assert b"a=rtpmap:111 opus/48000/2\r\n" in body
    assert b"a=rtpmap:9 G722/8000\r\n" in body


# ---- config -------------------------------------------------------------------------

def test_codecs_config_is_checked_and_spelled_as_sdp_does() -> None:
    assert load_config().codecs == ["opus", "G722", "PCMU", "PCMA"]
    assert load_config(codecs=["g722", "OPUS", "pcmu"]).codecs == ["G722", "opus", "PCMU"]
    with pytest.raises(ConfigError, match="unknown codec 'G729'"):
        load_config(codecs=["G729"])
    with pytest.raises(ConfigError, match="at least one"):
        load_config(codecs=[])
    assert canonical_name("Opus") == "opus"


# ---- a session running Opus --------------------------------------------------------

@pytest.fixture
def peer() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    yield sock
    sock.close()


def opus_session(peer: socket.socket) -> tuple[MediaSession, list[np.ndarray]]:
    port = peer.getsockname()[1]
    audio = NegotiatedAudio(OPUS_FORMAT, None, "127.0.0.1", port, Direction.SENDRECV, 20)
    session = MediaSession("rtc_opus", PortPool(32000, 32999).allocate("127.0.0.1"), audio,
                           now=0.0, wall=lambda: 1.7e9, timeout=5.0,
                           jitter=JitterBuffer(clock_rate=48000, initial_delay_ms=0))
    heard: list[np.ndarray] = []
    session.on_audio = heard.append
    return session, heard


def test_a_session_conceals_opus_that_does_not_decode_and_lost_packets(
    peer: socket.socket,
) -> None:
    s, heard = opus_session(peer)
    assert s.rate == 24000
    sender = Opus(96)
    x = tone(24000)
    addr = peer.getsockname()
    payloads = [sender.encode(x[i * 480:(i + 1) * 480]) for i in range(10)]
    payloads[4] = b"\xff\xff\xff"  # does not decode
    for seq, payload in enumerate(payloads):
        if seq == 7:
            continue  # lost
        s.receive(build_rtp(96, seq, seq * 960, 0x99, payload), addr, 0.02 * seq)
        s.tick(0.02 * seq + 0.001)
    s.tick(0.02 * 7 + 0.001)  # the lost packet's tick: concealed
    assert s.dropped["undecodable"] == 1
    assert all(len(frame) == 480 and frame.dtype == np.int16 for frame in heard)
    assert len(heard) >= 9
    # What went out: Opus on our RTP clock, 960 per 20 ms.
    stamps = []
    for _ in range(3):
        data, _ = peer.recvfrom(2048)
        rtp = parse_rtp(data)
        assert rtp.payload_type == 96
        assert sender.decode(rtp.payload) is not None
        stamps.append(rtp.timestamp)
    assert np.diff(stamps).tolist() == [960, 960]
    s.close()


def test_agent_audio_at_24_khz_goes_out_as_opus_unresampled(peer: socket.socket) -> None:
    s, _ = opus_session(peer)
    s.play(tone(24000, 0.1))
    assert s.queued_ms == 100
    s.close()


def test_audio_from_another_leg_is_converted_to_the_calls_rate(peer: socket.socket) -> None:
    s, _ = opus_session(peer)
    s.play_phone(tone(8000, 0.04))  # a G.711 leg of a bridge
    s.play_pcm(tone(16000, 0.04), 16000)  # a G.722 leg
    assert s.queued_ms == 80
    s.close()
