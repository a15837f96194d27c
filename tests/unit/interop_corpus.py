"""Messages that real SIP stacks send on the transfer and dialog paths, each with its meaning.

Every sample names where its form comes from: the stack's source (repository and file; the
line that writes the header is quoted where it matters), its test data, or a published
trace (an issue thread, a vendor's manual). What the sample is about (Event,
Subscription-State, Content-Type, the sipfrag, Refer-Sub, Contact, Record-Route, CSeq) is
written the way that stack writes it, byte for byte where the source shows the bytes.
Addresses, Call-IDs and tags are the trace's own where one was published, else made up in
the documentation ranges (RFC 5737, RFC 3849); the headers around the ones under test
(Via, Max-Forwards, ...) follow the stack's usual layout but are not the point.

Used by tests/unit/test_interop_corpus.py: each NOTIFY is read by `read_refer_notify` and
replayed into a call with a transfer; each REFER answer is read for its Refer-Sub; each
INVITE is answered and its dialog's route set and remote target checked.
"""

from __future__ import annotations

from dataclasses import dataclass


def _msg(head: str, body: str = "") -> bytes:
    """A message written one line per line (LF in the source), sent with CRLF line ends.
    `{length}` in the head becomes the body's length, so each stack's own spacing of
    Content-Length is kept."""
    data = body.encode()
    head = head.strip("\n").replace("{length}", str(len(data)))
    return head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + data


# ---- NOTIFYs of REFER's implicit subscription (RFC 3515 2.4.4) -------------------------


@dataclass(frozen=True, slots=True)
class NotifySample:
    name: str
    source: str
    data: bytes
    state: str  # Subscription-State's state
    reason: str | None  # its reason parameter, as read
    status: int  # the sipfrag's status code
    phrase: str  # its reason phrase
    event_id: str | None = None  # Event's id parameter
    warnings: tuple[str, ...] = ()  # a piece of each warning the reading must give; () clean


# liblinphone 5.1 with belle-sip (Debian 12's linphone-cli is 5.1.65): SalCallOp::
# sendNotifyForRefer in src/sal/call-op.cpp (BelledonneCommunications/liblinphone, tags
# 5.1.0 to 5.1.65 and on; changed in 5.4.0) writes
#   "SIP/2.0 %i %s\r\n" as the body, Content-Type message/sipfrag, Event: refer, and
#   belle_sip_header_subscription_state_create(state, -1): no expires while active.
# SalCallOp::notifyReferState sends the final one with
#   sendNotifyForRefer(200, "Ok", "terminated", "reason=noresource");
# and belle-sip's marshaller writes the reason parameter as "reason=" + value, hence the
# doubled name. belle-sip builds requests Via, From, To, CSeq, Call-ID, Max-Forwards
# (src/message.cc, belle_sip_request_create).
LINPHONE_TRYING = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060;transport=udp SIP/2.0
Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bK.YTLdVWYWr;rport
From: <sip:caller@192.0.2.20>;tag=r1Wk3g~Zw
To: <sip:agent@192.0.2.10>;tag=gw-7c41d0a9
CSeq: 21 NOTIFY
Call-ID: 8hx7B4LBTq
Max-Forwards: 70
Subscription-State: active
Event: refer
Content-Type: message/sipfrag
Content-Length: {length}

""",
    "SIP/2.0 100 Trying\r\n",
)
LINPHONE_FINAL = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060;transport=udp SIP/2.0
Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bK.~nR6Jh3eX;rport
From: <sip:caller@192.0.2.20>;tag=r1Wk3g~Zw
To: <sip:agent@192.0.2.10>;tag=gw-7c41d0a9
CSeq: 22 NOTIFY
Call-ID: 8hx7B4LBTq
Max-Forwards: 70
Subscription-State: terminated;reason=reason=noresource
Event: refer
Content-Type: message/sipfrag
Content-Length: {length}

""",
    "SIP/2.0 200 Ok\r\n",
)

# baresip with libre: call_notify_sipfrag in src/call.c (baresip/baresip) writes
#   "SIP/2.0 %u %v\r\n" and sends it with SIPEVENT_ACTIVE, or SIPEVENT_TERMINATED +
#   SIPEVENT_NORESOURCE once final; sipevent_accept is given "message/sipfrag".
# libre's src/sipevent/notify.c (baresip/re): sipevent_accept sets the id to the REFER's
# CSeq ("%u", msg->cseq.num); print_event writes "%s;id=%s"; print_substate writes
# "terminated;reason=%s" or "%s;expires=%u" (the time left); print_content writes
# Content-Type then Content-Length. From tags are "%016llx" (src/sip/dialog.c).
BARESIP_TRYING = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bK6d1b0f5e2c8a4f31;rport
Contact: <sip:caller-0x55d1@192.0.2.21:5060>
Max-Forwards: 70
To: <sip:agent@192.0.2.10>;tag=gw-5e0b22f1
From: <sip:caller@192.0.2.21>;tag=4a9c1e0d7b3f2a65
Call-ID: 6f0a9d3c1b2e4f57
CSeq: 2 NOTIFY
User-Agent: baresip v1.0.0 (x86_64/linux)
Event: refer;id=2
Subscription-State: active;expires=60
Content-Type: message/sipfrag
Content-Length: {length}

