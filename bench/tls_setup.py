"""The cost of SIP over TLS call set-up in sipbridge, against plain TCP in the same run.

Run from the project root after ``bash scripts/setup.sh`` (SIPp) with stunnel4 installed::

    .venv/bin/python bench/tls_setup.py [--rate 100] [--duration 8]

SIPp here is built without TLS, so stunnel (client mode) stands between it and the
gateway's TLS port: SIPp's built-in ``uac`` scenario (INVITE, 100/180, 200, ACK, BYE,
200) runs over TCP with one connection per call (``-t tn``), and stunnel turns each of
those connections into a new TLS connection, a full handshake each (``sessionResume =
no``; TLS 1.3, ECDHE P-256 certificates from a throwaway CA). The same scenario at the
same rate then runs straight over TCP, one connection per call too, against the same
kind of gateway. The gateway is pinned to one core, SIPp and stunnel to another.

For each it prints the calls placed and completed, the calls per second completed, the
gateway's CPU time per call (user + system, /proc) and the calls per second one core
would take at that cost; the last line gives the TLS/TCP ratio of CPU per call. The
offered rate should stay below what the gateway takes over TLS (CPU under ~80 %), so
that both runs complete every call and the CPU per call is the figure that differs.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sip_cps import (
    LOOPBACK,
    call_counts,
    free_port,
    pinned,
    read_stats,
    start_sipbridge,
    stop,
    timed_uac,
    workdir,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.tlscerts import make_ca  # the project root, just added

STUNNEL_CONFIG = """\
foreground = yes
pid =
debug = 3
output = {log}
[sip]
client = yes
accept = {host}:{accept}
connect = {host}:{connect}
CAfile = {ca}
verifyChain = yes
checkIP = {host}
sessionResume = no
"""


@dataclass
class Run:
    mode: str
    calls: int
    successful: int
    failed: int
    wall: float
    gateway_cpu: float  # seconds over the run

    @property
    def cps(self) -> float:
        return self.successful / self.wall if self.wall else 0.0

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000 * self.gateway_cpu / self.successful if self.successful else float("nan")


def run(mode: str, args: argparse.Namespace, root: Path) -> Run:
    """One run of the uac scenario at args.rate for args.duration, over `mode` ("tcp" or
    "tls"), against a fresh gateway."""
    work = root / mode
    work.mkdir(parents=True, exist_ok=True)
    # One connection per call from one source (SIPp, or stunnel): room for all of them.
    extra = "tcp_max_connections = 2000\ntcp_max_per_source = 2000\n"
    tls_port = 0
    if mode == "tls":
        ca = make_ca(work / "ca")
        cert, key = ca.issue("gateway", ip=[LOOPBACK])
        tls_port = free_port((socket.SOCK_STREAM,))
        extra += (f'sip_tls = "{LOOPBACK}:{tls_port}"\ntls_cert = "{cert}"\n'
                 f'tls_key = "{key}"\n')
    gateway = start_sipbridge(work, args.server_core, "tcp", extra_config=extra)
    tunnel = None
    target = gateway.port
    try:
        if mode == "tls":
            target = free_port((socket.SOCK_STREAM,))
            conf = work / "stunnel.conf"
            conf.write_text(STUNNEL_CONFIG.format(
                log=work / "stunnel.log", host=LOOPBACK, accept=target, connect=tls_port,
                ca=ca.cert))
            tunnel = subprocess.Popen(pinned(["stunnel4", str(conf)], args.client_core),
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 5
            while True:
                try:
                    socket.create_connection((LOOPBACK, target), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or tunnel.poll() is not None:
                        raise SystemExit(f"stunnel did not start: {work / 'stunnel.log'}") from None
                    time.sleep(0.05)
        calls = args.rate * args.duration
        stats = work / "stats.csv"
        cmd = [
            "sipp", f"{LOOPBACK}:{target}", "-sn", "uac", "-i", LOOPBACK,
            "-p", str(free_port((socket.SOCK_STREAM,))), "-t", "tn", "-max_socket", "5000",
            "-cp", str(free_port((socket.SOCK_DGRAM,))),
            "-mp", str(free_port((socket.SOCK_DGRAM,), (0, 1, 2, 3))),
            "-r", str(args.rate), "-m", str(calls), "-nostdin", "-recv_timeout", "5000",
            "-timeout", f"{args.duration * 2 + 15}s", "-timeout_error",
            "-trace_stat", "-stf", str(stats), "-fd", "1",
        ]  # fmt: skip
        wall, cpu = timed_uac(cmd, work, args.client_core, gateway.proc.pid)
    finally:
        if tunnel is not None:
            stop(tunnel, signal.SIGTERM)
        stop(gateway.proc)
    return Run(mode, calls, *call_counts(read_stats(stats)), wall, cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=100, help="calls per second offered (100)")
    ap.add_argument("--duration", type=int, default=8, help="seconds per run (8)")
    ap.add_argument("--keep", metavar="DIR", help="keep the logs in DIR")
    args = ap.parse_args()
    for tool in ("sipp", "stunnel4", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install sipp stunnel4 openssl)")
    cores = os.sched_getaffinity(0)
    args.server_core, args.client_core = (0, 1) if {0, 1} <= cores else (None, None)
    print(f"tls_setup: {args.rate} calls/s offered for {args.duration} s, one connection "
          f"per call; gateway on core {args.server_core}, SIPp (+stunnel) on core "
          f"{args.client_core}", flush=True)
    results = {}
    with workdir(args.keep, "sipbridge-tls-") as root:
        for mode in ("tcp", "tls"):
            r = run(mode, args, root)
            results[mode] = r
            print(f"  {mode}: {r.successful}/{r.calls} calls completed, {r.failed} failed, "
                  f"{r.cps:.1f} calls/s, gateway CPU {r.cpu_ms_per_call:.2f} ms/call "
                  f"(one core: ~{1000 / r.cpu_ms_per_call:.0f} calls/s)", flush=True)
            time.sleep(1)
    tcp, tls = results["tcp"], results["tls"]
    print(f"tls_setup: TLS call set-up costs {tls.cpu_ms_per_call / tcp.cpu_ms_per_call:.2f}x "
          f"the gateway CPU of TCP per call ({tls.cpu_ms_per_call:.2f} vs "
          f"{tcp.cpu_ms_per_call:.2f} ms); calls/s completed {tls.cps:.1f} vs {tcp.cps:.1f}")
    return 0 if tcp.successful == tcp.calls and tls.successful == tls.calls else 1


if __name__ == "__main__":
    sys.exit(main())
