"""STUN on the media ports (RFC 5389), sans-IO: enough to recognise what phones send
beside their RTP and to answer a Binding Request so that their NAT binding stays open.

RFC 7983 demultiplexes a media port by the first octet: 0..3 is STUN, 128..191 RTP or
RTCP. `parse_stun` turns a datagram into a `StunMessage` or raises `StunError` (with a
short `reason`) when it is not a well-formed STUN message: 20-octet header with the top
two bits zero, the magic cookie, a length that is a multiple of 4 and matches the
datagram, attributes that add up to it, and a FINGERPRINT, when there is one, that is
last and right. `binding_response` is the answering policy: a success response with
XOR-MAPPED-ADDRESS (15.2) for a plain Binding Request, nothing for anything else.
Nothing here reads a socket.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass

MAGIC_COOKIE = 0x2112A442
HEADER = 20

# RFC 5389 6: the message type is the method with the class in bits 4 (C0) and 8 (C1).
BINDING = 0x001
REQUEST = 0x000
INDICATION = 0x010
SUCCESS = 0x100
ERROR = 0x110
_CLASS_MASK = 0x110

# RFC 5389 15 and 18.2.
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
XOR_MAPPED_ADDRESS = 0x0020
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E  # 15.5: "STUN" in ASCII

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02

_HEADER = struct.Struct("!HHI12s")
_ATTRIBUTE = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_XOR_PORT = MAGIC_COOKIE >> 16
_COOKIE = _U32.pack(MAGIC_COOKIE)


class StunError(Exception):
    """A datagram that is not a well-formed STUN message; `reason` says what is wrong:
    "short", "type", "cookie", "length", "attribute", "fingerprint"."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StunMessage:
    """One STUN message (RFC 5389 6): type, transaction id and the attributes in order
    (their values without padding)."""

    type: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = ()

    @property
    def method(self) -> int:
        t = self.type
        return (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)

    @property
    def kind(self) -> int:
        """REQUEST, INDICATION, SUCCESS or ERROR."""
        return self.type & _CLASS_MASK

    def attribute(self, kind: int) -> bytes | None:
        """The value of the first attribute of this type (RFC 5389 15: later ones are
        ignored), or None."""
        for attribute, value in self.attributes:
            if attribute == kind:
                return value
        return None


def parse_stun(data: bytes) -> StunMessage:
    """Parse a STUN message (RFC 5389 6 and 15), checking its FINGERPRINT if it has one
    (15.5). Raises `StunError` for anything else."""
    size = len(data)
    if size < HEADER:
        raise StunError("short", f"{size} bytes")
    kind, length, cookie, transaction = _HEADER.unpack_from(data)
    if kind & 0xC000:
        raise StunError("type", f"{kind:#06x}")
    if cookie != MAGIC_COOKIE:
        raise StunError("cookie", f"{cookie:#010x}")
    if length & 3 or length != size - HEADER:
        raise StunError("length", f"{length} in a {size}-byte datagram")
    attributes = []
    offset = HEADER
    while offset < size:
        if offset + 4 > size:
            raise StunError("attribute", "truncated header")
        attribute, length = _ATTRIBUTE.unpack_from(data, offset)
        start = offset + 4
        end = start + length
        if end > size:
            raise StunError("attribute", f"{attribute:#06x} runs past the end")
        if attribute == FINGERPRINT:
            # 15.5: the last attribute, the CRC-32 of all that precedes it, XOR "STUN".
            if length != 4 or end != size:
                raise StunError("fingerprint", "not a last 4-byte attribute")
            crc = zlib.crc32(data[:offset]) ^ FINGERPRINT_XOR
            if _U32.unpack_from(data, start)[0] != crc:
                raise StunError("fingerprint", "CRC mismatch")
        attributes.append((attribute, bytes(data[start:end])))
        offset = end + (-length & 3)  # values are padded to 32 bits (15)
    if offset != size:
        raise StunError("attribute", "padding runs past the end")
    return StunMessage(kind, bytes(transaction), tuple(attributes))


def xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    """Read an XOR-MAPPED-ADDRESS value (RFC 5389 15.2) as (host, port)."""
    if len(value) < 8 or value[0] != 0:
        raise StunError("attribute", "XOR-MAPPED-ADDRESS")
    family = value[1]
    port = struct.unpack_from("!H", value, 2)[0] ^ _XOR_PORT
    if family == FAMILY_IPV4 and len(value) == 8:
        key = _COOKIE
    elif family == FAMILY_IPV6 and len(value) == 20:
        key = _COOKIE + transaction_id
    else:
        raise StunError("attribute", f"XOR-MAPPED-ADDRESS family {family}")
    packed = bytes(a ^ b for a, b in zip(value[4:], key, strict=True))
    return str(ipaddress.ip_address(packed)), port


def xor_mapped_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """An XOR-MAPPED-ADDRESS attribute, header included (RFC 5389 15.2). An IPv6 host
    may carry a zone (``fe80::1%eth0``), which is not sent."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if address.version == 4:
        family, key = FAMILY_IPV4, _COOKIE
    else:
        family, key = FAMILY_IPV6, _COOKIE + transaction_id
    packed = bytes(a ^ b for a, b in zip(address.packed, key, strict=True))
    value = struct.pack("!BBH", 0, family, (port & 0xFFFF) ^ _XOR_PORT) + packed
    return _ATTRIBUTE.pack(XOR_MAPPED_ADDRESS, len(value)) + value


def build_stun(kind: int, transaction_id: bytes, attributes: bytes = b"", *,
               fingerprint: bool = False) -> bytes:
    """A STUN message of `kind` (method | class) around already-encoded attributes, with
    a FINGERPRINT last if asked (RFC 5389 6, 15.5)."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction id is 96 bits")
    if len(attributes) & 3:
        raise ValueError("STUN attributes are padded to 32 bits")
    extra = 8 if fingerprint else 0
    message = _HEADER.pack(kind, len(attributes) + extra, MAGIC_COOKIE,
                           transaction_id) + attributes
    if fingerprint:
        crc = zlib.crc32(message) ^ FINGERPRINT_XOR
        message += _ATTRIBUTE.pack(FINGERPRINT, 4) + _U32.pack(crc)
    return message


def build_binding_response(transaction_id: bytes, host: str, port: int, *,
                           fingerprint: bool = False) -> bytes:
    """A Binding Success Response telling the requester where it was seen from
    (RFC 5389 7.3.1.1): XOR-MAPPED-ADDRESS and, if asked, FINGERPRINT; nothing else."""
    return build_stun(BINDING | SUCCESS, transaction_id,
                      xor_mapped_address(host, port, transaction_id),
                      fingerprint=fingerprint)


def binding_response(message: StunMessage, host: str, port: int) -> bytes | None:
    """The answer to a STUN message from (host, port), or None when it gets none.

    Only a Binding Request is answered (indications and responses never are, RFC 5389
    7.3), and only one that needs nothing the media port cannot give: a request with
    MESSAGE-INTEGRITY or USERNAME (an ICE check, whose password this side never agreed)
    or with any other comprehension-required attribute would need an error response
    (10.1.2, 7.3.1), and silence is the smaller answer to a datagram whose source
    address is not proven. The response carries FINGERPRINT when the request did.
    """
    if message.type != BINDING | REQUEST:
        return None
    fingerprint = False
    for attribute, _ in message.attributes:
        if attribute == FINGERPRINT:
            fingerprint = True
        elif attribute < 0x8000:  # comprehension-required (15, 18.2)
            return None
    return build_binding_response(message.transaction_id, host, port,
                                  fingerprint=fingerprint)
