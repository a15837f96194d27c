"""Outbound calls per second placed through sipbridge's API, beside its inbound rate.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/outbound_cps.py [--calls 300] [--concurrency 10]

Outbound: a gateway pinned to one core dials through a trunk that is SIPp's built-in
``uas`` (180, 200, then the BYE), pinned to another. ``--concurrency`` client threads
each place calls one after the other through the HTTP API: ``POST /v1/realtime/calls``,
``GET`` the record every 5 ms until it is answered, ``DELETE`` it (BYE); the run ends
when the gateway counts every call ended. Inbound, in the same run on the same cores:
SIPp's built-in ``uac`` places the same number of calls at the same concurrency
(``-l``) against a fresh gateway answering by itself (INVITE, 180, 200, ACK, BYE, 200),
as bench/sip_cps.py does. Both print complete calls per second and the gateway's CPU
share; the ratio outbound/inbound is the figure to compare across machines (the
outbound figure includes the HTTP requests and the client's polls). See
bench/README.md.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sip_cps import (
    LOOPBACK,
    call_counts,
    cpu_seconds,
    free_port,
    read_stats,
    start_sipbridge,
    start_sipp_uas,
    stop,
    timed_uac,
    workdir,
)

POLL = 0.005  # seconds between two looks at a ringing call's record


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def outbound(args: argparse.Namespace, root: Path) -> tuple[float, float, int, int]:
    """(calls/s, gateway CPU %, answered, failed) of the outbound run."""
    work = root / "outbound"
    work.mkdir(parents=True, exist_ok=True)
    uas = start_sipp_uas(work, args.client_core, "udp")
    gateway = start_sipbridge(work, args.server_core, "udp", extra_config=(
        'agent_url = ""\n'
        f"outbound_max_calls = {args.concurrency * 4}\n"
        "outbound_calls_per_second = 100000\n"
        f'[trunk]\naddress = "{LOOPBACK}:{uas.port}"\n'))
    base = f"http://{LOOPBACK}:{gateway.http}"
    answered = failed = 0
    lock = threading.Lock()
    per_thread = [args.calls // args.concurrency + (i < args.calls % args.concurrency)
                  for i in range(args.concurrency)]

    def worker(calls: int) -> None:
        nonlocal answered, failed
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(calls):
                record = client.post("/v1/realtime/calls", json={
                    "type": "realtime", "sipbridge": {"to": "sip:service@127.0.0.1"}}).json()
                while record.get("outbound", {}).get("status") in ("dialing", "ringing"):
                    time.sleep(POLL)
                    record = client.get(f"/v1/realtime/calls/{record['id']}").json()
                ok = record.get("outbound", {}).get("status") == "answered"
                if ok:
                    client.delete(f"/v1/realtime/calls/{record['id']}")
                with lock:
                    answered += ok
                    failed += not ok

    try:
        cpu0 = cpu_seconds(gateway.proc.pid)
        start = time.monotonic()
        threads = [threading.Thread(target=worker, args=(n,)) for n in per_thread]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 30
            while metric(client, "sipbridge_calls_active") > 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        wall = time.monotonic() - start
        cpu = cpu_seconds(gateway.proc.pid) - cpu0
    finally:
        stop(gateway.proc)
        stop(uas.proc)
    return answered / wall, 100 * cpu / wall, answered, failed


def inbound(args: argparse.Namespace, root: Path) -> tuple[float, float, int, int]:
    """(calls/s, gateway CPU %, successful, failed) of SIPp's uac against the gateway."""
    work = root / "inbound"
    work.mkdir(parents=True, exist_ok=True)
    gateway = start_sipbridge(work, args.server_core, "udp")
    stats_file = work / "stats.csv"
    cmd = [
        "sipp", f"{LOOPBACK}:{gateway.port}", "-sn", "uac",
        "-i", LOOPBACK, "-p", str(free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))),
        "-bind_local", "-t", "u1",
        "-cp", str(free_port((socket.SOCK_DGRAM,))),
        "-mp", str(free_port((socket.SOCK_DGRAM,), (0, 1, 2, 3))),
        "-r", "100000", "-l", str(args.concurrency), "-m", str(args.calls), "-nostdin",
        "-recv_timeout", "5000", "-timeout", "60s", "-timeout_error",
        "-trace_stat", "-stf", str(stats_file), "-fd", "1",
    ]  # fmt: skip
    try:
        wall, cpu = timed_uac(cmd, work, args.client_core, gateway.proc.pid)
    finally:
        stop(gateway.proc)
    ok, failed = call_counts(read_stats(stats_file))
    return ok / wall, 100 * cpu / wall, ok, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--keep", help="keep the run's files in this directory")
    args = parser.parse_args()
    with workdir(args.keep, "outbound-cps-") as root:
        out = outbound(args, root)
        inb = inbound(args, root)
    print(f"outbound_cps: {args.calls} calls, {args.concurrency} at a time; gateway on core "
          f"{args.server_core}, SIPp and the API client on core {args.client_core}")
    print(f"{'direction':<10} {'calls/s':>8} {'ok':>6} {'failed':>6} {'gw cpu%':>8}")
    for name, (rate, cpu, ok, failed) in (("outbound", out), ("inbound", inb)):
        print(f"{name:<10} {rate:8.1f} {ok:6d} {failed:6d} {cpu:8.1f}")
    print(f"outbound/inbound: {out[0] / inb[0]:.2f}" if inb[0] else "inbound: no calls")
    return 0 if out[3] == 0 and inb[3] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
