"""One gateway process per core, or one process with media workers: the figures that decide.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/multicore.py [--calls 100] [--cps 300] [--duration 5] [--repeat 3]
        [--frames 20000] [--handovers 2000] [--parts media,setup,handover,reuseport] [--cross]

Four parts, in one run on a 2-core machine:

- ``media``: bench/media_echo.py's echoed calls (``--calls`` per gateway), first against
  one gateway pinned to core 0, then against two gateways at once, each pinned to its own
  core with its own SIP port, RTP range and store. Each gateway's load generator runs on
  the gateway's own core, so that each of the two is exactly what the one alone was
  (``--cross``: on the other core, as media_echo.py runs it). The figure: each gateway's
  CPU per echoed frame, the two's mean over the single one's.
- ``setup``: bench/sip_cps.py's SIPp calls at ``--cps`` per gateway, the same way round:
  CPU per call set up, two gateways' mean over one's.
- ``handover``: what the single-process design (media workers per core) pays to move work
  between processes, to a worker on the other core over an AF_UNIX SOCK_SEQPACKET
  socketpair: an RTP frame (172 bytes) there and back one at a time, there and back 50 to
  a message, and one way without waiting; and a call's bound socket handed over with
  SCM_RIGHTS (``socket.send_fds``/``recv_fds``). Wall and CPU (both processes)
  microseconds per frame and per hand-over.
- ``reuseport``: two processes bind the same UDP port with SO_REUSEPORT; one source
  (a trunk: one address and port) sends datagrams, then many sources do; how the kernel
  shares them out between the processes.

The media and set-up parts repeat (``--repeat``), one process then two each time, so the
machine's noise falls on both alike; ratios are per repeat, and the decision takes their
median. The last lines weigh the figures: the decision and its reasons. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import media_echo
import sip_cps

FRAME = bytes(12) + bytes(160)  # an RTP header and 20 ms of PCMU
BATCH = 50  # frames to one message in the batched hand-over
REUSEPORT_DATAGRAMS = 2000
REUSEPORT_SOURCES = 200

# Disjoint port ranges for the gateways and generators that run side by side.
MEDIA_GATEWAY_PORTS = ((20000, 22999), (23000, 25999))
MEDIA_GENERATOR_PORTS = ((26000, 28999), (29000, 31999))
SETUP_RTP_PORTS = ("10000-14999", "15000-19999")

T = TypeVar("T")


# --- the figures' arithmetic (pure) ------------------------------------------------


def ratios(one: Sequence[float], two: Sequence[Sequence[float]]) -> list[float]:
    """Per repeat: the mean cost of the processes that ran side by side over the cost of
    the one that ran alone (a repeat with a zero or missing figure is left out)."""
    out = []
    for alone, side_by_side in zip(one, two, strict=True):
        if alone > 0 and side_by_side and all(v > 0 for v in side_by_side):
            out.append(statistics.fmean(side_by_side) / alone)
    return out


def span(values: Sequence[float], fmt: str = ".2f", unit: str = "") -> str:
    """``low-high`` of some figures (one figure alone when they agree), or ``-``."""
    if not values:
        return "-"
    low, high = format(min(values), fmt), format(max(values), fmt)
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def shares(counts: Sequence[int]) -> list[float]:
    """Each process's share of the datagrams, in percent."""
    total = sum(counts)
    return [100.0 * c / total if total else 0.0 for c in counts]


def spreads(counts: Sequence[int]) -> bool:
    """Whether more than one process got any of the datagrams."""
    return sum(1 for c in counts if c) > 1


@dataclass
class Figures:
    """What the run measured, as the decision weighs it (None: that part did not run)."""

    frame_us: float | None = None  # one gateway's CPU per echoed frame
    media_ratio: float | None = None  # two gateways' CPU per frame over one's (median)
    call_us: float | None = None  # one gateway's CPU per call set up
    setup_ratio: float | None = None  # two gateways' CPU per call over one's (median)
    back_us: float | None = None  # CPU to move a frame to a worker and back, one at a time
    batched_us: float | None = None  # ... per frame, BATCH frames to a message
    one_way_us: float | None = None  # ... one way, one frame to a message
    socket_us: float | None = None  # CPU to hand a socket to a worker (SCM_RIGHTS)
    one_source_spreads: bool | None = None  # SO_REUSEPORT shared one source's datagrams