""",
    "SIP/2.0 100 Trying\r\n",
)
BARESIP_FINAL = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bK0c7e3a91d5f26b48;rport
Contact: <sip:caller-0x55d1@192.0.2.21:5060>
Max-Forwards: 70
To: <sip:agent@192.0.2.10>;tag=gw-5e0b22f1
From: <sip:caller@192.0.2.21>;tag=4a9c1e0d7b3f2a65
Call-ID: 6f0a9d3c1b2e4f57
CSeq: 3 NOTIFY
User-Agent: baresip v1.0.0 (x86_64/linux)
Event: refer;id=2
Subscription-State: terminated;reason=noresource
Content-Type: message/sipfrag
Content-Length: {length}

""",
    "SIP/2.0 200 OK\r\n",
)

# Asterisk chan_pjsip: res/res_pjsip_refer.c (asterisk/asterisk) sends the first NOTIFY
# with pjsip_xfer_notify(sub, PJSIP_EVSUB_STATE_ACTIVE, 100, ...) and the outcome with
# PJSIP_EVSUB_STATE_TERMINATED (200 when the transferee is bridged or answers, 486 on
# busy, 503 on congestion). pjproject's pjsip/src/pjsip-ua/sip_xfer.c writes the body
# "SIP/2.0 %u %.*s\r\n", Content-Type message/sipfrag;version=2.0 and the reason
# "noresource"; evsub_msg.c prints "active;expires=N". The layout, the padded
# Content-Length and the expires below are from a FreePBX 13 (Asterisk 13.18.3) trace in
# versatica/JsSIP issue #493 "error parsing NOTIFY body".
ASTERISK_TRYING = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.30:5160;rport;branch=z9hG4bKPj91196102-cc0f-4a89-ac44-853e52f10103
From: <sip:1009@198.51.100.30>;tag=420cb25f-b4dd-4391-a0ea-d83413c69323
To: <sip:agent@192.0.2.10>;tag=gw-0u0gcnfl8s
Contact: <sip:198.51.100.30:5160>
Call-ID: il019su1a6adc9ksdb3r
CSeq: 7254 NOTIFY
Event: refer
Subscription-State: active;expires=595
Allow-Events: presence, dialog, message-summary, refer
Max-Forwards: 70
User-Agent: FPBX-13.0.191.11(13.18.3)
Content-Type: message/sipfrag;version=2.0
Content-Length:    {length}

""",
    "SIP/2.0 100 Trying\r\n",
)
ASTERISK_FINAL = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.30:5160;rport;branch=z9hG4bKPj16a4253d-65a2-463f-a74b-7add01ae07b1
From: <sip:1009@198.51.100.30>;tag=420cb25f-b4dd-4391-a0ea-d83413c69323
To: <sip:agent@192.0.2.10>;tag=gw-0u0gcnfl8s
Contact: <sip:198.51.100.30:5160>
Call-ID: il019su1a6adc9ksdb3r
CSeq: 7255 NOTIFY
Event: refer
Subscription-State: terminated;reason=noresource
Allow-Events: presence, dialog, message-summary, refer
Max-Forwards: 70
User-Agent: FPBX-13.0.191.11(13.18.3)
Content-Type: message/sipfrag;version=2.0
Content-Length:    {length}

""",
    "SIP/2.0 200 OK\r\n",
)
ASTERISK_BUSY = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.30:5160;rport;branch=z9hG4bKPj5b2e96d1-4c1a-4d0e-9f3b-2f9b6a1c7e44
From: <sip:1009@198.51.100.30>;tag=420cb25f-b4dd-4391-a0ea-d83413c69323
To: <sip:agent@192.0.2.10>;tag=gw-0u0gcnfl8s
Contact: <sip:198.51.100.30:5160>
Call-ID: il019su1a6adc9ksdb3r
CSeq: 7256 NOTIFY
Event: refer
Subscription-State: terminated;reason=noresource
Allow-Events: presence, dialog, message-summary, refer
Max-Forwards: 70
User-Agent: FPBX-13.0.191.11(13.18.3)
Content-Type: message/sipfrag;version=2.0
Content-Length:    {length}

""",
    "SIP/2.0 486 Busy Here\r\n",
)

# FreeSWITCH mod_sofia: src/mod/endpoints/mod_sofia/sofia.c (signalwire/freeswitch)
# answers a REFER it carried out with
#   nua_notify(..., SIPTAG_CONTENT_TYPE_STR("message/sipfrag;version=2.0"),
#     NUTAG_SUBSTATE(nua_substate_terminated),
#     SIPTAG_SUBSCRIPTION_STATE_STR("terminated;reason=noresource"),
#     SIPTAG_PAYLOAD_STR("SIP/2.0 200 OK\r\n"), SIPTAG_EVENT_STR(etmp), ...)
# where etmp is switch_mprintf("refer;id=%u", sip->sip_cseq->cs_seq), and refuses one
# with SIPTAG_CONTENT_TYPE_STR("message/sipfrag") and "SIP/2.0 403 Forbidden\r\n". The
# header layout is sofia-sip's, as in the FreeSWITCH 1.6 NOTIFY quoted in versatica/JsSIP
# issue #435.
FREESWITCH_FINAL = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.40:5060;branch=z9hG4bKagUFp5yHFKQem
Max-Forwards: 70
From: <sip:1000@198.51.100.40>;tag=gQtgc4Kt278Ze
To: <sip:agent@192.0.2.10>;tag=gw-6s6r98inje
Call-ID: 698bf7bb-9617-1235-adb0-000c296e460f
CSeq: 105442594 NOTIFY
Contact: <sip:mod_sofia@198.51.100.40:5060>
User-Agent: FreeSWITCH-mod_sofia/1.10.12-release~64bit
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY
Supported: timer, path, replaces
Event: refer;id=3
Allow-Events: talk, hold, conference, refer
Subscription-State: terminated;reason=noresource
Content-Type: message/sipfrag;version=2.0
Content-Length: {length}

""",
    "SIP/2.0 200 OK\r\n",
)
FREESWITCH_FORBIDDEN = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.40:5060;branch=z9hG4bKp3Qm81SvrD0aN
Max-Forwards: 70
From: <sip:1000@198.51.100.40>;tag=gQtgc4Kt278Ze
To: <sip:agent@192.0.2.10>;tag=gw-6s6r98inje
Call-ID: 698bf7bb-9617-1235-adb0-000c296e460f
CSeq: 105442595 NOTIFY
Contact: <sip:mod_sofia@198.51.100.40:5060>
User-Agent: FreeSWITCH-mod_sofia/1.10.12-release~64bit
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY
Supported: timer, path, replaces
Event: refer;id=3
Allow-Events: talk, hold, conference, refer
Subscription-State: terminated;reason=noresource
Content-Type: message/sipfrag
Content-Length: {length}

