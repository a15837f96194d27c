"""SRTP with SDES keys: a=crypto parsed, answered and refused (RFC 4568), the policy
(off, optional, required; keys only over TLS unless allowed), protect/unprotect and its
drops (RFC 3711), and keys kept out of everything the gateway records."""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.api.callevents import WebhookSink
from sipbridge.audiostream import Codec, Direction, NegotiatedAudio, SrtpKeys
from sipbridge.calls.events import CallEvent, TimelineRecorder
from sipbridge.config import ConfigError, load_config
from sipbridge.media.g711 import ulaw_encode
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.rtp import SenderReport, build_rtcp, build_rtp, parse_rtp
from sipbridge.media.session import MediaSession
from sipbridge.media.srtp import SrtpContext, SrtpDrop
from sipbridge.metrics import Metrics
from sipbridge.sip.address import Address
from sipbridge.sip.errors import NotAcceptable, SipError
from sipbridge.sip.sdp import (
    answer_offer,
    build_offer,
    new_srtp_key,
    parse_crypto,
    parse_sdp,
    read_answer,
    redact_keys,
)
from sipbridge.webhookevents import EVENT_TYPES
from tests.unit.callharness import Harness, ack, invite
from tests.unit.test_fuzz import fuzz, only
from tests.unit.test_media_session import Peer

KEY = bytes(range(30))
KEY_B64 = base64.b64encode(KEY).decode()
SUITE80, SUITE32 = "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"


def offer(proto: str = "RTP/SAVP", *crypto: str) -> str:
    lines = crypto or (f"1 {SUITE80} inline:{KEY_B64}",)
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 6000 {proto} 0 8\r\n" + "".join(f"a=crypto:{c}\r\n" for c in lines))


def answer(text: str, **kwargs: object) -> tuple[str, NegotiatedAudio]:
    kwargs.setdefault("srtp", "optional")
    kwargs.setdefault("srtp_over_cleartext", True)
    sdp, audio = answer_offer(parse_sdp(text), local_address="127.0.0.1", local_port=7000,
                              session_id=1, session_version=1, **kwargs)  # type: ignore[arg-type]
    return sdp.to_bytes().decode(), audio


def refusal(text: str, **kwargs: object) -> str:
    with pytest.raises(NotAcceptable) as info:
        answer(text, **kwargs)
    assert info.value.status == 488
    return info.value.reason


# ---- a=crypto (RFC 4568 9.1) ----------------------------------------------------------


def test_a_crypto_line_parses_with_lifetime_and_mki() -> None:
    c = parse_crypto(f"7 {SUITE32} inline:{KEY_B64}|2^20|1:4 KDR=1")
    assert (c.tag, c.suite, c.key, c.lifetime, c.mki, c.session_params) == (
        7, SUITE32, KEY, "2^20", "1:4", ("KDR=1",))
    assert KEY_B64 not in repr(c)


@pytest.mark.parametrize(("value", "why"), [
    (f"x {SUITE80} inline:{KEY_B64}", "tag"),
    (f"1 {SUITE80}", "needs a tag"),
    (f"1 {SUITE80} uri:{KEY_B64}", "inline"),
    (f"1 {SUITE80} inline:not*base64!", "base64"),
    (f"1 {SUITE80} inline:{KEY_B64};inline:{KEY_B64}", "more than one key"),
    (f"1 {SUITE80} inline:{KEY_B64}|1:4|2:4", "unexpected key parameter"),
    (f'1 "{SUITE80}\\ uri:{KEY_B64}', "a=crypto:1 ? ("),
    (f"1 inline:{KEY_B64}", "a=crypto:1 ? ("),
])
def test_a_malformed_crypto_line_gets_488_naming_it_without_its_key(value: str, why: str) -> None:
    reason = refusal(offer("RTP/SAVP", value))
    assert reason.startswith("malformed a=crypto:") and why in reason
    assert KEY_B64 not in reason


