"""The SDP answers from templates (calls.answers.AnswerCache): each the very bytes and the
negotiated audio that `answer_offer` then `to_bytes` give, the cache bounded whatever
offers arrive, and answers with SDES keys never kept."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from sipbridge.calls.answers import AnswerCache
from sipbridge.sip.errors import NotAcceptable, SdpError, SipError
from sipbridge.sip.sdp import answer_offer, parse_sdp

from .test_sdp import AUDIO_VIDEO_OFFER, BARESIP_OFFER, SIPP_OFFER, TWILIO_OFFER

HOLD_OFFER = (b"v=0\r\no=x 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
              b"m=audio 4000 RTP/AVP 8 0\r\na=sendonly\r\nm=audio 0 RTP/AVP 0\r\n")
# The rejected streams' ports and formats look like our port, id and version.
LOOKALIKE_OFFER = (b"v=0\r\no=x 40000 40000 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\n"
                   b"t=0 0\r\nm=video 40000 RTP/AVP 31 9\r\nm=audio 40000 RTP/AVP 0\r\n"
                   b"m=text 9 RTP/AVP 9\r\n")
KEY = base64.b64encode(bytes(range(30))).decode()
SRTP_OFFER = ("v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
              "m=audio 7000 RTP/SAVP 0\r\n"
              f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n").encode()
OFFERS = [SIPP_OFFER, TWILIO_OFFER, BARESIP_OFFER.encode(), AUDIO_VIDEO_OFFER.encode(),
          HOLD_OFFER, LOOKALIKE_OFFER]
HOW: dict[str, Any] = {"supported": ("PCMU", "PCMA", "G722", "opus"), "srtp": "off",
       "secure_signalling": False, "srtp_over_cleartext": False, "srtp_key": None}


def fresh(offer: bytes, port: int, session_id: int, version: int, host: str = "192.0.2.7",
          **how: Any) -> tuple[bytes, Any]:
    args = {**HOW, **how}
    sdp, audio = answer_offer(parse_sdp(offer), local_address=host, local_port=port,
                              session_id=session_id, session_version=version,
                              supported=args["supported"], srtp=args["srtp"],
                              secure_signalling=args["secure_signalling"],
                              srtp_over_cleartext=args["srtp_over_cleartext"],
                              srtp_key=args["srtp_key"])
    return sdp.to_bytes(), audio


def cached(cache: AnswerCache, offer: Any, port: int, session_id: int, version: int,
           host: str = "192.0.2.7", **how: Any) -> tuple[bytes, Any]:
    args = {**HOW, **how}
    return cache.answer(offer, local_address=host, local_port=port, session_id=session_id,
                        session_version=version, supported=args["supported"],
                        srtp=args["srtp"], secure_signalling=args["secure_signalling"],
                        srtp_over_cleartext=args["srtp_over_cleartext"],
                        srtp_key=args["srtp_key"])


@pytest.mark.parametrize("offer", OFFERS)
def test_each_answer_is_the_fresh_one_first_time_and_from_the_template(offer: bytes) -> None:
    cache = AnswerCache()
    for port, session_id, version in [(40000, 7, 1), (20002, 2147483647, 2), (9, 0, 13),
                                      (65534, 123456, 1), (40000, 40000, 40000)]:
        assert cached(cache, offer, port, session_id, version) == fresh(offer, port,
                                                                        session_id, version)
    assert len(cache) == 1  # one template served them all
    other = cached(cache, offer, 30000, 5, 1, host="2001:db8::5")
    assert other == fresh(offer, 30000, 5, 1, host="2001:db8::5")
    assert len(cache) == 2  # the host shapes the answer: a template of its own


def test_what_else_shapes_the_answer_is_in_the_key() -> None:
    cache = AnswerCache()
    first = cached(cache, BARESIP_OFFER.encode(), 4000, 1, 1)
    second = cached(cache, BARESIP_OFFER.encode(), 4000, 1, 1, supported=("PCMA", "PCMU"))
    assert first != second
    assert second == fresh(BARESIP_OFFER.encode(), 4000, 1, 1, supported=("PCMA", "PCMU"))


def test_refusals_are_raised_as_answer_offer_raises_them_and_not_kept() -> None:
    cache = AnswerCache()
    video_only = b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n" \
                 b"m=video 5000 RTP/AVP 31\r\n"
    for _ in range(2):
        with pytest.raises(NotAcceptable) as raised:
            cached(cache, video_only, 4000, 1, 1)
        with pytest.raises(NotAcceptable) as expected:
            fresh(video_only, 4000, 1, 1)
        assert raised.value.reason == expected.value.reason
        with pytest.raises(SdpError):
            cached(cache, b"not sdp", 4000, 1, 1)
    assert len(cache) == 0


def test_answers_with_keys_are_never_kept_and_each_has_its_own_key() -> None:
    cache = AnswerCache()
    one, audio_one = cached(cache, SRTP_OFFER, 4000, 1, 1, srtp="optional",
                            srtp_over_cleartext=True)
    two, audio_two = cached(cache, SRTP_OFFER, 4000, 1, 1, srtp="optional",
                            srtp_over_cleartext=True)
    assert b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in one
    assert one != two  # a new key each time
    assert audio_one.srtp is not None and audio_two.srtp is not None
    assert len(cache) == 0
    key = bytes(30)
    assert cached(cache, SRTP_OFFER, 4000, 1, 1, srtp="optional", srtp_over_cleartext=True,
                  srtp_key=key) == fresh(SRTP_OFFER, 4000, 1, 1, srtp="optional",
                                         srtp_over_cleartext=True, srtp_key=key)
    assert len(cache) == 0


def test_hostile_offers_cannot_grow_it() -> None:
    cache = AnswerCache(size=8, offer_max=600)
    for n in range(100):  # each offer differs (its o= line): each a template of its own
        offer = SIPP_OFFER.replace(b"53655765", str(n).encode())
        assert cached(cache, offer, 4000 + n, n, 1) == fresh(offer, 4000 + n, n, 1)
        assert len(cache) <= 8
    assert len(cache) == 8
    # The most recently used stay: the latest offer is still served from its template.
    last = SIPP_OFFER.replace(b"53655765", b"99")
    assert cached(cache, last, 5000, 3, 2) == fresh(last, 5000, 3, 2)
    long_offer = SIPP_OFFER + b"a=x-pad:" + b"p" * 600 + b"\r\n"
    assert cached(cache, long_offer, 4000, 1, 1) == fresh(long_offer, 4000, 1, 1)
    assert long_offer not in {key[0] for key in cache._templates}  # too long to keep
    mutable = bytearray(SIPP_OFFER + b"a=x-mutable\r\n")  # not a key: answered afresh
    assert cached(cache, mutable, 4000, 1, 1) == fresh(bytes(mutable), 4000, 1, 1)
    assert bytes(mutable) not in {key[0] for key in cache._templates}


def test_a_sip_error_is_what_the_manager_turns_into_a_reply() -> None:
    with pytest.raises(SipError):
        cached(AnswerCache(), b"", 4000, 1, 1)
