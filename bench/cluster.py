"""A cluster behind Kamailio: calls per second with one node and with two, the API's
latency for a request the owner serves against one another node forwards, and what the
shared PostgreSQL store writes per call and per second.

Run from the project root after ``bash scripts/setup.sh`` (needs SIPp, Debian's
``kamailio`` and PostgreSQL's server binaries, ``initdb``)::

    .venv/bin/python bench/cluster.py [--duration 15] [--start 300] [--max 3000]
        [--requests 500] [--targets direct,proxy-1,proxy-2]

One throwaway PostgreSQL server (tests/pgserver.py) for the run, a new database for
each step. Nodes run with the cluster's config (``node_name``, ``cluster_secret``,
``store = "postgresql://..."``, heartbeats every ``--heartbeat`` s), ``auto_answer =
"silence"``, ``ring_time = 0``, ``log_level = "warning"``, node *i* pinned to core *i*;
Kamailio runs the repository's deploy/kamailio/kamailio.cfg (the dispatcher) with
``--kamailio-workers`` UDP workers. SIPp, Kamailio and PostgreSQL are not pinned: on a
2-core machine they share the cores with the nodes, which the CPU columns show.

1. At rest: two nodes behind Kamailio, idle for ``--idle`` s: the store's transactions
   and rows a second of the heartbeats (and whatever else runs without calls). Then one
   call held up through Kamailio, and ``--requests`` rounds, each request sent once to
   the node that holds the call and once to the other (which forwards it), with a
   keep-alive httpx client per node: ``GET /v1/realtime/calls/{id}`` (200) and ``POST
   .../reject`` (409: the call is answered; cheap, repeatable). p50/p99 in ms.
2. Searches, as bench/sip_cps.py's (doubling from ``--start`` until a step fails or
   ``--max``, then a bisection), for each target: ``direct`` (one node, SIPp straight to
   it: the reference without the proxy hop), ``proxy-1`` (one node behind Kamailio),
   ``proxy-2`` (two nodes behind Kamailio); ``sqlite``, on request, is one gateway as
   sip_cps runs it (no cluster, a SQLite store): what PostgreSQL costs a node. A step: a
   fresh database, nodes and Kamailio; ``--warmup`` s of calls at sip_cps.WARMUP_RATE/s;
   then SIPp's call flow through a record-routing proxy
   (tests/integration/scenarios/uac_routed.xml: INVITE, 200, ACK, BYE, 200) at one rate
   for ``--duration`` s. It passes as sip_cps's steps do (every call succeeded, none
   failed, no retransmission, the rate kept) and, since Kamailio answers an INVITE with
   100 at once and so stops SIPp's retransmissions of it, also when the 200 came within
   T1 (500 ms) for 99 % of the calls. Each line gives the CPU of each part (percent of
   one core; ``sum%`` of 200 for two cores) and the calls refused with 503 by the nodes'
   overload control and by Kamailio itself ("no node in service").
3. Store steps, for ``--store-targets`` at their highest passing rate and at the
   ``--store-at`` rates: PostgreSQL's own statistics (pg_stat_database's commits and
   rollbacks, pg_stat_user_tables' rows inserted, updated and deleted per table, the WAL
   written) ``--store-settle`` s before and after the measured calls (PostgreSQL reports
   an idle backend's counts up to 10 s late). Per call: less the rest rate of 1. over
   the same time; a second at the rate: per call x rate + the nodes' rest rate.

The last line sums it up. See bench/README.md ("cluster.py").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sip_cps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.pgserver, tests.integration.kamailio

from tests.integration.kamailio import Kamailio, kamailio_binary  # noqa: E402
from tests.pgserver import PgServer, find_bindir  # noqa: E402

LOOPBACK = sip_cps.LOOPBACK
SCENARIO = ROOT / "tests" / "integration" / "scenarios" / "uac_routed.xml"
SECRET = "bench-cluster-secret-0123456789"
T1_MS = 500  # RFC 3261 T1: over UDP an INVITE not answered by then is sent again
RTP_PORTS = 5000  # RTP ports per node, each node its own range from 10000
# target: (nodes, behind Kamailio); "sqlite", not run by default: one gateway as
# bench/sip_cps.py runs it, no cluster, its store a SQLite file (what PostgreSQL costs)
TARGETS = {"direct": (1, False), "proxy-1": (1, True), "proxy-2": (2, True),
           "sqlite": (1, False)}
DEFAULT_TARGETS = ("direct", "proxy-1", "proxy-2")
TABLES = ("calls", "events", "nodes", "node_minutes")


# --- the figures' arithmetic (pure) ------------------------------------------------


def next_rate(good: int, bad: int | None, *, start: int, maximum: int, resolution: int,
              resolution_pct: float) -> int | None:
    """The rate to try after the steps so far (`good`: highest passed, 0 if none; `bad`:
    lowest failed, None if none), or None when the search is over: doubling until a step
    fails or `maximum` passed, then halving the gap until it is within `resolution` or
    `resolution_pct` of the good rate, whichever is larger."""
    if bad is None:
        return None if good >= maximum else min(max(2 * good, start), maximum)
    if bad - good <= max(resolution, good * resolution_pct / 100):
        return None
    return (good + bad) // 2


def highest_passing(passes: Callable[[int], bool], *, start: int, maximum: int,
                    resolution: int, resolution_pct: float) -> tuple[int, bool]:
    """The highest rate at which `passes`, and whether it is only a lower bound (every
    step passed up to `maximum`)."""
    good, bad = 0, None
    rate: int | None = start
    while rate is not None:
        if passes(rate):
            good = rate
        else:
            bad = rate
        rate = next_rate(good, bad, start=start, maximum=maximum, resolution=resolution,
                         resolution_pct=resolution_pct)
    return good, bad is None


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `values`, nearest rank; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n q / 100), at least the first
    return ordered[int(min(rank, len(ordered))) - 1]


def verdict(*, returncode: int, calls: int, successful: int, failed: int,
            retransmissions: int, wall: float, duration: int, late_p99: float | None,
            alive: bool) -> str:
    """"ok", or why a step failed: sip_cps's criteria, and the INVITE's 200 within T1 for
    99 % of the calls (`late_p99`: that percentile in ms; None: SIPp timed none)."""
    checks = (
        (returncode != 0, f"sipp exit {returncode}"),
        (failed > 0, f"{failed} failed"),
        (retransmissions > 0, f"{retransmissions} retransmissions"),
        (successful != calls, f"{successful}/{calls} successful"),
        (wall > duration * 1.05 + 2, f"rate not kept ({wall:.1f} s)"),
        (late_p99 is None or late_p99 > T1_MS,
         "no 200 timed" if late_p99 is None else f"200 after {late_p99:.0f} ms at p99"),
        (not alive, "a node exited"),
    )
    return ", ".join(why for bad, why in checks if bad) or "ok"


@dataclass(frozen=True)
class StoreCounts:
    """PostgreSQL's cumulative counts for one database at one moment."""

    xacts: int  # commits + rollbacks
    wal: int  # bytes of WAL written by the server so far (all databases: ours alone runs)
    tables: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # ins, upd, del

    def rows(self, table: str | None = None) -> int:
        picked = self.tables.values() if table is None else [self.tables.get(table, (0, 0, 0))]
        return sum(sum(t) for t in picked)