def test_a_key_of_the_wrong_length_gets_488() -> None:
    short = base64.b64encode(KEY[:20]).decode()
    assert "20 octets" in refusal(offer("RTP/SAVP", f"1 {SUITE80} inline:{short}"))


def test_the_answer_takes_the_first_supported_suite_in_the_offers_tag_with_our_key() -> None:
    text, audio = answer(offer("RTP/SAVP", f"1 AEAD_AES_256_GCM inline:{KEY_B64}",
                               f"2 {SUITE32} inline:{KEY_B64}|1:4",  # MKI: not supported
                               f"3 {SUITE32} inline:{KEY_B64}", f"4 {SUITE80} inline:{KEY_B64}"))
    assert audio.srtp is not None
    assert (audio.srtp.suite, audio.srtp.tag, audio.srtp.remote_key) == (SUITE32, 3, KEY)
    ours = base64.b64encode(audio.srtp.local_key).decode()
    assert len(audio.srtp.local_key) == 30 and audio.srtp.local_key != KEY
    assert "m=audio 7000 RTP/SAVP 0\r\n" in text
    assert text.count("a=crypto:") == 1 and f"a=crypto:3 {SUITE32} inline:{ours}\r\n" in text
    assert ours not in repr(audio) and "keys=<redacted>" in repr(audio)


def test_a_re_answer_keeps_our_key() -> None:
    _, first = answer(offer())
    assert first.srtp is not None
    _, again = answer(offer(), srtp_key=first.srtp.local_key)
    assert again.srtp == first.srtp


def test_no_usable_suite_gets_488_naming_the_suites() -> None:
    reason = refusal(offer("RTP/SAVP", f"1 F8_128_HMAC_SHA1_80 inline:{KEY_B64}"))
    assert "no usable a=crypto: offered F8_128_HMAC_SHA1_80" in reason
    assert "no a=crypto" in refusal(offer("RTP/SAVP", *()).split("a=crypto")[0])


def test_policy_off_refuses_savp_as_before() -> None:
    assert "only RTP/AVP is supported" in refusal(offer(), srtp="off")


def test_policy_optional_answers_in_kind() -> None:
    text, audio = answer(offer("RTP/AVP"))
    assert audio.srtp is None and "RTP/AVP" in text and "a=crypto" not in text


def test_policy_required_refuses_cleartext_rtp_with_a_clear_warning() -> None:
    assert refusal(offer("RTP/AVP"), srtp="required").startswith("SRTP required")
    _, audio = answer(offer(), srtp="required")
    assert audio.srtp is not None


def test_keys_over_cleartext_signalling_are_refused_unless_allowed() -> None:
    reason = refusal(offer(), srtp_over_cleartext=False)
    assert "cleartext signalling" in reason
    _, audio = answer(offer(), srtp_over_cleartext=False, secure_signalling=True)  # TLS
    assert audio.srtp is not None


def test_our_srtp_offer_and_its_answer_settle_both_keys() -> None:
    ours, theirs = new_srtp_key(), new_srtp_key()
    sdp = build_offer(local_address="127.0.0.1", local_port=7000, session_id=1,
                      session_version=1, srtp_key=ours)
    text = sdp.to_bytes().decode()
    assert "RTP/SAVP" in text and f"a=crypto:1 {SUITE80} inline:" in text
    reply = parse_sdp(offer("RTP/SAVP", f"1 {SUITE80} inline:"
                            + base64.b64encode(theirs).decode()))
    audio = read_answer(sdp, reply)
    assert audio.srtp == SrtpKeys(SUITE80, 1, ours, theirs)
    wrong_tag = parse_sdp(offer("RTP/SAVP", f"9 {SUITE80} inline:{KEY_B64}"))
    with pytest.raises(NotAcceptable):
        read_answer(sdp, wrong_tag)
    with pytest.raises(NotAcceptable, match="RTP/AVP for our RTP/SAVP offer"):
        read_answer(sdp, parse_sdp(offer("RTP/AVP")))  # no downgrade to clear


