"""Highest sustained SIP call rate (calls per second) of sipbridge, beside SIPp's own UAS.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/sip_cps.py [--duration 30] [--start 50] [--max 2000]

Each step runs SIPp's built-in ``uac`` scenario (INVITE, 100/180, 200, ACK,
BYE, 200) at one rate for ``--duration`` seconds (``-m rate*duration``)
against a fresh server pinned to one core, with SIPp pinned to another. A
step passes when every call succeeded, no message was retransmitted, and
SIPp kept the rate (the run did not overrun its time). The rate rises
(doubling) until a step fails or ``--max`` is reached, then a bisection
narrows the highest passing rate. The same search runs against
``sipp -sn uas`` on the same core, so the figure comes with a reference
from the same machine in the same run.

``--targets`` also takes ``sipbridge-uvloop`` and ``sipbridge-asyncio`` (the gateway on
that event loop), and with ``--base-src DIR`` ``sipbridge-base``: the gateway run from
another tree's ``src`` (the code before a change: ``git archive HEAD src | tar -x -C
/tmp/base``; copy the built ``src/sipbridge/media/*.so`` beside it), to compare in one
run. ``--at CPS`` runs each target at that one rate ``--repeat`` times in turn instead
of a search, and prints the server's CPU time per call (all its threads,
and its event loop's thread alone) beside SIPp's uas's.

``--overload 2,4`` then offers multiples of the highest rate found (or of
``--overload-max``) for ``--overload-duration`` seconds each, with a SIPp
scenario that takes a 503 as an answer (and ACKs it), and prints the goodput
(calls answered 200 and completed, per second), the 503s and the failed calls
against the maximum, how long after the load the gateway first answered an
OPTIONS, and the calls it still counted active. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- small process helpers -------------------------------------------------


def free_port(kinds: tuple[socket.SocketKind, ...], offsets: tuple[int, ...] = (0,)) -> int:
    """A loopback port free for every socket kind given (and port + offset)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kinds[0]) as s:
            s.bind((LOOPBACK, 0))
            port: int = s.getsockname()[1]
        try:
            for off in offsets:
                for kind in kinds:
                    with socket.socket(socket.AF_INET, kind) as t:
                        t.bind((LOOPBACK, port + off))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, proc(5)), or of one
    of its threads (/proc/PID/task/TID/stat; the main thread's TID is the PID)."""
    try:
        where = f"/proc/{pid}" if thread is None else f"/proc/{pid}/task/{thread}"
        stat = Path(f"{where}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)"
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def pinned(cmd: list[str], core: int | None) -> list[str]:
    """``cmd`` run on one core with taskset, when there is one to pin to."""
    if core is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", str(core), *cmd]


@contextlib.contextmanager
def workdir(keep: str | None, prefix: str) -> Iterator[Path]:
    """A benchmark's files: in `keep` (made if missing, left in place), or in a temporary
    directory removed afterwards."""
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def options_ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a SIP server answers an OPTIONS on loopback UDP ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        tag = os.urandom(6).hex()
        msg = (
            f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{lport};branch=z9hG4bK{tag}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:bench@{LOOPBACK}>;tag={tag}\r\n"
            f"To: <sip:{LOOPBACK}:{port}>\r\nCall-ID: {tag}@bench\r\n"
            f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (LOOPBACK, port))
        try:
            return s.recvfrom(65535)[0].startswith(b"SIP/2.0 ")
        except OSError:
            return False


# --- the servers under test ------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    http: int = 0  # the HTTP API's port (sipbridge)


def start_sipbridge(
    workdir: Path, core: int | None, transport: str, *, auto_answer: str = "silence",
    extra_config: str = "", source: str | None = None,
) -> Server:
    """A gateway pinned to `core`, answering by itself; ready once it answers OPTIONS.
    `extra_config` is more TOML (media benchmarks set the RTP range and timeout);
    `source`, a `src` directory first on its PYTHONPATH (another tree's code)."""
    port = free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))
    http = free_port((socket.SOCK_STREAM,))
    config = workdir / "sipbridge.toml"
    config.write_text(
        f'sip = "{LOOPBACK}:{port}"\n'
        f'http = "{LOOPBACK}:{http}"\n'
        f'auto_answer = "{auto_answer}"\n'
        "ring_time = 0.0\n"
        'log_level = "warning"\n'
        f'store = "{workdir / "sipbridge.db"}"\n' + extra_config
        + ("" if "[overload]" in extra_config else EVERY_CONFIG[0])
    )
    log = workdir / "sipbridge.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPBRIDGE_")}
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            pinned([sys.executable, "-m", "sipbridge", "serve", "--config", str(config)], core),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server("sipbridge", proc, port, log, http)
    deadline = time.monotonic() + 15
    while not options_ping(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"sipbridge did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return server


def start_sipp_uas(workdir: Path, core: int | None, transport: str) -> Server:
    """SIPp's own uas on free loopback ports. A port found free can be taken before SIPp
    binds it (by another process, or by the gateway's last step still closing): SIPp
    then exits at once, and is started again on other ports, three times at most."""
    log = workdir / "sipp-uas.log"
    for _ in range(3):
        port = free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))
        control = free_port((socket.SOCK_DGRAM,))
        media = free_port((socket.SOCK_DGRAM,), (0, 1, 2, 3))  # audio, video and RTCP
        if len({port, control, media, media + 1, media + 2, media + 3}) < 6:
            continue
        cmd = [
            "sipp", "-sn", "uas", "-i", LOOPBACK, "-p", str(port), "-bind_local",
            "-t", "u1" if transport == "udp" else "t1", "-nostdin",
            "-cp", str(control), "-mp", str(media),
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                pinned(cmd, core), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT
            )
        time.sleep(0.5)  # SIPp's uas does not answer OPTIONS; give it time to bind
        if proc.poll() is None:
            return Server("sipp uas", proc, port, log)
        if "Address already in use" not in log.read_text(errors="replace"):
            break
    raise SystemExit(f"sipp -sn uas did not start:\n{log.read_text(errors='replace')}")


