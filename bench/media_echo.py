"""Concurrent echo calls sipbridge's media plane carries on one core, and the latency it adds.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/media_echo.py [--steps 5,10,25,50,100,200,300] [--duration 10] [--all]
        [--media-path python,compiled]

Each step starts a fresh gateway (``auto_answer = "echo"``) pinned to one core
and, from this process pinned to another, places N calls with a minimal SIP
UAC over UDP, ramped at ``--rate`` calls per second. Every call then sends
PCMU at 20 ms on a drift-free schedule (one send loop for all calls, phases
spread evenly over the 20 ms) and reads the gateway's echo back through one
``selectors`` loop. After all N calls are up and ``--warmup`` seconds have
passed, ``--duration`` seconds are measured: the gateway's CPU, the late-frame
rate, and the latency the gateway adds from packet in to packet out. A step
passes with every call up, under 0.1 % late frames and a p99 under 5 ms.
Steps rise until one fails, then a bisection narrows the largest passing N
(``--all`` runs every step instead: the CPU curve). ``--media-path python,compiled``
measures each media path in turn (the gateway's ``media_path``) and prints the ratio of
their CPU per echoed frame at the steps both ran and of their largest N. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import math
import os
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sip_cps import LOOPBACK, cpu_seconds, start_sipbridge, stop, workdir

PERIOD = 0.020  # one PCMU frame: 160 samples at 8 kHz
SAMPLES = 160
LATE = 0.020  # an echo more than one frame behind its packet is a late frame
PASS_LATE_PCT = 0.1
PASS_P99 = 0.005
CPU_BOUND = 90.0  # percent of a core: the gateway is CPU-bound above this ...
GEN_CPU_LIMIT = 90.0  # ... and the generator itself is the bottleneck above this ...
GEN_LATE_LIMIT = 0.002  # ... or when its sends are this late at p99
GRACE = 0.5  # seconds the window's last echoes get to come back
SETUP_TIMEOUT = 8.0  # seconds an INVITE may go unanswered (a failed call)
GATEWAY_PORTS = (20000, 25999)  # the gateway's RTP range, below the ephemeral ports
GENERATOR_PORTS = (26000, 31999)  # the generator's RTP/RTCP pairs

# Linux's SO_TIMESTAMPNS (asm-generic/socket.h): the kernel stamps each datagram as it
# arrives (CLOCK_REALTIME), so an echo's time does not depend on when this loop reads it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("qq")
ANCILLARY = socket.CMSG_SPACE(TIMESPEC.size)
RTP_HEADER = struct.Struct("!BBHII")

# --- the payload: each frame says which packet it came from -------------------------
#
# The gateway decodes, resamples 8->24->8 kHz and re-encodes, so bytes do not come back
# as sent. A constant level does (the low-pass filters have unity gain at DC): each frame
# holds two μ-law levels, the first half one code and the second half another, chosen by
# the packet's sequence number mod TAGS. The filters smear a frame's edges by ~3 ms, so
# the echo is read in the middle of each half. The two codes move in opposite directions
# with the tag, so the gateway's loss concealment (the last frame, faded) never reads as
# another tag: fading moves both codes the same way.

TAGS = 40  # sequence numbers told apart: 40 frames, 800 ms
TAG_BASE, TAG_STEP = 0x82, 3  # positive μ-law codes 0x82..0xF7, 3 codes apart
SPLIT = 80  # the first level fills samples 0..79, the second 80..159
PROBES = (64, 144)  # where the echo is read (an 8->24->8 kHz round trip delays ~3 ms)


def tag_codes(tag: int) -> tuple[int, int]:
    return TAG_BASE + TAG_STEP * tag, TAG_BASE + TAG_STEP * (TAGS - 1 - tag)


PAYLOADS = [
    bytes([a]) * SPLIT + bytes([b]) * (SAMPLES - SPLIT) for a, b in map(tag_codes, range(TAGS))
]
# One code of error either way is accepted; 3 codes apart, no two tags overlap.
TAG_OF = {
    (a + da, b + db): tag
    for tag, (a, b) in enumerate(map(tag_codes, range(TAGS)))
    for da in (-1, 0, 1)
    for db in (-1, 0, 1)
}


# --- small helpers ---------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def udp_drops(ports: set[int]) -> int:
    """Datagrams the kernel dropped on our loopback UDP sockets bound to ``ports``
    (/proc/net/udp's per-socket ``drops``: the reader was too slow, its buffer full)."""
    total = 0
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    for line in lines:
        fields = line.split()
        if len(fields) >= 13 and int(fields[1].rpartition(":")[2], 16) in ports:
            total += int(fields[12])
    return total


def precise_sleep() -> None:
    """Let time.sleep wake within microseconds, not the default 50 us timer slack
    (prctl PR_SET_TIMERSLACK): the sends keep to their schedule more closely."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)


def bind_pair(start: int, end: int) -> tuple[socket.socket, socket.socket, int]:
    """A loopback UDP socket on a free even port and one on the odd port above it."""
    for port in range(start + start % 2, end, 2):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((LOOPBACK, port))
            rtcp.bind((LOOPBACK, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        return rtp, rtcp, port
    raise RuntimeError(f"no free RTP port pair in {start}-{end}")


def start_gateway(
    workdir: Path, core: int | None, media_path: str = "auto", event_loop: str = "asyncio"
) -> tuple[subprocess.Popen[bytes], int]:
    server = start_sipbridge(
        workdir, core, "udp", auto_answer="echo",
        extra_config=f'rtp_ports = "{GATEWAY_PORTS[0]}-{GATEWAY_PORTS[1]}"\nmedia_timeout = 0\n'
        f'media_path = "{media_path}"\nevent_loop = "{event_loop}"\n',
    )
    return server.proc, server.port


# --- the SIP UAC: text templates, just enough for INVITE/200/ACK and BYE/200 -------------


def sip_fields(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """A response's status, its headers (lower-case name: first value) and body."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[0] == "SIP/2.0" and parts[1].isdigit() else 0
    headers: dict[str, str] = {}
    compact = {"i": "call-id", "t": "to", "m": "contact", "l": "content-length"}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        headers.setdefault(compact.get(name, name), value.strip())
    return status, headers, body


def sdp_media(body: bytes) -> tuple[str, int] | None:
    """The connection address and port of an SDP answer's audio stream."""
    host, port = None, None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("c=IN IP4 "):
            host = line[9:].strip()
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    return (host, port) if host and port else None


@dataclass(eq=False)
class Call:
    index: int
    rtp: socket.socket
    rtcp: socket.socket
    port: int
    call_id: str
    tag: str
    ssrc: int
    state: str = "idle"  # idle, inviting, up, failed
    invite: bytes = b""
    invited_at: float = 0.0
    retransmit_at: float = 0.0
    retransmit_gap: float = 0.5
    provisional: bool = False
    remote_tag: str = ""
    contact: str = ""
    ack: bytes = b""
    gateway_rtp: int = 0
    sent: list[float] = field(default_factory=list)  # wall time of each packet, by sequence
    echoed: dict[int, float] = field(default_factory=dict)  # sequence -> echo arrival
    window: tuple[int, int] = (0, 0)  # sequence numbers sent in the measurement window


class Uac:
    """Places, confirms and ends calls from one UDP socket (RFC 3261 17.1.1, 13.2.2.4)."""

    def __init__(self, gateway_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.target = (LOOPBACK, gateway_port)
        self.calls: dict[str, Call] = {}
        self.byes_ok = 0

    def _common(self, call: Call, method: str, cseq: int, branch: str, to_tag: str) -> str:
        to = f"<sip:echo@{LOOPBACK}:{self.target[1]}>" + (f";tag={to_tag}" if to_tag else "")
        return (
            f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};branch=z9hG4bK{branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:bench@{LOOPBACK}>;tag={call.tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
        )

    def invite(self, call: Call, now: float) -> None:
        sdp = (
            f"v=0\r\no=bench {call.index} 1 IN IP4 {LOOPBACK}\r\ns=-\r\n"
            f"c=IN IP4 {LOOPBACK}\r\nt=0 0\r\nm=audio {call.port} RTP/AVP 0\r\n"
            f"a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        )
        call.invite = (
            f"INVITE sip:echo@{LOOPBACK}:{self.target[1]} SIP/2.0\r\n"
            + self._common(call, "INVITE", 1, f"{call.tag}i", "")
            + f"Contact: <sip:bench@{LOOPBACK}:{self.port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        ).encode()
        self.calls[call.call_id] = call
        call.state = "inviting"
        call.invited_at = now
        call.retransmit_at = now + call.retransmit_gap
        self.sock.sendto(call.invite, self.target)

    def timers(self, now: float, pending: set[Call]) -> None:
        """Retransmit unanswered INVITEs (timer A); give up on them after SETUP_TIMEOUT."""
        for call in list(pending):
            if now - call.invited_at > SETUP_TIMEOUT:
                call.state = "failed"
                pending.discard(call)
            elif not call.provisional and now >= call.retransmit_at:
                call.retransmit_gap *= 2
                call.retransmit_at = now + call.retransmit_gap
                self.sock.sendto(call.invite, self.target)

    def readable(self, pending: set[Call]) -> None:
        """Read the responses that have come; a call whose 200 came is up (and ACKed)."""
        while True:
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            status, headers, body = sip_fields(data)
            call = self.calls.get(headers.get("call-id", ""))
            method = headers.get("cseq", "").rpartition(" ")[2]
            if call is None or status == 0:
                continue
            if method == "BYE":
                if status >= 200 and call.state == "bye":
                    call.state = "ended"
                    self.byes_ok += 1
                continue
            if status < 200:
                call.provisional = True
                continue
            to_tag = headers.get("to", "").partition(";tag=")[2].partition(";")[0]
            if status >= 300:  # RFC 3261 17.1.1.3: the ACK is part of the INVITE transaction
                ack = self._common(call, "ACK", 1, f"{call.tag}i", to_tag)
                self.sock.sendto(
                    (
                        f"ACK sip:echo@{LOOPBACK}:{self.target[1]} SIP/2.0\r\n{ack}"
                        "Content-Length: 0\r\n\r\n"
                    ).encode(),
                    self.target,
                )
                if call.state == "inviting":
                    call.state = "failed"
                    pending.discard(call)
                continue
            if call.state != "inviting":  # a retransmitted 200: our ACK was lost
                if call.ack:
                    self.sock.sendto(call.ack, self.target)
                continue
            media = sdp_media(body)
            contact = headers.get("contact", "")
            call.remote_tag = to_tag
            call.contact = (
                contact[contact.find("<") + 1 : contact.find(">")] if "<" in contact else contact
            )
            call.ack = (
                f"ACK {call.contact} SIP/2.0\r\n"
                + self._common(call, "ACK", 1, f"{call.tag}a", to_tag)
                + "Content-Length: 0\r\n\r\n"
            ).encode()
            self.sock.sendto(call.ack, self.target)
            pending.discard(call)
            if media is None:
                call.state = "failed"
                continue
            call.state = "up"
            call.gateway_rtp = media[1]
            call.rtp.connect(media)

    def hang_up(self, calls: list[Call], rate: float, timeout: float = 10.0) -> None:
        """BYE every call that is up, paced at ``rate`` per second, until each has its 200."""
        todo = [c for c in calls if c.state == "up"]
        byes = {}
        for call in todo:
            call.state = "bye"
            byes[call] = (
                f"BYE {call.contact} SIP/2.0\r\n"
                + self._common(call, "BYE", 2, f"{call.tag}b", call.remote_tag)
                + "Content-Length: 0\r\n\r\n"
            ).encode()
        start = time.monotonic()
        sent_at: dict[Call, float] = {}
        next_bye = 0
        while time.monotonic() - start < timeout + len(todo) / rate:
            now = time.monotonic()
            while next_bye < len(todo) and start + next_bye / rate <= now:
                call = todo[next_bye]
                self.sock.sendto(byes[call], self.target)
                sent_at[call] = now
                next_bye += 1
            for call, at in sent_at.items():
                if call.state == "bye" and now - at > 0.5:
                    self.sock.sendto(byes[call], self.target)
                    sent_at[call] = now
            self.readable(set())
            if next_bye == len(todo) and all(c.state != "bye" for c in todo):
                return
            time.sleep(0.002)

    def close(self) -> None:
        self.sock.close()


# --- one step ----------------------------------------------------------------


@dataclass
class Step:
    calls: int
    up: int
    gateway_cpu: float  # percent of one core over the measurement window
    generator_cpu: float
    send_late_p99: float  # seconds the generator's sends were behind schedule
    send_late_max: float
    expected: int
    late: int
    missing: int
    p50: float
    p99: float
    max: float
    late_median: float  # the median added latency of the late echoes
    us_per_frame: float  # gateway CPU per echoed frame (one packet in, one out)
    drops_generator: int
    drops_gateway: int
    byes_ok: int
    gateway_alive: bool

    @property
    def late_pct(self) -> float:
        return 100 * (self.late + self.missing) / self.expected if self.expected else 100.0

    @property
    def generator_limited(self) -> bool:
        return (
            self.generator_cpu > GEN_CPU_LIMIT
            or self.send_late_p99 > GEN_LATE_LIMIT
            or self.drops_generator > 0
        )

    def verdict(self) -> tuple[bool, str]:
        why = []
        if not self.gateway_alive:
            why.append("gateway exited")
        if self.up < self.calls:
            why.append(f"{self.up}/{self.calls} calls up")
        if self.late_pct >= PASS_LATE_PCT:
            why.append(f"{self.late} late + {self.missing} missing")
        if self.p99 >= PASS_P99:
            why.append(f"p99 {1000 * self.p99:.1f} ms")
        if self.drops_gateway:
            why.append(f"gateway sockets dropped {self.drops_gateway}")
        if self.byes_ok < self.up:
            why.append(f"{self.up - self.byes_ok} BYEs unanswered")
        if self.generator_limited:
            why.append(
                f"generator-limited (cpu {self.generator_cpu:.0f}%, sends late p99 "
                f"{1000 * self.send_late_p99:.1f} ms max {1000 * self.send_late_max:.1f} ms, "
                f"its sockets dropped {self.drops_generator})"
            )
        return not why, ", ".join(why) or "ok"


def run_step(n: int, args: argparse.Namespace, root: Path) -> Step:
    workdir = root / f"{args.media_path}-calls-{n}"
    workdir.mkdir(parents=True, exist_ok=True)
    gateway, gateway_port = start_gateway(workdir, args.server_core, args.media_path,
                                          args.event_loop)
    uac = Uac(gateway_port)
    sel = selectors.DefaultSelector()
    calls: list[Call] = []
    try:
        low, high = GENERATOR_PORTS
        for i in range(n):
            rtp, rtcp, port = bind_pair(low, high)
            low = port + 2
            for s in (rtp, rtcp):
                s.setblocking(False)
            rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            tag = os.urandom(6).hex()
            call = Call(i, rtp, rtcp, port, f"{tag}@media-echo", tag, int.from_bytes(os.urandom(4)))
            calls.append(call)
            sel.register(rtp, selectors.EVENT_READ, (True, call))
            sel.register(rtcp, selectors.EVENT_READ, (False, call))
        sel.register(uac.sock, selectors.EVENT_READ, None)
        gc.disable()  # nothing here makes cycles; a collection would only delay sends
        step = generate(calls, uac, sel, gateway.pid, args)
        gc.enable()
        step.gateway_alive = gateway.poll() is None
        gateway_ports = {
            p for c in calls if c.gateway_rtp for p in (c.gateway_rtp, c.gateway_rtp + 1)
        }
        step.drops_gateway = udp_drops(gateway_ports)
        step.drops_generator = udp_drops({c.port for c in calls} | {uac.port})
        uac.hang_up(calls, rate=args.rate * 4)
        step.byes_ok = uac.byes_ok
        return step
    finally:
        gc.enable()
        sel.close()
        for call in calls:
            call.rtp.close()
            call.rtcp.close()
        uac.close()
        stop(gateway)


def generate(
    calls: list[Call],
    uac: Uac,
    sel: selectors.BaseSelector,
    gateway_pid: int,
    args: argparse.Namespace,
) -> Step:
    """The load: set the calls up, send and receive their media, measure one window."""
    n = len(calls)
    mono, wall = time.monotonic, time.time
    slot = PERIOD / n  # call i sends at start + (k * n + i) * slot: phases spread evenly
    pack = RTP_HEADER.pack
    payloads = PAYLOADS
    tag_of = TAG_OF
    pending: set[Call] = set()
    lateness: list[float] = []
    start = mono() + 0.05
    m = 0  # the send grid's slot: call m % n, its frame m // n
    due = start
    invited = 0
    sip_check = start
    measure_from = window_end = stop_at = float("inf")
    measuring = False
    gw_cpu0 = gen_cpu0 = t0 = 0.0
    gw_cpu = gen_cpu = window = 0.0

    while True:
        now = mono()
        # Sends: every slot that has come, in order, whatever else is waiting.
        while due <= now:
            call = calls[m % n]
            if call.state == "up":
                seq = len(call.sent)
                packet = pack(0x80, 0, seq & 0xFFFF, (seq * SAMPLES) & 0xFFFFFFFF, call.ssrc)
                sent_mono = mono()
                call.sent.append(wall())
                try:  # noqa: SIM105 (per packet: a bare try costs nothing, suppress() a call)
                    call.rtp.send(packet + payloads[seq % TAGS])
                except OSError:
                    pass  # the echo will be missing and counted
                if measuring:
                    lateness.append(sent_mono - due)
            m += 1
            due = start + m * slot
        # Receives: the echoes (stamped by the kernel), RTCP, SIP responses.
        for key, _ in sel.select(0):
            if key.data is None:
                uac.readable(pending)  # a call that is up sends from its next slot on
                continue
            is_rtp, call = key.data
            sock = call.rtp if is_rtp else call.rtcp
            try:
                data, ancillary, _, _ = sock.recvmsg(2048, ANCILLARY)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                continue
            if not is_rtp:
                continue  # the gateway's RTCP reports: read, not needed
            arrived = None
            for level, kind, cdata in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = TIMESPEC.unpack_from(cdata)
                    arrived = sec + nsec * 1e-9
            if arrived is None:
                arrived = wall()
            offset = 12 + 4 * (data[0] & 0x0F)
            if len(data) < offset + SAMPLES:
                continue
            tag = tag_of.get((data[offset + PROBES[0]], data[offset + PROBES[1]]))
            if tag is None:
                continue  # silence before the first echo, or concealment
            last = len(call.sent) - 1
            seq = last - (last - tag) % TAGS  # the latest packet sent with this tag
            if seq >= 0 and seq not in call.echoed:
                call.echoed[seq] = arrived
        # SIP and the phases of the step, checked every few ms.
        if now >= sip_check:
            sip_check = now + 0.005
            while invited < n and start + invited / args.rate <= now:
                uac.invite(calls[invited], now)
                pending.add(calls[invited])
                invited += 1
            uac.timers(now, pending)
            if measure_from == float("inf") and invited == n and not pending:
                measure_from = now + args.warmup
                window_end = measure_from + args.duration
                stop_at = window_end + GRACE
            if not measuring and now >= measure_from and window_end > now:
                measuring = True
                for call in calls:
                    call.window = (len(call.sent), 0)
                t0, gw_cpu0, gen_cpu0 = now, cpu_seconds(gateway_pid), time.process_time()
            if measuring and now >= window_end:
                measuring = False
                window = now - t0
                gw_cpu = cpu_seconds(gateway_pid) - gw_cpu0
                gen_cpu = time.process_time() - gen_cpu0
                for call in calls:
                    call.window = (call.window[0], len(call.sent))
            if now >= stop_at:
                break
        wait = min(due, sip_check) - mono()
        if wait > 0:
            time.sleep(wait)

    up = [c for c in calls if c.state == "up"]
    latencies: list[float] = []
    late_ones: list[float] = []
    expected = missing = 0
    for call in up:
        sent, echoed = call.sent, call.echoed
        for seq in range(*call.window):
            expected += 1
            arrived = echoed.get(seq)
            if arrived is None:
                missing += 1
                continue
            delay = arrived - sent[seq]
            latencies.append(delay)
            if delay > LATE:
                late_ones.append(delay)
    latencies.sort()
    late_ones.sort()
    lateness.sort()
    return Step(
        calls=n,
        up=len(up),
        gateway_cpu=100 * gw_cpu / window if window else 0.0,
        generator_cpu=100 * gen_cpu / window if window else 0.0,
        send_late_p99=percentile(lateness, 99),
        send_late_max=lateness[-1] if lateness else 0.0,
        expected=expected,
        late=len(late_ones),
        missing=missing,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        max=latencies[-1] if latencies else 0.0,
        late_median=percentile(late_ones, 50),
        us_per_frame=1e6 * gw_cpu / expected if expected else 0.0,
        drops_generator=0,
        drops_gateway=0,
        byes_ok=0,
        gateway_alive=True,
    )


# --- the steps -----------------------------------------------------------------

HEADER = (
    f"{'calls':>5} {'up':>5} {'gw cpu%':>7} {'us/frame':>8} {'gen cpu%':>8} "
    f"{'gen late p99':>12} {'late%':>7} {'p50 ms':>6} {'p99 ms':>6} {'max ms':>7}  result"
)


def print_step(step: Step, label: str = "") -> None:
    passed, why = step.verdict()
    print(
        f"{label}{step.calls:>5} {step.up:>5} {step.gateway_cpu:>7.1f} {step.us_per_frame:>8.0f} "
        f"{step.generator_cpu:>8.1f} {1000 * step.send_late_p99:>9.2f} ms "
        f"{step.late_pct:>7.3f} {1000 * step.p50:>6.2f} {1000 * step.p99:>6.2f} "
        f"{1000 * step.max:>7.1f}  {'pass' if passed else 'FAIL: ' + why}",
        flush=True,
    )


def limit_of(step: Step | None) -> str:
    """What stopped the first failing step, in words."""
    if step is None:
        return "none found: every step passed (add larger --steps)"
    if step.generator_limited:
        return (
            f"the load generator at {step.calls} calls (cpu {step.generator_cpu:.0f}%, "
            f"send lateness p99 {1000 * step.send_late_p99:.1f} ms), not the gateway"
        )
    if step.gateway_cpu >= CPU_BOUND:
        return (
            f"the gateway is CPU-bound: {step.gateway_cpu:.0f}% of its core at "
            f"{step.calls} calls, {step.us_per_frame:.0f} us of CPU per echoed frame "
            f"(one core: ~{1e6 / step.us_per_frame / 50:.0f} calls)"
        )
    if step.up < step.calls or not step.gateway_alive:
        return f"the gateway at {step.calls} calls: {step.verdict()[1]}"
    held = ""
    if step.late and step.late_median < 2 * LATE:
        held = (
            f"; its late echoes came back a frame behind (median "
            f"{1000 * step.late_median:.1f} ms): it played those frames a tick later"
        )
    calls = f"{step.calls} call{'s' if step.calls != 1 else ''}"
    return (
        f"the gateway's added latency at {calls}, with {step.gateway_cpu:.0f}% "
        f"CPU: not CPU-bound{held}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--steps",
        default="5,10,25,50,100,200,300,400,500",
        help="comma-separated call counts (default 5,10,25,50,100,...,500)",
    )
    ap.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per step (default 10)"
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds after the last call is up before measuring (default 2)",
    )
    ap.add_argument("--rate", type=float, default=50.0, help="calls set up per second (default 50)")
    ap.add_argument(
        "--resolution", type=int, default=1, help="bisect until within N calls (default 1) ..."
    )
    ap.add_argument(
        "--resolution-pct",
        type=float,
        default=10.0,
        help="... or N%% of the passing count, whichever is larger (default 10)",
    )
    ap.add_argument(
        "--all",
        action="store_true",
        help="run every step whatever fails, without bisecting (the CPU curve)",
    )
    ap.add_argument("--cooldown", type=float, default=2.0, help="seconds between steps")
    ap.add_argument("--keep", metavar="DIR", help="keep each step's gateway config and log in DIR")
    ap.add_argument(
        "--media-path",
        default="auto",
        help="the gateway's media_path, or several comma-separated (python,compiled): each "
        "measured in turn, with the ratio of their CPU per frame and largest N (default auto)",
    )
    ap.add_argument(
        "--event-loop", choices=("asyncio", "uvloop"), default="asyncio",
        help="the gateway's event_loop (default asyncio, its own default; uvloop needs "
        "the uvloop extra installed)",
    )
    args = ap.parse_args()
    paths = [p.strip() for p in args.media_path.split(",") if p.strip()]
    if not paths or any(p not in ("auto", "compiled", "python") for p in paths):
        ap.error("--media-path: auto, compiled or python, comma-separated")
    try:
        steps = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    except ValueError:
        ap.error("--steps: comma-separated integers")
    if not steps or steps[0] < 1 or args.duration <= 0 or args.rate <= 0:
        ap.error("need call counts >= 1, --duration > 0 and --rate > 0")
    room = min(GATEWAY_PORTS[1] - GATEWAY_PORTS[0], GENERATOR_PORTS[1] - GENERATOR_PORTS[0]) // 2
    if steps[-1] > room:
        ap.error(f"at most {room} calls (the RTP port ranges)")

    # Two sockets per call on each side: make room for them (the gateway inherits this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * steps[-1] + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    cores = os.sched_getaffinity(0)
    if len(cores) >= 2 and shutil.which("taskset"):
        first, second = sorted(cores)[:2]
        args.server_core = first
        os.sched_setaffinity(0, {second})  # this process is the load generator
        pinning = f"gateway on core {first}, generator on core {second}"
    else:
        args.server_core = None
        pinning = "no pinning (needs taskset and 2 cores)"
    precise_sleep()
    print(
        f"media_echo: PCMU 20 ms echo, {args.duration:g} s per step after {args.warmup:g} s "
        f"warm-up, calls set up at {args.rate:g}/s, a fresh gateway per step; {pinning}",
        flush=True,
    )

    results: dict[str, Search] = {p: Search() for p in paths}
    with workdir(args.keep, "media_echo-") as root:
        try:
            if args.all and len(paths) > 1:
                # Every step of each path, the paths taking turns at each N: the machine's
                # noise falls on both alike.
                width = max(map(len, paths))
                print(" " * (width + 1) + HEADER)
                for n in steps:
                    for path in paths:
                        args.media_path = path
                        step = results[path].runs[n] = run_step(n, args, root)
                        print_step(step, f"{path:>{width}} ")
                        time.sleep(args.cooldown)
                for found in results.values():  # passing up to the first failure
                    for n in steps:
                        if not found.runs[n].verdict()[0]:
                            found.failed = found.runs[n]
                            break
                        found.good = n
                paths_searched: list[str] = []
            else:
                paths_searched = paths
            for path in paths_searched:
                args.media_path = path
                if len(paths) > 1:
                    print(f"media_path = {path}", flush=True)
                results[path] = search(steps, args, root)
                report(results[path])
        except KeyboardInterrupt:
            print("media_echo: interrupted")
            return 130
    if len(paths) > 1:
        compare(paths, results)
    return 0


@dataclass
class Search:
    good: int = 0
    failed: Step | None = None
    cpu_bound: Step | None = None
    runs: dict[int, Step] = field(default_factory=dict)  # by N, the last run of each


def search(steps: list[int], args: argparse.Namespace, root: Path) -> Search:
    """The steps in order until one fails, then a bisection (or every step: --all)."""
    found = Search()
    bad = 0
    print(HEADER)
    for n in steps:
        step = found.runs[n] = run_step(n, args, root)
        print_step(step)
        if found.cpu_bound is None and step.gateway_cpu >= CPU_BOUND:
            found.cpu_bound = step
        if step.verdict()[0]:
            found.good = n if found.failed is None else found.good
        elif found.failed is None:
            bad, found.failed = n, step
            if not args.all:
                break
        time.sleep(args.cooldown)
    if found.failed is not None and not found.failed.generator_limited and not args.all:
        while bad - found.good > max(args.resolution, found.good * args.resolution_pct / 100):
            time.sleep(args.cooldown)
            n = (found.good + bad) // 2
            step = found.runs[n] = run_step(n, args, root)
            print_step(step)
            if step.verdict()[0]:
                found.good = n
            else:
                bad, found.failed = n, step
    return found


def report(found: Search) -> None:
    shown = f">={found.good}" if found.failed is None else str(found.good)
    print(
        f"largest N with <{PASS_LATE_PCT:g}% late frames and p99 < {1000 * PASS_P99:g} ms: {shown}"
    )
    print(f"limit: {limit_of(found.failed)}")
    cpu_bound = found.cpu_bound
    if cpu_bound is not None and cpu_bound is not found.failed:
        print(
            f"cpu: the gateway used {cpu_bound.gateway_cpu:.0f}% of its core at "
            f"{cpu_bound.calls} calls ({cpu_bound.us_per_frame:.0f} us per echoed frame)"
        )


def compare(paths: list[str], results: dict[str, Search]) -> None:
    """Each path against the first: CPU per echoed frame at the steps both ran (with all
    their calls up), and the largest N."""
    ref_name = paths[0]
    ref = results[ref_name]
    for name in paths[1:]:
        other = results[name]
        for n in sorted(set(ref.runs) & set(other.runs)):
            a, b = ref.runs[n], other.runs[n]
            if a.up == n and b.up == n and b.us_per_frame > 0:
                print(
                    f"{n} calls: {ref_name} {a.us_per_frame:.0f} us/frame, {name} "
                    f"{b.us_per_frame:.0f} us/frame: {a.us_per_frame / b.us_per_frame:.2f}x"
                )
        shown = {p: f">={r.good}" if r.failed is None else str(r.good)
                 for p, r in ((ref_name, ref), (name, other))}
        ratio = f": {other.good / ref.good:.2f}x" if ref.good else ""
        print(f"largest N: {ref_name} {shown[ref_name]}, {name} {shown[name]}{ratio}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
