"""Calls through a lossy, jittery path (tests/impair.py: netem is not available here).

The gateway's own figures are checked against the relay's record of what it did:
- RTP with 5% loss and 50 ms of jitter toward the gateway: the call lasts, the loss it
  reports (call record, the "ended" log line, /metrics) is exactly what the relay
  dropped, and its RFC 3550 jitter is within a stated tolerance of the same estimator
  run over the times the relay sent each packet;
- RTP with duplicates and reordering on top of loss: a duplicate does not hide a loss,
  and duplicates and reordered packets are counted as such;
- SIP with 30% loss each way in front of the gateway's port: every call completes,
  through retransmissions on both sides.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.impair import Direction, Impairment, Relay
from tests.integration.gateway import Gateway
from tests.integration.rtpcaller import RtpCaller
from tests.integration.sipp import SippResult

KEY = "sk-impair"
RATE = 8000  # PCMU clock
# The gateway's jitter may differ from the estimate over the relay's send times by the
# time from the relay's send to the gateway's kernel receive stamp (microseconds on
# loopback) and by its 125 us arrival unit: 0.5 ms or 5%, whichever is more, is ample
# and still far below the 20-30 ms the relay's delays produce.
JITTER_TOLERANCE_MS = 0.5
JITTER_TOLERANCE_REL = 0.05
_SEQ_TS = struct.Struct("!HI")


@dataclass
class Truth:
    """What the gateway should report of one RTP stream, worked out from the relay's
    record the way RFC 3550 appendix A counts (the first packet is its probation)."""

    sent: int  # copies that reached the gateway
    missing: int  # sequence numbers from the first to the highest delivered, never sent on
    duplicates: int
    reordered: int  # arrived after a higher sequence number
    jitter_ms: float  # A.8 over the relay's send times
    jitter_of_delays_ms: float  # A.8 over the delays drawn alone (a perfect sender)


def _a8(transits: list[float]) -> float:
    """RFC 3550 A.8 over transit times in timestamp units, in arrival order."""
    jitter = 0.0
    for before, after in pairwise(transits):
        jitter += (abs(after - before) - jitter) / 16
    return jitter


def truth_of(direction: Direction) -> Truth:
    seen: set[int] = set()
    highest = -1
    duplicates = reordered = 0
    transits: list[float] = []
    drawn: list[tuple[float, float]] = []  # (when it would arrive, delay) per first copy
    for copy, datagram in direction.sent:
        seq, ts = _SEQ_TS.unpack_from(datagram.data, 2)  # no wrap in a short call
        if seq in seen:
            duplicates += 1
            continue
        if seq < highest:
            reordered += 1
        seen.add(seq)
        highest = max(highest, seq)
        assert copy.sent_at is not None
        transits.append(copy.sent_at * RATE - ts)
        drawn.append((ts / RATE + copy.delay, copy.delay))
    # The first packet validates the source and is not in the statistics (A.1).
    jitter = _a8(transits[1:])
    drawn.sort()
    jitter_delays = _a8([delay * RATE for _, delay in drawn[1:]])
    first = min(seen)
    return Truth(len(direction.sent), highest - first + 1 - len(seen), duplicates, reordered,
                 jitter * 1000 / RATE, jitter_delays * 1000 / RATE)


def _ended(gateway: Gateway, call_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The call's final record; fails if it has not ended within `timeout`."""
    url = f"http://127.0.0.1:{gateway.http_port}/v1/realtime/calls/{call_id}"
    deadline = time.monotonic() + timeout
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        record = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}).json()
        if record.get("state") == "ended" and record.get("media"):
            return record
        time.sleep(0.05)
    raise AssertionError(f"call {call_id} did not end within {timeout} s: {record}")


def _ended_line(gateway: Gateway, call_id: str) -> dict[str, str]:
    """The figures of the call's "ended" log line, by name."""
    found = re.search(rf"call {call_id} ended \(\w+\): (rtp .*)", gateway.log())
    assert found, f"no 'ended' line for {call_id} in the log"
    return dict(re.findall(r"(\w+)=(\S+)", found.group(1)))