def decide(f: Figures) -> list[str]:
    """The choice and the reasons the figures give for it. A second process per core pays
    its overhead on every frame and call without handing anything over; media workers fed
    by one process pay a hand-over per frame; workers given each call's sockets pay one per
    call. Either worker design keeps SIP on the front's one core and splits each call's
    state between two processes; SO_REUSEPORT does not spread one trunk's calls, so
    spreading SIP needs a SIP-aware front end, after which processes need nothing of each
    other."""
    lines = ["decision: one gateway process per core behind Kamailio (the cluster design)"]
    per_frame = []
    if f.media_ratio is not None:
        per_frame.append(f"a second process {f.media_ratio - 1:+.0%} (two side by side "
                         "over one alone)")
    if f.frame_us:
        for name, us in (("one way", f.one_way_us), ("there and back", f.back_us),
                         (f"batched by {BATCH} (each frame held until {BATCH} have come)",
                          f.batched_us)):
            if us:
                per_frame.append(f"feeding a worker {name} {us / f.frame_us:+.0%} "
                                 f"({us:.1f} us)")
    if per_frame:
        at = f" of {f.frame_us:.0f} us" if f.frame_us else ""
        lines.append(f"CPU per echoed frame{at}: " + "; ".join(per_frame))
    per_call = []
    if f.setup_ratio is not None:
        per_call.append(f"a second process {f.setup_ratio - 1:+.0%}")
    if f.socket_us:
        share = f"{f.socket_us / f.call_us:+.1%} " if f.call_us else ""
        per_call.append(f"handing the call's socket to a worker {share}({f.socket_us:.1f} us)")
    if per_call:
        at = f" of {f.call_us:.0f} us" if f.call_us else ""
        lines.append(f"CPU per call set up{at}: " + "; ".join(per_call))
    cheaper = bool(
        f.media_ratio is not None and f.frame_us and f.one_way_us
        and f.one_way_us / f.frame_us < f.media_ratio - 1
    )
    lines.append(
        ("frames fed one way to a worker cost less than a second process here, but "
         if cheaper else "no hand-over saves CPU over a second process, and ")
        + "workers leave every call's SIP on the front's one core and every mid-call event "
        "(re-INVITE, DTMF, BYE, transfer, the agent's audio) crossing between processes; "
        "processes per core set up calls and carry media each on its own core, sharing "
        "nothing"
    )
    if f.one_source_spreads is False:
        lines.append(
            "SO_REUSEPORT gives one source (a trunk) to one process: a trunk's calls reach "
            "every process only through a SIP-aware front end (Kamailio's dispatcher)"
        )
    elif f.one_source_spreads:
        lines.append("SO_REUSEPORT shared one source's datagrams between processes")
    return lines


# --- running jobs in processes of their own -----------------------------------------


def in_processes(jobs: Sequence[tuple[Callable[..., T], tuple[Any, ...]]]) -> list[T]:
    """Run each job in a forked process of its own, all at once; their results in order."""
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
        futures = [pool.submit(fn, *job_args) for fn, job_args in jobs]
        return [f.result() for f in futures]


def pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


# --- (a) one gateway against two: media ------------------------------------------------


def media_job(n: int, slot: int, gateway_core: int | None, generator_core: int | None,
              args: argparse.Namespace, root: Path) -> media_echo.Step:
    """bench/media_echo.py's step, this process the generator, in ports of its own."""
    pin(generator_core)
    media_echo.precise_sleep()
    media_echo.GATEWAY_PORTS = MEDIA_GATEWAY_PORTS[slot]
    media_echo.GENERATOR_PORTS = MEDIA_GENERATOR_PORTS[slot]
    step_args = argparse.Namespace(
        media_path=args.media_path, server_core=gateway_core, rate=args.rate,
        warmup=args.warmup, duration=args.duration,
    )
    root.mkdir(parents=True, exist_ok=True)
    return media_echo.run_step(n, step_args, root)


