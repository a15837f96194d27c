"""A bounded soak: SIPp calls with media for N minutes while malformed traffic comes in.

Run from the project root as root (it makes a network namespace) after
``bash scripts/setup.sh``::

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 3] [--tracemalloc]

One gateway (``auto_answer = "echo"``) runs for the whole soak. At the same time:

- SIPp places ``--rate`` calls per second from 127.0.0.2, each playing an 8 kHz
  PCMA capture (Debian's sip-tester ships ``g711a.pcap``, 7 s) for
  ``--call-seconds`` and hanging up; it stops placing calls in time for the last
  ones to end before the soak does;
- the malformed-traffic mix: mutated SIP messages (seeded from the project's
  message corpus and a few realistic messages; bytes flipped, inserted, deleted,
  lines repeated or dropped, lengths lied about, messages spliced) over UDP from
  127.0.0.3 and over TCP from 127.0.0.4; ``--half-open`` TCP connections from
  127.0.0.7 that send half a header and never finish it (reopened when the
  gateway closes them); and every minute a SIPVicious scan from 127.0.0.1
  (``svmap``, ``svwar -m INVITE``, ``svwar -m OPTIONS`` in turn).

Every ``--sample`` seconds it records the gateway's RSS, its open file
descriptors, the log's size, its CPU use and ``sipbridge_calls_active`` from
/metrics; at the end it prints the series, the calls SIPp attempted, completed
and failed, what the mix sent, and the RSS slope after ``--warmup`` minutes.

Everything runs inside a network namespace of its own holding only a loopback
interface, with a resolver address where nothing listens: a mutated message
that names another host (a Contact, a ``c=`` line) cannot make the gateway send
a packet or a DNS query off this machine.

``--tracemalloc`` runs the gateway under tracemalloc (bench/soak_gateway.py)
and compares the allocation sites and live object types at the end of the
warm-up with those at the end: what grew, by source line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from sip_cps import cpu_seconds, free_port, options_ping, read_stats, stop, workdir

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = "127.0.0.1"
SIPP_IP = "127.0.0.2"
UDP_FUZZ_IP = "127.0.0.3"
TCP_FUZZ_IP = "127.0.0.4"
HALF_OPEN_IP = "127.0.0.7"
SCAN_IP = "127.0.0.1"
PCAP = Path("/usr/share/sip-tester/g711a.pcap")
PCAP_SECONDS = 7

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- A call that plays PCMA from a capture for a while, then hangs up. -->
<scenario name="soak call with media">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="PCAP"/>
    </action>
  </nop>
  <pause milliseconds="CALL_MS"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <ResponseTimeRepartition value="10, 50, 100, 500, 1000"/>
  <CallLengthRepartition value="1000, 5000, 10000, 20000"/>
</scenario>
"""


# --- the malformed mix: seeds and mutations -----------------------------------------

_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na=sendrecv\r\n"
)
_HEAD = (
    "Via: SIP/2.0/{t} {ip}:5099;branch=z9hG4bK{b};rport\r\nMax-Forwards: 70\r\n"
    "From: <sip:fuzz@{ip}>;tag={tag}\r\nTo: <sip:echo@" + GATEWAY + ">{to}\r\n"
    "Call-ID: {cid}@fuzz\r\n"
)
_TEMPLATES = [
    "INVITE sip:echo@{gw} SIP/2.0\r\n" + _HEAD + "CSeq: 1 INVITE\r\n"
    "Contact: <sip:fuzz@{ip}:5099>\r\nContent-Type: application/sdp\r\n"
    f"Content-Length: {len(_SDP)}\r\n\r\n{_SDP}",
    "OPTIONS sip:{gw} SIP/2.0\r\n" + _HEAD + "CSeq: 1 OPTIONS\r\nAccept: application/sdp\r\n"
    "Content-Length: 0\r\n\r\n",
    "REGISTER sip:{gw} SIP/2.0\r\n" + _HEAD + "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:fuzz@{ip}:5099>;expires=60\r\nContent-Length: 0\r\n\r\n",
    "BYE sip:echo@{gw} SIP/2.0\r\n" + _HEAD + "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
    "CANCEL sip:echo@{gw} SIP/2.0\r\n" + _HEAD + "CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
    "NOTIFY sip:echo@{gw} SIP/2.0\r\n" + _HEAD + "CSeq: 3 NOTIFY\r\nEvent: refer;id=3\r\n"
    "Subscription-State: active;expires=60\r\nContent-Type: message/sipfrag;version=2.0\r\n"
    "Content-Length: 16\r\n\r\nSIP/2.0 180 Ring",
    "REFER sip:echo@{gw} SIP/2.0\r\n" + _HEAD + "CSeq: 4 REFER\r\n"
    "Refer-To: <sip:100@{ip}>\r\nReferred-By: <sip:fuzz@{ip}>\r\nContent-Length: 0\r\n\r\n",
    "INFO sip:echo@{gw} SIP/2.0\r\n" + _HEAD + "CSeq: 5 INFO\r\n"
    "Content-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\n"
    "Signal=5\r\nDuration=160\r\n",
    "SIP/2.0 200 OK\r\n" + _HEAD + "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
]
_JUNK = [
    b"\x00", b"\r\n", b"\r", b"\n", b";", b":", b",", b"<", b">", b'"', b"%", b"%00", b"\\",
    b"\xff\xfe", b"\xc3\x28", b" " * 64, b"\t", b"A" * 300, b"=" * 20, b"[", b"]", b"@",
    b"sip:", b"SIP/2.0", b";branch=", b";tag=", b"Content-Length: 99999\r\n", b"\r\n\r\n",
    b"9" * 30, b"-1", b"m=audio 0 RTP/AVP", b"c=IN IP4 ", b"a=rtpmap:",
]