Starter = Callable[[Path, "int | None", str], Server]
# More TOML for every gateway started (--no-overload-control).
EVERY_CONFIG = [""]


def _on_loop(loop: str) -> Starter:
    """sipbridge with `event_loop = loop` (see README: event_loop)."""
    def start(workdir: Path, core: int | None, transport: str) -> Server:
        return start_sipbridge(workdir, core, transport, extra_config=f'event_loop = "{loop}"\n')
    return start


STARTERS: dict[str, Starter] = {
    "sipbridge": start_sipbridge,  # its default loop (event_loop = "auto")
    "sipbridge-uvloop": _on_loop("uvloop"),
    "sipbridge-asyncio": _on_loop("asyncio"),
    "sipp uas": start_sipp_uas,
}


# --- one step --------------------------------------------------------------


@dataclass
class Step:
    target: str
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    wall: float
    server_cpu: float  # percent of one core over the step
    cpu_per_call: float  # the server's CPU microseconds per successful call
    loop_per_call: float  # ... of its main thread alone (the event loop's)
    client_cpu: float
    returncode: int
    passed: bool
    why: str


def read_stats(path: Path) -> dict[str, str]:
    """The last row of SIPp's -trace_stat CSV, by column name."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return {}
    if len(lines) < 2:
        return {}
    names, values = lines[0].rstrip(";").split(";"), lines[-1].rstrip(";").split(";")
    return dict(zip(names, values, strict=False))



def call_counts(stats: dict[str, str]) -> tuple[int, int]:
    """Successful and failed calls in a `read_stats` row."""
    return (int(stats.get("SuccessfulCall(C)", 0) or 0),
            int(stats.get("FailedCall(C)", 0) or 0))


def timed_uac(cmd: list[str], work: Path, core: int | None, pid: int) -> tuple[float, float]:
    """Run a SIPp uac to its end (its output in work/sipp-uac.log), pinned to `core`: the
    wall time it took, and the CPU seconds process `pid` (the server) used meanwhile."""
    cpu0 = cpu_seconds(pid)
    start = time.monotonic()
    with (work / "sipp-uac.log").open("wb") as out:
        subprocess.run(pinned(cmd, core), stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, check=False)
    return time.monotonic() - start, cpu_seconds(pid) - cpu0

WARMUP_RATE = 200  # calls a second of the warm-up before each measured step


def uac_command(server: Server, transport: str, rate: int, calls: int, *extra: str
                ) -> list[str]:
    """SIPp's built-in uac placing `calls` calls at `rate` a second to `server`, from free
    loopback ports, with `extra` options."""
    return [
        "sipp", f"{LOOPBACK}:{server.port}", "-sn", "uac",
        "-i", LOOPBACK, "-p", str(free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))),
        "-bind_local", "-t", "u1" if transport == "udp" else "t1",
        "-cp", str(free_port((socket.SOCK_DGRAM,))),
        "-mp", str(free_port((socket.SOCK_DGRAM,), (0, 1, 2, 3))),
        "-r", str(rate), "-m", str(calls), "-nostdin", "-recv_timeout", "5000", *extra,
    ]  # fmt: skip


def warm(server: Server, args: argparse.Namespace, workdir: Path) -> None:
    """Calls at WARMUP_RATE for `--warmup` seconds to the fresh server before it is
    measured: a server just started (its caches, pools, store file and the
    interpreter's own specialisation) is slower for its first seconds than it runs
    after, and a step is to measure the rate it sustains. Not measured; its calls may
    fail (a server that cannot take this rate fails the step anyway)."""
    cmd = uac_command(server, args.transport, WARMUP_RATE, int(WARMUP_RATE * args.warmup),
                      "-timeout", f"{args.warmup + 20:g}s")
    with (workdir / "sipp-warmup.log").open("wb") as out:
        subprocess.run(pinned(cmd, args.client_core), stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, check=False)
    time.sleep(0.5)  # its last transactions settle


def run_step(target: str, rate: int, args: argparse.Namespace, root: Path) -> Step:
    workdir = root / f"{target.replace(' ', '-')}-{rate}"
    workdir.mkdir(parents=True, exist_ok=True)
    calls = rate * args.duration
    server = STARTERS[target](workdir, args.server_core, args.transport)
    stats_file = workdir / "stats.csv"
    cmd = uac_command(server, args.transport, rate, calls,
                      "-timeout", f"{args.duration * 2 + 30}s", "-timeout_error",
                      "-trace_stat", "-stf", str(stats_file), "-fd", "1")
    try:
        if getattr(args, "warmup", 0) > 0:  # (bench/multicore.py's steps have none)
            warm(server, args, workdir)
        server_cpu0 = cpu_seconds(server.proc.pid)
        loop_cpu0 = cpu_seconds(server.proc.pid, server.proc.pid)
        start = time.monotonic()
        with (workdir / "sipp-uac.log").open("wb") as out:
            client = subprocess.Popen(
                pinned(cmd, args.client_core),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            client_cpu = 0.0
            while client.poll() is None:
                client_cpu = max(client_cpu, cpu_seconds(client.pid))
                time.sleep(0.2)
        wall = time.monotonic() - start
        server_cpu = cpu_seconds(server.proc.pid) - server_cpu0
        loop_cpu = cpu_seconds(server.proc.pid, server.proc.pid) - loop_cpu0
        server_alive = server.proc.poll() is None
    finally:
        stop(server.proc, signal.SIGINT if target.startswith("sipbridge") else signal.SIGKILL)

    stats = read_stats(stats_file)
    successful = int(stats.get("SuccessfulCall(C)", 0) or 0)
    failed = int(stats.get("FailedCall(C)", 0) or 0)
    retrans = int(stats.get("Retransmissions(C)", 0) or 0)
    # SIPp must have kept the rate: all calls placed within the step's time,
    # with a little slack for the last calls to end.
    overrun = wall > args.duration * 1.05 + 2
    why = []
    if client.returncode != 0:
        why.append(f"sipp exit {client.returncode}")
    if failed:
        why.append(f"{failed} failed")
    if retrans:
        why.append(f"{retrans} retransmissions")
    if successful != calls:
        why.append(f"{successful}/{calls} successful")
    if overrun:
        why.append(f"rate not kept ({wall:.1f} s)")
    if not server_alive:
        why.append("server exited")
    return Step(
        target=target,
        rate=rate,
        calls=calls,
        successful=successful,
        failed=failed,
        retransmissions=retrans,
        wall=wall,
        server_cpu=100 * server_cpu / wall if wall else 0.0,
        cpu_per_call=1e6 * server_cpu / successful if successful else 0.0,
        loop_per_call=1e6 * loop_cpu / successful if successful else 0.0,
        client_cpu=100 * client_cpu / wall if wall else 0.0,
        returncode=client.returncode,
        passed=not why,
        why=", ".join(why) or "ok",
    )


# --- overload ----------------------------------------------------------------

# SIPp's uac, with a 503 taken as an answer: ACKed (RFC 3261 17.1.1.3), the call over.
UAC_503 = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac with 503">
  <send retrans="500"><![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="503" optional="true" next="refused"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <send retrans="500"><![CDATA[

      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="200"/>
  <nop next="done"/>
  <label id="refused"/>
  <send><![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <label id="done"/>
</scenario>
"""


@dataclass
class Overload:
    rate: int
    multiple: float
    offered: int  # calls SIPp placed
    answered: int  # calls answered 200 and completed (BYE answered)
    refused: int  # 503s
    failed: int  # neither: timed out, or another answer
    wall: float
    server_cpu: float
    client_cpu: float
    options_after: float | None  # seconds from the load's end to an OPTIONS answer
    active_after: int | None  # calls the gateway counted active once SIPp was done
    settled_after: float | None  # seconds from SIPp done until no call was active
    rejected_metric: int | None  # sipbridge_overload_rejected_total


def read_counts(workdir: Path) -> dict[str, int]:
    """SIPp's -trace_counts CSV (per scenario message: sent, received, ...), summed by
    column name over its rows."""
    files = sorted(workdir.glob("*_counts.csv"))
    if not files:
        return {}
    lines = [ln for ln in files[-1].read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    out: dict[str, int] = {}
    names, values = lines[0].rstrip(";").split(";"), lines[-1].rstrip(";").split(";")
    for name, value in zip(names, values, strict=False):
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def metric(http: int, name: str) -> int | None:
    """One unlabelled figure from the gateway's /metrics, or None."""
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{http}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


def run_overload(rate: int, multiple: float, args: argparse.Namespace, root: Path,
                 extra_config: str = "", label: str = "") -> Overload:
    workdir = root / f"overload-{rate}{label}"
    workdir.mkdir(parents=True, exist_ok=True)
    duration = args.overload_duration
    scenario = workdir / "uac_503.xml"
    scenario.write_text(UAC_503)
    server = start_sipbridge(workdir, args.server_core, args.transport,
                             extra_config=extra_config)
    stats_file = workdir / "stats.csv"
    cmd = [
        "sipp", f"{LOOPBACK}:{server.port}", "-sf", str(scenario),
        "-i", LOOPBACK, "-p", str(free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))),
        "-bind_local", "-t", "u1" if args.transport == "udp" else "t1",
        "-cp", str(free_port((socket.SOCK_DGRAM,))),
        "-mp", str(free_port((socket.SOCK_DGRAM,), (0, 1, 2, 3))),
        "-r", str(rate), "-m", str(rate * duration), "-nostdin",
        "-recv_timeout", "5000", "-timeout", f"{duration * 2 + 60}s", "-timeout_error",
        "-trace_stat", "-stf", str(stats_file), "-fd", "1", "-trace_counts",
    ]  # fmt: skip
    options_after = active_after = settled_after = rejected = None
    try:
        server_cpu0 = cpu_seconds(server.proc.pid)
        start = time.monotonic()
        with (workdir / "sipp-uac.log").open("wb") as out:
            client = subprocess.Popen(
                pinned(cmd, args.client_core), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=workdir,
            )
            client_cpu = 0.0
            while client.poll() is None:
                client_cpu = max(client_cpu, cpu_seconds(client.pid))
                now = time.monotonic()
                if options_after is None and now - start >= duration:
                    # The offered load is over: how soon does an OPTIONS get through?
                    if options_ping(server.port, timeout=0.25):
                        options_after = max(0.0, time.monotonic() - start - duration)
                else:
                    time.sleep(0.1)
        wall = time.monotonic() - start
        server_cpu = cpu_seconds(server.proc.pid) - server_cpu0
        while options_after is None and time.monotonic() - start < duration + 120:
            if options_ping(server.port, timeout=0.25):
                options_after = max(0.0, time.monotonic() - start - duration)
        done = time.monotonic()
        active_after = metric(server.http, "sipbridge_calls_active")
        active = active_after
        while active and time.monotonic() - done < args.overload_settle:
            time.sleep(0.5)
            active = metric(server.http, "sipbridge_calls_active")
        if active == 0:
            settled_after = time.monotonic() - done if active_after else 0.0
        rejected = metric(server.http, "sipbridge_overload_rejected_total")
    finally:
        stop(server.proc)
    stats = read_stats(stats_file)
    counts = read_counts(workdir)
    refused = sum(v for k, v in counts.items() if k.endswith("_503_Recv"))
    # The scenario's two 200s: the INVITE's, then the BYE's (a call completed).
    oks = [v for k, v in counts.items() if k.endswith("_200_Recv")]
    answered = oks[-1] if oks else 0
    return Overload(
        rate=rate, multiple=multiple, offered=int(stats.get("TotalCallCreated", 0) or 0),
        answered=answered, refused=refused,
        failed=int(stats.get("FailedCall(C)", 0) or 0), wall=wall,
        server_cpu=100 * server_cpu / wall if wall else 0.0,
        client_cpu=100 * client_cpu / wall if wall else 0.0,
        options_after=options_after, active_after=active_after, settled_after=settled_after,
        rejected_metric=rejected,
    )


