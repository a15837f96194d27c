"""Fixtures for integration tests: a real sipbridge process and real SIPp calls.

Everything runs on loopback. The gateway is started as
``python -m sipbridge serve --config FILE`` with a config written into the
test's ``tmp_path``; SIPp (Debian's ``sip-tester``) places the calls.

Fixtures and helpers:

- ``find_free_port(host, tcp=True, udp=True, offsets=(0,))``: a port free for
  TCP and UDP (and ``port + offset`` for each offset too).
- ``free_port``: fixture, one such port on 127.0.0.1.
- ``start_gateway(**config) -> Gateway``: fixture, a factory that writes the
  config (TOML; ``sip`` and ``http`` are filled in) and starts the gateway,
  waiting until it answers an OPTIONS over UDP; stopped at teardown.
- ``gateway``: fixture, a gateway with ``auto_answer = "silence"``.
- ``sipp(target, scenario, ...) -> SippResult``: fixture, runs SIPp once.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sipbridge.demo.baresip import find_free_port

SCENARIOS = Path(__file__).parent / "scenarios"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 10.0  # seconds for the gateway to answer its first OPTIONS
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
SIPP_TRANSPORTS = {"udp": "u1", "tcp": "t1"}

_gateways_key = pytest.StashKey[list["Gateway"]]()

# The event loop may not stall longer than this in tests marked watch_loop: 100 ms is five
# 20 ms media frames held back at once (past what a phone's jitter buffer hides: the call
# is heard to break up) and a fifth of SIP's T1; the scheduling noise of this shared
# machine stays well under it.
LOOP_STALL_MS = 100
# The modules whose calls run with the watch (besides tests marked watch_loop).
WATCH_LOOP_MODULES = ("test_sipp_calls", "test_transfers", "test_dtmf", "test_media_echo",
                      "test_agent_call", "test_routing")
STALL_LINE = "event loop stalled"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] \
                in WATCH_LOOP_MODULES:
            item.add_marker(pytest.mark.watch_loop)


# --- ports -----------------------------------------------------------------


@pytest.fixture
def free_port() -> int:
    """A port on 127.0.0.1 free for both UDP and TCP."""
    return find_free_port()


# --- the gateway -----------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def to_toml(config: Mapping[str, Any]) -> str:
    """The config as a TOML document: top-level tables (dicts) as sections."""
    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}"
        for k, v in config.items()
        if not isinstance(v, Mapping)
    ]
    for k, v in config.items():
        if isinstance(v, Mapping):
            lines.append(f"\n[{_toml_key(k)}]")
            lines.extend(f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"


def options_request(host: str, port: int, local: tuple[str, int]) -> bytes:
    """An out-of-dialog OPTIONS (RFC 3261 11) from ``local`` over UDP."""
    branch = "z9hG4bK" + uuid.uuid4().hex
    lhost, lport = local
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {lhost}:{lport};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@{lhost}>;tag={uuid.uuid4().hex[:10]}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@{lhost}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Accept: application/sdp\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def send_options(host: str, port: int, timeout: float = 0.5) -> str | None:
    """Send one OPTIONS over UDP; the status line of the answer, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(timeout)
        s.sendto(options_request(host, port, s.getsockname()), (host, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = s.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError):
                return None
            line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
            if line.startswith("SIP/2.0 ") and not line.startswith("SIP/2.0 1"):
                return line
    return None


@dataclass
class Gateway:
    """A running ``sipbridge serve`` process."""

    host: str
    port: int
    http_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path
    config: dict[str, Any]

    @property
    def address(self) -> str:
        """``host:port`` of the SIP listener (UDP and TCP)."""
        return f"{self.host}:{self.port}"

    def options(self, timeout: float = 0.5) -> str | None:
        """Send an OPTIONS over UDP from 127.0.0.1: the final status line, or None."""
        return send_options(self.host, self.port, timeout)

    def log(self) -> str:
        """What the gateway wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, wait, kill if needed; the exit code (negative: killed)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _start(tmp_path: Path, name: str, config: dict[str, Any]) -> Gateway:
    config = dict(config)
    nofile = config.pop("nofile", None)  # the process's open-file limit (soft and hard)
    config.setdefault("sip", f"{LOOPBACK}:{find_free_port()}")
    config.setdefault("http", f"{LOOPBACK}:{find_free_port(udp=False)}")
    config.setdefault("store", str(tmp_path / f"{name}.db"))
    host, port_text = str(config["sip"]).rsplit(":", 1)
    port = int(port_text)
    http_port = int(str(config["http"]).rsplit(":", 1)[1])

    config_path = tmp_path / f"{name}.toml"
    config_path.write_text(to_toml(config))
    log_path = tmp_path / f"{name}.log"

    # The environment would override the file: keep only the file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPBRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ([] if nofile is None else ["prlimit", f"--nofile={nofile}"])
            + [sys.executable, "-m", "sipbridge", "serve", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    gw = Gateway(host, port, http_port, process, log_path, config_path, config)

    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"sipbridge exited with {process.returncode} before answering OPTIONS\n"
                f"config:\n{config_path.read_text()}\nlog:\n{gw.log()}",
                pytrace=False,
            )
        # Any final answer means it is up; what it answers is for the tests.
        if send_options(host, port) is not None:
            return gw
        if time.monotonic() > deadline:
            gw.stop()
            pytest.fail(
                f"sipbridge did not answer OPTIONS on udp {gw.address} "
                f"within {READY_TIMEOUT:.0f} s\nconfig:\n{config_path.read_text()}\n"
                f"log:\n{gw.log()}",
                pytrace=False,
            )
        time.sleep(0.1)


@pytest.fixture
def start_gateway(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., Gateway]]:
    """Factory: ``start_gateway(auto_answer="silence", ring_time=5)`` starts a
    gateway with those config keys (``sip`` and ``http`` get free loopback
    ports unless given; ``nofile=N`` runs it under ``ulimit -n N``) and returns a
    ready :class:`Gateway`. Every gateway is
    stopped (SIGTERM, then SIGKILL) at teardown; a failed test shows its log.

    In a test marked ``watch_loop`` each gateway watches its event loop
    (``slow_callback_ms``), and the test fails at teardown if the loop stalled
    longer than ``LOOP_STALL_MS``."""
    started: list[Gateway] = request.node.stash.setdefault(_gateways_key, [])
    watch = request.node.get_closest_marker("watch_loop") is not None

    def start(**config: Any) -> Gateway:
        if watch:
            config.setdefault("slow_callback_ms", LOOP_STALL_MS)
        gw = _start(tmp_path, f"gateway{len(started) + 1}", config)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
    stalls = [f"{gw.address}: {line}" for gw in started if watch
              for line in gw.log().splitlines() if STALL_LINE in line]
    if stalls:
        pytest.fail("the gateway's event loop stalled:\n" + "\n".join(stalls), pytrace=False)


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    """A gateway on a free loopback port that answers every call itself."""
    return start_gateway(auto_answer="silence")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach each gateway's log to the report of a failed test."""
    report = yield
    if report.failed:
        started: list[Gateway] = item.stash.get(_gateways_key, [])
        for gw in started:
            report.sections.append((f"sipbridge log ({gw.address})", gw.log() or "(empty)"))
    return report


# --- SIPp ------------------------------------------------------------------


@dataclass
class SippResult:
    """One SIPp run: exit code, call counts and the files it wrote."""

    returncode: int
    successful: int
    failed: int
    retransmissions: int
    stats: dict[str, str] = field(repr=False)
    command: list[str] = field(repr=False)
    workdir: Path
    output: str = field(repr=False)
    messages: str = field(repr=False)
    errors: str = field(repr=False)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """SIPp's own verdict: every call succeeded (exit code 0)."""
        return self.returncode == 0

    def describe(self) -> str:
        """Everything useful for an assertion message."""
        return (
            f"sipp exit {self.returncode}: {self.successful} successful, "
            f"{self.failed} failed, {self.retransmissions} retransmissions\n"
            f"command: {' '.join(self.command)}\n"
            f"--- output ---\n{self.output[-6000:]}\n"
            f"--- errors ---\n{self.errors[-4000:]}\n"
            f"--- messages ---\n{self.messages[-8000:]}"
        )


def read_sipp_stats(path: Path) -> dict[str, str]:
    """The last row of SIPp's ``-trace_stat`` CSV, by column name."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return {}
    if len(lines) < 2:
        return {}
    names = lines[0].rstrip(";").split(";")
    values = lines[-1].rstrip(";").split(";")
    return dict(zip(names, values, strict=False))


def _screen_count(screen: str, label: str) -> int | None:
    found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
    return int(found[-1]) if found else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def sipp_command(
    target: str,
    scenario: str | Path,
    workdir: Path,
    *,
    calls: int = 1,
    rate: float = 10,
    transport: str = "udp",
    local_ip: str = LOOPBACK,
    service: str = "service",
    timeout: float = 30,
    recv_timeout: float = 10,
    trace_msg: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """The SIPp command line for one run, its files in ``workdir``.

    ``scenario`` is a built-in name (``uac``), a file name in
    ``tests/integration/scenarios/``, or a path. ``service`` is the user part
    of the Request-URI (``[service]``)."""
    if transport not in SIPP_TRANSPORTS:
        raise ValueError(f"transport must be one of {sorted(SIPP_TRANSPORTS)}")
    if isinstance(scenario, Path) or str(scenario).endswith(".xml"):
        path = Path(scenario)
        path = path if path.is_absolute() else SCENARIOS / path
        if not path.is_file():
            raise FileNotFoundError(path)
        scenario_args = ["-sf", str(path)]
    else:
        scenario_args = ["-sn", str(scenario)]
    local_port = find_free_port(local_ip)
    media_port = find_free_port(local_ip, tcp=False, offsets=(0, 2))
    control_port = find_free_port("0.0.0.0", tcp=False)
    cmd = [
        "sipp",
        target,
        *scenario_args,
        "-t", SIPP_TRANSPORTS[transport],
        "-i", local_ip,
        "-p", str(local_port),
        "-bind_local",
        "-mp", str(media_port),
        "-cp", str(control_port),
        # SIPp 3.6 signs digest uri=sip:HOST:PORT unless told; RFC 7616 3.4.6
        # wants the Request-URI, which the scenarios build as [service]@target.
        "-s", service,
        "-auth_uri", f"{service}@{target}",
        "-m", str(calls),
        "-r", f"{rate:g}",
        "-nostdin",
        "-timeout", f"{timeout:g}s",
        "-timeout_error",
        "-recv_timeout", f"{int(recv_timeout * 1000)}",
        "-trace_stat", "-stf", str(workdir / "stats.csv"), "-fd", "1",
        "-trace_screen", "-screen_file", str(workdir / "screen.log"),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
    ]  # fmt: skip
    if trace_msg:
        cmd += ["-trace_msg", "-message_file", str(workdir / "messages.log")]
    cmd += list(extra)
    return cmd


def run_sipp(
    target: str,
    scenario: str | Path,
    workdir: Path,
    **options: Any,
) -> SippResult:
    """Run SIPp once against ``target`` (``host:port``) and collect its verdict.

    Options are those of :func:`sipp_command`. SIPp exits 0 when all calls
    succeeded, 1 when some failed, 255 on a fatal error or global timeout."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = sipp_command(target, scenario, workdir, **options)
    timeout = float(options.get("timeout", 30))
    started = time.monotonic()
    with (workdir / "output.txt").open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            returncode = proc.wait(timeout + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = -9
    elapsed = time.monotonic() - started

    def text(name: str) -> str:
        p = workdir / name
        return p.read_text(errors="replace") if p.exists() else ""

    stats = read_sipp_stats(workdir / "stats.csv")
    screen = text("screen.log") or text("output.txt")
    successful = _int(stats.get("SuccessfulCall(C)"))
    failed = _int(stats.get("FailedCall(C)"))
    if successful is None:
        successful = _screen_count(screen, "Successful call") or 0
    if failed is None:
        failed = _screen_count(screen, "Failed call") or 0
    return SippResult(
        returncode=returncode,
        successful=successful,
        failed=failed,
        retransmissions=_int(stats.get("Retransmissions(C)")) or 0,
        stats=stats,
        command=cmd,
        workdir=workdir,
        output=text("output.txt"),
        messages=text("messages.log"),
        errors=text("errors.log"),
        elapsed=elapsed,
    )


@pytest.fixture
def sipp(tmp_path: Path) -> Callable[..., SippResult]:
    """Runs SIPp: ``sipp(gateway, "cancel.xml", transport="tcp", calls=1)``.

    The first argument is a :class:`Gateway` or a ``host:port``; the second
    a scenario file in ``scenarios/`` (or a path) or a built-in name such as
    ``"uac"``. Keyword options: ``calls``, ``rate``, ``transport`` (udp|tcp),
    ``local_ip``, ``service``, ``timeout``, ``recv_timeout``, ``trace_msg``,
    ``extra`` (more SIPp arguments).
    Skips the test when SIPp is not installed."""
    if shutil.which("sipp") is None:
        pytest.skip("sipp not on PATH (Debian package sip-tester; scripts/setup.sh installs it)")
    runs = 0

    def run(target: Gateway | str, scenario: str | Path, **options: Any) -> SippResult:
        nonlocal runs
        runs += 1
        address = target.address if isinstance(target, Gateway) else target
        name = Path(str(scenario)).stem
        return run_sipp(address, scenario, tmp_path / f"sipp{runs}-{name}", **options)

    return run