def corpus_seeds() -> list[bytes]:
    """The project's malformed-message corpus (tests/unit), when it is there."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.unit import interop_corpus
        from tests.unit.corpus import CORPUS
    except ImportError:  # a checkout without its tests: the templates suffice
        return []
    datas = [*(s.data for s in CORPUS), *(s.data for s in interop_corpus.NOTIFIES),
             *(s.data for s in interop_corpus.REFER_ANSWERS),
             *(s.data for s in interop_corpus.DIALOGS)]
    return [d for d in datas if len(d) < 60000]


class Mutator:
    def __init__(self, rng: random.Random, seeds: list[bytes]) -> None:
        self.rng = rng
        self.seeds = seeds

    def seed(self, transport: str, ip: str) -> bytes:
        rng = self.rng
        if self.seeds and rng.random() < 0.3:
            return rng.choice(self.seeds)
        return rng.choice(_TEMPLATES).format(
            t=transport, ip=ip, gw=GATEWAY, b=rng.getrandbits(48), tag=rng.getrandbits(32),
            cid=rng.getrandbits(64), to=rng.choice(["", f";tag={rng.getrandbits(32)}"]),
        ).encode()

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(9)
            pos = rng.randrange(len(buf) + 1)
            if op == 0 and buf:  # flip bytes
                for _ in range(rng.randint(1, 8)):
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
            elif op == 1:  # truncate
                del buf[pos:]
            elif op == 2:  # insert junk
                buf[pos:pos] = rng.choice(_JUNK) * rng.choice([1, 1, 1, 4, 50])
            elif op == 3:  # delete a span
                del buf[pos:pos + rng.randint(1, 40)]
            elif op in (4, 5):  # repeat or drop a line
                lines = bytes(buf).split(b"\r\n")
                i = rng.randrange(len(lines))
                if op == 4:
                    lines[i:i] = [lines[i]] * rng.choice([1, 2, 10, 200])
                else:
                    del lines[i]
                buf = bytearray(b"\r\n".join(lines))
            elif op == 6:  # lie about the length
                text = bytes(buf)
                at = text.lower().find(b"content-length:")
                if at >= 0:
                    end = text.find(b"\r\n", at)
                    end = len(text) if end < 0 else end
                    value = rng.choice([b"-1", b"0", b"99999999999", b"abc", b"10, 20", b"5"])
                    buf = bytearray(text[:at + 15] + b" " + value + text[end:])
            elif op == 7:  # garble one header's value
                lines = bytes(buf).split(b"\r\n")
                i = rng.randrange(len(lines))
                name, sep, _ = lines[i].partition(b":")
                if sep:
                    lines[i] = name + b": " + bytes(
                        rng.randrange(256) for _ in range(rng.randint(0, 60))
                    )
                buf = bytearray(b"\r\n".join(lines))
            else:  # splice with another message
                other = self.seed("UDP", UDP_FUZZ_IP)
                buf = buf[:pos] + other[rng.randrange(len(other) + 1):]
        return bytes(buf[:65000])


# --- the parts of the mix, each a thread ---------------------------------------------


@dataclass
class MixStats:
    udp_sent: int = 0
    udp_answers: int = 0
    tcp_connections: int = 0
    tcp_messages: int = 0
    tcp_answers: int = 0
    tcp_refused: int = 0
    half_open_opened: int = 0
    half_open_closed_by_gateway: int = 0
    scans: list[str] = field(default_factory=list)


def udp_fuzz(port: int, rate: float, stop_at: threading.Event, stats: MixStats,
             mutator: Mutator) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((UDP_FUZZ_IP, 5099))
    sock.setblocking(False)
    with sock:
        next_send = time.monotonic()
        while not stop_at.is_set():
            now = time.monotonic()
            while next_send <= now:
                with contextlib.suppress(OSError):
                    sock.sendto(mutator.mutate(mutator.seed("UDP", UDP_FUZZ_IP)), (GATEWAY, port))
                    stats.udp_sent += 1
                next_send += 1 / rate
            while True:
                try:
                    sock.recv(65535)
                    stats.udp_answers += 1
                except OSError:
                    break
            time.sleep(max(0.0, min(0.05, next_send - time.monotonic())))


def tcp_fuzz(port: int, rate: float, stop_at: threading.Event, stats: MixStats,
             mutator: Mutator) -> None:
    rng = mutator.rng
    while not stop_at.wait(1 / rate):
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((TCP_FUZZ_IP, 0))
            sock.settimeout(0.3)
            sock.connect((GATEWAY, port))
        except OSError:
            stats.tcp_refused += 1
            sock.close()
            continue
        stats.tcp_connections += 1
        with sock:
            try:
                for _ in range(rng.randint(1, 3)):
                    data = mutator.mutate(mutator.seed("TCP", TCP_FUZZ_IP))
                    while data:  # in pieces, as a slow or odd stack would send it
                        cut = rng.randint(1, len(data))
                        sock.sendall(data[:cut])
                        data = data[cut:]
                    stats.tcp_messages += 1
                if sock.recv(65535):
                    stats.tcp_answers += 1
            except OSError:
                pass


def half_open(port: int, count: int, stop_at: threading.Event, stats: MixStats) -> None:
    """Connections that send half a header and wait; reopened when the gateway closes one."""
    open_: list[socket.socket] = []
    try:
        while not stop_at.is_set():
            while len(open_) < count:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.bind((HALF_OPEN_IP, 0))
                    sock.settimeout(1)
                    sock.connect((GATEWAY, port))
                    sock.sendall(b"INVITE sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP ")
                except OSError:
                    sock.close()
                    break
                sock.setblocking(False)
                open_.append(sock)
                stats.half_open_opened += 1
            readable, _, _ = select.select(open_, [], [], 1.0) if open_ else ([], [], [])
            for sock in readable:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    stats.half_open_closed_by_gateway += 1
                    open_.remove(sock)
                    sock.close()
            if len(open_) < count:
                stop_at.wait(0.5)
    finally:
        for sock in open_:
            sock.close()


def scans(port: int, stop_at: threading.Event, stats: MixStats, every: float) -> None:
    """SIPVicious against the gateway: svmap, then svwar by INVITE, then by OPTIONS."""
    kinds = [
        ["svmap", GATEWAY, "-p", str(port), "-b", SCAN_IP],
        ["svwar", "-e100-140", "-m", "INVITE", GATEWAY, "-p", str(port), "-b", SCAN_IP],
        ["svwar", "-e100-140", "-m", "OPTIONS", GATEWAY, "-p", str(port), "-b", SCAN_IP],
    ]
    if shutil.which("svwar") is None:
        stats.scans.append("sipvicious not installed: no scans")
        return
    i = 0
    while not stop_at.wait(every if i else 20):
        cmd = kinds[i % len(kinds)]
        i += 1
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True,
                                  timeout=every * 0.8)
            stats.scans.append(f"{' '.join(cmd[:3])}: exit {proc.returncode}")
        except subprocess.TimeoutExpired:
            stats.scans.append(f"{' '.join(cmd[:3])}: timed out")


# --- the gateway -----------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def active_calls(http: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://{GATEWAY}:{http}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("sipbridge_calls_active "):
                    return int(float(line.split()[1]))
    except (OSError, ValueError):
        pass
    return None


def write_config(work: Path, port: int, http: int, log_level: str) -> Path:
    """The gateway's config; `[rate_limit] enabled = false` only where the gateway has it
    (one source places every call of the soak: no per-source limit should count it)."""
    base = (
        f'sip = "{GATEWAY}:{port}"\nhttp = "{GATEWAY}:{http}"\nauto_answer = "echo"\n'
        f'ring_time = 0.0\nlog_level = "{log_level}"\nstore = "{work / "sipbridge.db"}"\n'
        'rtp_ports = "20000-29999"\n'
    )
    path = work / "sipbridge.toml"
    path.write_text(base + "\n[rate_limit]\nenabled = false\n")
    from sipbridge.config import ConfigError, load_config

    try:
        load_config(path)
    except ConfigError as exc:  # this gateway has no such table
        print(f"soak: no per-source rate limit to turn off ({str(exc).splitlines()[0]})")
        path.write_text(base)
    return path


def start_gateway(work: Path, log_level: str, traced: Path | None, frames: int) -> tuple[
        subprocess.Popen[bytes], int, int, Path]:
    port = free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))
    http = free_port((socket.SOCK_STREAM,))
    config = write_config(work, port, http, log_level)
    log = work / "sipbridge.log"
    if traced is None:
        cmd = [sys.executable, "-m", "sipbridge", "serve", "--config", str(config)]
    else:
        cmd = [sys.executable, str(Path(__file__).with_name("soak_gateway.py")), str(traced),
               str(frames), "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPBRIDGE_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 20
    while not options_ping(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"soak: the gateway did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)
    return proc, port, http, log


@dataclass
class Sample:
    t: float
    rss_kb: int
    fds: int
    log_bytes: int
    cpu_pct: float
    calls_active: int | None


def snapshot(proc: subprocess.Popen[bytes], traced: Path, n: int) -> bool:
    """Ask the traced gateway for snapshot n; wait until it is written."""
    proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (traced / f"snap-{n}.json").exists():
            return True
        time.sleep(0.5)
    print(f"soak: snapshot {n} not written within 120 s")
    return False


def compare_snapshots(traced: Path, first: int, last: int, top: int) -> None:
    """What grew between two snapshots: allocation sites, their callers, object types."""
    import json
    import tracemalloc

    a = tracemalloc.Snapshot.load(str(traced / f"snap-{first}.pickle"))
    b = tracemalloc.Snapshot.load(str(traced / f"snap-{last}.pickle"))
    ja = json.loads((traced / f"snap-{first}.json").read_text())
    jb = json.loads((traced / f"snap-{last}.json").read_text())
    print(f" tracemalloc: traced {ja['traced'] / 1e6:.1f} MB -> {jb['traced'] / 1e6:.1f} MB, "
          f"live objects {ja['objects']} -> {jb['objects']}")
    print(f"top {top} allocation sites by growth (snapshot {first} -> {last}):")
    for stat in b.compare_to(a, "lineno")[:top]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / 1e3:+10.1f} kB {stat.count_diff:+8d} blocks  "
              f"{frame.filename.replace(str(ROOT) + '/', '')}:{frame.lineno}")
    print("the 3 largest by traceback (innermost frame first):")
    for stat in b.compare_to(a, "traceback")[:3]:
        print(f"  {stat.size_diff / 1e3:+10.1f} kB {stat.count_diff:+8d} blocks")
        for frame in reversed(list(stat.traceback)[-6:]):
            print(f"      {frame.filename.replace(str(ROOT) + '/', '')}:{frame.lineno}")
    growth = sorted(
        ((n, jb["types"].get(n, 0) - ja["types"].get(n, 0))
         for n in set(ja["types"]) | set(jb["types"])),
        key=lambda x: -x[1],
    )
    print("live objects by type, largest growth: " + ", ".join(
        f"{n} {d:+d}" for n, d in growth[:15] if d > 0))


def slope_mb_per_min(samples: list[Sample], after: float) -> float | None:
    pts = [(s.t / 60, s.rss_kb / 1024) for s in samples if s.t >= after]
    if len(pts) < 3:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else None


def soak(args: argparse.Namespace) -> int:
    total = args.minutes * 60
    warmup = min(args.warmup * 60, total / 2)
    rng = random.Random(args.seed)
    with workdir(args.keep, "soak-") as work:
        traced = work / "tracemalloc" if args.tracemalloc else None
        proc, port, http, log = start_gateway(work, args.log_level, traced, args.frames)
        scenario = work / "soak_uac.xml"
        scenario.write_text(SCENARIO.replace("PCAP", str(PCAP))
                            .replace("CALL_MS", str(int(args.call_seconds * 1000))))
        placing = max(1.0, total - args.call_seconds - 15)
        calls = max(1, int(args.rate * placing))
        stats_file = work / "sipp-stats.csv"
        sipp_cmd = [
            "sipp", f"{GATEWAY}:{port}", "-sf", str(scenario), "-s", "echo",
            "-i", SIPP_IP, "-mi", SIPP_IP, "-p", "5070", "-bind_local", "-t", "u1",
            "-mp", "16000", "-cp", "5071",
            "-r", f"{args.rate:g}", "-m", str(calls), "-nostdin",
            "-recv_timeout", "10000", "-timeout", f"{total + 60}s", "-timeout_error",
            "-trace_stat", "-stf", str(stats_file), "-fd", "10",
            "-trace_err", "-error_file", str(work / "sipp-errors.log"),
        ]  # fmt: skip
        mix = MixStats()
        stop_mix = threading.Event()
        mutator = Mutator(rng, corpus_seeds())
        threads = []
        if not args.no_mix:
            threads = [
                threading.Thread(target=udp_fuzz,
                                 args=(port, args.udp_rate, stop_mix, mix, mutator)),
                threading.Thread(target=tcp_fuzz, args=(port, args.tcp_rate, stop_mix, mix,
                                                        Mutator(random.Random(rng.random()),
                                                                mutator.seeds))),
                threading.Thread(target=half_open, args=(port, args.half_open, stop_mix, mix)),
                threading.Thread(target=scans, args=(port, stop_mix, mix, 60.0)),
            ]
        samples: list[Sample] = []
        start = time.monotonic()
        cpu0, t_cpu = cpu_seconds(proc.pid), start

        def sample() -> Sample:
            nonlocal cpu0, t_cpu
            now = time.monotonic()
            cpu = cpu_seconds(proc.pid)
            s = Sample(now - start, rss_kb(proc.pid), fd_count(proc.pid),
                       log.stat().st_size if log.exists() else 0,
                       100 * (cpu - cpu0) / (now - t_cpu) if now > t_cpu else 0.0,
                       active_calls(http))
            cpu0, t_cpu = cpu, now
            samples.append(s)
            print(f"  {s.t / 60:5.1f} min  rss {s.rss_kb / 1024:7.1f} MB  fds {s.fds:5d}  "
                  f"log {s.log_bytes / 1e6:7.2f} MB  cpu {s.cpu_pct:5.1f}%  "
                  f"calls active {s.calls_active}", flush=True)
            return s

        mix_text = ("off" if args.no_mix else f"udp {args.udp_rate:g}/s tcp {args.tcp_rate:g}/s "
                    f"half-open {args.half_open}")
        print(f"soak: {args.minutes} min, SIPp {args.rate:g} calls/s x {args.call_seconds:g} s "
              f"with PCMA media ({calls} calls), mix {mix_text}"
              f"; gateway pid {proc.pid}, work dir {work}", flush=True)
        sample()
        with (work / "sipp.log").open("wb") as out:
            sipp = subprocess.Popen(sipp_cmd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        for t in threads:
            t.start()
        snaps = 0
        snap_times = sorted({warmup, *(60 * m for m in args.snapshot_at if 0 < m * 60 < total)})
        snapped: list[float] = []  # when each snapshot was taken, seconds into the soak
        try:
            next_sample = start + args.sample
            while time.monotonic() - start < total:
                time.sleep(max(0.0, min(next_sample, start + total) - time.monotonic()))
                if proc.poll() is not None:
                    print("soak: the gateway exited")
                    break
                if time.monotonic() >= next_sample:
                    next_sample += args.sample
                    sample()
                if traced is not None and snap_times and time.monotonic() - start >= snap_times[0]:
                    snap_times.pop(0)
                    if snapshot(proc, traced, snaps + 1):
                        snaps += 1
                        snapped.append(time.monotonic() - start)
        finally:
            stop_mix.set()
            for t in threads:
                t.join(timeout=90)
            with contextlib.suppress(subprocess.TimeoutExpired):
                sipp.wait(timeout=60)
            if sipp.poll() is None:
                sipp.kill()
                sipp.wait()
        end = sample()
        if traced is not None and proc.poll() is None and snaps and snapshot(proc, traced,
                                                                             snaps + 1):
            snaps += 1
            snapped.append(time.monotonic() - start)
        alive = proc.poll() is None
        stop(proc)

        st = read_stats(stats_file)
        made = int(st.get("TotalCallCreated", 0) or 0)
        ok = int(st.get("SuccessfulCall(C)", 0) or 0)
        failed = int(st.get("FailedCall(C)", 0) or 0)
        print(f"\ncalls: attempted {made} of {calls}, succeeded {ok}, failed {failed} "
              f"(SIPp exit {sipp.returncode})")
        errors = work / "sipp-errors.log"
        if failed and errors.exists():
            tail = errors.read_text(errors="replace").strip().splitlines()[-5:]
            print("  SIPp's last errors:\n    " + "\n    ".join(tail))
        print(f"mix: udp {mix.udp_sent} sent / {mix.udp_answers} answered; "
              f"tcp {mix.tcp_connections} connections, {mix.tcp_messages} messages, "
              f"{mix.tcp_answers} answered, {mix.tcp_refused} refused; half-open "
              f"{mix.half_open_opened} opened, {mix.half_open_closed_by_gateway} closed by the "
              f"gateway; scans: {'; '.join(mix.scans) or 'none'}")
        warm = next((s for s in samples if s.t >= warmup), end)
        first = samples[0]
        print(f"gateway: {'ran to the end' if alive else 'EXITED'}; rss {first.rss_kb / 1024:.1f}"
              f" MB at start, {warm.rss_kb / 1024:.1f} MB after warm-up ({warm.t / 60:.1f} min), "
              f"{end.rss_kb / 1024:.1f} MB at end; fds {first.fds} / {warm.fds} / {end.fds}; "
              f"log {end.log_bytes / 1e6:.2f} MB")
        slope = slope_mb_per_min(samples, warmup)
        if slope is not None:
            print(f"rss slope after warm-up: {slope:+.2f} MB/min")
        summary = [ln for ln in log.read_text(errors="replace").splitlines()
                   if ln.startswith("sipbridge: stopped")]
        if summary:
            print(summary[-1])
        if traced is not None:
            # From the end of the warm-up to the end, then each later snapshot to the end.
            for begin in range(1, snaps):
                print(f"\nsnapshot at {snapped[begin - 1] / 60:.1f} min -> end "
                      f"({snapped[-1] / 60:.1f} min):", end="")
                compare_snapshots(traced, begin, snaps, args.top if begin == 1 else 10)
        return 0 if alive and not failed else 1


def in_namespace(argv: list[str]) -> int:
    """Run this script again inside a network namespace of its own (loopback only)."""
    name = f"sipbridge-soak-{os.getpid()}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")  # nothing answers there
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, SOAK_NETNS=name)
        return subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, str(Path(__file__).resolve()), *argv],
            env=env, check=False,
        ).returncode
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10, help="how long (default 10)")
    ap.add_argument("--rate", type=float, default=3, help="SIPp calls per second (default 3)")
    ap.add_argument("--call-seconds", type=float, default=8, help="each call's length (8)")
    ap.add_argument("--udp-rate", type=float, default=20, help="mutated UDP messages/s (20)")
    ap.add_argument("--tcp-rate", type=float, default=4, help="mutated TCP connections/s (4)")
    ap.add_argument("--half-open", type=int, default=40, help="half-open TCP connections (40)")
    ap.add_argument("--no-mix", action="store_true", help="calls only, no malformed traffic")
    ap.add_argument("--sample", type=float, default=30, help="seconds between samples (30)")
    ap.add_argument("--warmup", type=float, default=2, help="minutes of warm-up (2)")
    ap.add_argument("--log-level", default="info", help="the gateway's (default info)")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="trace the gateway's allocations; compare warm-up with the end")
    ap.add_argument("--snapshot-at", type=lambda t: [float(m) for m in t.split(",") if m],
                    default=[], metavar="MIN,MIN",
                    help="with --tracemalloc: more snapshots at these minutes (the end of the "
                    "warm-up and the end are always taken)")
    ap.add_argument("--frames", type=int, default=4,
                    help="traceback frames tracemalloc keeps per allocation (4)")
    ap.add_argument("--top", type=int, default=15, help="allocation sites shown (15)")
    ap.add_argument("--seed", type=int, default=13, help="the mix's random seed")
    ap.add_argument("--keep", metavar="DIR", help="keep the logs, stats and snapshots in DIR")
    args = ap.parse_args()
    for tool in ("sipp", "ip"):
        if shutil.which(tool) is None:
            print(f"soak: {tool} not found (scripts/setup.sh installs SIPp; ip is iproute2)")
            return 2
    if not PCAP.exists():
        print(f"soak: {PCAP} not found (Debian package sip-tester)")
        return 2
    if "SOAK_NETNS" not in os.environ:
        if os.geteuid() != 0:
            print("soak: needs root, for its network namespace (and SIPp's pcap play)")
            return 2
        return in_namespace(sys.argv[1:])
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
