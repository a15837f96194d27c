"""RFC 4733 telephone-events: the payload, the sender's packets, the receiver's digits."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.media.dtmf import (
    DIGITS,
    DtmfDigit,
    DtmfReceiver,
    TelephoneEvent,
    dtmf_payloads,
    parse_event,
)

TS = 0x1234_5678


def press(
    rx: DtmfReceiver, digit: str, ts: int, *, drop: Collection[int] = (), **options: int
) -> list[DtmfDigit]:
    """Feed one digit's packets (all but the indices in `drop`); what the receiver reported."""
    reported: list[DtmfDigit] = []
    for i, (payload, marker, _) in enumerate(dtmf_payloads(digit, **options)):
        if i not in drop:
            got = rx.feed(ts, marker, payload)
            if got is not None:
                reported.append(got)
    return reported


def block(event: int, duration: int, *, end: bool = False) -> bytes:
    return TelephoneEvent(event, end, 10, duration).to_bytes()


# ---- the payload (RFC 4733 2.3) --------------------------------------------------------


def test_known_vector() -> None:
    event = TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert event.to_bytes() == b"\x05\x8a\x03\x20"
    assert parse_event(b"\x05\x8a\x03\x20") == event


def test_reserved_bit_and_trailing_octets_are_ignored() -> None:
    assert parse_event(b"\x05\xca\x03\x20") == TelephoneEvent(5, True, 10, 800)
    assert parse_event(b"\x0b\x0a\x00\xa0\xff\xff") == TelephoneEvent(11, False, 10, 160)


@given(st.builds(TelephoneEvent, st.integers(0, 255), st.booleans(), st.integers(0, 63),
                 st.integers(0, 0xFFFF)))
def test_build_then_parse(event: TelephoneEvent) -> None:
    assert parse_event(event.to_bytes()) == event


@given(st.binary(min_size=4, max_size=4))
def test_parse_then_build(data: bytes) -> None:
    assert parse_event(data).to_bytes() == bytes([data[0], data[1] & ~0x40, *data[2:]])


