"""SDP parsing, serialisation and offer/answer (RFC 4566, RFC 3264)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.sip.errors import NotAcceptable, SdpError
from sipbridge.sip.sdp import (
    STATIC_PAYLOAD_TYPES,
    MediaDescription,
    Origin,
    SessionDescription,
    answer_offer,
    build_offer,
    effective_address,
    is_hold,
    parse_sdp,
)

SIPP_OFFER = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
    b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)

TWILIO_OFFER = (
    b"v=0\r\n"
    b"o=root 1200093318 1200093318 IN IP4 54.172.60.1\r\n"
    b"s=Twilio Media Gateway\r\n"
    b"c=IN IP4 54.172.60.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 17256 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=maxptime:150\r\n"
    b"a=sendrecv\r\n"
)

# LF line endings, opus and G722 ahead of G.711, a media-level b= line.
BARESIP_OFFER = (
    "v=0\n"
    "o=- 1634559520 3571228424 IN IP4 192.168.1.20\n"
    "s=-\n"
    "c=IN IP4 192.168.1.20\n"
    "t=0 0\n"
    "m=audio 10004 RTP/AVP 96 9 0 8 101\n"
    "b=AS:64\n"
    "a=rtpmap:96 opus/48000/2\n"
    "a=fmtp:96 stereo=1;sprop-stereo=1\n"
    "a=rtpmap:9 G722/8000\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-15\n"
    "a=sendrecv\n"
    "a=label:1\n"
    "a=rtcp-rsize\n"
)

AUDIO_VIDEO_OFFER = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.101\r\n"
    "t=0 0\r\n"
    "m=video 51372 RTP/AVP 31 96\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 profile-level-id=42e01f\r\n"
    "m=audio 49170 RTP/AVP 8 0 97\r\n"
    "c=IN IP4 192.0.2.102\r\n"
    "a=rtpmap:97 iLBC/8000\r\n"
)


def offer_with(media_lines: str, session_extra: str = "") -> str:
    """A minimal session around the given m= sections."""
    return (
        "v=0\r\no=peer 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        + session_extra
        + media_lines
    )


def answer(
    offer: str | bytes, *, supported: tuple[str, ...] = ("PCMU", "PCMA"),
    telephone_event: bool = True, ptime: int = 20,
) -> tuple[SessionDescription, NegotiatedAudio]:
    return answer_offer(
        parse_sdp(offer), local_address="203.0.113.5", local_port=40000, session_id=7,
        session_version=1, supported=supported, telephone_event=telephone_event, ptime=ptime,
    )


# --- parsing --------------------------------------------------------------------


def test_parse_sipp_offer() -> None:
    sdp = parse_sdp(SIPP_OFFER)
    assert sdp.origin == Origin("user1", 53655765, 2353687637, "IN", "IP4", "127.0.0.1")
    assert sdp.session_name == "-"
    assert (sdp.connection, sdp.connection_addrtype, sdp.timing) == ("127.0.0.1", "IP4", (0, 0))
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == ("audio", 6000, "RTP/AVP", (0,))
    assert audio.codecs == (Codec(0, "PCMU", 8000),)
    assert audio.connection is None
    assert audio.direction is Direction.SENDRECV
    assert audio.ptime is None
    assert effective_address(audio, sdp) == "127.0.0.1"
    assert not is_hold(audio, sdp)


def test_lf_and_crlf_line_endings_parse_the_same() -> None:
    assert parse_sdp(SIPP_OFFER.replace(b"\r\n", b"\n")) == parse_sdp(SIPP_OFFER)
    assert parse_sdp(SIPP_OFFER.decode()) == parse_sdp(SIPP_OFFER)


def test_trailing_blank_lines_are_tolerated() -> None:
    assert parse_sdp(SIPP_OFFER + b"\r\n\r\n") == parse_sdp(SIPP_OFFER)
    assert parse_sdp(SIPP_OFFER.rstrip(b"\r\n")) == parse_sdp(SIPP_OFFER)


def test_parse_twilio_offer() -> None:
    (audio,) = parse_sdp(TWILIO_OFFER).media
    assert audio.codecs == (
        Codec(0, "PCMU", 8000),
        Codec(8, "PCMA", 8000),
        Codec(101, "telephone-event", 8000, fmtp="0-16"),
    )
    assert audio.ptime == 20
    assert audio.direction is Direction.SENDRECV
    assert audio.attributes == (("maxptime", "150"),)


def test_parse_baresip_offer_keeps_offer_order_and_unknown_attributes() -> None:
    (audio,) = parse_sdp(BARESIP_OFFER).media
    assert audio.formats == (96, 9, 0, 8, 101)
    assert [c.name for c in audio.codecs] == ["opus", "G722", "PCMU", "PCMA", "telephone-event"]
    assert audio.codecs[0] == Codec(96, "opus", 48000, 2, "stereo=1;sprop-stereo=1")
    assert audio.attributes == (("label", "1"), ("rtcp-rsize", None))


def test_fmtp_parameters_are_trimmed() -> None:
    sdp = parse_sdp(offer_with("m=audio 5000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
                               "a=fmtp:101   0-15 \r\n"))
    assert sdp.media[0].codecs[1].fmtp == "0-15"


def test_static_payload_types_need_no_rtpmap() -> None:
    sdp = parse_sdp(offer_with("m=audio 5000 RTP/AVP 8 0 18\r\n"))
    assert sdp.media[0].codecs == (
        Codec(8, "PCMA", 8000), Codec(0, "PCMU", 8000), Codec(18, "G729", 8000)
    )


def test_dynamic_payload_without_rtpmap_has_no_codec_and_keeps_its_fmtp() -> None:
    sdp = parse_sdp(offer_with("m=audio 5000 RTP/AVP 0 96\r\na=fmtp:96 mode=30\r\n"))
    (audio,) = sdp.media
    assert audio.formats == (0, 96)
    assert audio.codecs == (Codec(0, "PCMU", 8000),)
    assert audio.attributes == (("fmtp", "96 mode=30"),)
    assert parse_sdp(sdp.to_bytes()) == sdp


def test_media_connection_overrides_session_connection() -> None:
    sdp = parse_sdp(AUDIO_VIDEO_OFFER)
    video, audio = sdp.media
    assert effective_address(video, sdp) == "192.0.2.101"
    assert effective_address(audio, sdp) == "192.0.2.102"
    assert video.codecs == (Codec(96, "H264", 90000, fmtp="profile-level-id=42e01f"),)


def test_session_level_direction_is_inherited_unless_overridden() -> None:
    sdp = parse_sdp(offer_with(
        "m=audio 5000 RTP/AVP 0\r\nm=audio 5002 RTP/AVP 0\r\na=inactive\r\n",
        session_extra="a=sendonly\r\n",
    ))
    assert [m.direction for m in sdp.media] == [Direction.SENDONLY, Direction.INACTIVE]
    assert parse_sdp(sdp.to_bytes()) == sdp


def test_media_without_connection_is_fine_when_port_is_zero() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"
    assert parse_sdp(text).media[0].port == 0


def test_non_rtp_media_keeps_its_format_tokens() -> None:
    sdp = parse_sdp(offer_with("m=audio 5000 RTP/AVP 0\r\nm=image 5002 udptl t38\r\n"))
    image = sdp.media[1]
    assert (image.formats, image.other_formats, image.codecs) == ((), ("t38",), ())
    assert b"m=image 5002 udptl t38\r\n" in sdp.to_bytes()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("o=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n", "SDP does not start with v="),
        ("v=1\r\no=a 1 1 IN IP4 192.0.2.1\r\n", "SDP version '1' is not supported"),
        ("v=0\r\ns=-\r\nt=0 0\r\n", "SDP has no o= line"),
        ("v=0\r\no=a 1 1 IN IP4\r\n", "SDP line 2: o= needs 6 fields, has 5"),
        ("v=0\r\no=a x 1 IN IP4 192.0.2.1\r\n", "SDP line 2: session id 'x' is not a number"),
        (offer_with("hello world\r\n"), "SDP line 6 is not type=value"),
        ("v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\n=oops\r\n", "SDP line 4 is not type=value"),
        ("v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\n\r\ns=-\r\n", "SDP line 3 is not type=value"),
        ("v=0\r\nO=a 1 1 IN IP4 192.0.2.1\r\n", "SDP line 2 is not type=value"),
        (offer_with("x=1\r\n"), "SDP line 6 has unknown type 'x'"),
        (offer_with("m=audio abc RTP/AVP 0\r\n"), "SDP line 6: port 'abc' is not a number"),
        (offer_with("m=audio -1 RTP/AVP 0\r\n"), "SDP line 6: port '-1' is not a number"),
        (offer_with("m=audio 70000 RTP/AVP 0\r\n"), "port 70000 is out of range (0-65535)"),
        (offer_with("m=audio 5000 RTP/AVP\r\n"), "SDP line 6: m= needs media, port, proto"),
        (offer_with("m=audio 5000 RTP/AVP 0 PCMU\r\n"), "payload type 'PCMU' is not a number"),
        (offer_with("m=audio 5000 RTP/AVP 128\r\n"), "payload type 128 is out of range"),
        (offer_with("m=audio 5000 RTP/AVP 0 0\r\n"), "a payload type is listed twice"),
        (offer_with("m=audio 5000 RTP/AVP 0\r\na=fmtp:x 0-16\r\n"), "'x' is not a number"),
        (offer_with("m=audio 5000 RTP/AVP 0\r\na=ptime:2O\r\n"), "ptime '2O' is not a number"),
        (offer_with("m=audio 5000 RTP/AVP 0\r\na=sendonly\r\na=recvonly\r\n"), "second direction"),
        (offer_with("m=audio 5000 RTP/AVP 0\r\nc=IN IP4 a\r\nc=IN IP4 b\r\n"), "second c= line"),
        (offer_with("m=audio 5000 RTP/AVP 0\r\nc=IN IP7 a\r\n"), "SDP line 7: c= is not"),
        (offer_with("m=audio 5000 RTP/AVP 0\r\nt=0 0\r\n"), "t= is not allowed after m="),
        (offer_with("", session_extra="c=IN IP4 192.0.2.9\r\n"), "second c= line"),
        (
            "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n",
            "SDP line 5: m= has no c= and the session has none",
        ),
        ("v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\nt=x 0\r\n", "start time 'x' is not a number"),
    ],
)
def test_malformed_sdp_is_a_400_with_a_precise_reason(text: str, reason: str) -> None:
    with pytest.raises(SdpError) as excinfo:
        parse_sdp(text)
    assert reason in excinfo.value.reason
    assert excinfo.value.status == 400


def test_empty_and_non_utf8_bodies_are_rejected() -> None:
    with pytest.raises(SdpError, match="does not start with v="):
        parse_sdp(b"")
    with pytest.raises(SdpError, match="not UTF-8"):
        parse_sdp(SIPP_OFFER.replace(b"s=-", b"s=\xff"))


def test_line_and_media_limits() -> None:
    parse_sdp(offer_with("m=audio 5000 RTP/AVP 0\r\n" * 64))
    with pytest.raises(SdpError, match="more than 64 m= lines"):
        parse_sdp(offer_with("m=audio 5000 RTP/AVP 0\r\n" * 65))
    with pytest.raises(SdpError, match="more than 1000"):
        parse_sdp(offer_with("m=audio 5000 RTP/AVP 0\r\n" + "a=x\r\n" * 995))
    parse_sdp(offer_with("m=audio 5000 RTP/AVP 0\r\n" + "a=x\r\n" * 994))


# --- serialisation ----------------------------------------------------------------


def test_build_offer_serialises_in_rfc_4566_order() -> None:
    offer = build_offer(local_address="198.51.100.7", local_port=30000,
                        session_id=42, session_version=3)
    assert offer.to_bytes() == (
        b"v=0\r\n"
        b"o=sipbridge 42 3 IN IP4 198.51.100.7\r\n"
        b"s=sipbridge\r\n"
        b"c=IN IP4 198.51.100.7\r\n"
        b"t=0 0\r\n"
        b"m=audio 30000 RTP/AVP 0 8 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )


def test_build_offer_for_hold_over_ipv6() -> None:
    offer = build_offer(local_address="2001:db8::5", local_port=30000, session_id=1,
                        session_version=2, codecs=("PCMA",), telephone_event_pt=None,
                        direction=Direction.SENDONLY, ptime=30)
    data = offer.to_bytes()
    assert b"c=IN IP6 2001:db8::5\r\n" in data
    assert b"o=sipbridge 1 2 IN IP6 2001:db8::5\r\n" in data
    assert b"m=audio 30000 RTP/AVP 8\r\n" in data
    assert b"a=sendonly\r\n" in data and b"a=ptime:30\r\n" in data
    assert is_hold(offer.media[0], offer)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codecs": ("G729",)}, "codecs must be PCMU, PCMA, G722 or opus"),
        ({"codecs": ()}, "codecs must be PCMU, PCMA, G722 or opus"),
        ({"telephone_event_pt": 8}, "telephone-event payload type 8 is not dynamic"),
    ],
)
def test_build_offer_rejects_what_it_cannot_describe(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_offer(local_address="192.0.2.1", local_port=1, session_id=1, session_version=1,
                    **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("offer", [SIPP_OFFER, TWILIO_OFFER, BARESIP_OFFER, AUDIO_VIDEO_OFFER])
def test_real_offers_round_trip(offer: str | bytes) -> None:
    parsed = parse_sdp(offer)
    assert parse_sdp(parsed.to_bytes()) == parsed


# --- offer/answer -----------------------------------------------------------------


def test_answer_sipp_offer() -> None:
    sdp, audio = answer(SIPP_OFFER)
    assert audio == NegotiatedAudio(
        codec=Codec(0, "PCMU", 8000), telephone_event_pt=None, remote_address="127.0.0.1",
        remote_port=6000, direction=Direction.SENDRECV, ptime=20,
    )
    assert sdp.to_bytes() == (
        b"v=0\r\n"
        b"o=sipbridge 7 1 IN IP4 203.0.113.5\r\n"
        b"s=sipbridge\r\n"
        b"c=IN IP4 203.0.113.5\r\n"
        b"t=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )


def test_answer_twilio_offer_includes_telephone_event_with_the_offerers_fmtp() -> None:
    sdp, audio = answer(TWILIO_OFFER)
    assert audio.codec == Codec(0, "PCMU", 8000)
    assert audio.telephone_event_pt == 101
    assert (audio.remote_address, audio.remote_port, audio.ptime) == ("54.172.60.1", 17256, 20)
    (media,) = sdp.media
    assert media.formats == (0, 101)
    assert media.codecs[1] == Codec(101, "telephone-event", 8000, fmtp="0-16")


def test_answer_picks_our_most_preferred_codec_that_the_offer_has() -> None:
    _, audio = answer(BARESIP_OFFER)
    assert audio.codec.name == "PCMU"  # opus and G722 come first but are not supported
    _, audio = answer(BARESIP_OFFER, supported=("PCMA", "PCMU"))
    assert audio.codec.name == "PCMA"  # our order wins over the offer's
    _, audio = answer(BARESIP_OFFER, supported=("G722", "opus", "PCMU"))
    assert audio.codec == Codec(9, "G722", 8000)
    _, audio = answer(BARESIP_OFFER, supported=("pcma",))
    assert audio.codec == Codec(8, "PCMA", 8000)
    assert audio.telephone_event_pt == 101


def test_codec_names_match_case_insensitively_but_clock_rate_must_be_8000() -> None:
    offer = offer_with("m=audio 5000 RTP/AVP 96 97\r\na=rtpmap:96 PCMU/16000\r\n"
                       "a=rtpmap:97 pcmu/8000\r\n")
    sdp, audio = answer(offer)
    assert audio.codec == Codec(97, "pcmu", 8000)
    assert sdp.media[0].formats == (97,)


def test_telephone_event_can_be_turned_off() -> None:
    sdp, audio = answer(TWILIO_OFFER, telephone_event=False)
    assert audio.telephone_event_pt is None
    assert sdp.media[0].formats == (0,)
    assert b"telephone-event" not in sdp.to_bytes()


def test_ptime_follows_the_offer_else_the_default() -> None:
    _, audio = answer(offer_with("m=audio 5000 RTP/AVP 0\r\na=ptime:30\r\n"), ptime=20)
    assert audio.ptime == 30
    sdp, audio = answer(offer_with("m=audio 5000 RTP/AVP 0\r\n"), ptime=40)
    assert audio.ptime == 40
    assert sdp.media[0].ptime == 40


def test_audio_video_offer_is_answered_with_video_rejected_in_place() -> None:
    sdp, audio = answer(AUDIO_VIDEO_OFFER)
    video, ours = sdp.media
    assert (video.media, video.port, video.formats) == ("video", 0, (31, 96))
    assert (ours.media, ours.port, ours.formats) == ("audio", 40000, (0,))
    assert audio.remote_address == "192.0.2.102"
    assert b"m=video 0 RTP/AVP 31 96\r\n" in sdp.to_bytes()


def test_answer_skips_disabled_and_srtp_audio_and_rejects_extra_streams() -> None:
    offer = offer_with(
        "m=audio 0 RTP/AVP 0\r\n"
        "m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc\r\n"
        "m=audio 5002 RTP/AVP 8\r\n"
        "m=audio 5004 RTP/AVP 0\r\n"
        "m=image 5006 udptl t38\r\n"
    )
    sdp, audio = answer(offer)
    assert [m.port for m in sdp.media] == [0, 0, 40000, 0, 0]
    assert [m.proto for m in sdp.media] == ["RTP/AVP", "RTP/SAVP", "RTP/AVP", "RTP/AVP", "udptl"]
    assert (audio.codec.name, audio.remote_port) == ("PCMA", 5002)
    assert sdp.media[1].attributes == ()  # no a=crypto echoed on a rejected stream
    assert b"m=image 0 udptl t38\r\n" in sdp.to_bytes()
    assert parse_sdp(sdp.to_bytes()) == sdp


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        (Direction.SENDRECV, Direction.SENDRECV),
        (Direction.SENDONLY, Direction.RECVONLY),
        (Direction.RECVONLY, Direction.SENDONLY),
        (Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_answer_direction_follows_rfc_3264_6_1(offered: Direction, answered: Direction) -> None:
    assert offered.answer() is answered
    sdp, audio = answer(offer_with(f"m=audio 5000 RTP/AVP 0\r\na={offered.value}\r\n"))
    assert audio.direction is answered
    assert sdp.media[0].direction is answered
    assert f"a={answered.value}\r\n".encode() in sdp.to_bytes()


def test_session_level_direction_is_answered_per_stream() -> None:
    _, audio = answer(offer_with("m=audio 5000 RTP/AVP 0\r\n", session_extra="a=recvonly\r\n"))
    assert audio.direction is Direction.SENDONLY


def test_hold_with_sendonly() -> None:
    offer = parse_sdp(offer_with("m=audio 5000 RTP/AVP 0\r\na=sendonly\r\n"))
    assert is_hold(offer.media[0], offer)
    _, audio = answer(offer.to_bytes())
    assert audio.direction is Direction.RECVONLY
    assert not audio.direction.sends


def test_old_style_hold_with_connection_address_zero() -> None:
    text = SIPP_OFFER.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0")
    offer = parse_sdp(text)
    assert offer.media[0].direction is Direction.SENDRECV
    assert is_hold(offer.media[0], offer)
    sdp, audio = answer(text)
    assert audio.remote_address == "0.0.0.0"
    assert audio.direction is Direction.RECVONLY  # RFC 3264 8.4: send nothing to 0.0.0.0
    assert sdp.media[0].direction is Direction.RECVONLY


def test_recvonly_is_not_hold() -> None:
    offer = parse_sdp(offer_with("m=audio 5000 RTP/AVP 0\r\na=recvonly\r\n"))
    assert not is_hold(offer.media[0], offer)


def test_sipbridge_answers_its_own_offer() -> None:
    offer = build_offer(local_address="198.51.100.7", local_port=30000, session_id=1,
                        session_version=1, codecs=("PCMA", "PCMU"), direction=Direction.SENDONLY)
    sdp, audio = answer(offer.to_bytes())
    assert (audio.codec.name, audio.telephone_event_pt) == ("PCMU", 101)  # our preference
    assert (audio.remote_address, audio.remote_port) == ("198.51.100.7", 30000)
    assert audio.direction is Direction.RECVONLY
    assert parse_sdp(sdp.to_bytes()) == sdp


@pytest.mark.parametrize(
    ("media_lines", "reason"),
    [
        ("m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
         "no audio stream offered (offered media: video)"),
        ("m=audio 5000 RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n",
         "no common audio codec: offered G729/8000, telephone-event/8000; supported PCMU, PCMA"),
        ("m=audio 5000 RTP/AVP 96\r\n",
         "no common audio codec: offered payload type 96; supported PCMU, PCMA"),
        ("m=audio 5000 RTP/SAVP 0 8\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc\r\n",
         "no RTP/AVP audio stream: offered RTP/SAVP"),
        ("m=audio 0 RTP/AVP 0\r\n", "every offered audio stream is disabled (port 0)"),
    ],
)
def test_unanswerable_offers_are_488(media_lines: str, reason: str) -> None:
    with pytest.raises(NotAcceptable) as excinfo:
        answer(offer_with(media_lines))
    assert excinfo.value.status == 488
    assert reason in excinfo.value.reason


def test_telephone_event_alone_is_not_a_codec() -> None:
    with pytest.raises(NotAcceptable, match="no common audio codec"):
        answer(offer_with("m=audio 5000 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n"),
               supported=("PCMU", "telephone-event"))


# --- round trip (RFC 4566 is parsed and serialised as exact inverses) --------------

tokens = st.text(string.ascii_letters + string.digits + "-_.+", min_size=1, max_size=10)
texts = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20
)
addresses = st.ip_addresses().map(str)
_MEDIA_RESERVED = {"rtpmap", "fmtp", "ptime", *(d.value for d in Direction)}


@st.composite
def media_descriptions(draw: st.DrawFn, needs_connection: bool) -> MediaDescription:
    port = draw(st.integers(0, 65535))
    connection = draw(addresses if needs_connection and port else st.none() | addresses)
    attributes = draw(st.lists(
        st.tuples(tokens.filter(lambda n: n not in _MEDIA_RESERVED), st.none() | texts),
        max_size=3,
    ))
    common = {
        "media": draw(tokens), "port": port, "connection": connection,
        "direction": draw(st.sampled_from(Direction)),
        "ptime": draw(st.none() | st.integers(0, 1000)), "attributes": tuple(attributes),
    }
    if draw(st.booleans()):
        return MediaDescription(proto="udptl", formats=(), codecs=(),
                                other_formats=tuple(draw(st.lists(tokens, min_size=1))), **common)
    formats = draw(st.lists(st.integers(0, 127), min_size=1, max_size=6, unique=True))
    codecs = []
    for pt in formats:
        if pt not in STATIC_PAYLOAD_TYPES and draw(st.booleans()):
            continue  # a dynamic format with no rtpmap has no codec
        name, rate = STATIC_PAYLOAD_TYPES.get(pt, ("X", 8000))
        codecs.append(Codec(
            pt, draw(st.just(name) | tokens.filter(lambda n: "/" not in n)),
            draw(st.just(rate) | st.integers(1, 192000)), draw(st.integers(1, 8)),
            draw(st.none() | texts.map(str.strip)),
        ))
    proto = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF"]))
    return MediaDescription(proto=proto, formats=tuple(formats), codecs=tuple(codecs), **common)


@st.composite
def session_descriptions(draw: st.DrawFn) -> SessionDescription:
    connection = draw(st.none() | addresses)
    origin = Origin(draw(tokens), draw(st.integers(0, 2**64)), draw(st.integers(0, 2**64)),
                    draw(tokens), draw(tokens), draw(tokens))
    media = draw(st.lists(media_descriptions(needs_connection=connection is None), max_size=4))
    return SessionDescription(
        version=0, origin=origin, session_name=draw(texts), connection=connection,
        connection_addrtype="IP4" if connection is None or ":" not in connection else "IP6",
        timing=(draw(st.integers(0, 2**40)), draw(st.integers(0, 2**40))), media=tuple(media),
        attributes=tuple(draw(st.lists(st.tuples(tokens, st.none() | texts), max_size=3))),
    )


@given(session_descriptions())
def test_parse_inverts_to_bytes(sdp: SessionDescription) -> None:
    assert parse_sdp(sdp.to_bytes()) == sdp


@given(
    address=addresses, port=st.integers(0, 65535), session_id=st.integers(0, 2**63),
    codecs=st.lists(st.sampled_from(["PCMU", "PCMA", "G722", "opus"]), min_size=1, unique=True),
    event=st.none() | st.integers(96, 127), direction=st.sampled_from(Direction),
    ptime=st.integers(10, 120),
)
def test_offers_round_trip_and_are_answerable(
    address: str, port: int, session_id: int, codecs: list[str], event: int | None,
    direction: Direction, ptime: int,
) -> None:
    offer = build_offer(local_address=address, local_port=port, session_id=session_id,
                        session_version=session_id + 1, codecs=codecs,
                        telephone_event_pt=event, direction=direction, ptime=ptime)
    assert parse_sdp(offer.to_bytes()) == offer
    if port == 0 or not {"PCMU", "PCMA"} & set(codecs):
        with pytest.raises(NotAcceptable):
            answer(offer.to_bytes())
        return
    sdp, audio = answer(offer.to_bytes())
    assert audio.codec.name == next(c for c in ("PCMU", "PCMA") if c in codecs)
    assert audio.telephone_event_pt == event
    assert audio.ptime == ptime
    assert audio.direction is direction.answer() or address == "0.0.0.0"
    assert parse_sdp(sdp.to_bytes()) == sdp


@pytest.mark.parametrize("rtpmap", ["a=rtpmap:96 opus", "a=rtpmap:x opus/8000", "a=rtpmap:31 LPC"])
def test_malformed_rtpmap_names_no_codec_and_is_kept(rtpmap: str) -> None:
    """Be liberal: RFC 4475's torture messages carry `a=rtpmap:31 LPC`."""
    sdp = parse_sdp(offer_with(f"m=audio 5000 RTP/AVP 0 96\r\n{rtpmap}\r\n"))
    media = sdp.media[0]
    assert [c.name for c in media.codecs] == ["PCMU"]
    assert ("rtpmap", rtpmap.split(":", 1)[1]) in media.attributes
    assert parse_sdp(sdp.to_bytes()) == sdp


@pytest.mark.parametrize("address", ["127.0.0.1\x00", "a\x07b.example.com", "1.2.3.4\x7f"])
def test_a_control_character_in_the_connection_address_is_refused(address: str) -> None:
    text = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
            f"c=IN IP4 {address}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
    with pytest.raises(SdpError, match="control character"):
        parse_sdp(text.encode())
