"""RTP and RTCP packets and receiver statistics (RFC 3550), sans-IO.

`parse_rtp` turns a datagram into an `RtpPacket` or raises `RtpError` whose `reason`
says why it was dropped; `build_rtp` (and `RtpPacket.to_bytes`) is its inverse.
`parse_rtcp` reads a compound RTCP packet into SR, RR, SDES and BYE records and
`build_rtcp` writes one. `ReceptionStats` keeps the per-source sequence, loss and
jitter state of RFC 3550 appendix A and produces the report blocks. Nothing here
reads a socket or a clock: arrival times are passed in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeAlias

RTP_VERSION = 2
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01 (RFC 3550 4)

# RFC 3550 5.1: V P X CC | M PT | sequence | timestamp | SSRC.
_RTP_HEADER = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
# Runs of n 32-bit words, for CSRC lists (CC is 4 bits) and BYE sources (SC is 5 bits).
_WORDS = tuple(struct.Struct(f"!{n}I") for n in range(32))
# RFC 3550 6.4: V P RC | PT | length (32-bit words minus one).
_RTCP_HEADER = struct.Struct("!BBH")
# RFC 3550 6.4.1 sender info, preceded by the sender's SSRC.
_SENDER_INFO = struct.Struct("!IIIIII")
# RFC 3550 6.4.1 report block; fraction lost and cumulative lost share one word.
_REPORT_BLOCK = struct.Struct("!IIIIII")

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
SDES_CNAME = 1


class RtpError(Exception):
    """An RTP or RTCP datagram that was dropped; `reason` is a short counter key.

    Reasons: "short", "version", "truncated", "padding".
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP data packet (RFC 3550 5.1). Header extensions are not kept."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()

    def to_bytes(self) -> bytes:
        """Serialise without extension or padding (RFC 3550 5.1)."""
        packet = build_rtp(
            self.payload_type, self.sequence, self.timestamp, self.ssrc,
            self.payload, self.marker,
        )
        count = len(self.csrcs)
        if not count:
            return packet
        if count > 15:
            raise ValueError(f"at most 15 CSRCs, got {count}")
        try:
            csrcs = _WORDS[count].pack(*self.csrcs)
        except struct.error as exc:
            raise ValueError(f"CSRCs {self.csrcs} are not 32 bits") from exc
        return bytes((0x80 | count,)) + packet[1:12] + csrcs + packet[12:]


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
) -> bytes:
    """Build an RTP packet with no CSRC, extension or padding (RFC 3550 5.1).

    `sequence` and `timestamp` are taken modulo 2**16 and 2**32 so callers may count
    freely; a payload type outside 0..127 or an SSRC outside 32 bits is a ValueError.
    """
    if payload_type > 127 or payload_type < 0:
        raise ValueError(f"payload type {payload_type} is not 7 bits")
    try:
        header = _RTP_HEADER.pack(
            0x80, payload_type | 0x80 if marker else payload_type,
            sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc,
        )
    except struct.error as exc:
        raise ValueError(f"SSRC {ssrc} is not 32 bits") from exc
    return header + payload


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet (RFC 3550 5.1), skipping a header extension (5.3.1).

    Padding (the P bit, 5.1) is stripped from `payload`. Raises `RtpError` with
    reason "short", "version", "truncated" or "padding".
    """
    size = len(data)
    if size < 12:
        raise RtpError("short", f"{size} bytes")
    first, second, sequence, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError("version", str(first >> 6))
    offset = 12
    csrcs: tuple[int, ...] = ()
    count = first & 0x0F
    if count:
        offset += 4 * count
        if offset > size:
            raise RtpError("truncated", f"{count} CSRCs in {size} bytes")
        csrcs = _WORDS[count].unpack_from(data, 12)
    if first & 0x10:
        # RFC 3550 5.3.1: 16 bits profile-defined, 16 bits length in 32-bit words.
        if offset + 4 > size:
            raise RtpError("truncated", "extension header")
        offset += 4 + 4 * _U16.unpack_from(data, offset + 2)[0]
        if offset > size:
            raise RtpError("truncated", "extension")
    end = size
    if first & 0x20:
        # The last octet counts the padding octets, itself included.
        padding = data[-1]
        if padding == 0 or padding > size - offset:
            raise RtpError("padding", f"{padding} octets")
        end -= padding
    return RtpPacket(
        second & 0x7F, sequence, timestamp, ssrc, data[offset:end], second > 0x7F, csrcs
    )


def is_rtcp(data: bytes) -> bool:
    """Tell RTCP from RTP on a shared port by the second octet (RFC 5761 4).

    RTCP packet types 192..223 fall where RTP would carry the marker bit and payload
    types 64..95, which RFC 5761 forbids for multiplexed sessions.
    """
    return len(data) > 1 and 192 <= data[1] <= 223


def ntp_timestamp(unix_time: float) -> int:
    """The 64-bit NTP timestamp of a Unix time (RFC 3550 4), wrapping with the NTP era."""
    seconds = int(unix_time // 1)
    fraction = int((unix_time - seconds) * 4_294_967_296.0)
    return (((seconds + NTP_EPOCH_OFFSET) << 32) | fraction) & 0xFFFFFFFFFFFFFFFF


def middle_32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as carried in LSR (RFC 3550 6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception report for one source (RFC 3550 6.4.1)."""

    ssrc: int
    fraction_lost: int  # 0..255: lost / expected in the interval, times 256
    cumulative_lost: int  # signed 24 bits
    highest_seq: int  # extended: cycles << 16 | sequence
    jitter: int  # timestamp units
    lsr: int = 0
    dlsr: int = 0  # 1/65536 seconds

    def to_bytes(self) -> bytes:
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError(f"fraction lost {self.fraction_lost} is not 8 bits")
        if not -0x800000 <= self.cumulative_lost <= 0x7FFFFF:
            raise ValueError(f"cumulative lost {self.cumulative_lost} is not 24 bits")
        return _REPORT_BLOCK.pack(
            self.ssrc, self.fraction_lost << 24 | (self.cumulative_lost & 0xFFFFFF),
            self.highest_seq & 0xFFFFFFFF, self.jitter, self.lsr, self.dlsr,
        )


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR: sender info plus reception reports (RFC 3550 6.4.1)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc, (self.ntp_timestamp >> 32) & 0xFFFFFFFF,
            self.ntp_timestamp & 0xFFFFFFFF, self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF, self.octet_count & 0xFFFFFFFF,
        )
        return _rtcp(RTCP_SR, len(self.reports), body + _blocks(self.reports))


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR: reception reports from a source that is not sending (RFC 3550 6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        body = _U32.pack(self.ssrc) + _blocks(self.reports)
        return _rtcp(RTCP_RR, len(self.reports), body)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES with one CNAME per chunk (RFC 3550 6.5, 6.5.1); other items are dropped."""

    chunks: tuple[tuple[int, str], ...]

    def to_bytes(self) -> bytes:
        parts = []
        for ssrc, cname in self.chunks:
            text = cname.encode()
            if len(text) > 255:
                raise ValueError("CNAME longer than 255 octets")
            chunk = _U32.pack(ssrc) + bytes((SDES_CNAME, len(text))) + text
            # At least one null octet ends the item list, then pad to 32 bits (6.5).
            parts.append(chunk + bytes(4 - len(chunk) % 4))
        return _rtcp(RTCP_SDES, len(self.chunks), b"".join(parts))


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE: the sources are leaving, with an optional reason (RFC 3550 6.6)."""

    ssrcs: tuple[int, ...]
    reason: str | None = None

    def to_bytes(self) -> bytes:
        body = b"".join(_U32.pack(ssrc) for ssrc in self.ssrcs)
        if self.reason is not None:
            text = self.reason.encode()
            if len(text) > 255:
                raise ValueError("BYE reason longer than 255 octets")
            body += bytes((len(text),)) + text
            body += bytes(-len(body) % 4)
        return _rtcp(RTCP_BYE, len(self.ssrcs), body)


RtcpPacket: TypeAlias = SenderReport | ReceiverReport | SourceDescription | Bye


def _blocks(reports: tuple[ReportBlock, ...]) -> bytes:
    return b"".join(block.to_bytes() for block in reports)


def _rtcp(packet_type: int, count: int, body: bytes) -> bytes:
    """Prefix an RTCP header (RFC 3550 6.4.1); `body` is a multiple of 4 octets."""
    if count > 31:
        raise ValueError(f"at most 31 items in one RTCP packet, got {count}")
    return _RTCP_HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


def build_rtcp(*packets: RtcpPacket) -> bytes:
    """Concatenate RTCP packets into one compound packet (RFC 3550 6.1)."""
    return b"".join(packet.to_bytes() for packet in packets)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (RFC 3550 6.1, 6.4 to 6.6).

    Packet types other than SR, RR, SDES and BYE (APP, XR, feedback) are skipped by
    their length field. The compound-packet rules of 6.1 (SR or RR first, CNAME
    present) are not enforced, so reduced-size RTCP (RFC 5506) parses too. Raises
    `RtpError` ("short", "version", "truncated", "padding") when the lengths do not
    add up.
    """
    size = len(data)
    if size < 4:
        raise RtpError("short", f"{size} bytes")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < size:
        if size - offset < 4:
            raise RtpError("truncated", f"{size - offset} trailing octets")
        first, packet_type, length = _RTCP_HEADER.unpack_from(data, offset)
        if first >> 6 != RTP_VERSION:
            raise RtpError("version", str(first >> 6))
        end = offset + 4 * (length + 1)
        if end > size:
            raise RtpError("truncated", f"packet type {packet_type} runs past the end")
        body_end = end
        if first & 0x20:
            padding = data[end - 1]
            if padding == 0 or padding > end - offset - 4:
                raise RtpError("padding", f"{padding} octets")
            body_end -= padding
        count = first & 0x1F
        start = offset + 4
        if packet_type == RTCP_SR:
            packets.append(_parse_sr(data, start, body_end, count))
        elif packet_type == RTCP_RR:
            packets.append(_parse_rr(data, start, body_end, count))
        elif packet_type == RTCP_SDES:
            packets.append(_parse_sdes(data, start, body_end, count))
        elif packet_type == RTCP_BYE:
            packets.append(_parse_bye(data, start, body_end, count))
        offset = end
    return packets


def _parse_blocks(data: bytes, start: int, end: int, count: int) -> tuple[ReportBlock, ...]:
    if start + 24 * count > end:
        raise RtpError("truncated", f"{count} report blocks")
    blocks = []
    for index in range(count):
        ssrc, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            data, start + 24 * index
        )
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def _parse_sr(data: bytes, start: int, end: int, count: int) -> SenderReport:
    if start + 24 > end:
        raise RtpError("truncated", "sender info")
    ssrc, ntp_high, ntp_low, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(data, start)
    reports = _parse_blocks(data, start + 24, end, count)
    return SenderReport(ssrc, ntp_high << 32 | ntp_low, rtp_ts, packets, octets, reports)


def _parse_rr(data: bytes, start: int, end: int, count: int) -> ReceiverReport:
    if start + 4 > end:
        raise RtpError("truncated", "receiver report")
    (ssrc,) = _U32.unpack_from(data, start)
    return ReceiverReport(ssrc, _parse_blocks(data, start + 4, end, count))


def _parse_sdes(data: bytes, pos: int, end: int, count: int) -> SourceDescription:
    chunks = []
    for _ in range(count):
        if pos + 4 > end:
            raise RtpError("truncated", "SDES chunk")
        (ssrc,) = _U32.unpack_from(data, pos)
        pos += 4
        cname = ""
        while True:
            if pos >= end:
                raise RtpError("truncated", "SDES items")
            item = data[pos]
            if item == 0:
                break
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RtpError("truncated", f"SDES item {item}")
            if item == SDES_CNAME:
                cname = data[pos + 2 : pos + 2 + data[pos + 1]].decode("utf-8", "replace")
            pos += 2 + data[pos + 1]
        # Skip the null item and the padding to the next 32-bit boundary (6.5).
        pos = (pos + 4) & ~3
        chunks.append((ssrc, cname))
    return SourceDescription(tuple(chunks))


def _parse_bye(data: bytes, pos: int, end: int, count: int) -> Bye:
    if pos + 4 * count > end:
        raise RtpError("truncated", f"BYE with {count} sources")
    ssrcs: tuple[int, ...] = _WORDS[count].unpack_from(data, pos)
    pos += 4 * count
    reason = None
    if pos < end:
        length = data[pos]
        if pos + 1 + length > end:
            raise RtpError("truncated", "BYE reason")
        reason = data[pos + 1 : pos + 1 + length].decode("utf-8", "replace")
    return Bye(ssrcs, reason)


MAX_DROPOUT = 3000  # RFC 3550 A.1
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
_SEQ_MOD = 1 << 16
_SEEN_WINDOW = (1 << 128) - 1  # bitmap of recent sequence numbers, > MAX_MISORDER


class ReceptionStats:
    """Per-source reception state of RFC 3550 appendix A: A.1, A.3 and A.8.

    `update` implements A.1's update_seq and returns its verdict: True when the packet
    is counted (the source is valid and the sequence number plausible), False while
    the source is on probation (the first of MIN_SEQUENTIAL in-order packets is not
    counted, as in A.1) and for the first packet after a jump of MAX_DROPOUT or more,
    which is only accepted, as a restart, when the next packet follows it. A False
    packet may still be played; it just does not enter the statistics. Duplicates
    and reordered packets are counted (A.1 does), and tallied in `duplicates` and
    `reordered`; duplicates do not feed the jitter estimate. `lost` is A.3's figure for
    the report block, where a duplicate offsets a loss; `missing` counts the sequence
    numbers never received, which a duplicate does not hide.
    """

    __slots__ = (
        "_bad_seq", "_base_seq", "_cycles", "_dup_base", "_expected_prior", "_jitter",
        "_max_seq", "_probation", "_received", "_received_prior", "_seen", "_transit",
        "duplicates", "reordered",
    )

    def __init__(self) -> None:
        self._probation = -1  # -1: no packet yet
        self._max_seq = 0
        self._base_seq = 0
        self._bad_seq = _SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._dup_base = 0  # `duplicates` when the source became valid: those are not counted
        self._received_prior = 0
        self._expected_prior = 0
        self._transit: int | None = None
        self._jitter = 0.0
        self._seen = 0
        self.duplicates = 0
        self.reordered = 0

    def _init_seq(self, seq: int) -> None:
        """RFC 3550 A.1 init_seq; also restarts the jitter reference and the bitmap."""
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = _SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._dup_base = self.duplicates
        self._received_prior = 0
        self._expected_prior = 0
        self._transit = None
        self._seen = 1

    def update(self, sequence: int, timestamp: int, arrival: int) -> bool:
        """Account one packet (RFC 3550 A.1, A.8); `arrival` is in timestamp units."""
        seq = sequence & 0xFFFF
        if self._probation:
            if self._probation < 0:
                self._max_seq = (seq - 1) & 0xFFFF
                self._probation = MIN_SEQUENTIAL
            if seq != (self._max_seq + 1) & 0xFFFF:
                self._probation = MIN_SEQUENTIAL - 1
                self._max_seq = seq
                return False
            self._probation -= 1
            self._max_seq = seq
            if self._probation:
                return False
            self._init_seq(seq)
        else:
            udelta = (seq - self._max_seq) & 0xFFFF
            if udelta < MAX_DROPOUT:
                if udelta == 0:
                    self.duplicates += 1
                    self._received += 1
                    return True
                if seq < self._max_seq:
                    self._cycles += _SEQ_MOD
                self._max_seq = seq
                self._seen = ((self._seen << udelta) | 1) & _SEEN_WINDOW
            elif udelta <= _SEQ_MOD - MAX_MISORDER:
                if seq != self._bad_seq:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    return False
                # Two sequential packets after a big jump: the source restarted.
                self._init_seq(seq)
            else:
                bit = 1 << (_SEQ_MOD - udelta)
                if self._seen & bit:
                    self.duplicates += 1
                    self._received += 1
                    return True
                self._seen |= bit
                self.reordered += 1
        self._received += 1
        # RFC 3550 A.8, on 32-bit wrapping timestamps: J += (|D| - J) / 16.
        transit = (arrival - timestamp) & 0xFFFFFFFF
        if self._transit is not None:
            d = (transit - self._transit) & 0xFFFFFFFF
            if d > 0x7FFFFFFF:
                d = 0x100000000 - d
            self._jitter += (d - self._jitter) / 16.0
        self._transit = transit
        return True

    @property
    def received(self) -> int:
        """Packets counted since the source became valid (or restarted)."""
        return self._received

    @property
    def extended_max(self) -> int:
        """Highest sequence number seen, with wrap-around cycles (RFC 3550 A.3)."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the base sequence number (RFC 3550 A.3)."""
        if self._probation:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative loss; negative when duplicates outnumber losses (RFC 3550 A.3)."""
        return self.expected - self._received

    @property
    def missing(self) -> int:
        """Sequence numbers from the base to the highest seen that never arrived.

        A duplicate is not a received packet here, so it cannot offset a loss as it
        does in `lost`. A packet older than the base (late after a restart) is not in
        the range, hence the floor of 0.
        """
        unique = self._received - (self.duplicates - self._dup_base)
        return max(self.expected - unique, 0)

    @property
    def fraction_lost(self) -> int:
        """Loss since the last report block, in 1/256 (RFC 3550 A.3); 0 if none or negative."""
        expected = self.expected - self._expected_prior
        lost = expected - (self._received - self._received_prior)
        if expected <= 0 or lost <= 0:
            return 0
        return (lost << 8) // expected

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate in timestamp units (RFC 3550 A.8)."""
        return self._jitter

    def jitter_ms(self, clock_rate: int) -> float:
        """Interarrival jitter in milliseconds for a payload clock rate (e.g. 8000)."""
        return self._jitter * 1000.0 / clock_rate

    def report_block(self, ssrc: int, lsr: int = 0, dlsr: int = 0) -> ReportBlock:
        """Make the report block for `ssrc` and start a new loss interval (RFC 3550 A.3).

        Cumulative loss is clamped to the signed 24-bit field, as A.3 prescribes.
        """
        fraction = self.fraction_lost
        self._expected_prior = self.expected
        self._received_prior = self._received
        lost = max(-0x800000, min(0x7FFFFF, self.lost))
        return ReportBlock(
            ssrc, fraction, lost, self.extended_max & 0xFFFFFFFF,
            min(int(self._jitter), 0xFFFFFFFF), lsr, dlsr,
        )
