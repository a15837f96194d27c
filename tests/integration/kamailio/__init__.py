"""Kamailio 5.6 (Debian's ``kamailio``) as a proxy in front of the gateway, for tests.

Two configs live beside this module:

- ``stateful.cfg``: tm + rr; record-routes with ``<sip:127.0.0.1:RR_PORT;lr>`` while it
  relays to the gateway from another socket (``CARRIER_PORT``); in-dialog requests go by
  ``loose_route()``.
- ``stateless.cfg``: ``forward()`` of every request that reaches its carrier side to the
  gateway, no record-route; requests reaching its gateway side go by Request-URI.
- ``dispatcher``: the repository's own ``deploy/kamailio/kamailio.cfg``, the dispatcher in
  front of several gateways (its list file given as the ``DISPATCHER_LIST`` define).
- ``registrar.cfg``: a registrar (registrar, usrloc, auth with one password) that routes
  an INVITE for a registered user to its Contact.

:class:`Kamailio` runs one in the foreground (``-DD -E``, one worker, small memory, its
runtime directory under the test's tmp directory), waits until it answers OPTIONS and
stops it (SIGTERM, then SIGKILL). Both configs log one ``TRACE`` line per request in,
request relayed and reply; :meth:`Kamailio.trace` parses them into :class:`Hop` records.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sipbridge.demo.baresip import Peer, find_free_port, terminate
from tests.integration.probe import LOOPBACK, send_options

CONFIGS = Path(__file__).parent
DEPLOYED = CONFIGS.parents[2] / "deploy" / "kamailio" / "kamailio.cfg"
KAMAILIO = "/usr/sbin/kamailio"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 3.0

_TRACE = re.compile(
    r"TRACE (?P<kind>in|out|reply|drop|relay-failed) (?:(?P<status>\d{3}) )?(?P<method>[A-Z]+) "
    r"(?P<call_id>\S+)(?: from (?P<source>\S+) on (?P<socket>\S+))?(?: to (?P<to>\S*))?"
    r"(?: ruri (?P<ruri>\S+))?"
)


def kamailio_binary() -> str | None:
    """The kamailio program (in /usr/sbin, often not on a user's PATH), or None."""
    found = shutil.which("kamailio") or shutil.which(KAMAILIO)
    return found


@dataclass(frozen=True)
class Hop:
    """One TRACE line: a request in (``in``), relayed (``out``), or a reply (``reply``)."""

    kind: str
    method: str
    call_id: str
    status: int | None = None
    source: str | None = None  # ip:port it came from (in, reply)
    socket: str | None = None  # ip:port of the proxy's socket it came in on (in, reply)
    to: str | None = None  # the destination URI set ($du), empty when by Request-URI
    ruri: str | None = None


class Kamailio(Peer):
    """One Kamailio process with ``config`` (``stateful`` or ``stateless``).

    ``Kamailio(workdir, "stateful", gateway="127.0.0.1:5070")`` takes two free ports on
    127.0.0.1: :attr:`carrier_port`, where the carrier sends, and :attr:`other_port`
    (the Record-Route port of the stateful config, the gateway-side port of the
    stateless one)."""

    def __init__(self, workdir: Path, config: str, *, gateway: str = "",
                 defines: dict[str, str] | None = None, port: int = 0,
                 tcp: bool = False, tls_port: int = 0) -> None:
        if config not in ("stateful", "stateless", "registrar", "dispatcher"):
            raise ValueError("config must be 'stateful', 'stateless', 'registrar' or "
                             "'dispatcher' (deploy/kamailio/kamailio.cfg)")
        self.defines = dict(defines or {})  # more -A NAME="VALUE" for the config
        self.tcp = tcp  # also listen on TCP at the carrier port (registrar.cfg only)
        self.tls_port = tls_port  # also listen on TLS there (a config WITH_TLS)
        self.workdir = workdir
        self.config = (DEPLOYED if config == "dispatcher" else CONFIGS / f"{config}.cfg")
        self.kind = config
        self.gateway = gateway
        self.carrier_port = port  # 0: a free one at start
        self.other_port = 0
        self.log_path = workdir / "kamailio.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Where the carrier sends: ``127.0.0.1:CARRIER_PORT``."""
        return f"{LOOPBACK}:{self.carrier_port}"

    @property
    def rr_address(self) -> str:
        """The stateful config's Record-Route address (``127.0.0.1:RR_PORT``)."""
        return f"{LOOPBACK}:{self.other_port}"

    def command(self) -> list[str]:
        binary = kamailio_binary()
        if binary is None:
            raise FileNotFoundError("kamailio is not installed (Debian package kamailio)")
        defines = [f'GATEWAY="sip:{self.gateway}"']
        if self.kind == "stateful":
            defines.append(f'RR_ADDRESS="{self.rr_address}"')
        elif self.kind == "stateless":
            defines.append(f"CARRIER_PORT={self.carrier_port}")
        defines += [f"{name}={value}" if value.isdigit() else f'{name}="{value}"'
                    for name, value in self.defines.items()]  # numbers bare, as numbers
        command = [
            binary, "-f", str(self.config),
            "-DD", "-E",  # stay in the foreground, log to stderr
            "-n", "1", "-m", "32", "-M", "4",
            "-Y", str(self.workdir / "run"), "-P", str(self.workdir / "kamailio.pid"),
            "-l", f"udp:{LOOPBACK}:{self.carrier_port}",
            "-l", f"udp:{LOOPBACK}:{self.other_port}",
            "-a", "no",
        ]  # fmt: skip
        if self.tcp:
            command += ["-l", f"tcp:{LOOPBACK}:{self.carrier_port}"]
        if self.tls_port:
            command += ["-l", f"tls:{LOOPBACK}:{self.tls_port}"]
        for define in defines:
            command += ["-A", define]
        return command

    def start(self) -> None:
        """Start Kamailio and wait until its carrier-side socket answers OPTIONS."""
        (self.workdir / "run").mkdir(parents=True, exist_ok=True)
        if not self.carrier_port:
            self.carrier_port = find_free_port(LOOPBACK, tcp=False)
        self.other_port = find_free_port(LOOPBACK, tcp=False)
        while self.other_port == self.carrier_port:
            self.other_port = find_free_port(LOOPBACK, tcp=False)
        command = self.command()
        (self.workdir / "command.txt").write_text(" ".join(command) + "\n")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"kamailio exited with {self.process.returncode}\n{self.log()[-4000:]}")
            if send_options(LOOPBACK, self.carrier_port, 0.3) is not None:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"kamailio did not answer OPTIONS on udp {self.address} "
                                   f"within {READY_TIMEOUT:g} s\n{self.log()[-4000:]}")

    def stop(self) -> int | None:
        """SIGTERM (Kamailio stops its workers), then SIGKILL; its exit code. Whatever is
        left of its process group (workers of a main process that was killed) goes too."""
        if self.process is None:
            return None
        code = terminate(self.process, STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def trace(self, call_id: str | None = None) -> list[Hop]:
        """The TRACE lines of the log (of one Call-ID when given), in order."""
        hops = []
        for line in self.log().splitlines():
            found = _TRACE.search(line)
            if found is None:
                continue
            hop = Hop(
                kind=found["kind"], method=found["method"], call_id=found["call_id"],
                status=int(found["status"]) if found["status"] else None,
                source=found["source"], socket=found["socket"], to=found["to"],
                ruri=found["ruri"],
            )  # fmt: skip
            if call_id is None or hop.call_id == call_id:
                hops.append(hop)
        return hops

    def trace_text(self, call_id: str | None = None) -> str:
        """The TRACE lines as they are, for assertion messages."""
        lines = [ln[ln.index("TRACE"):] for ln in self.log().splitlines() if "TRACE " in ln]
        return "\n".join(ln for ln in lines if call_id is None or call_id in ln)