@dataclass(frozen=True)
class Rest:
    """What the store takes a second without calls, per node (heartbeats and the rest)."""

    xacts: float
    rows: float
    wal: float  # bytes


@dataclass(frozen=True)
class StoreLoad:
    """The store's work at a call rate: what the calls cost each (the rest's share over
    the same time taken out), and a second at that rate, the rest included."""

    rate: int  # calls a second
    xacts_per_call: float
    rows_per_call: float
    wal_per_call: float  # bytes
    table_rows_per_call: dict[str, tuple[float, float, float]]  # inserted, updated, deleted
    rest: Rest  # of all the nodes

    def per_second(self) -> tuple[float, float, float]:
        """Transactions, rows and WAL bytes a second at `rate`, the rest included."""
        return (self.xacts_per_call * self.rate + self.rest.xacts,
                self.rows_per_call * self.rate + self.rest.rows,
                self.wal_per_call * self.rate + self.rest.wal)

    def rest_shares(self) -> tuple[float, float]:
        """The rest's share of the transactions and of the rows a second."""
        xacts, rows, _ = self.per_second()
        return (self.rest.xacts / xacts if xacts else 0.0,
                self.rest.rows / rows if rows else 0.0)


def store_load(before: StoreCounts, after: StoreCounts, seconds: float, calls: int,
               rate: int, rest: Rest, nodes: int) -> StoreLoad:
    """The store's work between two counts `seconds` apart with `calls` calls made at
    `rate` between them, by `nodes` nodes that at rest do `rest` each: per call, less
    what the nodes would have done at rest over the same time."""
    per = max(calls, 1)
    resting = Rest(rest.xacts * nodes, rest.rows * nodes, rest.wal * nodes)
    tables = {}
    for name, (ins, upd, dele) in after.tables.items():
        was = before.tables.get(name, (0, 0, 0))
        tables[name] = ((ins - was[0]) / per, (upd - was[1]) / per, (dele - was[2]) / per)

    def calls_alone(total: int, at_rest: float) -> float:
        return max(0.0, total - at_rest * seconds) / per

    return StoreLoad(
        rate=rate,
        xacts_per_call=calls_alone(after.xacts - before.xacts, resting.xacts),
        rows_per_call=calls_alone(after.rows() - before.rows(), resting.rows),
        wal_per_call=calls_alone(after.wal - before.wal, resting.wal),
        table_rows_per_call=tables, rest=resting,
    )


