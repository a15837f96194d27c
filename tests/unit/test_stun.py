"""STUN on media ports (RFC 5389), sans-IO: parsing checked against the test vectors of
RFC 5769, building checked against them and by round trip, the answering policy."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.media.stun import (
    BINDING,
    FINGERPRINT,
    INDICATION,
    MESSAGE_INTEGRITY,
    REQUEST,
    SOFTWARE,
    SUCCESS,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    StunError,
    binding_response,
    build_binding_response,
    build_stun,
    parse_stun,
    xor_address,
    xor_mapped_address,
)

# RFC 5769 2.1 to 2.3: a Binding Request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
# MESSAGE-INTEGRITY, FINGERPRINT) and its success responses for 192.0.2.1:32853 and
# [2001:db8:1234:5678:11:2233:4455:6677]:32853.
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
SAMPLE_REQUEST = bytes.fromhex(
    "00010058" "2112a442" "b7e7a701bc34d686fa87dfae"
    "80220010" "5354554e207465737420636c69656e74"
    "00240004" "6e0001ff"
    "80290008" "932ff9b151263b36"
    "00060009" "6576746a3a68367659202020"
    "00080014" "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004" "e57a3bcf"
)
SAMPLE_IPV4_XOR = bytes.fromhex("00200008" "0001a147e112a643")
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c" "2112a442" "b7e7a701bc34d686fa87dfae"
    "8022000b" "7465737420766563746f7220"
    + SAMPLE_IPV4_XOR.hex()
    + "00080014" "2b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004" "c07d4c96"
)
SAMPLE_IPV6_XOR = bytes.fromhex("00200014" "0002a147" "0113a9faa5d3f179bc25f4b5bed2b9d9")
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "01010048" "2112a442" "b7e7a701bc34d686fa87dfae"
    "8022000b" "7465737420766563746f7220"
    + SAMPLE_IPV6_XOR.hex()
    + "00080014" "a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004" "c8fb0b4c"
)
IPV6 = "2001:db8:1234:5678:11:2233:4455:6677"


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)


def test_the_rfc_5769_request_parses_with_its_fingerprint_checked() -> None:
    message = parse_stun(SAMPLE_REQUEST)
    assert message.type == BINDING | REQUEST and message.kind == REQUEST
    assert message.method == BINDING
    assert message.transaction_id == TID
    assert [a for a, _ in message.attributes] == [
        SOFTWARE, 0x0024, 0x8029, USERNAME, MESSAGE_INTEGRITY, FINGERPRINT]
    assert message.attribute(SOFTWARE) == b"STUN test client"
    assert message.attribute(USERNAME) == b"evtj:h6vY"  # the value without its padding


@pytest.mark.parametrize(("data", "address"), [
    (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
    (SAMPLE_IPV6_RESPONSE, (IPV6, 32853)),
])
def test_the_rfc_5769_responses_give_their_mapped_address(
    data: bytes, address: tuple[str, int]
) -> None:
    message = parse_stun(data)
    assert message.type == BINDING | SUCCESS and message.transaction_id == TID
    value = message.attribute(XOR_MAPPED_ADDRESS)
    assert value is not None
    assert xor_address(value, TID) == address


@pytest.mark.parametrize(("host", "expected"), [
    ("192.0.2.1", SAMPLE_IPV4_XOR), (IPV6, SAMPLE_IPV6_XOR)])
def test_xor_mapped_address_is_built_as_the_rfc_5769_vector(host: str, expected: bytes) -> None:
    assert xor_mapped_address(host, 32853, TID) == expected


@pytest.mark.parametrize("host", ["192.0.2.1", IPV6])
def test_a_binding_response_round_trips(host: str) -> None:
    data = build_binding_response(TID, host, 32853)
    assert data[:4] == bytes.fromhex("0101") + struct.pack("!H", len(data) - 20)
    message = parse_stun(data)
    assert message.type == BINDING | SUCCESS and message.transaction_id == TID
    assert [a for a, _ in message.attributes] == [XOR_MAPPED_ADDRESS]
    value = message.attribute(XOR_MAPPED_ADDRESS)
    assert value is not None and xor_address(value, TID) == (host, 32853)
    signed = build_binding_response(TID, host, 32853, fingerprint=True)
    assert len(signed) == len(data) + 8
    assert [a for a, _ in parse_stun(signed).attributes] == [XOR_MAPPED_ADDRESS, FINGERPRINT]


@given(tid=st.binary(min_size=12, max_size=12), port=st.integers(0, 65535),
       v4=st.integers(0, 2**32 - 1), v6=st.integers(0, 2**128 - 1), six=st.booleans())
def test_any_address_round_trips(tid: bytes, port: int, v4: int, v6: int, six: bool) -> None:
    host = str(ipaddress.IPv6Address(v6) if six else ipaddress.IPv4Address(v4))
    message = parse_stun(build_binding_response(tid, host, port, fingerprint=True))
    value = message.attribute(XOR_MAPPED_ADDRESS)
    assert value is not None and xor_address(value, tid) == (host, port)


def test_an_ipv6_zone_is_not_sent() -> None:
    assert xor_mapped_address("fe80::1%lo", 4000, TID) == xor_mapped_address("fe80::1", 4000,
                                                                            TID)


def test_a_plain_binding_request_gets_the_smallest_answer() -> None:
    request = build_stun(BINDING | REQUEST, TID)
    answer = binding_response(parse_stun(request), "192.0.2.1", 32853)
    assert answer == build_binding_response(TID, "192.0.2.1", 32853)
    assert answer is not None and len(answer) == 32  # header and XOR-MAPPED-ADDRESS only
    # Optional attributes (SOFTWARE) are ignored; a FINGERPRINT is answered with one.
    request = build_stun(BINDING | REQUEST, TID, attribute(SOFTWARE, b"phone 1.0"),
                         fingerprint=True)
    answer = binding_response(parse_stun(request), IPV6, 5004)
    assert answer == build_binding_response(TID, IPV6, 5004, fingerprint=True)


@pytest.mark.parametrize("data", [
    build_stun(BINDING | INDICATION, TID),  # RFC 6263 keep-alive: nothing to answer
    build_binding_response(TID, "192.0.2.1", 32853),  # a response is never answered
    SAMPLE_IPV4_RESPONSE,
    build_stun(0x0003 | REQUEST, TID),  # a method other than Binding (TURN Allocate)
    SAMPLE_REQUEST,  # an ICE check: MESSAGE-INTEGRITY this side cannot verify
    build_stun(BINDING | REQUEST, TID, attribute(USERNAME, b"evtj:h6vY")),
    build_stun(BINDING | REQUEST, TID, attribute(0x0003, bytes(4))),  # comprehension-required
])
def test_what_is_not_a_plain_binding_request_gets_no_answer(data: bytes) -> None:
    assert binding_response(parse_stun(data), "192.0.2.1", 32853) is None


def corrupt_fingerprint(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "short"),
    (SAMPLE_REQUEST[:19], "short"),
    (b"\x40" + SAMPLE_REQUEST[1:], "type"),  # the top two bits are zero (RFC 5389 6)
    (SAMPLE_REQUEST[:4] + b"\x21\x12\xa4\x43" + SAMPLE_REQUEST[8:], "cookie"),
    (SAMPLE_REQUEST[:-4], "length"),  # the header promises 4 more bytes
    (SAMPLE_REQUEST + bytes(4), "length"),
    (bytes.fromhex("00010002") + SAMPLE_REQUEST[4:20] + b"\x80\x22", "length"),  # not /4
    (bytes.fromhex("00010008") + SAMPLE_REQUEST[4:20] + bytes.fromhex("8022000c") + bytes(4),
     "attribute"),  # a value longer than the message
    (bytes.fromhex("00010008") + SAMPLE_REQUEST[4:20] + bytes.fromhex("80220005") + bytes(4),
     "attribute"),  # its padding runs past the end
    (corrupt_fingerprint(SAMPLE_REQUEST), "fingerprint"),
    (corrupt_fingerprint(SAMPLE_IPV6_RESPONSE), "fingerprint"),
    (build_stun(BINDING | REQUEST, TID, attribute(FINGERPRINT, bytes(4))
                + attribute(SOFTWARE, b"x")), "fingerprint"),  # not last
])
def test_malformed_stun_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(StunError) as info:
        parse_stun(data)
    assert info.value.reason == reason


def test_build_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(ValueError):
        build_stun(BINDING | REQUEST, TID[:11])
    with pytest.raises(ValueError):
        build_stun(BINDING | REQUEST, TID, b"\x80\x22\x00\x01x")
