"""Behind NAT: `sip_public_address` is what our SIP headers name (Via, Contact, Call-ID),
`media_public_address` what our SDP names (c= and o=), each defaulting to
`public_address`; with none of them, the bound host (or the local address towards the
peer)."""

from __future__ import annotations

import pytest

from sipbridge.config import load_config
from sipbridge.gateway import Gateway
from sipbridge.sip.sdp import parse_sdp
from tests.unit.callharness import OFFER, Harness, ack, invite

SIP = "192.0.2.10"
MEDIA = "198.51.100.20"
BOTH = "203.0.113.30"


def gateway(**config: str) -> Gateway:
    return Gateway(load_config(sip="127.0.0.1:5060", store="off", **config))


@pytest.mark.parametrize(("config", "sip", "media"), [
    ({}, "127.0.0.1", "127.0.0.1"),
    ({"public_address": BOTH}, BOTH, BOTH),
    ({"sip_public_address": SIP, "media_public_address": MEDIA}, SIP, MEDIA),
    ({"public_address": BOTH, "sip_public_address": SIP}, SIP, BOTH),
    ({"public_address": BOTH, "media_public_address": MEDIA}, BOTH, MEDIA),
    ({"sip_public_address": SIP}, SIP, "127.0.0.1"),
], ids=["none", "public", "both-split", "sip-only-over-public", "media-only-over-public",
        "sip-only"])
def test_each_address_defaults_to_public_address(config: dict[str, str], sip: str,
                                                 media: str) -> None:
    gw = gateway(**config)
    assert gw.advertised_host == sip
    assert gw.media_host("127.0.0.1") == media
    assert gw.media_host("trunk.example.com") == media  # a named peer: never looked up


def test_the_answer_names_the_sip_address_in_contact_and_the_media_address_in_sdp() -> None:
    gw = gateway(sip_public_address=SIP, media_public_address=MEDIA)
    h = Harness(auto_answer="silence", sip_host=gw.advertised_host, media_host=gw.media_host)
    h.send(invite(OFFER.format(direction="sendrecv")))
    assert h.statuses() == [200]
    ok = h.sent[-1]
    [contact] = ok.contacts
    assert f"@{SIP}:5060" in str(contact)
    answer = parse_sdp(ok.body)
    assert answer.connection == MEDIA
    assert answer.origin.address == MEDIA
    assert SIP not in ok.body.decode() and MEDIA not in ok.to_bytes().split(b"\r\n\r\n")[0].decode()
    h.send(ack(ok.to.tag or ""))
    assert not h.ended