OVERLOAD_HEADER = (
    f"{'control':<8} {'x max':>5} {'rate':>6} {'placed':>7} {'ok':>7} {'503':>7} "
    f"{'failed':>6} {'goodput':>8} {'of max':>6} {'srv cpu%':>8} {'sipp cpu%':>9} "
    f"{'OPTIONS s':>9} {'active':>6} {'settled s':>9}"
)


def print_overload(o: Overload, max_rate: int, duration: int, control: str) -> None:
    goodput = o.answered / duration

    def opt(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    print(
        f"{control:<8} {o.multiple:>5g} {o.rate:>6} {o.offered:>7} {o.answered:>7} "
        f"{o.refused:>7} {o.failed:>6} {goodput:>8.1f} {goodput / max_rate:>6.0%} "
        f"{o.server_cpu:>8.1f} {o.client_cpu:>9.1f} {opt(o.options_after, '.2f'):>9} "
        f"{opt(o.active_after, 'd'):>6} {opt(o.settled_after, '.1f'):>9}",
        flush=True,
    )


def overload_steps(max_rate: int, args: argparse.Namespace, root: Path) -> None:
    multiples = [float(m) for m in args.overload.split(",") if m.strip()]
    duration = args.overload_duration
    print(f"overload: {duration} s per step, offered as multiples of {max_rate} cps; goodput "
          "= calls answered 200 and completed per second", flush=True)
    print(OVERLOAD_HEADER, flush=True)
    controls = [("on", "")]
    if args.overload_off:
        controls.append(("off", "[overload]\nenabled = false\n"))
    for multiple in multiples:
        for control, extra in controls:
            time.sleep(args.cooldown)
            step = run_overload(round(max_rate * multiple), multiple, args, root, extra,
                                f"-{control}")
            print_overload(step, max_rate, duration, control)


# --- the search ------------------------------------------------------------

HEADER = (
    f"{'target':<17} {'rate':>6} {'calls':>7} {'ok':>7} {'failed':>6} {'retrans':>7} "
    f"{'wall s':>7} {'srv cpu%':>8} {'us/call':>7} {'loop us':>7} {'sipp cpu%':>9}  result"
)


def print_step(step: Step) -> None:
    verdict = "pass" if step.passed else f"FAIL: {step.why}"
    print(
        f"{step.target:<17} {step.rate:>6} {step.calls:>7} {step.successful:>7} "
        f"{step.failed:>6} {step.retransmissions:>7} {step.wall:>7.1f} "
        f"{step.server_cpu:>8.1f} {step.cpu_per_call:>7.0f} "
        f"{step.loop_per_call:>7.0f} {step.client_cpu:>9.1f}  {verdict}",
        flush=True,
    )


def at_rate(targets: list[str], args: argparse.Namespace, root: Path) -> None:
    """Each target at one rate, `--repeat` times in turn: the server's CPU time per call
    (the median), and each one's ratio to SIPp's uas, all from the same run."""
    per_call: dict[str, list[float]] = {t: [] for t in targets}
    loop: dict[str, list[float]] = {t: [] for t in targets}
    for _ in range(args.repeat):
        for target in targets:
            step = run_step(target, args.at, args, root)
            print_step(step)
            if step.passed:
                per_call[target].append(step.cpu_per_call)
                loop[target].append(step.loop_per_call)
            time.sleep(args.cooldown)
    medians = {t: statistics.median(v) for t, v in per_call.items() if v}
    line = ", ".join(f"{t} {us:.0f} us/call (its loop thread "
                     f"{statistics.median(loop[t]):.0f})" for t, us in medians.items())
    ref = medians.get("sipp uas")
    if ref:
        line += "".join(f"; {t}/sipp-uas {us / ref:.1f}x the CPU" for t, us in medians.items()
                        if t != "sipp uas")
    base = medians.get("sipbridge-base")
    if base:
        line += "".join(f"; {t}/sipbridge-base {us / base:.3f}" for t, us in medians.items()
                        if t.startswith("sipbridge") and t != "sipbridge-base")
    print(f"result at {args.at} cps (median of the passing steps): {line or 'none passed'}")


def search(target: str, args: argparse.Namespace, root: Path) -> tuple[int, bool]:
    """The highest passing rate, and whether it is only a lower bound (--max)."""
    good, rate = 0, args.start
    while True:  # step up
        step = run_step(target, rate, args, root)
        print_step(step)
        if not step.passed:
            bad = rate
            break
        good = rate
        if rate >= args.max:
            return good, True
        rate = min(rate * 2, args.max)
        time.sleep(args.cooldown)
    while bad - good > max(args.resolution, good * args.resolution_pct / 100):  # bisect
        time.sleep(args.cooldown)
        rate = (good + bad) // 2
        step = run_step(target, rate, args, root)
        print_step(step)
        if step.passed:
            good = rate
        else:
            bad = rate
    return good, False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=30, help="seconds per step (default 30)")
    ap.add_argument("--start", type=int, default=50, help="first rate in cps (default 50)")
    ap.add_argument("--max", type=int, default=2000, help="highest rate tried (default 2000)")
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    ap.add_argument(
        "--targets",
        default="sipbridge,sipp uas",
        help="comma-separated: sipbridge (its default event loop), sipbridge-uvloop, "
        "sipbridge-asyncio, sipbridge-base (with --base-src), sipp uas (default: "
        "sipbridge,sipp uas)",
    )
    ap.add_argument("--base-src", metavar="DIR",
                    help="target sipbridge-base: the gateway with this src directory first "
                    "on PYTHONPATH (say the code before a change, from git archive)")
    ap.add_argument("--resolution", type=int, default=10, help="bisect until within N cps")
    ap.add_argument("--resolution-pct", type=float, default=5.0, help="... or N%% of the rate")
    ap.add_argument("--cooldown", type=float, default=2.0, help="seconds between steps")
    ap.add_argument("--warmup", type=float, default=2.0,
                    help=f"seconds of calls at {WARMUP_RATE}/s to each fresh server before "
                    "its step is measured (default 2; 0: none)")
    ap.add_argument("--keep", metavar="DIR", help="keep SIPp and server logs in DIR")
    ap.add_argument("--overload", metavar="M,M", default="",
                    help="then offer these multiples of the max (e.g. 2,4) to sipbridge")
    ap.add_argument("--overload-duration", type=int, default=20,
                    help="seconds per overload step (default 20)")
    ap.add_argument("--overload-max", type=int, metavar="CPS",
                    help="the max to multiply (default: the one the search finds)")
    ap.add_argument("--overload-off", action="store_true",
                    help="run each overload step with overload control off too")
    ap.add_argument("--overload-settle", type=float, default=40.0,
                    help="seconds to wait for active calls to end after a step (default 40)")
    ap.add_argument("--at", type=int, metavar="CPS",
                    help="instead of a search: each target at this one rate, --repeat "
                    "times in turn, and the server's CPU time per call")
    ap.add_argument("--repeat", type=int, default=3, help="steps per target with --at")
    ap.add_argument("--no-overload-control", action="store_true",
                    help="run every gateway with overload control off: on a machine busy "
                    "with other work, --at then compares whole calls, not calls and 503s")
    args = ap.parse_args()
    if args.no_overload_control:
        EVERY_CONFIG[0] = "[overload]\nenabled = false\n"

    if shutil.which("sipp") is None:
        print("sip_cps: sipp not found (Debian package sip-tester; scripts/setup.sh)")
        return 2
    if args.start < 1 or args.max < args.start or args.duration < 1:
        ap.error("need 1 <= --start <= --max and --duration >= 1")
    if args.base_src:
        base = str(Path(args.base_src).resolve())
        STARTERS["sipbridge-base"] = lambda w, c, t: start_sipbridge(w, c, t, source=base)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.overload_max is not None:
        targets = [t for t in targets if t != "sipbridge"] if args.overload else targets
    unknown = [t for t in targets if t not in STARTERS]
    if unknown:
        ap.error(f"unknown targets {unknown}; choose from {sorted(STARTERS)}")

    cores = os.sched_getaffinity(0)
    if len(cores) >= 2 and shutil.which("taskset"):
        first, second = sorted(cores)[:2]
        args.server_core, args.client_core = first, second
        pinning = f"server on core {first}, SIPp uac on core {second}"
    else:
        args.server_core = args.client_core = None
        pinning = "no pinning (needs taskset and 2 cores)"
    print(
        f"sip_cps: {args.transport}, {args.duration} s per step, rates {args.start}..{args.max} "
        f"cps; {pinning}",
        flush=True,
    )

    results: dict[str, tuple[int, bool]] = {}
    with workdir(args.keep, "sip_cps-") as root:
        try:
            print(HEADER)
            if args.at:
                at_rate(targets, args, root)
                return 0
            for target in targets:
                results[target] = search(target, args, root)
            if args.overload:
                max_rate = args.overload_max or results.get("sipbridge", (0, False))[0]
                if not max_rate:
                    print("overload: no max (search sipbridge, or give --overload-max)")
                    return 2
                overload_steps(max_rate, args, root)
        except KeyboardInterrupt:
            print("sip_cps: interrupted")
            return 130

    def shown(target: str) -> str:
        rate, capped = results[target]
        return f">={rate}" if capped else str(rate)

    if not targets:
        return 0
    summary = ", ".join(f"{t} {shown(t)} cps" for t in targets)
    for ours_name in (t for t in targets if t.startswith("sipbridge")):
        if "sipp uas" not in results or not results["sipp uas"][0]:
            break
        (ours, ours_capped), (ref, ref_capped) = results[ours_name], results["sipp uas"]
        if ours_capped and ref_capped:
            summary += f"; ratio {ours_name}/sipp-uas unknown (both reached --max: raise it)"
        else:
            bound = "<=" if ref_capped else ">=" if ours_capped else ""
            summary += f"; ratio {ours_name}/sipp-uas {bound}{ours / ref:.2f}"
    print(f"result: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