def test_redaction_hides_every_key_and_nothing_else() -> None:
    text = offer("RTP/SAVP", f"1 {SUITE80} inline:{KEY_B64}|2^20|1:4",
                 f"2 {SUITE32} INLINE:{KEY_B64}")
    redacted = redact_keys(text)
    assert KEY_B64 not in redacted
    assert f"a=crypto:1 {SUITE80} inline:<redacted>|2^20|1:4\r\n" in redacted
    assert redacted.count("<redacted>") == 2
    assert redact_keys("v=0\r\n") == "v=0\r\n"


@given(st.lists(st.sampled_from(["inline:", "INLINE:", "InLiNe:", "\u0131nline:",
                                 "\u0130NLINE:", "inline", "KEY|2^20", " ", "\r\n", "a=crypto:1 ",
                                 "x", "\u00e9"]), max_size=12))
def test_redaction_without_a_key_in_sight_is_the_regex_s(parts: list[str]) -> None:
    # The shortcut for messages with no key must redact exactly what the pattern does.
    from sipbridge.sip.sdp import _INLINE

    text = "".join(parts)
    assert redact_keys(text) == _INLINE.sub("inline:<redacted>", text)


# ---- protect and unprotect (RFC 3711) --------------------------------------------------


def pair(suite: str = SUITE80) -> tuple[SrtpContext, SrtpContext]:
    a, b = new_srtp_key(), new_srtp_key()
    return SrtpContext(SrtpKeys(suite, 1, a, b)), SrtpContext(SrtpKeys(suite, 1, b, a))


def rtp(seq: int, ssrc: int = 0x1234) -> bytes:
    return build_rtp(0, seq, seq * 160, ssrc, ulaw_encode(np.full(160, 1000, np.int16)))


@pytest.mark.parametrize(("suite", "tag"), [(SUITE80, 10), (SUITE32, 4)])
def test_a_packet_round_trips_encrypted(suite: str, tag: int) -> None:
    us, them = pair(suite)
    clear = rtp(1)
    sent = us.protect(clear)
    assert len(sent) == len(clear) + tag and sent[12:-tag] != clear[12:]
    assert them.unprotect(sent) == clear
    report = build_rtcp(SenderReport(0x1234, 0, 0, 1, 160, ()))
    assert them.unprotect_rtcp(us.protect_rtcp(report)) == report


def test_tampered_replayed_and_wrong_key_packets_are_refused_by_reason() -> None:
    us, them = pair()
    first = us.protect(rtp(1))
    assert them.unprotect(first) == rtp(1)
    second = us.protect(rtp(2))
    tampered = second[:20] + bytes([second[20] ^ 1]) + second[21:]
    stranger, _ = pair()
    for bad, reason in ((tampered, "srtp_auth"), (first, "srtp_replay"),
                        (stranger.protect(rtp(3)), "srtp_auth"), (b"\x80\x00", "srtp_auth")):
        with pytest.raises(SrtpDrop) as info:
            them.unprotect(bad)
        assert info.value.reason == reason
    assert them.unprotect(second) == rtp(2)  # the good stream still passes


def test_a_packet_older_than_the_replay_window_is_a_replay() -> None:
    us, them = pair()
    old = us.protect(rtp(1))
    for seq in range(2, 300):  # well past the 128-packet window
        them.unprotect(us.protect(rtp(seq)))
    with pytest.raises(SrtpDrop) as info:
        them.unprotect(old)
    assert info.value.reason == "srtp_replay"


# ---- the media session at its socket ----------------------------------------------------


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