def setup_job(rate: int, slot: int, server_core: int | None, client_core: int | None,
              args: argparse.Namespace, root: Path) -> sip_cps.Step:
    """bench/sip_cps.py's step at one rate, against a gateway with an RTP range of its own."""
    ports = SETUP_RTP_PORTS[slot]

    def start(workdir: Path, core: int | None, transport: str) -> sip_cps.Server:
        return sip_cps.start_sipbridge(workdir, core, transport,
                                       extra_config=f'rtp_ports = "{ports}"\n')

    target = f"sipbridge-{slot}"
    sip_cps.STARTERS[target] = start
    step_args = argparse.Namespace(
        duration=args.setup_duration, transport="udp", server_core=server_core,
        client_core=client_core,
    )
    root.mkdir(parents=True, exist_ok=True)
    return sip_cps.run_step(target, rate, step_args, root)


@dataclass
class Scaling:
    """One part's cost per unit, alone and side by side, repeat by repeat."""

    unit: str
    one: list[float]
    two: list[list[float]]

    def ratio(self) -> float | None:
        """The median of the repeats' ratios (None: no repeat counted)."""
        r = ratios(self.one, self.two)
        return statistics.median(r) if r else None

    def line(self) -> str:
        r = ratios(self.one, self.two)
        return (f"{self.unit}: one process {span(self.one, '.0f', ' us')}, two processes "
                f"{span([statistics.fmean(t) for t in self.two if t], '.0f', ' us')} "
                f"(mean of the two): {span(r, '.2f', 'x')} the CPU of one")


def load_cores(cores: list[int | None], args: argparse.Namespace) -> tuple[int | None, ...]:
    """Where each gateway's load runs: on the gateway's own core, so that two gateways are
    each exactly what one alone was (a gateway and its load on a core); or, with
    ``--cross``, on the other core (as media_echo.py and sip_cps.py run it), where alone
    a gateway has its core to itself but side by side it shares it with the other's load."""
    a, b = cores
    return (b, a) if args.cross else (a, b)


def media_part(cores: list[int | None], args: argparse.Namespace, root: Path,
               repeat: int, found: Scaling) -> None:
    a, b = cores
    load_a, load_b = load_cores(cores, args)
    n = args.calls
    alone = in_processes([(media_job, (n, 0, a, load_a, args, root / f"media-{repeat}-one"))])
    media_echo.print_step(alone[0], "one  core " + f"{a} ")
    time.sleep(args.cooldown)
    pair = in_processes([
        (media_job, (n, 0, a, load_a, args, root / f"media-{repeat}-two-a")),
        (media_job, (n, 1, b, load_b, args, root / f"media-{repeat}-two-b")),
    ])
    for core, step in zip((a, b), pair, strict=True):
        media_echo.print_step(step, "two  core " + f"{core} ")
    ok = [s for s in (*alone, *pair) if s.up == n]
    if len(ok) == 3:
        found.one.append(alone[0].us_per_frame)
        found.two.append([s.us_per_frame for s in pair])
    else:
        print("  (a gateway did not get every call up: this repeat is left out)")


def setup_part(cores: list[int | None], args: argparse.Namespace, root: Path,
               repeat: int, found: Scaling) -> None:
    a, b = cores
    load_a, load_b = load_cores(cores, args)
    alone = in_processes([
        (setup_job, (args.cps, 0, a, load_a, args, root / f"setup-{repeat}-one")),
    ])
    print_setup(alone[0], f"one  core {a}")
    time.sleep(args.cooldown)
    pair = in_processes([
        (setup_job, (args.cps, 0, a, load_a, args, root / f"setup-{repeat}-two-a")),
        (setup_job, (args.cps, 1, b, load_b, args, root / f"setup-{repeat}-two-b")),
    ])
    for core, step in zip((a, b), pair, strict=True):
        print_setup(step, f"two  core {core}")
    if all(s.passed for s in (*alone, *pair)):
        found.one.append(alone[0].cpu_per_call)
        found.two.append([s.cpu_per_call for s in pair])
    else:
        print("  (a step failed: this repeat is left out)")


def print_setup(step: sip_cps.Step, label: str) -> None:
    verdict = "pass" if step.passed else f"FAIL: {step.why}"
    print(f"{label} {step.rate:>5} cps {step.successful:>6}/{step.calls:<6} calls, server "
          f"{step.server_cpu:5.1f}% cpu, {step.cpu_per_call:5.0f} us/call, SIPp "
          f"{step.client_cpu:4.1f}%  {verdict}", flush=True)


# --- (b) the hand-over: a frame, or a socket, to another process ---------------------------