def _call_through(start_gateway: Callable[..., Gateway], tmp_path: Path,
                  impairment: Impairment, seconds: float) -> tuple[Gateway, Relay, str]:
    """One call whose caller RTP (`seconds` of it, 50 packets a second) reaches the
    gateway through the relay; the gateway's RTP comes back through it (with 2% loss of
    its own). Returns once SIPp has hung up."""
    gateway = start_gateway(auto_answer="silence", api_key=[KEY], jitter_max_ms=300)
    hold_ms = int(seconds * 1000) + 1000
    with RtpCaller(gateway, tmp_path, hold_ms=hold_ms, api_key=KEY) as caller:
        call = caller.answered()
        target = ("127.0.0.1", int(call["sip"]["rtp_port"]))
        back = Impairment(loss=0.02, seed=impairment.seed + 1)
        sink = caller.sink.sock.getsockname()
        with Relay(target, impairment, back, peer=(sink[0], sink[1])) as relay:
            tone = (3000 * np.sin(np.arange(int(seconds * RATE)) * 0.3)).astype(np.int16)
            caller.speak(tone, lead_s=0.0, tail_s=0.0, dest=relay.address)
            relay.drain()
    result = caller.result
    assert result is not None and result.ok, result.describe() if result else "no SIPp run"
    # The gateway's RTP came back the same way once it latched on to the relay.
    back_out = relay.from_target.forwarded
    assert back_out > 25 * seconds and len(caller.sink.packets) >= back_out, \
        (relay.from_target.summary(), len(caller.sink.packets))
    assert not relay.to_target.pending
    return gateway, relay, str(call["id"])