def test_a_session_drops_and_counts_bad_srtp_and_the_call_goes_on(peer: Peer) -> None:
    ours, theirs = new_srtp_key(), new_srtp_key()
    keys = SrtpKeys(SUITE80, 1, ours, theirs)
    audio = NegotiatedAudio(Codec(0, "PCMU", 8000), None, "127.0.0.1", peer.port,
                            Direction.SENDRECV, 20, keys)
    s = MediaSession("rtc_srtp", PortPool(31000, 31999).allocate("127.0.0.1"), audio, now=0.0,
                     wall=lambda: 1.7e9, timeout=5.0, jitter=JitterBuffer(initial_delay_ms=0))
    caller = SrtpContext(SrtpKeys(SUITE80, 1, theirs, ours))
    first = caller.protect(rtp(1))
    s.receive(first, peer.addr, 0.0)
    s.receive(first, peer.addr, 0.001)  # replayed
    second = caller.protect(rtp(2))
    s.receive(second[:-1] + bytes([second[-1] ^ 0x80]), peer.addr, 0.002)  # bad tag
    s.receive(rtp(3), peer.addr, 0.003)  # in clear: no tag at all
    assert (s.dropped["srtp_replay"], s.dropped["srtp_auth"]) == (1, 2)
    s.receive(second, peer.addr, 0.004)
    assert s.jitter.received == 2
    s.tick(0.02)
    data, _ = peer.rtp.recvfrom(2048)
    assert parse_rtp(caller.unprotect(data)).payload_type == 0  # what we send is SRTP
    with pytest.raises(SrtpDrop):
        caller.unprotect(data)  # and only once
    s.update(dataclasses.replace(audio, direction=Direction.SENDONLY))
    assert s.srtp is not None and s.srtp.keys == keys  # same keys: same context
    figures = s.figures()
    assert figures["srtp"] is True
    metrics = Metrics(lambda: 0)
    metrics.media("rtc_srtp", figures, ended=True)
    text = metrics.render().decode()
    assert 'sipbridge_srtp_packets_dropped_total{reason="auth"} 2.0' in text
    assert 'sipbridge_srtp_packets_dropped_total{reason="replay"} 1.0' in text
    assert "sipbridge_srtp_calls_total 1.0" in text
    s.close()


# ---- keys kept out of what the gateway records -----------------------------------------


class Recorded:
    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    def observe(self, event: CallEvent) -> None:
        self.events.append(event)


def test_no_key_reaches_the_timeline_events_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = Harness()
    h.manager.policy = dataclasses.replace(h.manager.policy, srtp="optional",
                                           srtp_over_cleartext=True)
    seen = Recorded()
    h.events.subscribe(seen)
    h.send(invite(offer()))
    assert h.statuses()[-1] == 200
    sent = h.sent[-1].body.decode()
    ours = sent.split("inline:")[1].split("\r\n")[0]
    call = next(iter(h.manager.calls.values()))
    assert call.audio is not None and call.audio.srtp is not None
    recorded = repr(seen.events) + caplog.text + repr(call.audio)
    assert "inline:<redacted>" in recorded  # the SIP messages are on the timeline ...
    for key in (KEY_B64, ours):
        assert key not in recorded  # ... without either key


class Sender:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    def send(self, event: dict[str, object], on_attempt: object = None) -> object:
        self.sent.append(event)
        return object()


def test_the_webhook_and_the_call_record_of_an_srtp_call_hold_no_key() -> None:
    h = Harness(auto_answer=None, app=True)
    h.manager.policy = dataclasses.replace(h.manager.policy, srtp="optional",
                                           srtp_over_cleartext=True)
    sender = Sender()
    h.events.subscribe(WebhookSink([(sender, frozenset(EVENT_TYPES))],  # type: ignore[list-item]
                                   h.events, Metrics(lambda: 0)))
    recorder = TimelineRecorder()
    h.events.subscribe(recorder)
    h.send(invite(offer()))
    call = h.incoming[0]
    h.manager.accept(call.id, {})
    assert call.audio is not None and call.audio.srtp is not None
    ours = base64.b64encode(call.audio.srtp.local_key).decode()
    (event,) = sender.sent
    assert event["data"]["sip_media_security"] == "srtp"  # type: ignore[index]
    call.webhooks.clear()  # the fake sender's deliveries are not records
    record = repr(call.to_dict()) + repr(event)
    assert "inline:<redacted>" in record
    assert KEY_B64 not in record and ours not in record


