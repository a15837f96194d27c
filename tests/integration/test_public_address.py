"""Behind NAT, with different signalling and media addresses: SIPp reads the gateway's
200 OK, whose Contact names `sip_public_address` and whose SDP (c= and o=) names
`media_public_address`; the call itself still runs over loopback, answered where the
caller's Via says (received/rport), whatever the addresses announce."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from sipbridge.demo.baresip import find_free_port
from tests.integration.gateway import Gateway
from tests.integration.sipp import SCENARIOS, run_sipp

pytestmark = pytest.mark.integration

SIP = "192.0.2.10"
MEDIA = "198.51.100.20"


def test_the_answer_names_the_sip_and_the_media_public_addresses(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = start_gateway(auto_answer="silence", sip_public_address=SIP,
                                     media_public_address=MEDIA)
    scenario = tmp_path / "listen.xml"
    scenario.write_text((SCENARIOS / "uac_listen.xml").read_text()
                        .replace("__RTP_PORT__", str(find_free_port()))
                        .replace("__HOLD__", "300"))
    result = run_sipp(gateway.address, scenario, tmp_path / "sipp", timeout=30)
    assert result.ok, result.describe()
    ok = re.search(r"SIP/2\.0 200 OK\r?\n(.*?)\r?\n\r?\n(.*?)(?=\r?\n\r?\n|-{10})",
                   result.messages, re.S)
    assert ok is not None, result.messages
    head, body = ok.groups()
    assert re.search(rf"(?mi)^Contact: <sip:sipbridge@{re.escape(SIP)}:{gateway.port}>",
                     head), head
    assert f"c=IN IP4 {MEDIA}" in body, body
    assert re.search(rf"(?m)^o=\S+ \d+ \d+ IN IP4 {re.escape(MEDIA)}", body), body
    assert MEDIA not in head and SIP not in body