def test_call_survives_loss_and_jitter_and_reports_them(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    # netem's "loss 5% delay 50ms 50ms": each packet waits 0 to 100 ms, so they overtake.
    impairment = Impairment(loss=0.05, delay=0.05, jitter=0.05, spare_first=3, seed=13)
    gateway, relay, call_id = _call_through(start_gateway, tmp_path, impairment, 5.0)
    truth = truth_of(relay.to_target)
    record = _ended(gateway, call_id)
    media = record["media"]
    assert record["end_reason"] == "remote_bye", record["end_reason"]
    # The jitter buffer grew to the delays: few frames came too late to be played.
    assert media["late"] <= 0.03 * truth.sent, media

    assert relay.to_target.dropped >= 10 and truth.reordered >= 10, truth
    assert media["packets_in"] == truth.sent == relay.to_target.forwarded
    assert media["lost"] == truth.missing, (media, truth)
    assert media["reordered"] == truth.reordered and media["duplicates"] == 0, (media, truth)
    tolerance = max(JITTER_TOLERANCE_MS, JITTER_TOLERANCE_REL * truth.jitter_ms)
    assert abs(media["jitter_ms"] - truth.jitter_ms) <= tolerance, (media, truth)
    # The path's jitter is the relay's delays (32 ms by A.8 for this seed, computed from
    # the delays drawn alone), plus what the sender's pacing and the relay's wake-ups add:
    # nothing on an idle machine, several ms on a busy one.
    assert truth.jitter_ms >= 0.9 * truth.jitter_of_delays_ms > 20, truth

    line = _ended_line(gateway, call_id)
    assert (int(line["in"]), int(line["lost"])) == (truth.sent, truth.missing), line
    assert gateway.metric("sipbridge_rtp_packets_lost_total", KEY) == truth.missing
    assert gateway.metric("sipbridge_rtp_packets_received_total", KEY) == truth.sent


def test_duplicates_do_not_hide_loss_and_reordering_is_counted(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    impairment = Impairment(loss=0.05, duplicate=0.10, reorder=0.15, reorder_delay=0.05,
                            spare_first=3, seed=7)
    gateway, relay, call_id = _call_through(start_gateway, tmp_path, impairment, 3.0)
    truth = truth_of(relay.to_target)
    media = _ended(gateway, call_id)["media"]

    assert relay.to_target.dropped >= 5 and relay.to_target.duplicated >= 10, truth
    assert truth.duplicates == relay.to_target.duplicated and truth.reordered >= 10, truth
    assert media["packets_in"] == truth.sent
    # Each duplicate used to stand in for a lost packet (RFC 3550 A.3's expected less
    # received), so the loss a caller suffered was reported as less, or as none.
    assert media["lost"] == truth.missing, (media, truth)
    assert media["duplicates"] == truth.duplicates, (media, truth)
    assert media["reordered"] == truth.reordered, (media, truth)
    line = _ended_line(gateway, call_id)
    assert (int(line["lost"]), int(line["dup"]), int(line["reordered"])) == \
        (truth.missing, truth.duplicates, truth.reordered), line
    assert gateway.metric("sipbridge_rtp_packets_lost_total", KEY) == truth.missing


def test_calls_complete_under_30_percent_signalling_loss(
    start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult]
) -> None:
    # T1 of 100 ms (T2 400 ms) on both sides keeps the retransmissions quick. An exchange
    # gets through with 0.7 x 0.7 = 0.49; SIPp may try a BYE 21 times (SIPp's -max_retrans
    # caps every transaction, 10 by default), and the gateway resends its 200 to the
    # INVITE for 64 x T1 = 6.4 s (about 18 times): a call fails with less than 1 in
    # 100,000.
    gateway = start_gateway(auto_answer="silence", api_key=[KEY], t1=0.1, t2=0.4)
    lossy = [Impairment(loss=0.3, seed=31), Impairment(loss=0.3, seed=32)]
    with Relay((gateway.host, gateway.port), *lossy) as relay:
        target = f"{relay.address[0]}:{relay.address[1]}"
        result = sipp(target, "uac_lossy.xml", calls=16, rate=8, timeout=25, recv_timeout=10,
                      extra=["-T2", "400", "-max_retrans", "20", "-max_invite_retrans", "12",
                             "-max_non_invite_retrans", "20"])
    assert result.ok and result.successful == 16, result.describe()
    # The path was as bad as asked, and both sides had to make up for it.
    for direction in (relay.to_target, relay.from_target):
        share = direction.dropped / direction.received
        assert 0.15 < share < 0.45, direction.summary()  # 30% of ~90, within 3 sigma
    # A datagram the same to the byte as an earlier one is a retransmission.
    resent = [d.received - len({g.data for g in d.datagrams})
              for d in (relay.to_target, relay.from_target)]
    assert min(resent) > 0, resent
    calls = httpx.get(f"http://127.0.0.1:{gateway.http_port}/v1/realtime/calls?limit=100",
                      headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    assert len(calls) == 16 and {c["end_reason"] for c in calls} == {"remote_bye"}, \
        [c for c in calls if c["end_reason"] != "remote_bye"]


class _Reader:
    """Reads what `source` sends to a socket, in a thread (so the socket's queue never
    overflows), until quiet for 0.3 s. Other sources are ignored: on a shared machine a
    port just freed may still be sent to."""

    def __init__(self, sock: socket.socket, source: tuple[str, int]) -> None:
        self.got: list[bytes] = []
        sock.settimeout(0.3)
        self._sock = sock
        self._source = source
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data, addr = self._sock.recvfrom(2048)
            except TimeoutError:
                return
            if addr[:2] == self._source:
                self.got.append(data)

    def result(self) -> list[bytes]:
        self._thread.join(10)
        assert not self._thread.is_alive(), "the socket never went quiet"
        return self.got


def test_relay_does_what_its_record_says() -> None:
    """The relay itself: what arrives is exactly what its record says it sent, in that
    order; each copy waited the delay drawn for it; the same seed makes the same choices."""
    imp = Impairment(loss=0.1, delay=0.01, jitter=0.01, reorder=0.1, reorder_delay=0.03,
                     duplicate=0.1, seed=5)
    with (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
          socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
          socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger):
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        a_address = a.getsockname()
        with Relay(b.getsockname(), imp, Impairment(loss=0.2, seed=6), peer=a_address) as relay:
            reader = _Reader(b, relay.b_address)
            for i in range(300):
                a.sendto(i.to_bytes(4, "big"), relay.address)
                if i % 10 == 0:
                    time.sleep(0.01)
            stranger.sendto(b"not from A", relay.address)
            got_b = reader.result()
            reader = _Reader(a, relay.address)
            for i in range(100):
                b.sendto(i.to_bytes(4, "big"), relay.b_address)
            got_a = reader.result()
            relay.drain()
    there, back = relay.to_target, relay.from_target
    assert got_b == [d.data for _, d in there.sent]
    assert got_a == [d.data for _, d in back.sent]
    assert relay.strays >= 1 and b"not from A" not in {d.data for d in there.datagrams}
    assert there.received == 300 and back.received == 100
    assert there.forwarded == 300 - there.dropped + there.duplicated
    assert 10 < there.dropped < 50 and 10 < there.duplicated < 50 and 5 < back.dropped < 40
    assert [i for i, (x, y) in enumerate(pairwise(got_b)) if x > y], "nothing reordered"
    for copy, datagram in there.sent:  # never early (late by the loop's wake-up at most)
        assert copy.sent_at is not None and copy.sent_at - datagram.arrived >= copy.delay - 1e-3
    # The same seed, the same choices.
    again = Direction(there.name, imp)
    for d in there.datagrams:
        twin = again.decide(d.data, d.arrived)
        assert (twin.dropped, [c.delay for c in twin.copies]) == \
            (d.dropped, [c.delay for c in d.copies])