def test_a_tls_invite_may_carry_keys_a_udp_one_not() -> None:
    h = Harness()
    h.manager.policy = dataclasses.replace(h.manager.policy, srtp="required")
    h.send(invite(offer()))
    assert h.statuses()[-1] == 488
    assert "cleartext signalling" in (h.sent[-1].headers.get("Warning") or "")
    h.send(invite(offer("RTP/AVP"), branch="b3").replace("Call-ID: call-1", "Call-ID: call-3"))
    assert h.statuses()[-1] == 488
    assert 'sipbridge "SRTP required' in (h.sent[-1].headers.get("Warning") or "")
    h.send(invite(offer(), branch="b2").replace("Call-ID: call-1", "Call-ID: call-2")
           .replace("SIP/2.0/UDP", "SIP/2.0/TLS"), Address("tls", "127.0.0.1", 5062))
    assert h.statuses()[-1] == 200


def test_with_srtp_required_an_invite_without_sdp_gets_our_srtp_offer() -> None:
    h = Harness()
    h.manager.policy = dataclasses.replace(h.manager.policy, srtp="required",
                                           srtp_over_cleartext=True)
    h.send(invite())
    ok = h.sent[-1]
    assert ok.status == 200 and b"RTP/SAVP" in ok.body and b"a=crypto:1 " in ok.body
    ours = base64.b64decode(ok.body.split(b"inline:")[1].split(b"\r\n")[0])
    h.send(ack(ok.to.tag or "", offer("RTP/SAVP", f"1 {SUITE80} inline:{KEY_B64}")))
    call = next(iter(h.manager.calls.values()))
    assert call.audio is not None and call.audio.srtp == SrtpKeys(SUITE80, 1, ours, KEY)


def test_a_re_invite_keeps_our_key_and_the_media_context() -> None:
    h = Harness()
    h.manager.policy = dataclasses.replace(h.manager.policy, srtp="optional",
                                           srtp_over_cleartext=True)
    h.send(invite(offer()))
    ok = h.sent[-1]
    h.send(ack(ok.to.tag or ""))
    call = next(iter(h.manager.calls.values()))
    assert call.audio is not None and call.audio.srtp is not None
    first = call.audio.srtp
    session = h.media.sessions[call.id]
    context = session.srtp
    h.send(invite(offer(), branch="b2", cseq=2, to_tag=ok.to.tag or ""))
    assert h.statuses()[-1] == 200
    assert call.audio.srtp == first and session.srtp is context  # replay window kept


def test_the_srtp_config_keys() -> None:
    config = load_config()
    assert (config.srtp, config.srtp_over_cleartext) == ("optional", False)
    assert load_config(srtp="required", srtp_over_cleartext=True).srtp == "required"
    with pytest.raises(ConfigError, match="srtp"):
        load_config(srtp="sometimes")


_CRYPTO = st.one_of(
    st.text(max_size=120),
    st.builds(lambda tag, suite, key, tail: f"{tag} {suite} inline:{key}{tail}",
              st.text("0123456789x", max_size=11), st.sampled_from([SUITE80, SUITE32, "X"]),
              st.one_of(st.just(KEY_B64), st.text(max_size=50)), st.text(max_size=20)),
)


@fuzz
@given(_CRYPTO, st.sampled_from(["RTP/SAVP", "RTP/AVP"]))
def test_any_crypto_line_is_answered_or_refused_with_488_without_its_key(
    value: str, proto: str
) -> None:
    text = offer(proto, value.replace("\r", "").replace("\n", ""))
    sdp = only(SipError, parse_sdp, text.encode())
    if sdp is None:
        return
    try:
        answer_offer(sdp, local_address="127.0.0.1", local_port=7000, session_id=1,
                     session_version=1, srtp="optional", srtp_over_cleartext=True)
    except NotAcceptable as exc:
        assert KEY_B64 not in exc.reason and "\r" not in exc.reason and '"' not in exc.reason
