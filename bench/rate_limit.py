"""What the per-source rate limit costs, and what it saves under a flood.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/rate_limit.py [--repeat 9] [--flood-rate 20000] [--seconds 10]

Part 1, in process (the sans-IO UA core, no sockets): nanoseconds per message for
an OPTIONS answered with the limit off (the reference), the same with the limit on
(an exempt source; a limited source within its rate), a message of a blocked source,
dropped unread, and the limiter's own check alone. Each figure is the best of
``--repeat`` interleaved rounds, with its range.

Part 2, end to end: a gateway pinned to one core; a UDP flood of OPTIONS from
127.0.0.1 at ``--flood-rate`` messages/s for ``--seconds`` (a process of its own, on
the other core), while a caller at 127.0.0.2 sends one OPTIONS every 100 ms (within
its rate) and times the answers. Once with the limit on, once off (the reference): the
gateway's CPU,
and how many of the caller's OPTIONS were answered and how fast.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from sip_cps import cpu_seconds, start_sipbridge, stop, workdir

from sipbridge.sip.access import AccessGuard
from sipbridge.sip.address import Address
from sipbridge.sip.ratelimit import RateLimiter, RateLimits
from sipbridge.sip.ua import UaConfig, UserAgent

N = 5_000  # messages per in-process run


def options(n: int, host: str, port: int = 5061) -> bytes:
    return (f"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{n}\r\n"
            f"From: <sip:bench@{host}>;tag=t{n}\r\nTo: <sip:gw@127.0.0.1>\r\n"
            f"Call-ID: bench-{n}@{host}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def timed(run: Callable[[], None], count: int) -> float:
    started = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - started) / count


def part1(repeat: int) -> None:
    logging.getLogger("sipbridge").setLevel(logging.ERROR)  # the blocks it sets up
    messages = [options(i, "192.0.2.1") for i in range(N)]
    limited = [options(i, "198.51.100.1") for i in range(N)]

    def receive(limiter: RateLimiter | None, data: list[bytes], host: str, step: float
                ) -> Callable[[], None]:
        ua = UserAgent(UaConfig(), AccessGuard(["0.0.0.0/0"]), limiter=limiter)
        source = Address("udp", host, 5061)

        def run() -> None:
            now = 1_000.0
            for message in data:
                ua.receive(message, source, now)
                ua.outgoing()
                now += step
        return run

    def admit(limiter: RateLimiter, host: str, step: float) -> Callable[[], None]:
        def run() -> None:
            now = 1_000.0
            for _ in range(N):
                limiter.admit(host, now)
                now += step
        return run

    def blocked() -> RateLimiter:
        limiter = RateLimiter(RateLimits(block_time=1e9))
        for _ in range(61):
            limiter.admit("198.51.100.2", 1_000.0)
        return limiter

    # Each variant is built afresh for each round, and the rounds interleave them, so
    # that a busy moment of the machine falls on all of them alike. 10 messages/s from
    # a limited source: within its 20/s, charged to its bucket.
    variants: dict[str, Callable[[], Callable[[], None]]] = {
        "ua.receive, OPTIONS answered, limit off (reference)":
            lambda: receive(None, messages, "192.0.2.1", 1.0),
        "ua.receive, OPTIONS answered, limit on, exempt source":
            lambda: receive(RateLimiter(RateLimits(), exempt=["192.0.2.0/24"]), messages,
                            "192.0.2.1", 1.0),
        "ua.receive, OPTIONS answered, limit on, limited source":
            lambda: receive(RateLimiter(RateLimits()), limited, "198.51.100.1", 0.1),
        "ua.receive, message of a blocked source (dropped)":
            lambda: receive(blocked(), limited, "198.51.100.2", 0.0),
        "admit() alone, exempt source":
            lambda: admit(RateLimiter(RateLimits(), exempt=["192.0.2.0/24"]), "192.0.2.1",
                          1.0),
        "admit() alone, limited source within its rate":
            lambda: admit(RateLimiter(RateLimits()), "198.51.100.1", 0.1),
        "admit() alone, blocked source":
            lambda: admit(blocked(), "198.51.100.2", 0.0),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, make in variants.items():
            results[name].append(timed(make(), N))
    ref = min(next(iter(results.values())))
    print(f"in process: ns per message, best of {repeat} interleaved rounds of {N:,} "
          "(range); ratio to the reference")
    for name, runs in results.items():
        best = min(runs)
        print(f"  {name:<56} {best:>8.0f} ns ({best:.0f}-{max(runs):.0f})  "
              f"x{best / ref:.3f}")


class Prober(threading.Thread):
    """One OPTIONS every `interval` s from 127.0.0.2 (10/s: within its rate limit);
    records each answer's delay."""

    def __init__(self, port: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.sent = 0
        self.delays: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
            s.settimeout(self.interval)
            lport = s.getsockname()[1]
            while not self.stopping.is_set():
                n = self.sent
                self.sent += 1
                branch = f"z9hG4bK-{n}".encode()
                started = time.perf_counter()
                s.sendto(options(n, "127.0.0.2", lport), ("127.0.0.1", self.port))
                deadline = started + self.interval
                while (left := deadline - time.perf_counter()) > 0:
                    s.settimeout(left)
                    try:
                        data = s.recv(65535)
                    except TimeoutError:
                        break
                    if branch in data:
                        self.delays.append(time.perf_counter() - started)
                        time.sleep(max(0.0, deadline - time.perf_counter()))
                        break


def flood(port: int, rate: int, seconds: float) -> None:
    """OPTIONS from 127.0.0.1 at `rate` per second (a process of its own)."""
    messages = [options(i, "127.0.0.1", 5099) for i in range(1000)]
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        start = time.perf_counter()
        end = start + seconds
        while (now := time.perf_counter()) < end:
            due = int((now - start) * rate)
            while sent < due:
                with contextlib.suppress(OSError):
                    s.sendto(messages[sent % 1000], ("127.0.0.1", port))
                sent += 1
            time.sleep(0.0005)


def part2(args: argparse.Namespace) -> None:
    cores = sorted(os.sched_getaffinity(0))
    core = cores[0] if len(cores) > 1 else None
    if core is not None:
        os.sched_setaffinity(0, cores[1:])
    print(f"\nend to end: {args.flood_rate:,} OPTIONS/s from 127.0.0.1 for {args.seconds:g} s; "
          "a caller at 127.0.0.2 sends one OPTIONS per 100 ms"
          + (f"; gateway on core {core}, flood and caller on the rest" if core is not None
             else "; unpinned (one core)"))
    print(f"  {'limit':<6} {'gw cpu%':>8} {'answered':>10} {'p50 ms':>8} {'p99 ms':>8}  "
          f"{'dropped':>9}")
    for enabled in (True, False):
        # No one trusted: allow names another network, so both sources are limited.
        extra = ('allow = ["192.0.2.0/24"]\n'
                 f"[rate_limit]\nenabled = {'true' if enabled else 'false'}\n")
        with workdir(None, "rate-limit-") as root:
            server = start_sipbridge(root, core, "udp", extra_config=extra)
            try:
                time.sleep(1.0)  # the start-up probes' tokens come back
                prober = Prober(server.port)
                cpu0 = cpu_seconds(server.proc.pid)
                wall0 = time.monotonic()
                flooder = multiprocessing.Process(
                    target=flood, args=(server.port, args.flood_rate, args.seconds))
                prober.start()
                flooder.start()
                flooder.join()
                prober.stopping.set()
                prober.join()
                cpu = cpu_seconds(server.proc.pid) - cpu0
                wall = time.monotonic() - wall0
                metrics = subprocess.run(
                    ["curl", "-s", f"http://127.0.0.1:{server.http}/metrics"],
                    capture_output=True, text=True, check=False).stdout
            finally:
                stop(server.proc)
        dropped = next((line.split()[1] for line in metrics.splitlines()
                        if line.startswith("sipbridge_rate_dropped_messages_total ")), "-")
        delays = sorted(prober.delays)
        p50 = statistics.median(delays) * 1000 if delays else float("nan")
        p99 = delays[int(len(delays) * 0.99)] * 1000 if delays else float("nan")
        print(f"  {'on' if enabled else 'off':<6} {100 * cpu / wall:>8.1f} "
              f"{len(delays):>5}/{prober.sent:<4} {p50:>8.2f} {p99:>8.2f}  "
              f"{float(dropped) if dropped != '-' else 0:>9.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--flood-rate", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-flood", action="store_true", help="part 1 only")
    args = ap.parse_args()
    part1(args.repeat)
    if not args.no_flood:
        part2(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