""",
    "SIP/2.0 403 Forbidden\r\n",
)

# JsSIP (browser phones): src/RTCSession/ReferNotifier.js (versatica/JsSIP) sends
#   `Event: ${C.event_type};id=${this._id}`, `Subscription-State: ${state}` with
#   'terminated;reason=noresource' or `active;expires=${this._expires}` (300 by default),
#   `Content-Type: message/sipfrag;version=2.0`, body `SIP/2.0 ${code} ${reason}`:
# no line end after the status line.
JSSIP_FINAL = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060;transport=ws SIP/2.0
Via: SIP/2.0/WSS q8n1k2ls0d7f.invalid;branch=z9hG4bK5530291
Max-Forwards: 69
To: <sip:agent@192.0.2.10>;tag=gw-k3j2h1g0
From: "Agent Desk" <sip:3304@192.0.2.50>;tag=vq1c0r3f2e
Call-ID: 9rj6pa4kfk3vcd1h2s0n
CSeq: 7411 NOTIFY
Event: refer;id=3
Subscription-State: terminated;reason=noresource
Content-Type: message/sipfrag;version=2.0
Supported: outbound
User-Agent: JsSIP 3.10.0
Content-Length: {length}

""",
    "SIP/2.0 200 OK",
)

# A sipfrag that carries a header line after the status line (RFC 3515 2.4.5 allows it):
# the body quoted in versatica/JsSIP pull request #767, "Fixed REFER NOTIFY parsing in
# accordance to RFC 3515 section 2.4.5".
SIPFRAG_WITH_REASON = _msg(
    """
NOTIFY sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.60:5060;branch=z9hG4bK-524287-1---7c3a1f0e2d9b8a65
Max-Forwards: 70
From: <sip:transferee@198.51.100.60>;tag=b3f1c2d4
To: <sip:agent@192.0.2.10>;tag=gw-9a8b7c6d
Call-ID: 2c5e8f1a-3b4d-4e6f-8a9b-0c1d2e3f4a5b
CSeq: 4 NOTIFY
Event: refer
Subscription-State: terminated;reason=noresource
Content-Type: message/sipfrag
Content-Length: {length}

""",
    'SIP/2.0 420 Bad Extension\r\nReason: SIP;cause=183;text="Call in progress"\r\n',
)

# RFC 5589 (SIP call control - transfer) 100 Trying NOTIFY, as Oracle's Session Border
# Controller documents it ("Sample Messages", Enterprise SBC 7.4 configuration guide,
# refer-notify-provisional): expires twice Timer C.
ORACLE_SBC_TRYING = _msg(
    """
NOTIFY sips:4889445d8kjtk3@atlanta.example.com;gr=723jd2d SIP/2.0
Via: SIP/2.0/TLS 192.0.2.4;branch=z9hG4bKnas432
Max-Forwards: 70
To: <sips:transferor@atlanta.example.com>;tag=1928301774
From: <sips:3ld812adkjw@biloxi.example.com;gr=3413kj2ha>;tag=a6c85cf
Call-ID: a84b4c76e66710
CSeq: 73 NOTIFY
Contact: <sips:3ld812adkjw@biloxi.example.com;gr=3413kj2ha>
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY
Supported: replaces, tdialog
Event: refer
Subscription-State: active;expires=360
Content-Type: message/sipfrag
Content-Length: {length}

""",
    "SIP/2.0 100 Trying\r\n",
)

