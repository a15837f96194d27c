"""RTP and RTCP packets and reception statistics (RFC 3550, RFC 5761)."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.media.rtp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtpError,
    RtpPacket,
    SenderReport,
    SourceDescription,
    build_rtcp,
    build_rtp,
    is_rtcp,
    middle_32,
    ntp_timestamp,
    parse_rtcp,
    parse_rtp,
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

# V=2, M=1 PT=0 (PCMU), seq 0x1234, ts 1000, SSRC 0xDEADBEEF, 160 octets of mu-law silence.
PCMU_VECTOR = bytes.fromhex("80801234000003e8deadbeef") + b"\xff" * 160


# -- RTP ---------------------------------------------------------------------------------


def test_pcmu_known_vector_parses_and_builds() -> None:
    packet = parse_rtp(PCMU_VECTOR)
    assert packet == RtpPacket(0, 0x1234, 1000, 0xDEADBEEF, b"\xff" * 160, marker=True)
    assert packet.to_bytes() == PCMU_VECTOR
    assert build_rtp(0, 0x1234, 1000, 0xDEADBEEF, b"\xff" * 160, marker=True) == PCMU_VECTOR
    assert build_rtp(8, 1, 2, 3, b"")[:2] == b"\x80\x08"


@given(
    pt=st.integers(0, 127), seq=u16, ts=u32, ssrc=u32,
    payload=st.binary(max_size=200), marker=st.booleans(),
    csrcs=st.lists(u32, max_size=15).map(tuple),
)
def test_round_trip(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool, csrcs: tuple[int, ...]
) -> None:
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrcs)
    data = packet.to_bytes()
    assert len(data) == 12 + 4 * len(csrcs) + len(payload)
    assert parse_rtp(data) == packet
    if not csrcs:
        assert build_rtp(pt, seq, ts, ssrc, payload, marker) == data


def test_build_masks_sequence_and_timestamp() -> None:
    packet = parse_rtp(build_rtp(0, 0x10000 + 5, 0x100000000 + 7, 1, b"x"))
    assert (packet.sequence, packet.timestamp) == (5, 7)


@pytest.mark.parametrize("pt, ssrc", [(128, 1), (-1, 1), (0, 1 << 32)])
def test_build_rejects_out_of_range_fields(pt: int, ssrc: int) -> None:
    with pytest.raises(ValueError):
        build_rtp(pt, 0, 0, ssrc, b"")


def test_csrcs_are_parsed_and_payload_follows_them() -> None:
    data = bytes.fromhex("8200000100000002000000030000000a0000000b") + b"audio"
    packet = parse_rtp(data)
    assert packet.csrcs == (10, 11)
    assert packet.payload == b"audio"


def test_header_extension_is_skipped() -> None:
    # X=1, CC=1; extension profile 0xBEDE (RFC 8285), 2 words of data.
    header = bytes.fromhex("9100000100000002000000030000000a")
    extension = bytes.fromhex("bede0002") + b"\x10\xaa\x00\x00" + b"\x22\xbb\xcc\x00"
    packet = parse_rtp(header + extension + b"payload")
    assert packet.csrcs == (10,)
    assert packet.payload == b"payload"
    # An empty extension (length 0) is just its 4-octet header.
    assert parse_rtp(bytes.fromhex("900000010000000200000003abcd0000") + b"p").payload == b"p"


def test_padding_is_stripped() -> None:
    header = bytes.fromhex("a0000001000000020000000" + "3")
    assert parse_rtp(header + b"abcd" + b"\x00\x00\x03").payload == b"abcd"
    # Padding may take the whole payload; its count octet counts itself.
    assert parse_rtp(header + b"\x00\x00\x00\x04").payload == b""
    assert parse_rtp(header + b"a\x01").payload == b"a"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "short"),
        (PCMU_VECTOR[:11], "short"),
        (b"\x40" + PCMU_VECTOR[1:], "version"),
        (b"\xc0" + PCMU_VECTOR[1:], "version"),
        (b"\x00" + PCMU_VECTOR[1:], "version"),
        # CC=15 needs 60 octets of CSRCs; only 4 follow the fixed header.
        (b"\x8f" + PCMU_VECTOR[1:12] + b"\x00\x00\x00\x01", "truncated"),
        # X=1 but the extension header itself is missing.
        (b"\x90" + PCMU_VECTOR[1:12] + b"\xbe\xde", "truncated"),
        # X=1 with length 3 words but only 2 words follow.
        (b"\x90" + PCMU_VECTOR[1:12] + bytes.fromhex("bede0003") + bytes(8), "truncated"),
        # P=1 with a padding count of 0.
        (b"\xa0" + PCMU_VECTOR[1:12] + b"abc\x00", "padding"),
        # P=1 with a count larger than the payload.
        (b"\xa0" + PCMU_VECTOR[1:12] + b"abc\x05", "padding"),
        # P=1 on a packet with no payload at all: the count octet would be in the header.
        (b"\xa0" + PCMU_VECTOR[1:12], "padding"),
    ],
)
def test_parse_errors_carry_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError) as info:
        parse_rtp(data)
    assert info.value.reason == reason


@pytest.mark.parametrize("pt", [0, 8, 101, 0 | 0x80, 8 | 0x80, 101 | 0x80, 127])
def test_is_rtcp_false_for_rtp(pt: int) -> None:
    assert not is_rtcp(b"\x80" + bytes((pt,)) + bytes(10))


@pytest.mark.parametrize("pt", [200, 201, 202, 203, 204, 205, 206, 207])
def test_is_rtcp_true_for_rtcp(pt: int) -> None:
    assert is_rtcp(bytes((0x81, pt, 0, 1)) + bytes(4))


def test_is_rtcp_on_real_packets() -> None:
    assert not is_rtcp(PCMU_VECTOR)
    assert not is_rtcp(build_rtp(101, 1, 2, 3, b"\x01\x0a\x00\xa0", marker=True))
    assert is_rtcp(build_rtcp(ReceiverReport(1)))
    assert not is_rtcp(b"\x80")


# -- RTCP --------------------------------------------------------------------------------


def test_ntp_timestamp_and_middle_32() -> None:
    assert ntp_timestamp(0.0) == 2_208_988_800 << 32
    assert ntp_timestamp(1.5) == (2_208_988_801 << 32) | 0x80000000
    ntp = ntp_timestamp(1_700_000_000.25)
    assert ntp >> 32 == 1_700_000_000 + 2_208_988_800
    assert ntp & 0xFFFFFFFF == 0x40000000
    assert middle_32(0x1122334455667788) == 0x33445566


def _compound() -> tuple[SenderReport, ReceiverReport, SourceDescription, Bye]:
    block = ReportBlock(0x1111, 25, -3, 0x1_0005, 42, 0xAABBCCDD, 0x00010000)
    sr = SenderReport(0xCAFE, ntp_timestamp(1_700_000_000.5), 160_000, 1000, 160_000, (block,))
    rr = ReceiverReport(0xBEEF, (block, ReportBlock(0x2222, 0, 0x7FFFFF, 9, 0)))
    sdes = SourceDescription(((0xCAFE, "gw@sipbridge.example"), (0xBEEF, "ab"), (7, "")))
    bye = Bye((0xCAFE, 0xBEEF), "call ended")
    return sr, rr, sdes, bye


def test_compound_round_trip() -> None:
    packets = _compound()
    data = build_rtcp(*packets)
    assert len(data) % 4 == 0
    assert data[1] == 200 and data[0] == 0x81
    assert parse_rtcp(data) == list(packets)


def test_known_receiver_report_bytes() -> None:
    block = ReportBlock(2, fraction_lost=0x19, cumulative_lost=-1, highest_seq=3, jitter=4)
    assert build_rtcp(ReceiverReport(1, (block,))) == bytes.fromhex(
        "81c90007" "00000001" "00000002" "19ffffff" "00000003" "00000004" "00000000" "00000000"
    )


@given(
    fraction=st.integers(0, 255), lost=st.integers(-0x800000, 0x7FFFFF),
    seq=u32, jitter=u32, lsr=u32, dlsr=u32, ntp=st.integers(0, (1 << 64) - 1),
)
def test_report_round_trip(
    fraction: int, lost: int, seq: int, jitter: int, lsr: int, dlsr: int, ntp: int
) -> None:
    block = ReportBlock(9, fraction, lost, seq, jitter, lsr, dlsr)
    sr = SenderReport(1, ntp, 2, 3, 4, (block,) * 3)
    assert parse_rtcp(build_rtcp(sr)) == [sr]


def test_bye_without_reason_and_sdes_padding() -> None:
    for cname in ("", "a", "ab", "abc", "abcd", "abcde"):
        sdes = SourceDescription(((5, cname),))
        data = build_rtcp(sdes)
        assert len(data) % 4 == 0
        assert parse_rtcp(data) == [sdes]
    assert parse_rtcp(build_rtcp(Bye((1,)))) == [Bye((1,), None)]
    assert parse_rtcp(build_rtcp(Bye((1,), ""))) == [Bye((1,), "")]


def test_sdes_other_items_are_skipped() -> None:
    # Chunk: SSRC 9, NAME "x", CNAME "c@h", TOOL "t", end, pad.
    chunk = b"\x00\x00\x00\x09" + b"\x02\x01x" + b"\x01\x03c@h" + b"\x06\x01t" + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    data = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    assert parse_rtcp(data) == [SourceDescription(((9, "c@h"),))]


def test_unknown_packet_types_are_skipped() -> None:
    sr, _, sdes, bye = _compound()
    app = struct.pack("!BBHI4s", 0x81, 204, 3, 0xCAFE, b"TEST") + b"data"
    xr = struct.pack("!BBHI", 0x80, 207, 1, 0xCAFE)
    data = build_rtcp(sr) + app + build_rtcp(sdes) + xr + build_rtcp(bye)
    assert parse_rtcp(data) == [sr, sdes, bye]


def test_padded_last_packet() -> None:
    rr = ReceiverReport(3)
    body = build_rtcp(rr)[4:] + b"\x00\x00\x00\x04"
    data = struct.pack("!BBH", 0xA0, 201, len(body) // 4) + body
    assert parse_rtcp(build_rtcp(_compound()[0]) + data)[-1] == rr


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d[:-4], "truncated"),  # last packet's length runs past the end
        (lambda d: d + b"\x81\xcb", "truncated"),  # 2 trailing octets: not a header
        (lambda d: d[:3], "short"),
        (lambda d: b"", "short"),
        (lambda d: b"\x41" + d[1:], "version"),
        # SR claiming 2 report blocks in a packet sized for 1.
        (lambda d: b"\x82" + d[1:], "truncated"),
        # Length field of the first packet larger than the whole datagram.
        (lambda d: d[:2] + struct.pack("!H", struct.unpack_from("!H", d, 2)[0] + 200) + d[4:],
         "truncated"),
        (lambda d: b"\xa1" + d[1:], "padding"),  # P set but last octet of the SR is 0
    ],
)
def test_malformed_compound(mutate: Callable[[bytes], bytes], reason: str) -> None:
    data = build_rtcp(*_compound())
    with pytest.raises(RtpError) as info:
        parse_rtcp(mutate(data))
    assert info.value.reason == reason


def test_truncated_items_inside_a_packet() -> None:
    bye = struct.pack("!BBH", 0x81, 203, 2) + b"\x00\x00\x00\x01" + b"\x09abc"
    with pytest.raises(RtpError, match="truncated"):
        parse_rtcp(bye)
    sdes = struct.pack("!BBH", 0x82, 202, 2) + b"\x00\x00\x00\x01" + b"\x01\x01c\x00"
    with pytest.raises(RtpError, match="truncated"):
        parse_rtcp(sdes)


def test_build_rejects_out_of_range_report_fields() -> None:
    with pytest.raises(ValueError):
        build_rtcp(ReceiverReport(1, (ReportBlock(2, 256, 0, 0, 0),)))
    with pytest.raises(ValueError):
        build_rtcp(ReceiverReport(1, (ReportBlock(2, 0, 0x800000, 0, 0),)))
    with pytest.raises(ValueError):
        build_rtcp(ReceiverReport(1, (ReportBlock(2, 0, 0, 0, 0),) * 32))


# -- ReceptionStats ----------------------------------------------------------------------


def _feed(stats: ReceptionStats, seqs: list[int], base_ts: int = 0) -> list[bool]:
    """Packets 20 ms apart at 8 kHz, arriving exactly on time."""
    return [stats.update(seq, base_ts + 160 * seq, 5000 + base_ts + 160 * seq) for seq in seqs]


def test_empty_stats() -> None:
    stats = ReceptionStats()
    assert (stats.received, stats.expected, stats.lost, stats.fraction_lost) == (0, 0, 0, 0)
    assert stats.jitter == 0.0


def test_in_order_stream() -> None:
    stats = ReceptionStats()
    verdicts = _feed(stats, list(range(100, 1100)))
    # A.1 probation: the first packet is not counted, the second validates the source.
    assert verdicts[0] is False and all(verdicts[1:])
    assert stats.received == 999
    assert stats.expected == 999
    assert stats.lost == 0
    assert stats.fraction_lost == 0
    assert stats.extended_max == 1099
    assert stats.jitter == 0.0
    assert (stats.duplicates, stats.reordered) == (0, 0)


def test_probation_restarts_on_a_gap() -> None:
    stats = ReceptionStats()
    assert _feed(stats, [10, 20, 21, 22]) == [False, False, True, True]
    assert (stats.received, stats.expected) == (2, 2)


def test_random_loss() -> None:
    rng = random.Random(3550)
    stats = ReceptionStats()
    delivered = [0, 1] + [s for s in range(2, 4000) if rng.random() >= 0.05] + [4000]
    _feed(stats, delivered)
    expected = 4000 - 1 + 1  # base is seq 1, which ended probation
    lost = 4001 - len(delivered)
    assert 150 < lost < 250
    assert stats.expected == expected
    assert stats.lost == lost
    assert stats.fraction_lost == lost * 256 // expected
    block = stats.report_block(0x1234)
    assert block.cumulative_lost == lost
    assert block.fraction_lost == lost * 256 // expected
    assert block.highest_seq == 4000


def test_sequence_wrap() -> None:
    stats = ReceptionStats()
    seqs = [(65500 + i) & 0xFFFF for i in range(200)]
    assert all(_feed(stats, seqs)[1:])
    assert stats.extended_max == 65500 + 199
    assert stats.extended_max > 65536
    assert (stats.received, stats.expected, stats.lost) == (199, 199, 0)
    assert stats.report_block(1).highest_seq == 65699


def test_late_packet_across_wrap() -> None:
    stats = ReceptionStats()
    _feed(stats, [(65500 + i) & 0xFFFF for i in range(80) if i != 30])  # 65530 missing
    assert (stats.extended_max, stats.lost) == (65579, 1)
    # It arrives late, after the wrap: reordered, not the start of a new cycle.
    assert stats.update(65530, 0, 0) is True
    assert (stats.extended_max, stats.lost, stats.reordered) == (65579, 0, 1)
    assert stats.update(65531, 0, 0) is True
    assert (stats.duplicates, stats.lost) == (1, -1)
    # More than MAX_MISORDER back is a jump, not a late packet (RFC 3550 A.1).
    assert stats.update((65579 - 65536 - 101) & 0xFFFF, 0, 0) is False


def test_reordering_and_duplicates() -> None:
    stats = ReceptionStats()
    _feed(stats, [0, 1, 2, 3, 4, 6, 5, 7, 7, 8, 3, 10, 12, 9])
    assert stats.reordered == 2  # 5 and 9 arrived after a later packet
    assert stats.duplicates == 2  # the second 7 and the late 3
    assert stats.extended_max == 12
    # Expected 1..12; 13 counted packets (all but the first, two duplicates), 11 missing.
    assert stats.expected == 12
    assert stats.received == 13
    assert stats.lost == -1
    assert stats.fraction_lost == 0  # negative loss reports as 0 (A.3)
    assert stats.report_block(1).cumulative_lost == -1
    assert stats.missing == 1  # 11: the duplicates do not stand in for it
    # A late packet seen a second time is a duplicate, not reordered again.
    _feed(stats, [11, 11])
    assert (stats.reordered, stats.duplicates) == (3, 3)
    assert stats.missing == 0


def test_duplicates_do_not_hide_loss() -> None:
    rng = random.Random(7)
    stats = ReceptionStats()
    sent = list(range(2000))
    dropped = {s for s in sent[5:] if rng.random() < 0.05}
    arrivals: list[int] = []
    for seq in sent:
        if seq in dropped:
            continue
        arrivals.append(seq)
        if rng.random() < 0.05:
            arrivals.append(seq)  # a copy right behind it
    for i in range(len(arrivals) - 3, 5, -7):  # and a few swapped neighbours
        arrivals[i], arrivals[i + 1] = arrivals[i + 1], arrivals[i]
    _feed(stats, arrivals)
    dups = len(arrivals) - (2000 - len(dropped))
    assert dups > 50 and len(dropped) > 50
    assert stats.duplicates == dups
    assert stats.missing == len(dropped)
    # A.3's figure for the report block lets each duplicate cancel a loss.
    assert stats.lost == len(dropped) - dups


def test_missing_restarts_with_the_source() -> None:
    stats = ReceptionStats()
    _feed(stats, [0, 1, 2, 2, 4, 5])
    assert (stats.missing, stats.lost) == (1, 0)
    stats.update(9000, 0, 0)
    stats.update(9001, 160, 160)
    _feed(stats, [9002, 9002, 9004], base_ts=-9000 * 160)
    assert (stats.expected, stats.missing) == (4, 1)


def test_jump_restarts_after_two_sequential_packets() -> None:
    stats = ReceptionStats()
    _feed(stats, list(range(100)))
    assert stats.received == 99
    # A jump of 5000 > MAX_DROPOUT: not counted until the next packet follows it.
    # The restarted source has a new timestamp base, so a new transit time.
    assert stats.update(5100, 0x70000000, 9_000_000) is False
    assert stats.received == 99
    assert stats.update(5101, 0x70000000 + 160, 9_000_160) is True
    assert (stats.received, stats.expected, stats.lost, stats.extended_max) == (1, 1, 0, 5101)
    for k in (2, 3):
        assert stats.update(5100 + k, 0x70000000 + 160 * k, 9_000_000 + 160 * k) is True
    assert stats.expected == 3 and stats.lost == 0
    assert stats.jitter == 0.0  # no spurious jitter from the change of transit


def test_stray_jump_is_ignored() -> None:
    stats = ReceptionStats()
    _feed(stats, list(range(100)))
    assert stats.update(5100, 0, 0) is False
    assert _feed(stats, [100, 101]) == [True, True]
    assert (stats.received, stats.expected, stats.extended_max) == (101, 101, 101)


def test_cumulative_loss_is_clamped_to_24_bits() -> None:
    stats = ReceptionStats()
    seq = 0
    _feed(stats, [0, 1])
    for _ in range(3000):
        seq = (seq + 2999) & 0xFFFF if seq else 1 + 2999
        stats.update(seq, 0, 0)
    assert stats.lost > 0x7FFFFF
    block = stats.report_block(1)
    assert block.cumulative_lost == 0x7FFFFF
    assert block.fraction_lost == 255


def test_jitter_for_alternating_arrival_offset() -> None:
    stats = ReceptionStats()
    arrivals = []
    for i in range(400):
        ts = (0xFFFFF000 + 160 * i) & 0xFFFFFFFF  # timestamps wrap past 2**32
        arrival = 1_000_000 + 160 * i + (40 if i % 2 else 0)
        stats.update(i, ts, arrival)
        arrivals.append((arrival, 0xFFFFF000 + 160 * i))
    # A.8 by hand over the counted packets (the first is on probation): |D| = 40 each.
    expected = 0.0
    for (r0, s0), (r1, s1) in pairwise(arrivals[1:]):
        d = (r1 - r0) - (s1 - s0)
        expected += (abs(d) - expected) / 16
    assert stats.jitter == pytest.approx(expected, rel=1e-12)
    assert stats.jitter == pytest.approx(40.0, abs=1e-6)
    assert stats.jitter_ms(8000) == pytest.approx(5.0, abs=1e-6)
    assert stats.report_block(1).jitter == int(expected)


def test_jitter_zero_across_timestamp_wrap() -> None:
    stats = ReceptionStats()
    for i in range(100):
        stats.update(i, (0xFFFFFF00 + 160 * i) & 0xFFFFFFFF, 7 + 160 * i)
    assert stats.jitter == 0.0


def test_fraction_lost_resets_per_interval() -> None:
    stats = ReceptionStats()
    _feed(stats, [0] + [s for s in range(1, 101) if s % 10 != 5])  # 1..100, 10 lost
    first = stats.report_block(7)
    assert first.fraction_lost == 10 * 256 // 100
    assert first.cumulative_lost == 10
    _feed(stats, list(range(101, 201)))
    second = stats.report_block(7)
    assert second.fraction_lost == 0
    assert second.cumulative_lost == 10
    _feed(stats, list(range(202, 401, 2)))  # 201..400: every other one lost
    assert stats.fraction_lost == 128
    third = stats.report_block(7, lsr=0x12345678, dlsr=65536)
    assert (third.fraction_lost, third.cumulative_lost) == (128, 110)
    assert (third.ssrc, third.lsr, third.dlsr, third.highest_seq) == (7, 0x12345678, 65536, 400)
    assert stats.fraction_lost == 0