def rest_rate(before: StoreCounts, after: StoreCounts, heartbeat: float) -> Rest:
    """The store's work a second and a node between two counts taken at rest, reckoned
    by the heartbeats counted (each updates its node's row once, every `heartbeat` s),
    not by the clock: a backend reports its counts when it has been idle a while, so the
    beats counted tell what span the counts cover."""
    beats = after.tables.get("nodes", (0, 0, 0))[1] - before.tables.get("nodes", (0, 0, 0))[1]
    if beats <= 0:
        return Rest(0.0, 0.0, 0.0)
    per = beats * heartbeat
    return Rest((after.xacts - before.xacts) / per, (after.rows() - before.rows()) / per,
                (after.wal - before.wal) / per)


# --- processes: PostgreSQL, the nodes, Kamailio ------------------------------------


class Postgres(PgServer):
    """tests/pgserver.py's server, with fsync as a production server has it unless
    `fsync` is False (its default for the tests)."""

    def __init__(self, bindir: Path, *, fsync: bool) -> None:
        super().__init__(bindir)
        self.fsync = fsync

    def _start(self) -> None:
        options = f"-h {LOOPBACK} -p {self.port} -k {self.dir}" + (
            "" if self.fsync else " -c fsync=off")
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", "60", "-o", options)

    def pid(self) -> int:
        """The postmaster's process id (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def counts(self, url: str) -> StoreCounts:
        """The database's counts now (taken on the server, not from a node)."""
        dbname = url.rsplit("/", 1)[1]
        with self.admin() as conn:  # in the postgres database: not counted in ours
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT xact_commit + xact_rollback, pg_wal_lsn_diff(pg_current_wal_lsn(), "
                "'0/0')::bigint FROM pg_stat_database WHERE datname = %s", (dbname,)
            ).fetchone()
        with self.admin(dbname) as conn:
            tables = conn.execute(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
            ).fetchall()
        assert row is not None
        return StoreCounts(int(row[0]), int(row[1]),
                           {t[0]: (int(t[1]), int(t[2]), int(t[3])) for t in tables
                            if t[0] in TABLES})

    def drop(self, url: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and all its descendants so far (Kamailio's workers,
    PostgreSQL's backends)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    family, grown = {root}, True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in family} - family
        family |= more
        grown = bool(more)
    return sum(sip_cps.cpu_seconds(pid) for pid in family)


def node_config(name: str, index: int, store: str, args: argparse.Namespace) -> tuple[
        str, int, int]:
    """A node's TOML, its SIP and its HTTP port (a store that is no postgresql:// URL: a
    gateway on its own, no cluster)."""
    port = sip_cps.free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))
    http = sip_cps.free_port((socket.SOCK_STREAM,))
    low = 10000 + index * RTP_PORTS
    text = "\n".join([
        f'sip = "{LOOPBACK}:{port}"', f'http = "{LOOPBACK}:{http}"',
        'auto_answer = "silence"', "ring_time = 0.0", 'log_level = "warning"',
        "media_timeout = 0", f'rtp_ports = "{low}-{low + RTP_PORTS - 1}"',
        f'store = "{store}"', "",
    ])
    if store.startswith("postgresql://"):
        text += "\n".join([
            f'node_name = "{name}"', f'cluster_secret = "{SECRET}"',
            f"cluster_heartbeat = {args.heartbeat}",
            f"cluster_node_timeout = {max(15.0, 3 * args.heartbeat)}", ""])
    return text, port, http