NOTIFIES: list[NotifySample] = [
    NotifySample("linphone-5.1-trying", "liblinphone 5.1 src/sal/call-op.cpp", LINPHONE_TRYING,
                 "active", None, 100, "Trying"),
    NotifySample("linphone-5.1-final", "liblinphone 5.1 src/sal/call-op.cpp", LINPHONE_FINAL,
                 "terminated", "noresource", 200, "Ok",
                 warnings=("'reason=reason=noresource' read as reason=noresource",)),
    NotifySample("baresip-trying", "baresip src/call.c, libre src/sipevent/notify.c",
                 BARESIP_TRYING, "active", None, 100, "Trying", event_id="2"),
    NotifySample("baresip-final", "baresip src/call.c, libre src/sipevent/notify.c",
                 BARESIP_FINAL, "terminated", "noresource", 200, "OK", event_id="2"),
    NotifySample("asterisk-trying", "Asterisk res/res_pjsip_refer.c, JsSIP issue #493",
                 ASTERISK_TRYING, "active", None, 100, "Trying"),
    NotifySample("asterisk-final", "Asterisk res/res_pjsip_refer.c, pjsip sip_xfer.c",
                 ASTERISK_FINAL, "terminated", "noresource", 200, "OK"),
    NotifySample("asterisk-busy", "Asterisk res/res_pjsip_refer.c, pjsip sip_xfer.c",
                 ASTERISK_BUSY, "terminated", "noresource", 486, "Busy Here"),
    NotifySample("freeswitch-final", "FreeSWITCH src/mod/endpoints/mod_sofia/sofia.c",
                 FREESWITCH_FINAL, "terminated", "noresource", 200, "OK", event_id="3"),
    NotifySample("freeswitch-forbidden", "FreeSWITCH src/mod/endpoints/mod_sofia/sofia.c",
                 FREESWITCH_FORBIDDEN, "terminated", "noresource", 403, "Forbidden",
                 event_id="3"),
    NotifySample("jssip-final", "JsSIP src/RTCSession/ReferNotifier.js", JSSIP_FINAL,
                 "terminated", "noresource", 200, "OK", event_id="3"),
    NotifySample("sipfrag-with-reason", "JsSIP pull request #767", SIPFRAG_WITH_REASON,
                 "terminated", "noresource", 420, "Bad Extension"),
    NotifySample("oracle-sbc-trying", "Oracle SBC 7.4 guide, RFC 5589", ORACLE_SBC_TRYING,
                 "active", None, 100, "Trying"),
]


# ---- answers to our REFER (RFC 3515 2.4.2, RFC 4488) -----------------------------------


@dataclass(frozen=True, slots=True)
class ReferAnswerSample:
    name: str
    source: str
    data: bytes
    status: int
    subscription: bool  # whether NOTIFYs will follow (no Refer-Sub: false)


# baresip/libre: call.c's REFER handler calls sipevent_accept(..., 202, "Accepted", 60, 60,
# 60, ...) with "Allow: %H"; libre's sipnot_reply (src/sipevent/notify.c) writes the
# Contact, "Expires: %u" and Content-Length. No Refer-Sub.
BARESIP_202 = _msg(
    """
SIP/2.0 202 Accepted
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKrefer1;rport=5060;received=192.0.2.10
From: <sip:agent@192.0.2.10>;tag=gw-5e0b22f1
To: <sip:caller@192.0.2.21>;tag=4a9c1e0d7b3f2a65
Call-ID: 6f0a9d3c1b2e4f57
CSeq: 2 REFER
Server: baresip v1.0.0 (x86_64/linux)
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER
Contact: <sip:caller-0x55d1@192.0.2.21:5060>
Expires: 60
Content-Length: 0
"""
)

# Asterisk chan_pjsip, res/res_pjsip_refer.c refer_progress_alloc: when the REFER asked
# "Refer-Sub: true" the 202 says so (pj_str "Refer-Sub", "true"); a REFER without one
# gets a 202 without one. pjsip's layout as in the Asterisk traces above.
ASTERISK_202_REFER_SUB_TRUE = _msg(
    """
SIP/2.0 202 Accepted
Via: SIP/2.0/UDP 192.0.2.10:5060;rport=5060;received=192.0.2.10;branch=z9hG4bKrefer2
Call-ID: il019su1a6adc9ksdb3r
From: <sip:agent@192.0.2.10>;tag=gw-0u0gcnfl8s
To: <sip:1009@198.51.100.30>;tag=420cb25f-b4dd-4391-a0ea-d83413c69323
CSeq: 2 REFER
Expires: 600
Refer-Sub: true
Server: FPBX-13.0.191.11(13.18.3)
Content-Length:     0
"""
)
ASTERISK_202 = _msg(
    """
SIP/2.0 202 Accepted
Via: SIP/2.0/UDP 192.0.2.10:5060;rport=5060;received=192.0.2.10;branch=z9hG4bKrefer3
Call-ID: il019su1a6adc9ksdb3r
From: <sip:agent@192.0.2.10>;tag=gw-0u0gcnfl8s
To: <sip:1009@198.51.100.30>;tag=420cb25f-b4dd-4391-a0ea-d83413c69323
CSeq: 3 REFER
Expires: 600
Server: FPBX-13.0.191.11(13.18.3)
Content-Length:     0
"""
)

# sofia-sip (FreeSWITCH): nua_refer_server_respond in libsofia-sip-ua/nua/nua_notifier.c
# (freeswitch/sofia-sip) keeps the implicit subscription unless the response says
#   "Refer-Sub: false" (su_casematch(rs->rs_value, "false")),
# the RFC 4488 4 form. The 202's other headers as in FreeSWITCH's REFER answers.
SOFIA_202_NO_SUBSCRIPTION = _msg(
    """
SIP/2.0 202 Accepted
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKrefer4;rport=5060
From: <sip:agent@192.0.2.10>;tag=gw-6s6r98inje
To: <sip:1000@198.51.100.40>;tag=gQtgc4Kt278Ze
Call-ID: 698bf7bb-9617-1235-adb0-000c296e460f
CSeq: 2 REFER
Contact: <sip:mod_sofia@198.51.100.40:5060>
User-Agent: FreeSWITCH-mod_sofia/1.10.12-release~64bit
Refer-Sub: false
Require: norefersub
Content-Length: 0
"""
)
# The same answer as some stacks spell it: the value's case is not fixed (RFC 4488 7.1
# compares it as a token), and a parameter may follow.
REFER_SUB_FALSE_UPPER = SOFIA_202_NO_SUBSCRIPTION.replace(
    b"Refer-Sub: false", b"Refer-Sub: FALSE;x-vendor=1")

