"""SIPp (Debian's ``sip-tester``) run once from the integration tests.

``run_sipp(target, scenario, workdir, **options)`` places the calls of a scenario (a
built-in name such as ``uac`` or a file in ``scenarios/``) against ``host:port`` and
collects SIPp's verdict, counts and files as a :class:`SippResult`."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipbridge.demo.baresip import find_free_port
from tests.integration.probe import LOOPBACK

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP_TRANSPORTS = {"udp": "u1", "tcp": "t1"}


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
    media_port = find_free_port(local_ip, tcp=False, offsets=(0, 1, 2, 3))
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
    timeout = float(options.get("timeout", 30))
    # A port found free can be taken before SIPp binds it (the ports come from the
    # range other processes draw from too): SIPp then stops before its first message,
    # and runs again on new ports, three times at most.
    for _ in range(3):
        cmd = sipp_command(target, scenario, workdir, **options)
        started = time.monotonic()
        with (workdir / "output.txt").open("wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT
            )
            try:
                returncode = proc.wait(timeout + 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                returncode = -9
        said = "".join(
            (workdir / name).read_text(errors="replace")
            for name in ("output.txt", "errors.log") if (workdir / name).exists())
        if not (returncode in (254, 255) and "Unable to bind" in said
                and "Address already in use" in said):
            break
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