def start_nodes(work: Path, count: int, store: str, args: argparse.Namespace
                ) -> list[sip_cps.Server]:
    """`count` nodes a, b, ... sharing `store`, node i pinned to core i; ready once each
    answers OPTIONS (the cluster joined: a node serves once it has)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPBRIDGE_")}
    nodes = []
    try:
        for index in range(count):
            name = "abcdefgh"[index]
            text, port, http = node_config(name, index, store, args)
            config = work / f"node-{name}.toml"
            config.write_text(text)
            log = work / f"node-{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    sip_cps.pinned([sys.executable, "-m", "sipbridge", "serve", "--config",
                                    str(config)], args.cores[index % len(args.cores)]
                                   if args.cores else None),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
            nodes.append(sip_cps.Server(f"node {name}", proc, port, log, http))
        deadline = time.monotonic() + 30
        for node in nodes:
            while not sip_cps.options_ping(node.port):
                if node.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{node.name} did not start:\n"
                                     f"{node.log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.1)
    except BaseException:
        for node in nodes:
            sip_cps.stop(node.proc)
        raise
    return nodes


class Dispatcher(Kamailio):
    """deploy/kamailio/kamailio.cfg as tests/integration/kamailio runs it, with `workers`
    UDP workers per socket and room for a high call rate's transactions."""

    def __init__(self, workdir: Path, nodes: Sequence[sip_cps.Server], workers: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        listing = workdir / "dispatcher.list"
        listing.write_text("".join(f"1 sip:{LOOPBACK}:{n.port}\n" for n in nodes))
        super().__init__(workdir, "dispatcher", defines={"DISPATCHER_LIST": str(listing)})
        self.workers = workers

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("-n") + 1] = str(self.workers)
        command[command.index("-m") + 1] = "256"  # MB shared: transactions of ~10 s
        return command


@dataclass
class Setup:
    """One target's processes for a step: where SIPp sends, and what to measure."""

    target: str
    nodes: list[sip_cps.Server]
    proxy: Dispatcher | None
    store: str
    server: sip_cps.Server  # SIPp's target: Kamailio or the one node

    def alive(self) -> bool:
        return all(n.proc.poll() is None for n in self.nodes) and (
            self.proxy is None or (self.proxy.process is not None
                                   and self.proxy.process.poll() is None))


@contextlib.contextmanager
def running(target: str, work: Path, pg: Postgres, args: argparse.Namespace
            ) -> Iterator[Setup]:
    """A new database, the target's nodes and Kamailio (if any); all stopped after, the
    database dropped."""
    count, proxied = TARGETS[target]
    work.mkdir(parents=True, exist_ok=True)
    store = str(work / "sipbridge.db") if target == "sqlite" else pg.create_database()
    proxy: Dispatcher | None = None
    nodes: list[sip_cps.Server] = []
    try:
        nodes = start_nodes(work, count, store, args)
        server = nodes[0]
        if proxied:
            proxy = Dispatcher(work / "kamailio", nodes, args.kamailio_workers)
            proxy.start()
            assert proxy.process is not None
            server = sip_cps.Server("kamailio", proxy.process, proxy.carrier_port,
                                    proxy.log_path)
        yield Setup(target, nodes, proxy, store, server)
    finally:
        if proxy is not None:
            proxy.stop()
        for node in nodes:
            sip_cps.stop(node.proc)
        if target != "sqlite":
            pg.drop(store)


# --- SIPp ---------------------------------------------------------------------------------


def sipp_command(setup: Setup, scenario: Path, rate: int, calls: int, *extra: str
                 ) -> list[str]:
    """sip_cps's uac command line (free loopback ports), with the routed call flow."""
    command = sip_cps.uac_command(setup.server, "udp", rate, calls, *extra)
    at = command.index("-sn")
    command[at:at + 2] = ["-sf", str(scenario)]
    return command


def timed_scenario(work: Path) -> Path:
    """uac_routed.xml with SIPp timing each call's INVITE to its 200 (rtd)."""
    path = work / "uac_routed_timed.xml"
    path.write_text(SCENARIO.read_text().replace('rrs="true"', 'rrs="true" rtd="true"'))
    return path


def late_p99(work: Path) -> float | None:
    """The 99th percentile of the INVITE-to-200 times (ms) SIPp wrote (-trace_rtt)."""
    times = []
    for path in work.glob("*_rtt.csv"):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            with contextlib.suppress(IndexError, ValueError):
                times.append(float(parts[1]))
    return percentile(times, 99) if times else None


# --- one step --------------------------------------------------------------------------


@dataclass
class Step:
    """A step as bench/sip_cps.py records one (`sipp`: the nodes together as its server,
    SIPp's uac as its client), and what else ran on the cores meanwhile."""

    sipp: sip_cps.Step
    late_p99: float | None  # ms from INVITE to 200, 99th percentile
    nodes_cpu: list[float]  # percent of one core, each node
    proxy_cpu: float  # Kamailio, all its processes
    pg_cpu: float  # PostgreSQL, all its processes
    refused: tuple[int, int]  # calls refused with 503: by the nodes, by Kamailio itself
    store: StoreLoad | None = None  # on a store step

    @property
    def passed(self) -> bool:
        return self.sipp.passed