# liblinphone 5.1 SalCallOp::processRefer: createResponseFromRequest(request, 202) and
# nothing more.
LINPHONE_202 = _msg(
    """
SIP/2.0 202 Accepted
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKrefer5;rport=5060;received=192.0.2.10
From: <sip:agent@192.0.2.10>;tag=gw-7c41d0a9
To: <sip:caller@192.0.2.20>;tag=r1Wk3g~Zw
Call-ID: 8hx7B4LBTq
CSeq: 2 REFER
Content-Length: 0
"""
)

REFER_ANSWERS: list[ReferAnswerSample] = [
    ReferAnswerSample("baresip-202", "libre src/sipevent/notify.c sipnot_reply", BARESIP_202,
                      202, True),
    ReferAnswerSample("asterisk-202-refer-sub-true", "Asterisk res/res_pjsip_refer.c",
                      ASTERISK_202_REFER_SUB_TRUE, 202, True),
    ReferAnswerSample("asterisk-202", "Asterisk res/res_pjsip_refer.c", ASTERISK_202, 202, True),
    ReferAnswerSample("sofia-202-refer-sub-false", "sofia-sip nua_notifier.c, RFC 4488",
                      SOFIA_202_NO_SUBSCRIPTION, 202, False),
    ReferAnswerSample("refer-sub-false-upper-case", "RFC 4488 7.1", REFER_SUB_FALSE_UPPER, 202,
                      False),
    ReferAnswerSample("linphone-202", "liblinphone 5.1 src/sal/call-op.cpp", LINPHONE_202, 202,
                      True),
]


# ---- dialog-forming messages: Contact and Record-Route (RFC 3261 12.1) ----------------


@dataclass(frozen=True, slots=True)
class DialogSample:
    name: str
    source: str
    data: bytes  # an INVITE to us, or a 2xx to an INVITE of ours
    routes: tuple[str, ...]  # the dialog's route set, as URIs, in the order requests use
    target: str  # the remote target: the first Contact's URI
    loose: bool  # whether the first route is a loose router (lr)