@pytest.mark.parametrize("data", [b"", b"\x05", b"\x05\x8a", b"\x05\x8a\x03"])
def test_short_payload_is_rejected_with_its_length(data: bytes) -> None:
    with pytest.raises(ValueError, match=f"has {len(data)} octets, needs 4"):
        parse_event(data)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ((256, False, 10, 0), "code 256"),
        ((-1, False, 10, 0), "code -1"),
        ((5, False, 64, 0), "volume 64"),
        ((5, False, 10, 0x10000), "duration 65536"),
        ((5, False, 10, -1), "duration -1"),
    ],
)
def test_out_of_range_fields_are_rejected(fields: tuple[int, bool, int, int], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        TelephoneEvent(*fields)


def test_records_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TelephoneEvent(5, True, 10, 800).duration = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DtmfDigit("5", 100, TS).digit = "6"  # type: ignore[misc]


# ---- the sender (RFC 4733 2.5.1) -------------------------------------------------------


def test_default_digit_is_a_start_then_three_ends() -> None:
    assert dtmf_payloads("5") == [
        (b"\x05\x0a\x01\x90", True, 400),
        (b"\x05\x8a\x03\x20", False, 800),
        (b"\x05\x8a\x03\x20", False, 800),
        (b"\x05\x8a\x03\x20", False, 800),
    ]


def test_updates_grow_every_interval() -> None:
    packets = dtmf_payloads("#", duration_ms=200, interval_ms=50, volume=7)
    events = [parse_event(p) for p, _, _ in packets]
    assert [e.duration for e in events] == [400, 800, 1200, 1600, 1600, 1600]
    assert [e.end for e in events] == [False, False, False, True, True, True]
    assert [m for _, m, _ in packets] == [True, False, False, False, False, False]
    assert {(e.event, e.volume) for e in events} == {(11, 7)}
    assert [d for _, _, d in packets] == [e.duration for e in events]


def test_digit_shorter_than_an_interval_is_only_end_packets() -> None:
    packets = dtmf_payloads("0", duration_ms=40, interval_ms=50)
    assert [(parse_event(p).end, m, d) for p, m, d in packets] == [
        (True, True, 320), (True, False, 320), (True, False, 320)
    ]


def test_clock_rate_scales_durations() -> None:
    assert [d for _, _, d in dtmf_payloads("1", clock_rate=16000)] == [800, 1600, 1600, 1600]


@pytest.mark.parametrize("digit", ["E", "a", "", "12", " ", "+", "10"])
def test_sender_rejects_what_is_not_a_digit(digit: str) -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        dtmf_payloads(digit)


@pytest.mark.parametrize(
    "options",
    [{"duration_ms": 0}, {"duration_ms": 8192}, {"interval_ms": 0}, {"volume": 64},
     {"clock_rate": 0}, {"interval_ms": 1, "clock_rate": 500}],
)
def test_sender_rejects_impossible_options(options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        dtmf_payloads("1", **options)


# ---- the receiver (RFC 4733 2.5.2) -----------------------------------------------------


@pytest.mark.parametrize("digit", list(DIGITS))
def test_every_digit_comes_back_once(digit: str) -> None:
    rx = DtmfReceiver()
    assert press(rx, digit, TS) == [DtmfDigit(digit, 100, TS)]
    assert rx.flush() is None
    assert (rx.ignored, rx.malformed) == (0, 0)


@given(st.sampled_from(DIGITS), st.integers(1, 8000), st.integers(10, 100),
       st.integers(0, 2**32 - 1))
def test_sender_and_receiver_agree(digit: str, duration_ms: int, interval_ms: int, ts: int) -> None:
    rx = DtmfReceiver()
    got = press(rx, digit, ts, duration_ms=duration_ms, interval_ms=interval_ms)
    assert got == [DtmfDigit(digit, duration_ms, ts)]


def test_repeated_end_packets_are_reported_once() -> None:
    rx = DtmfReceiver()
    end = block(7, 800, end=True)
    got = [rx.feed(TS, True, block(7, 400))] + [rx.feed(TS, False, end) for _ in range(5)]
    assert got == [None, DtmfDigit("7", 100, TS), None, None, None, None]


def test_lost_end_packets_report_the_digit_when_the_next_starts() -> None:
    rx = DtmfReceiver()
    assert press(rx, "1", TS, duration_ms=200, drop={3, 4, 5}) == []  # updates to 1200
    first, *rest = dtmf_payloads("2")
    assert rx.feed(TS + 3200, first[1], first[0]) == DtmfDigit("1", 150, TS)
    got = [rx.feed(TS + 3200, marker, payload) for payload, marker, _ in rest]
    assert got == [DtmfDigit("2", 100, TS + 3200), None, None]


def test_lost_start_packet() -> None:
    rx = DtmfReceiver()
    assert press(rx, "9", TS, duration_ms=200, drop={0}) == [DtmfDigit("9", 200, TS)]


def test_only_an_end_packet_arrives() -> None:
    rx = DtmfReceiver()
    # 100 ms: a start and three ends, of which only the last end arrives
    assert press(rx, "9", TS, drop={0, 1, 2}) == [DtmfDigit("9", 100, TS)]


def test_a_sequence_comes_out_in_order() -> None:
    rx = DtmfReceiver()
    got = [d for i, c in enumerate("1234#") for d in press(rx, c, TS + i * 1600)]
    assert [d.digit for d in got] == list("1234#")
    assert [d.timestamp for d in got] == [TS + i * 1600 for i in range(5)]


def test_the_same_digit_twice_is_two_digits() -> None:
    rx = DtmfReceiver()
    assert press(rx, "5", TS) + press(rx, "5", TS + 1600) == [
        DtmfDigit("5", 100, TS), DtmfDigit("5", 100, TS + 1600)
    ]


def test_garbage_is_counted_and_changes_nothing() -> None:
    rx = DtmfReceiver()
    garbage = [b"", b"\x01", b"\x01\x02\x03"]
    got = []
    for i, (payload, marker, _) in enumerate(dtmf_payloads("3", duration_ms=200)):
        got.append(rx.feed(TS, marker, payload))
        got.append(rx.feed(TS + 99, True, garbage[i % 3]))
    assert [d for d in got if d is not None] == [DtmfDigit("3", 200, TS)]
    assert (rx.malformed, rx.ignored) == (6, 0)


def test_events_beyond_dtmf_are_ignored() -> None:
    rx = DtmfReceiver()
    packets = [(block(20, 400), True), (block(20, 800, end=True), False)] * 2
    assert [rx.feed(TS, m, p) for p, m in packets] == [None] * 4
    assert rx.flush() is None
    assert (rx.ignored, rx.malformed) == (4, 0)


def test_a_reordered_update_does_not_shorten_the_digit() -> None:
    rx = DtmfReceiver()
    for duration in (400, 1200, 800):  # 800 was overtaken by 1200
        assert rx.feed(TS, duration == 400, block(4, duration)) is None
    assert rx.flush() == DtmfDigit("4", 150, TS)
    assert rx.feed(TS, False, block(4, 1000, end=True)) is None


def test_flush_reports_a_digit_cut_off_by_hangup_once() -> None:
    rx = DtmfReceiver()
    assert rx.flush() is None
    assert press(rx, "8", TS, duration_ms=300, drop={5, 6, 7}) == []
    assert rx.flush() == DtmfDigit("8", 250, TS)
    assert rx.flush() is None


def test_late_packets_of_a_reported_digit_are_dropped() -> None:
    rx = DtmfReceiver()
    assert press(rx, "1", TS) == [DtmfDigit("1", 100, TS)]
    assert rx.feed(TS + 1600, True, block(2, 400)) is None
    assert rx.feed(TS, False, block(1, 800, end=True)) is None  # a late copy of 1's end
    assert rx.feed(TS, True, block(1, 400)) is None  # and a very late start
    assert rx.feed(TS + 1600, False, block(2, 800, end=True)) == DtmfDigit("2", 100, TS + 1600)


def test_two_digits_ending_at_once_are_both_reported() -> None:
    rx = DtmfReceiver()
    assert rx.feed(TS, True, block(1, 400)) is None  # then 1's ends and 2's start are lost
    end2 = block(2, 800, end=True)
    assert rx.feed(TS + 1600, False, end2) == DtmfDigit("1", 50, TS)
    assert rx.feed(TS + 1600, False, end2) == DtmfDigit("2", 100, TS + 1600)
    assert rx.feed(TS + 3200, False, block(3, 800, end=True)) == DtmfDigit("3", 100, TS + 3200)
    assert rx.feed(TS + 4800, True, block(4, 400)) is None
    assert rx.feed(TS + 6400, False, block(5, 800, end=True)) == DtmfDigit("4", 50, TS + 4800)
    assert rx.flush() == DtmfDigit("5", 100, TS + 6400)  # its other end copies were lost


@pytest.mark.parametrize("start", [TS, 2**32 - 100])
def test_a_long_press_spans_segments(start: int) -> None:
    """RFC 4733 2.5.1.3: past 0xFFFF units the event goes on under timestamp + 0xFFFF."""
    rx = DtmfReceiver()
    assert rx.feed(start, True, block(0, 400)) is None
    assert rx.feed(start, False, block(0, 0xFFFF)) is None
    second = (start + 0xFFFF) % 2**32
    assert rx.feed(second, False, block(0, 400)) is None
    assert rx.feed(second, False, block(0, 8000, end=True)) == DtmfDigit("0", 9192, start)
    assert rx.feed(second, False, block(0, 8000, end=True)) is None
    assert rx.feed(start, False, block(0, 0xFF00)) is None  # late, from the first segment
    assert rx.flush() is None


def test_a_new_press_is_not_taken_for_a_segment() -> None:
    rx = DtmfReceiver()
    assert rx.feed(TS, True, block(0, 0xFFFF)) is None
    assert rx.feed(TS + 0xFFFF, True, block(0, 400)) == DtmfDigit("0", 8192, TS)  # marker set


def test_receiver_clock_rate() -> None:
    rx = DtmfReceiver(clock_rate=16000)
    assert press(rx, "6", TS, clock_rate=16000) == [DtmfDigit("6", 100, TS)]
    with pytest.raises(ValueError):
        DtmfReceiver(clock_rate=0)


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.booleans(), st.binary(max_size=6)),
                max_size=50))
def test_feed_never_raises(packets: list[tuple[int, bool, bytes]]) -> None:
    rx = DtmfReceiver()
    got = [rx.feed(ts, marker, payload) for ts, marker, payload in packets] + [rx.flush()]
    digits = [d for d in got if d is not None]
    assert all(d.digit in DIGITS and d.duration_ms >= 0 for d in digits)
    assert rx.malformed == sum(len(p) < 4 for _, _, p in packets)