def echo_worker(chan: socket.socket, report: multiprocessing.connection.Connection,
                core: int | None) -> None:
    """Send back each message until the other side shuts down; then report this process's
    CPU seconds meanwhile."""
    pin(core)
    cpu0 = time.process_time()
    while True:
        data = chan.recv(65536)
        if not data:
            break
        chan.send(data)
    report.send(time.process_time() - cpu0)


def sink_worker(chan: socket.socket, report: multiprocessing.connection.Connection,
                core: int | None) -> None:
    """Take each message, and the socket it carries if any (SCM_RIGHTS) as a socket object,
    until the other side shuts down; report this process's CPU seconds meanwhile, then
    close what it took."""
    pin(core)
    taken: list[socket.socket] = []
    cpu0 = time.process_time()
    while True:
        msg, fds, _, _ = socket.recv_fds(chan, 65536, 1)
        if not msg:
            break
        taken.extend(socket.socket(fileno=fd) for fd in fds)
    report.send(time.process_time() - cpu0)
    for s in taken:
        s.close()


@dataclass
class Handover:
    what: str
    count: int
    wall_us: float  # per frame or per hand-over, until the worker has taken the last
    cpu_us: float  # both processes


def with_worker(worker: Callable[..., None], core: int | None,
                drive: Callable[[socket.socket], int], what: str) -> Handover:
    """Start `worker` in a process pinned to `core`, run `drive` against it (it returns how
    many frames or sockets it handed over), and time it to the worker's report: wall, and
    CPU of both sides."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    receive, send = multiprocessing.Pipe(duplex=False)
    proc = multiprocessing.get_context("fork").Process(target=worker, args=(theirs, send, core))
    proc.start()
    theirs.close()
    try:
        time.sleep(0.05)  # the worker up and waiting
        t0, cpu0 = time.perf_counter(), time.process_time()
        count = drive(ours)
        cpu = time.process_time() - cpu0
        ours.shutdown(socket.SHUT_WR)
        if not receive.poll(30):
            raise RuntimeError(f"{what}: the worker did not report")
        cpu += float(receive.recv())
        wall = time.perf_counter() - t0
    finally:
        ours.close()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    return Handover(what, count, 1e6 * wall / count, 1e6 * cpu / count)


def frames_and_back(n: int, batch: int) -> Callable[[socket.socket], int]:
    """Frames there and back, `batch` to a message, waiting for each message's return."""
    message = FRAME * batch

    def drive(chan: socket.socket) -> int:
        messages = max(1, n // batch)
        for _ in range(messages):
            chan.send(message)
            chan.recv(65536)
        return messages * batch
    return drive


def frames_one_way(n: int) -> Callable[[socket.socket], int]:
    """Frames one to a message, one way, without waiting."""
    def drive(chan: socket.socket) -> int:
        for _ in range(n):
            chan.send(FRAME)
        return n
    return drive


def sockets_handed(n: int) -> Callable[[socket.socket], int]:
    """Bound UDP sockets (bound here, before the clock starts) handed over one way, each
    closed on this side once sent: the call is the worker's."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sip_cps.LOOPBACK, 0))
        socks.append(s)

    def drive(chan: socket.socket) -> int:
        for s in socks:
            socket.send_fds(chan, [b"s"], [s.fileno()])
            s.close()
        return n
    return drive


HANDOVERS = {  # what, as the figures name it
    "back": "frame there and back, one at a time",
    "batched": f"frame there and back, {BATCH} to a message",
    "one way": "frame one way, one to a message",
    "socket": "socket, SCM_RIGHTS, one way",
}


def handover_part(cores: list[int | None], args: argparse.Namespace) -> dict[str, Handover]:
    here = os.sched_getaffinity(0)
    pin(cores[0])
    try:
        found = {
            "back": with_worker(echo_worker, cores[1], frames_and_back(args.frames, 1),
                                HANDOVERS["back"]),
            "batched": with_worker(echo_worker, cores[1],
                                   frames_and_back(args.frames * 10, BATCH),
                                   HANDOVERS["batched"]),
            "one way": with_worker(sink_worker, cores[1], frames_one_way(args.frames * 5),
                                   HANDOVERS["one way"]),
            "socket": with_worker(sink_worker, cores[1], sockets_handed(args.handovers),
                                  HANDOVERS["socket"]),
        }
    finally:
        os.sched_setaffinity(0, here)
    for h in found.values():
        print(f"  {h.what:<40} {h.count:>7} {h.wall_us:>8.2f} {h.cpu_us:>8.2f}", flush=True)
    return found


# --- (c) SO_REUSEPORT and one source ---------------------------------------------------------


def reuseport_worker(port: int, ctl: multiprocessing.connection.Connection,
                     core: int | None) -> None:
    """Bind `port` with SO_REUSEPORT, count datagrams by their first byte (the phase) and
    their sources until told to stop; send back {phase: (datagrams, sources)}."""
    pin(core)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((sip_cps.LOOPBACK, port))
    sock.settimeout(0.02)
    ctl.send("ready")
    counts: dict[int, int] = {}
    sources: dict[int, set[int]] = {}
    stopping = False
    while True:
        try:
            data, (_, source) = sock.recvfrom(64)
        except TimeoutError:
            if stopping:
                break
            stopping = ctl.poll()
            if stopping:
                sock.setblocking(False)
            continue
        except BlockingIOError:
            break
        counts[data[0]] = counts.get(data[0], 0) + 1
        sources.setdefault(data[0], set()).add(source)
    ctl.send({phase: (counts[phase], len(sources[phase])) for phase in counts})
    sock.close()


def reuseport_part(cores: list[int | None]) -> tuple[list[int], list[int], list[int]]:
    """Datagrams each process got from one source, from many, and how many of the many
    sources each one saw."""
    port = sip_cps.free_port((socket.SOCK_DGRAM,))
    context = multiprocessing.get_context("fork")
    links, procs = [], []
    for core in cores:
        ours, theirs = context.Pipe()
        proc = context.Process(target=reuseport_worker, args=(port, theirs, core))
        proc.start()
        links.append(ours)
        procs.append(proc)
    try:
        for link in links:
            if not link.poll(5):
                raise RuntimeError("reuseport: a process did not bind")
            link.recv()
        target = (sip_cps.LOOPBACK, port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk:
            for i in range(REUSEPORT_DATAGRAMS):
                trunk.sendto(b"\x01", target)
                if i % 100 == 99:
                    time.sleep(0.001)  # let the readers keep up
        many = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(REUSEPORT_SOURCES)]
        per_source = REUSEPORT_DATAGRAMS // REUSEPORT_SOURCES
        try:
            for i, source in enumerate(many * per_source):
                source.sendto(b"\x02", target)
                if i % 100 == 99:
                    time.sleep(0.001)
        finally:
            for s in many:
                s.close()
        time.sleep(0.1)
        got = []
        for link in links:
            link.send("stop")
            if not link.poll(5):
                raise RuntimeError("reuseport: a process did not report")
            got.append(link.recv())
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    one = [g.get(1, (0, 0))[0] for g in got]
    spread = [g.get(2, (0, 0))[0] for g in got]
    seen = [g.get(2, (0, 0))[1] for g in got]
    return one, spread, seen


def print_reuseport(one: list[int], many: list[int], seen: list[int]) -> None:
    def shown(counts: list[int]) -> str:
        return "/".join(map(str, counts)) + " (" + "/".join(
            f"{s:.0f}%" for s in shares(counts)) + ")"

    print(f"one source:  {sum(one)} datagrams, per process {shown(one)}")
    print(f"{REUSEPORT_SOURCES} sources: {sum(many)} datagrams, per process {shown(many)}, "
          f"sources seen {'/'.join(map(str, seen))}", flush=True)


# --- the run ------------------------------------------------------------------------------

PARTS = ("media", "setup", "handover", "reuseport")
OPTIONS: tuple[tuple[str, type, float, str], ...] = (  # the numbers: flag, type, default, what
    ("--calls", int, 100, "echoed calls per gateway"),
    ("--cps", int, 300, "calls set up per second per gateway"),
    ("--duration", float, 5.0, "seconds of echo measured per step"),
    ("--setup-duration", int, 5, "seconds of call set-up per step"),
    ("--warmup", float, 1.0, "seconds after the last call is up before measuring"),
    ("--rate", float, 100.0, "echoed calls set up per second"),
    ("--repeat", int, 3, "times the media and set-up parts run"),
    ("--frames", int, 20000, "frames handed over there and back one at a time (ten times as "
     "many batched, five times as many one way)"),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, kind, default, what in OPTIONS:
        ap.add_argument(flag, type=kind, default=default, help=f"{what} (default {default})")
    ap.add_argument("--handovers", type=int, default=2000,
                    help="sockets handed over (default 2000)")
    ap.add_argument("--media-path", default="auto", choices=("auto", "compiled", "python"),
                    help="the gateways' media_path (default auto)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated, of {','.join(PARTS)} (default all)")
    ap.add_argument("--cross", action="store_true",
                    help="run each gateway's load on the other core, not on the gateway's own")
    ap.add_argument("--cooldown", type=float, default=1.0, help="seconds between steps")
    ap.add_argument("--keep", metavar="DIR", help="keep the gateways' configs and logs in DIR")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts):
        ap.error(f"--parts: comma-separated, of {','.join(PARTS)}")
    if min(args.calls, args.cps, args.repeat, args.frames, args.handovers) < 1:
        ap.error("--calls, --cps, --repeat, --frames and --handovers must be >= 1")
    if args.calls > (MEDIA_GATEWAY_PORTS[0][1] - MEDIA_GATEWAY_PORTS[0][0]) // 2:
        ap.error("--calls: too many for the gateways' RTP ranges")
    if "setup" in parts and shutil.which("sipp") is None:
        print("multicore: sipp not found (Debian package sip-tester): the setup part is left out")
        parts.remove("setup")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # two sockets per call each side
    want = max(8 * args.calls, 2 * args.handovers) + 512
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    available = sorted(os.sched_getaffinity(0))
    cores: list[int | None]
    if len(available) >= 2 and shutil.which("taskset"):
        cores = [available[0], available[1]]
        pinning = f"cores {available[0]} and {available[1]}"
    else:
        cores = [None, None]
        pinning = "no pinning (needs taskset and 2 cores): the comparison means little"
    print(f"multicore: {', '.join(parts)}; {args.repeat} repeat(s); {pinning}", flush=True)

    media = Scaling("media, CPU per echoed frame", [], [])
    setup = Scaling("set-up, CPU per call", [], [])
    handovers: dict[str, Handover] = {}
    one_source: list[int] = []
    with sip_cps.workdir(args.keep, "multicore-") as root:
        try:
            for repeat in range(args.repeat):
                if "media" in parts:
                    print(f"media, repeat {repeat + 1}: {args.calls} echoed calls per gateway, "
                          f"{args.duration:g} s (the result column is media_echo.py's verdict "
                          "on capacity; here CPU per frame is the figure)\n           "
                          + media_echo.HEADER, flush=True)
                    media_part(cores, args, root, repeat, media)
                    time.sleep(args.cooldown)
                if "setup" in parts:
                    print(f"set-up, repeat {repeat + 1}: {args.cps} cps per gateway, "
                          f"{args.setup_duration} s", flush=True)
                    setup_part(cores, args, root, repeat, setup)
                    time.sleep(args.cooldown)
            if "handover" in parts:
                print(f"hand-over to a process on the other core:\n  {'what':<40} "
                      f"{'count':>7} {'wall us':>8} {'cpu us':>8}", flush=True)
                handovers = handover_part(cores, args)
            if "reuseport" in parts:
                print("SO_REUSEPORT, two processes on one UDP port:", flush=True)
                one_source, many, seen = reuseport_part(cores)
                print_reuseport(one_source, many, seen)
        except KeyboardInterrupt:
            print("multicore: interrupted")
            return 130

    print("result:")
    for scaling in (media, setup):
        if scaling.one:
            print("  " + scaling.line())
    for h in handovers.values():
        print(f"  hand-over, {h.what}: {h.cpu_us:.2f} us CPU ({h.wall_us:.2f} us wall)")
    if one_source:
        print(f"  SO_REUSEPORT, one source: {'spread' if spreads(one_source) else 'not spread'}"
              f" ({'/'.join(f'{s:.0f}%' for s in shares(one_source))})")

    def cpu(key: str) -> float | None:
        return handovers[key].cpu_us if key in handovers else None

    figures = Figures(
        frame_us=statistics.median(media.one) if media.one else None,
        media_ratio=media.ratio(),
        call_us=statistics.median(setup.one) if setup.one else None,
        setup_ratio=setup.ratio(),
        back_us=cpu("back"), batched_us=cpu("batched"), one_way_us=cpu("one way"),
        socket_us=cpu("socket"),
        one_source_spreads=spreads(one_source) if one_source else None,
    )
    print("\n  - ".join(decide(figures)))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