_SDP = (
    "v=0\r\no=- 3989 3989 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
    "m=audio 7078 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)

# SIPp's built-in uac scenario (src/scenario.cpp, SIPp/sipp): a bare addr-spec Contact,
#   "Contact: sip:sipp@[local_ip]:[local_port]", and display names as bare tokens.
SIPP_UAC_INVITE = _msg(
    """
INVITE sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.30:5061;branch=z9hG4bK-4711-1-0
From: sipp <sip:sipp@192.0.2.30:5061>;tag=4711SIPpTag001
To: agent <sip:agent@192.0.2.10:5060>
Call-ID: 1-4711@192.0.2.30
CSeq: 1 INVITE
Contact: sip:sipp@192.0.2.30:5061
Max-Forwards: 70
Subject: Performance Test
Content-Type: application/sdp
Content-Length: {length}

""",
    _SDP,
)

# SIPp regression scenario regress/github-#0192/uac.xml: From, To and Contact all bare,
# the From tag a header parameter after the addr-spec, CSeq from [cseq].
SIPP_BARE_INVITE = _msg(
    """
INVITE sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.30:5061;branch=z9hG4bK-4712-1-0
From: sip:agent@192.0.2.30:5061;tag=4712SIPpTag001
To: sip:agent@192.0.2.10:5060
Call-ID: 1-4712@192.0.2.30
CSeq: 1 INVITE
Contact: sip:agent@192.0.2.30:5061
Content-Type: application/sdp
Content-Length: {length}

""",
    _SDP,
)

# An INVITE from a linphone behind a proxy that record-routes twice (TCP toward the
# callee, UDP toward the caller), from belle-sip's own tests: tester/
# belle_sip_message_tester.c test_extract_source (BelledonneCommunications/belle-sip):
#   "Record-Route: <sip:37.59.129.73;lr;transport=tcp>\r\n"
#   "Record-Route: <sip:37.59.129.73;lr>\r\n"
LINPHONE_VIA_PROXY_INVITE = _msg(
    """
INVITE sip:jehan@81.56.113.2:50343;transport=tcp;line=f18e0009dd6cc43 SIP/2.0
Via: SIP/2.0/TCP 37.59.129.73;branch=z9hG4bK.SKvK9U327e8mU68XUv5rt144pg
Via: SIP/2.0/UDP 192.168.1.12:15060;rport=15060;branch=z9hG4bK1596944937;received=81.56.113.2
Record-Route: <sip:37.59.129.73;lr;transport=tcp>
Record-Route: <sip:37.59.129.73;lr>
Max-Forwards: 70
From: <sip:jehan@sip.linphone.org>;tag=711138653
To: <sip:jehan@sip.linphone.org>
Call-ID: 977107319
CSeq: 21 INVITE
Contact: <sip:jehan@81.56.113.2:15060>
Subject: Phone call
User-Agent: Linphone/3.5.2 (eXosip2/3.6.0)
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO
Content-Type: application/sdp
Content-Length: {length}

""",
    _SDP,
)

# liblinphone 5 Contacts, from belle-sip's tester/bench.cc: an IPv6 host and the
# +org.linphone.specs feature tag whose quoted value holds commas; and a GRUU with
# +sip.instance, whose quoted value holds angle brackets.
LINPHONE_IPV6_INVITE = _msg(
    """
INVITE sip:agent@[2001:db8::10]:5060 SIP/2.0
Via: SIP/2.0/TCP [::1]:40870;branch=z9hG4bK.0UC6VHs5B;rport
From: <sip:caller@sip.example.org>;tag=bQ0BqEd~N
To: <sip:agent@[2001:db8::10]>
CSeq: 20 INVITE
Call-ID: hMCaUpSvY2
Max-Forwards: 70
Supported: replaces, outbound, gruu, path
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, PRACK, UPDATE
Content-Type: application/sdp
Content-Length: {length}
Contact: <sip:[::1]:40870;transport=tcp>;+org.linphone.specs="ephemeral/1.1,groupchat/1.2,lime"
User-Agent: LinphoneAndroid/5.0.14 (belle-sip/5.1.0)

""",
    _SDP,
)
LINPHONE_GRUU_INVITE = _msg(
    """
INVITE sip:agent@192.0.2.10 SIP/2.0
Via: SIP/2.0/TLS 192.0.2.22:49949;branch=z9hG4bK.Pl2VvH2Bv;rport
From: "Chloe" <sip:chloe@sip.example.org>;tag=m5mCz~JpA
To: <sip:agent@192.0.2.10>
CSeq: 20 INVITE
Call-ID: Zc1Qx-3wHd
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: {length}
Contact: <sip:chloe_p-tkcud@sip.example.org;gr=urn:uuid:cdac7b83-adb5-413c-a1a0-3947bb740f7b>;+sip.instance="<urn:uuid:cdac7b83-adb5-413c-a1a0-3947bb740f7b>";+org.linphone.specs="lime"

""",
    _SDP,
)

# Kamailio's rr module, src/modules/rr/record.c build_rr (kamailio/kamailio): each
# Record-Route is its own header line, "Record-Route: <sip:" + the socket (with
# ";transport=" when not UDP) + ";r2=on" when enable_double_rr writes two of them + ";lr"
# (";lr=on" with enable_full_lr) + ";ftag=" the From tag + the dialog module's ";did=".
KAMAILIO_DOUBLE_RR_INVITE = _msg(
    """
INVITE sip:agent@192.0.2.10:5060;transport=tcp SIP/2.0
Record-Route: <sip:198.51.100.7:5070;transport=tcp;r2=on;lr;ftag=as6ed4bb38;did=219.0f84e5e>
Record-Route: <sip:203.0.113.7;r2=on;lr;ftag=as6ed4bb38;did=219.0f84e5e>
Via: SIP/2.0/TCP 198.51.100.7:5070;branch=z9hG4bK2f4a.06dcd7a1.0;i=1f
Via: SIP/2.0/UDP 203.0.113.50:5060;rport=5060;branch=z9hG4bK1827364554
Max-Forwards: 69
From: "4801370F02092417" <sip:4801370F02092417@203.0.113.50>;tag=as6ed4bb38
To: <sip:agent@192.0.2.10>
Call-ID: 2b3c9f0a7e6d@203.0.113.50
CSeq: 102 INVITE
Contact: <sip:4801370F02092417@203.0.113.50:5060>
Content-Type: application/sdp
Content-Length: {length}

""",
    _SDP,
)
KAMAILIO_FULL_LR_INVITE = _msg(
    """
INVITE sip:agent@192.0.2.10:5060 SIP/2.0
Record-Route: <sip:198.51.100.7;lr=on;ftag=c1a5b0e2>
Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK9e8.3362.0
Via: SIP/2.0/UDP 203.0.113.51:5060;rport=5060;branch=z9hG4bKa8f2
Max-Forwards: 69
From: <sip:2001@203.0.113.51>;tag=c1a5b0e2
To: <sip:agent@192.0.2.10>
Call-ID: 55f1b2c3d4e5@203.0.113.51
CSeq: 1 INVITE
Contact: <sip:2001@203.0.113.51:5060>
Content-Type: application/sdp
Content-Length: {length}

""",
    _SDP,
)

# An SBC (OpenSIPS-style rr: lr before r2, extra parameters) in front of a PBX, from the
# 200 OK quoted in asterisk/asterisk issue #793 (addresses put in for the placeholders):
#   "Record-Route: <sip:SBC_LAN:5080;lr;r2=on;ftag=5338115807;uuid=okg90748>"
SBC_LR_FIRST_INVITE = _msg(
    """
INVITE sip:agent@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5080;branch=z9hG4bK16094652991385364327-0
Via: SIP/2.0/UDP 192.168.1.40:5060;rport=14384;received=203.0.113.60;branch=z9hG4bK160946529913
Record-Route: <sip:10.0.0.5:5080;lr;r2=on;ftag=5338115807;uuid=okg90748>
Record-Route: <sip:203.0.113.5;lr;r2=on;ftag=5338115807;uuid=okg90748>
Call-ID: 252081767525535-1129330916386@203.0.113.60
Contact: <sip:GT251@192.168.1.40:5060>
From: "Test OKG - DO NOT DELETE 1865364" <sip:GT251@abc.example.com>;tag=5338115807
To: <sip:agent@192.0.2.10>
CSeq: 4 INVITE
Max-Forwards: 69
Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, MESSAGE, REFER
Supported: 100rel, timer, replaces, norefersub
Content-Type: application/sdp
Content-Length: {length}

""",
    _SDP,
)

# Telnyx's edge: the INVITE of a published Telnyx -> FreeSWITCH call trace (a write-up
# headed "Telnyx sends INVITE to FreeSWITCH"; the copy found does not name its
# repository), in compact forms without a space after the colon (f:, t:, i:, m:, c:, l:),
# "CSeq:115676495 INVITE", a quoted display name glued to "<", three Record-Routes.
# Its Record-Routes and Contact shape match the Telnyx 200 OKs quoted in
# BelledonneCommunications/flexisip issue #202 and restsend/rustpbx issue #122.
TELNYX_INVITE = _msg(
    """
INVITE sip:12014269044@152.58.133.7:55040;transport=tcp;gw=telnyx SIP/2.0
Record-Route: <sip:64.16.250.10;transport=tcp;r2=on;lr;ftag=7y4SjHZ1Fer9D>
Record-Route: <sip:10.255.0.2;r2=on;lr;ftag=7y4SjHZ1Fer9D>
Record-Route: <sip:10.231.83.184:6050;lr;tnx=7c1.26b4>
Via: SIP/2.0/TCP 64.16.250.10;branch=z9hG4bKa5fb.cd6a5a07bbe709b919dd8775f1a61abb.0
Via: SIP/2.0/UDP 10.231.83.184:6050;rport=6050;branch=z9hG4bKa5fb.98890060b2f0d0aecad248f41a30c22a.0
v:SIP/2.0/UDP 10.231.91.24:6000;received=10.231.91.24;rport=6000;branch=z9hG4bKrgH3XvvDg2NZN
Max-Forwards:24
f:"919113162180"<sip:919113162180@sip.telnyx.com>;tag=7y4SjHZ1Fer9D
t:<sip:12014269044@10.231.83.184>
i:70f83b11-2dbe-47e9-8604-6afaa29efc7d
CSeq:115676495 INVITE
m:<sip:mod_sofia@10.231.91.24:6000>
Allow:INVITE,ACK,BYE,CANCEL,OPTIONS,MESSAGE,INFO,UPDATE,REFER,NOTIFY
k:timer,path
u:talk,hold,conference,refer
Privacy:none
c:application/sdp
Content-Disposition:session
l:{length}
X-Telnyx-Session-ID:e49f6b7e-5f03-11f1-8842-02420aef99a0

""",
    _SDP,
)

# Telnyx's 200 OK to an INVITE sent through it (our bridge fallback's outbound leg), from
# BelledonneCommunications/flexisip issue #202 (the reporter's own proxy names replaced
# by sip.example.com): two Telnyx Record-Routes over TCP, then the reporter's proxy, one
# of them sips:. The route set of a UAC is the Record-Routes reversed (RFC 3261 12.1.2).
TELNYX_200 = _msg(
    """
SIP/2.0 200 OK
Via: SIP/2.0/TCP sip.example.com;received=192.0.2.10;rport=44117;branch=z9hG4bK.jHtrc2K0K2yr9Brpe35BttcavH
Record-Route: <sip:10.255.0.1;transport=tcp;r2=on;lr;ftag=UJaBmJ-pu>
Record-Route: <sip:192.76.120.10;transport=tcp;r2=on;lr;ftag=UJaBmJ-pu>
Record-Route: <sip:sip.example.com:5060;lr>
Record-Route: <sips:sip.example.com:5061;lr>
From: <sip:+16183678135@sip.example.com>;tag=UJaBmJ-pu
To: "+18004444444" <sip:+18004444444@sip.telnyx.com>;tag=24cQ0v01Q71Fm
Call-ID: ioOMu4fdix
CSeq: 21 INVITE
Contact: <sip:+18004444444@10.239.216.224:5070;transport=tcp>
Content-Type: application/sdp
Content-Length: {length}

""",
    _SDP,
)

# sipgate's trunk answering through a Kamailio, from kamailio/kamailio issue #2961: plain
# ";lr" routes, a Contact without a user part, and "Content-Length:   242" style padding.
SIPGATE_200 = _msg(
    """
SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK496f.744a3c48b24be1ba5fdda68cf5fe3878.1
Record-Route: <sip:172.20.40.8;lr>
Record-Route: <sip:217.10.68.150;lr>
Call-ID: 7cd83e052202a97f4e28728276e0c758@35.157.121.101:5060
From: "01705441258" <sip:2908206t0@sipconnect.sipgate.de>;tag=as010d26b4
To: <sip:+493046996025@voip.example.com>;tag=221f5413-4c48-4f53-97e8-d96ea6413f26
CSeq: 102 INVITE
Allow: OPTIONS, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, MESSAGE, REFER
Contact: <sip:217.10.77.61:5060>
Supported: replaces
Content-Type: application/sdp
Content-Length:   {length}

""",
    _SDP,
)

# belle-sip's header tests (tester/belle_sip_headers_tester.c test_record_route_header):
# two routes in one comma-separated header, one with a header parameter after the URI.
#   "Record-Route: <sip:212.27.52.5:5060;transport=udp;lr>;charset=ISO-8859-4, "
#   "<sip:212.27.52.5:5060;transport=udp;lr>"
# with an uppercase TRANSPORT value and an IPv6 route beside them.
COMMA_RR_INVITE = _msg(
    """
INVITE sip:agent@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 212.27.52.5:5060;branch=z9hG4bK.rr2comma
Via: SIP/2.0/UDP 192.0.2.23:5060;branch=z9hG4bK.a81Fz;rport=5060
Record-Route: <sip:212.27.52.5:5060;transport=udp;lr>;charset=ISO-8859-4, <sip:212.27.52.5:5060;transport=udp;lr>
Record-Route: <sip:[2001:db8::5]:5060;transport=TCP;LR>
From: <sip:caller@192.0.2.23>;tag=Y5lz1hgkv
To: <sip:agent@192.0.2.10>
CSeq: 20 INVITE
Call-ID: r5B7qH0kzL
Max-Forwards: 69
Contact: <sip:caller@192.0.2.23:5060>;expires=3600;+sip.instance="<urn:uuid:00000000-0000-1000-8000-00085d0a8b21>"
Content-Type: application/sdp
Content-Length: {length}

""",
    _SDP,
)

DIALOGS: list[DialogSample] = [
    DialogSample("sipp-uac", "SIPp src/scenario.cpp", SIPP_UAC_INVITE, (),
                 "sip:sipp@192.0.2.30:5061", False),
    DialogSample("sipp-bare", "SIPp regress/github-#0192/uac.xml", SIPP_BARE_INVITE, (),
                 "sip:agent@192.0.2.30:5061", False),
    DialogSample("linphone-via-proxy", "belle-sip tester/belle_sip_message_tester.c",
                 LINPHONE_VIA_PROXY_INVITE,
                 ("sip:37.59.129.73;lr;transport=tcp", "sip:37.59.129.73;lr"),
                 "sip:jehan@81.56.113.2:15060", True),
    DialogSample("linphone-ipv6", "belle-sip tester/bench.cc", LINPHONE_IPV6_INVITE, (),
                 "sip:[::1]:40870;transport=tcp", False),
    DialogSample("linphone-gruu", "belle-sip tester/bench.cc", LINPHONE_GRUU_INVITE, (),
                 "sip:chloe_p-tkcud@sip.example.org;gr=urn:uuid:cdac7b83-adb5-413c-a1a0-"
                 "3947bb740f7b", False),
    DialogSample("kamailio-double-rr", "Kamailio src/modules/rr/record.c",
                 KAMAILIO_DOUBLE_RR_INVITE,
                 ("sip:198.51.100.7:5070;transport=tcp;r2=on;lr;ftag=as6ed4bb38;did=219.0f84e5e",
                  "sip:203.0.113.7;r2=on;lr;ftag=as6ed4bb38;did=219.0f84e5e"),
                 "sip:4801370F02092417@203.0.113.50:5060", True),
    DialogSample("kamailio-full-lr", "Kamailio src/modules/rr/record.c (enable_full_lr)",
                 KAMAILIO_FULL_LR_INVITE, ("sip:198.51.100.7;lr=on;ftag=c1a5b0e2",),
                 "sip:2001@203.0.113.51:5060", True),
    DialogSample("sbc-lr-first", "asterisk/asterisk issue #793", SBC_LR_FIRST_INVITE,
                 ("sip:10.0.0.5:5080;lr;r2=on;ftag=5338115807;uuid=okg90748",
                  "sip:203.0.113.5;lr;r2=on;ftag=5338115807;uuid=okg90748"),
                 "sip:GT251@192.168.1.40:5060", True),
    DialogSample("telnyx-invite", "Telnyx -> FreeSWITCH trace", TELNYX_INVITE,
                 ("sip:64.16.250.10;transport=tcp;r2=on;lr;ftag=7y4SjHZ1Fer9D",
                  "sip:10.255.0.2;r2=on;lr;ftag=7y4SjHZ1Fer9D",
                  "sip:10.231.83.184:6050;lr;tnx=7c1.26b4"),
                 "sip:mod_sofia@10.231.91.24:6000", True),
    DialogSample("telnyx-200", "BelledonneCommunications/flexisip issue #202", TELNYX_200,
                 ("sips:sip.example.com:5061;lr", "sip:sip.example.com:5060;lr",
                  "sip:192.76.120.10;transport=tcp;r2=on;lr;ftag=UJaBmJ-pu",
                  "sip:10.255.0.1;transport=tcp;r2=on;lr;ftag=UJaBmJ-pu"),
                 "sip:+18004444444@10.239.216.224:5070;transport=tcp", True),
    DialogSample("sipgate-200", "kamailio/kamailio issue #2961", SIPGATE_200,
                 ("sip:217.10.68.150;lr", "sip:172.20.40.8;lr"), "sip:217.10.77.61:5060", True),
    DialogSample("comma-separated-rr", "belle-sip tester/belle_sip_headers_tester.c",
                 COMMA_RR_INVITE,
                 ("sip:212.27.52.5:5060;transport=udp;lr", "sip:212.27.52.5:5060;transport=udp;lr",
                  "sip:[2001:db8::5]:5060;transport=TCP;LR"),
                 "sip:caller@192.0.2.23:5060", True),
]