@dataclass(frozen=True)
class Cpu:
    """CPU seconds so far of each part of a setup, and of the machine."""

    nodes: list[float]
    loops: list[float]  # the nodes' main threads (their event loops)
    proxy: float
    pg: float

    @classmethod
    def now(cls, setup: Setup, pg: Postgres) -> Cpu:
        process = setup.proxy.process if setup.proxy else None
        return cls([sip_cps.cpu_seconds(n.proc.pid) for n in setup.nodes],
                   [sip_cps.cpu_seconds(n.proc.pid, n.proc.pid) for n in setup.nodes],
                   tree_cpu(process.pid) if process else 0.0, tree_cpu(pg.pid()))


def warm_up(setup: Setup, scenario: Path, work: Path, seconds: float) -> None:
    """sip_cps's warm-up (calls at its WARMUP_RATE, not measured) through the setup."""
    command = sipp_command(setup, scenario, sip_cps.WARMUP_RATE,
                           int(sip_cps.WARMUP_RATE * seconds), "-d", "0", "-timeout",
                           f"{seconds + 20:g}s")
    with (work / "sipp-warmup.log").open("wb") as out:
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, check=False, cwd=work)


def run_step(target: str, rate: int, args: argparse.Namespace, pg: Postgres,
             rest: Rest | None = None) -> Step:
    """One step at `rate`; with `rest`, a store step: the store counted before and after
    the measured calls, `--store-settle` s from either side (PostgreSQL reports an idle
    backend's counts up to 10 s late), less `rest` a node for the time between."""
    work = args.root / f"{target}-{rate}{'-store' if rest else ''}"
    calls = rate * args.duration
    counting = rest is not None and target != "sqlite"
    settle = args.store_settle if counting else 0.5
    with running(target, work, pg, args) as setup:
        scenario = timed_scenario(work)
        if args.warmup > 0:
            warm_up(setup, scenario, work, args.warmup)
        time.sleep(settle)  # the warm-up's last writes committed (and counted)
        command = sipp_command(setup, scenario, rate, calls, "-d", "0", "-timeout",
                               f"{args.duration * 2 + 30}s", "-timeout_error", "-trace_stat",
                               "-stf", str(work / "stats.csv"), "-fd", "1", "-trace_rtt",
                               "-rtt_freq", str(max(1, min(100, calls // 20))))
        counted_from = time.monotonic()
        before = pg.counts(setup.store) if counting else None
        cpu0 = Cpu.now(setup, pg)
        start = time.monotonic()
        with (work / "sipp-uac.log").open("wb") as out:
            client = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, cwd=work)
        sipp_cpu = 0.0
        try:
            while client.poll() is None:
                sipp_cpu = max(sipp_cpu, sip_cps.cpu_seconds(client.pid))
                time.sleep(0.2)
        finally:
            sip_cps.stop(client, signal.SIGKILL)  # only if interrupted: it has ended
        wall = time.monotonic() - start
        cpu1, alive = Cpu.now(setup, pg), setup.alive()
        refused = (sum(sip_cps.metric(n.http, "sipbridge_overload_rejected_total") or 0
                       for n in setup.nodes),
                   setup.proxy.log().count("no node in service") if setup.proxy else 0)
        if before is not None:
            time.sleep(settle)  # the last calls' writes committed and counted
            after = pg.counts(setup.store)
            counted = time.monotonic() - counted_from
    stats = sip_cps.read_stats(work / "stats.csv")
    successful, failed = sip_cps.call_counts(stats)
    retrans = int(stats.get("Retransmissions(C)", 0) or 0)
    late = late_p99(work)
    why = verdict(returncode=-1 if client.returncode is None else client.returncode,
                  calls=calls, successful=successful, failed=failed,
                  retransmissions=retrans, wall=wall, duration=args.duration,
                  late_p99=late, alive=alive)
    nodes = [b - a for a, b in zip(cpu0.nodes, cpu1.nodes, strict=True)]
    loops = sum(cpu1.loops) - sum(cpu0.loops)

    def pct(seconds: float) -> float:
        return 100 * seconds / wall if wall else 0.0

    def per_call(seconds: float) -> float:
        return 1e6 * seconds / successful if successful else 0.0

    return Step(
        sip_cps.Step(target=target, rate=rate, calls=calls, successful=successful,
                     failed=failed, retransmissions=retrans, wall=wall,
                     server_cpu=pct(sum(nodes)), cpu_per_call=per_call(sum(nodes)),
                     loop_per_call=per_call(loops), client_cpu=pct(sipp_cpu),
                     returncode=client.returncode, passed=why == "ok", why=why),
        late_p99=late, nodes_cpu=[pct(c) for c in nodes], proxy_cpu=pct(cpu1.proxy - cpu0.proxy),
        pg_cpu=pct(cpu1.pg - cpu0.pg), refused=refused,
        store=None if before is None or rest is None else store_load(
            before, after, counted, successful, rate, rest, len(nodes)),
    )


HEADER = (f"{'target':<14} {'rate':>5} {'calls':>6} {'ok':>6} {'failed':>6} {'retrans':>7} "
          f"{'200 p99':>7} {'wall s':>6} {'nodes cpu%':>11} {'us/call':>7} {'loop us':>7} "
          f"{'kam%':>5} {'pg%':>5} {'sipp%':>5} {'sum%':>5} {'503 n/k':>11}  result")


def print_step(step: Step, label: str = "") -> None:
    s = step.sipp
    late = "-" if step.late_p99 is None else f"{step.late_p99:.0f}ms"
    nodes = "/".join(f"{c:.0f}" for c in step.nodes_cpu)
    name = f"{label} {s.target}" if label else s.target
    total = sum(step.nodes_cpu) + step.proxy_cpu + step.pg_cpu + s.client_cpu
    refused = "/".join(str(n) for n in step.refused)
    print(f"{name:<14} {s.rate:>5} {s.calls:>6} {s.successful:>6} {s.failed:>6} "
          f"{s.retransmissions:>7} {late:>7} {s.wall:>6.1f} {nodes:>11} "
          f"{s.cpu_per_call:>7.0f} {s.loop_per_call:>7.0f} {step.proxy_cpu:>5.0f} "
          f"{step.pg_cpu:>5.0f} {s.client_cpu:>5.0f} {total:>5.0f} {refused:>11}  "
          f"{'pass' if s.passed else 'FAIL: ' + s.why}", flush=True)


def search(target: str, args: argparse.Namespace, pg: Postgres) -> tuple[int, bool]:
    """sip_cps's search for one target: the highest passing rate, and whether it is only
    a lower bound."""

    def passes(rate: int) -> bool:
        time.sleep(args.cooldown)
        step = run_step(target, rate, args, pg)
        print_step(step)
        return step.passed

    return highest_passing(passes, start=args.start, maximum=args.max,
                           resolution=args.resolution, resolution_pct=args.resolution_pct)


# --- at rest: heartbeats, and the API owner against forwarded ------------------------


@dataclass
class Latency:
    what: str
    owner: list[float]  # ms
    forwarded: list[float]

    def line(self) -> str:
        o50, o99 = percentile(self.owner, 50), percentile(self.owner, 99)
        f50, f99 = percentile(self.forwarded, 50), percentile(self.forwarded, 99)
        return (f"{self.what:<34} {len(self.owner):>5} {o50:>9.2f} {o99:>9.2f} "
                f"{f50:>9.2f} {f99:>9.2f} {f50 / o50 if o50 else 0:>6.2f}x "
                f"{f99 / o99 if o99 else 0:>6.2f}x")


def held_call(setup: Setup, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """One call through Kamailio held up (SIPp pauses 10 minutes before its BYE): SIPp's
    process and the call's id, read from the nodes' API."""
    command = sipp_command(setup, SCENARIO, 1, 1, "-d", "600000", "-timeout", "700s")
    with (work / "sipp-held.log").open("wb") as out:
        sipp = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=work)
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            for node in setup.nodes:
                listed = httpx.get(f"http://{LOOPBACK}:{node.http}/v1/realtime/calls",
                                   params={"state": "active"}, timeout=5).json()["data"]
                if listed:
                    return sipp, str(listed[0]["id"])
            time.sleep(0.1)
    except BaseException:
        sip_cps.stop(sipp, signal.SIGKILL)
        raise
    sip_cps.stop(sipp, signal.SIGKILL)
    raise SystemExit("the held call did not come up")


def api_latency(setup: Setup, call_id: str, requests: int) -> list[Latency]:
    """Each request sent in turn to the owner and to the other node, `requests` rounds."""
    owner_name = call_id.rsplit("_", 1)[1]
    by_name = {n.name.split()[-1]: n for n in setup.nodes}
    owner = by_name[owner_name]
    other = next(n for name, n in by_name.items() if name != owner_name)
    path = f"/v1/realtime/calls/{call_id}"
    kinds = [("GET /v1/realtime/calls/{id} (200)", "GET", path, 200),
             ("POST .../{id}/reject (409)", "POST", path + "/reject", 409)]
    found = [Latency(what, [], []) for what, *_ in kinds]
    with httpx.Client(base_url=f"http://{LOOPBACK}:{owner.http}", timeout=10) as own, \
            httpx.Client(base_url=f"http://{LOOPBACK}:{other.http}", timeout=10) as fwd:
        for round_ in range(requests + 20):  # the first 20 warm both paths, not counted
            for latency, (_, method, url, status) in zip(found, kinds, strict=True):
                for client, times in ((own, latency.owner), (fwd, latency.forwarded)):
                    began = time.perf_counter()
                    reply = client.request(method, url)
                    spent = 1000 * (time.perf_counter() - began)
                    if reply.status_code != status:
                        raise SystemExit(f"{method} {url} via {client.base_url}: "
                                         f"{reply.status_code} {reply.text[:300]}")
                    if round_ >= 20:
                        times.append(spent)
    return found


def at_rest(args: argparse.Namespace, pg: Postgres) -> tuple[Rest, list[Latency]]:
    work = args.root / "rest"
    with running("proxy-2", work, pg, args) as setup:
        time.sleep(args.store_settle)  # the start's writes counted
        before = pg.counts(setup.store)
        time.sleep(args.idle)
        rest = rest_rate(before, pg.counts(setup.store), args.heartbeat)
        if not args.requests:
            return rest, []
        sipp, call_id = held_call(setup, work)
        try:
            return rest, api_latency(setup, call_id, args.requests)
        finally:
            sip_cps.stop(sipp, signal.SIGKILL)


# --- the run -----------------------------------------------------------------------------


STORE_HEADER = (f"{'target':<8} {'rate':>5} {'xact/s':>8} {'rows/s':>8} {'WAL MB/s':>8} "
                f"{'xact/call':>9} {'rows/call':>9} {'WAL kB/call':>11} {'rest xact%':>10} "
                f"{'rest rows%':>10}")


def store_lines(step: Step) -> list[str]:
    """The store step's figures: a second at its rate, per call, the rest's shares."""
    s = step.store
    if s is None:
        return []
    xacts, rows, wal = s.per_second()
    rest_xacts, rest_rows = s.rest_shares()
    per_table = ", ".join(
        f"{name} {ins:.2f}/{upd:.2f}/{dele:.2f}"
        for name, (ins, upd, dele) in sorted(s.table_rows_per_call.items())
        if ins or upd or dele)
    return [
        f"{step.sipp.target:<8} {s.rate:>5} {xacts:>8.1f} {rows:>8.0f} {wal / 1e6:>8.2f} "
        f"{s.xacts_per_call:>9.4f} {s.rows_per_call:>9.2f} {s.wal_per_call / 1e3:>11.2f} "
        f"{100 * rest_xacts:>10.1f} {100 * rest_rows:>10.2f}",
        f"{'':<8} rows a call by table (inserted/updated/deleted): {per_table}",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=15, help="seconds per step (default 15)")
    ap.add_argument("--start", type=int, default=300, help="first rate in cps (default 300)")
    ap.add_argument("--max", type=int, default=3000, help="highest rate tried (default 3000)")
    ap.add_argument("--resolution", type=int, default=25, help="bisect until within N cps")
    ap.add_argument("--resolution-pct", type=float, default=8.0,
                    help="... or N%% of the rate (default 8)")
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                    help=f"comma-separated, of {', '.join(TARGETS)} (default: "
                    f"{','.join(DEFAULT_TARGETS)})")
    ap.add_argument("--requests", type=int, default=500,
                    help="API requests per kind and path (default 500; 0: no latency part)")
    ap.add_argument("--idle", type=float, default=10.0,
                    help="seconds the two nodes stay idle for the rest rate (default 10)")
    ap.add_argument("--heartbeat", type=float, default=2.0,
                    help="the nodes' cluster_heartbeat in seconds (default 2)")
    ap.add_argument("--kamailio-workers", type=int, default=2,
                    help="Kamailio's UDP workers per socket (-n; default 2)")
    ap.add_argument("--warmup", type=float, default=2.0,
                    help=f"seconds of calls at {sip_cps.WARMUP_RATE}/s before each step")
    ap.add_argument("--store-settle", type=float, default=11.0,
                    help="seconds after the warm-up and after a store step's calls before "
                    "the store is counted (PostgreSQL reports an idle backend's counts "
                    "within 10 s; default 11)")
    ap.add_argument("--cooldown", type=float, default=2.0, help="seconds between steps")
    ap.add_argument("--no-fsync", action="store_true",
                    help="PostgreSQL with fsync=off (as the tests run it)")
    ap.add_argument("--store-targets", default="proxy-2",
                    help="targets given a store step at their highest rate (default "
                    "proxy-2; '': none)")
    ap.add_argument("--store-at", default="6", metavar="CPS,CPS",
                    help="... and at these rates (default 6: 3 calls/s a node, as 56 calls/s "
                    "spread over some 20 nodes; '': none)")
    ap.add_argument("--keep", metavar="DIR", help="keep logs and SIPp files in DIR")
    args = ap.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    store_targets = [t.strip() for t in args.store_targets.split(",") if t.strip()]
    args.store_at = [int(r) for r in args.store_at.split(",") if r.strip()]
    unknown = [t for t in targets + store_targets if t not in TARGETS]
    if unknown or "sqlite" in store_targets:
        ap.error(f"unknown targets {unknown}; choose from {list(TARGETS)} (a store step "
                 "counts PostgreSQL: not sqlite)")
    if args.start < 1 or args.max < args.start or args.duration < 1:
        ap.error("need 1 <= --start <= --max and --duration >= 1")
    missing = [name for name, found in (("sipp", shutil.which("sipp")),
                                        ("kamailio", kamailio_binary()),
                                        ("initdb", find_bindir())) if found is None]
    if missing:
        print(f"cluster: not found: {', '.join(missing)} (scripts/setup.sh; Debian packages "
              "sip-tester, kamailio, postgresql)")
        return 2
    bindir = find_bindir()
    assert bindir is not None
    cores = sorted(os.sched_getaffinity(0))
    args.cores = cores if len(cores) >= 2 and shutil.which("taskset") else []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks run

    print(f"cluster: udp, {args.duration} s per step, rates {args.start}..{args.max} cps; "
          f"node i on core i of {cores}, SIPp, Kamailio ({args.kamailio_workers} workers) "
          f"and PostgreSQL (fsync {'off' if args.no_fsync else 'on'}) unpinned; "
          f"heartbeat {args.heartbeat:g} s; load average {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, tuple[int, bool]] = {}
    stored: list[Step] = []
    pg = Postgres(bindir, fsync=not args.no_fsync)
    with sip_cps.workdir(args.keep, "cluster-bench-") as root:
        args.root = root
        try:
            pg.start()
            rest, latencies = at_rest(args, pg)
            print_rest(rest, latencies, args)
            print(HEADER, flush=True)
            for target in targets:
                results[target] = search(target, args, pg)
            for target in store_targets:
                found = results.get(target, (0, False))[0]
                for rate in ([found] if found else []) + args.store_at:
                    time.sleep(args.cooldown)
                    step = run_step(target, rate, args, pg, rest)
                    print_step(step, "store")
                    stored.append(step)
        except KeyboardInterrupt:
            print("cluster: interrupted")
            return 130
        finally:
            pg.stop()
    if stored:
        print(f"the store at the highest passing rate (and --store-at), counted "
              f"{args.store_settle:g} s either side of the calls; per call: less the nodes' "
              "rest rate over the same time; a second: per call x rate + rest")
        print(STORE_HEADER)
        for step in stored:
            print("\n".join(store_lines(step)))
    print(summary(results, latencies, stored))
    return 0


def print_rest(rest: Rest, latencies: list[Latency], args: argparse.Namespace) -> None:
    print(f"at rest (2 nodes behind Kamailio, {args.idle:g} s): the store takes "
          f"{rest.xacts:.2f} transactions/s, {rest.rows:.2f} rows/s and "
          f"{rest.wal / 1e3:.2f} kB of WAL/s per node", flush=True)
    if latencies:
        print(f"API latency, ms, {args.requests} requests each, owner and forwarded in "
              "turn (keep-alive):")
        print(f"{'request':<34} {'n':>5} {'owner p50':>9} {'p99':>9} {'fwd p50':>9} "
              f"{'p99':>9} {'p50 x':>7} {'p99 x':>7}")
        for latency in latencies:
            print(latency.line(), flush=True)


def summary(results: dict[str, tuple[int, bool]], latencies: list[Latency],
            stored: list[Step]) -> str:
    """The last line: each target's rate and the ratios, the API's, the store's."""
    parts = [f"{t} {'>=' if capped else ''}{rate} cps" for t, (rate, capped) in
             results.items()]
    rates = {t: r[0] for t, r in results.items()}
    for over, under in (("proxy-1", "direct"), ("proxy-2", "proxy-1")):
        if rates.get(over) and rates.get(under):
            parts.append(f"{over}/{under} {rates[over] / rates[under]:.2f}")
    for latency in latencies[:1]:
        o50, f50 = percentile(latency.owner, 50), percentile(latency.forwarded, 50)
        parts.append(f"GET p50 owner {o50:.2f} ms, forwarded {f50:.2f} ms "
                     f"({f50 / o50 if o50 else 0:.2f}x)")
    for step in stored[:1]:  # at the highest rate of the first store target
        if step.store is not None:
            xacts, rows, _ = step.store.per_second()
            parts.append(
                f"store at {step.sipp.rate} cps ({step.sipp.target}): {xacts:.0f} "
                f"transactions/s, {rows:.0f} rows/s, {step.store.rows_per_call:.1f} rows a "
                f"call, heartbeats {100 * step.store.rest_shares()[0]:.0f} % of the "
                f"transactions and {100 * step.store.rest_shares()[1]:.2f} % of the rows")
    return "result: " + "; ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
