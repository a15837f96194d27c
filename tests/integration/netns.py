"""A network namespace of the test's own, with a name server that records every query and
never answers.

The namespace has only a loopback interface: nothing run in it can reach the host's
network, so no query can reach the host's resolver. Its mount namespace is private too,
and /etc/resolv.conf in it names 127.0.0.1 (and the 127.0.0.53 stub, and ::1): the
never-answering server listens on port 53 of each, over UDP and TCP. A lookup made in
the namespace therefore waits for its full time-out, as with an unreachable resolver,
and leaves its name in the record.

Used as a library by the tests (`Netns`), and as a script run inside the namespace:

    python netns.py hold --queries FILE      # inside: loopback up, resolv.conf, the server
    python netns.py probe HOST PORT SECONDS  # OPTIONS every 50 ms: latencies as JSON

Needs root (or user namespaces with --map-root-user) and unshare/nsenter (util-linux).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

RESOLV_CONF = "nameserver 127.0.0.1\nnameserver 127.0.0.53\nnameserver ::1\n" \
              "options timeout:2 attempts:2\n"
SERVER_ADDRESSES = ("127.0.0.1", "127.0.0.53", "::1")
READY_TIMEOUT = 10.0


# --- inside the namespace ---------------------------------------------------------------


def parse_question(message: bytes) -> tuple[str, int]:
    """The first question of a DNS message (RFC 1035 4.1.2): its name and type."""
    labels = []
    i = 12
    while i < len(message):
        size = message[i]
        if size == 0 or size & 0xC0:
            i += 1 if size == 0 else 2
            break
        labels.append(message[i + 1:i + 1 + size].decode("ascii", "replace"))
        i += 1 + size
    qtype = struct.unpack_from("!H", message, i)[0] if i + 2 <= len(message) else 0
    return ".".join(labels), qtype


class Recorder:
    """Appends one JSON line per query to a file, and never answers."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def record(self, transport: str, source: Any, message: bytes) -> None:
        try:
            name, qtype = parse_question(message)
        except (IndexError, struct.error):
            name, qtype = "", 0
        self.out.write(json.dumps({"at": time.time(), "transport": transport,
                                   "source": list(source)[:2], "name": name,
                                   "type": qtype}) + "\n")
        self.out.flush()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.recorder.record("udp", addr, data)


async def _tcp(recorder: Recorder, reader: asyncio.StreamReader,
               writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    try:
        while True:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            recorder.record("tcp", peer, await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _hold(queries: Path) -> None:
    loop = asyncio.get_running_loop()
    with queries.open("a") as out:
        recorder = Recorder(out)
        for host in SERVER_ADDRESSES:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            await loop.create_datagram_endpoint(lambda: _Udp(recorder), local_addr=(host, 53),
                                                family=family)
            await asyncio.start_server(lambda r, w: _tcp(recorder, r, w), host, 53,
                                       family=family)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"ready {os.getpid()}", flush=True)
        await stop.wait()


def hold(queries: Path) -> None:
    """Run inside a new network and mount namespace: bring loopback up, put our
    resolv.conf in place (in this mount namespace only), serve until SIGTERM."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    links = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True, text=True)
    if [line.split(":")[1].strip() for line in links.stdout.splitlines()] != ["lo"]:
        raise SystemExit(f"the namespace has more than loopback:\n{links.stdout}")
    conf = Path(tempfile.mkdtemp(prefix="netns-")) / "resolv.conf"
    conf.write_text(RESOLV_CONF)
    subprocess.run(["mount", "--bind", str(conf), "/etc/resolv.conf"], check=True)
    if Path("/etc/resolv.conf").read_text() != RESOLV_CONF:
        raise SystemExit("/etc/resolv.conf in the namespace is not ours")
    asyncio.run(_hold(queries))


def options_request(host: str, port: int, local: tuple[str, int]) -> bytes:
    """An out-of-dialog OPTIONS (RFC 3261 11) from `local`."""
    lhost, lport = local
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@{lhost}>;tag={uuid.uuid4().hex[:10]}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@{lhost}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def probe(host: str, port: int, seconds: float, interval: float = 0.05,
          timeout: float = 2.0) -> dict[str, Any]:
    """OPTIONS one after another for `seconds`: each one's latency in seconds (None: no
    final answer within `timeout`)."""
    latencies: list[float | None] = []
    end = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        while time.monotonic() < end:
            sent = time.monotonic()
            request = options_request(host, port, s.getsockname())
            call_id = request.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0]
            s.sendto(request, (host, port))
            latency = None
            while (left := sent + timeout - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    data, _ = s.recvfrom(65535)
                except (TimeoutError, ConnectionRefusedError):
                    break
                if data.startswith(b"SIP/2.0 1") or call_id not in data:
                    continue  # provisional, or a late answer to an earlier probe
                latency = time.monotonic() - sent
                break
            latencies.append(latency)
            time.sleep(max(0.0, sent + interval - time.monotonic()))
    return {"latencies": latencies}


# --- outside: the test's side -----------------------------------------------------------


class Netns:
    """A network + mount namespace with the never-answering name server; commands run in
    it through nsenter. Stop it with `close()`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.queries_path = workdir / "dns-queries.jsonl"
        self.queries_path.touch()
        self._log = (workdir / "netns-hold.log").open("wb")
        command = ["unshare", "--net", "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            command.append("--map-root-user")
        self.holder = subprocess.Popen(
            [*command, "--", sys.executable, __file__, "hold", "--queries",
             str(self.queries_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
        )
        self.pid = self._wait_ready()

    @staticmethod
    def available() -> str | None:
        """Why namespaces cannot be used here, or None when they can."""
        for tool in ("unshare", "nsenter", "ip", "mount"):
            if shutil.which(tool) is None:
                return f"{tool} not on PATH"
        probe_run = subprocess.run(["unshare", "--net", "--mount", "true"],
                                   check=False, capture_output=True, text=True)
        if probe_run.returncode != 0:
            return f"unshare --net --mount fails: {probe_run.stderr.strip()}"
        return None

    def _wait_ready(self) -> int:
        assert self.holder.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        os.set_blocking(self.holder.stdout.fileno(), False)
        buffer = b""
        while time.monotonic() < deadline:
            if self.holder.poll() is not None:
                break
            chunk = self.holder.stdout.read() or b""
            buffer += chunk
            if b"\n" in buffer:
                word, _, pid = buffer.split(b"\n", 1)[0].decode().partition(" ")
                if word == "ready":
                    return int(pid)
            time.sleep(0.05)
        self.close()
        raise RuntimeError(f"the namespace's name server did not start within "
                           f"{READY_TIMEOUT:g} s: {buffer!r}\n"
                           f"{(self.workdir / 'netns-hold.log').read_text(errors='replace')}")

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as a command that runs inside the namespace."""
        enter = ["nsenter", "--target", str(self.pid), "--net", "--mount"]
        if os.geteuid() != 0:
            enter += ["--user", "--preserve-credentials"]
        return [*enter, "--", *argv]

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(argv), **kwargs)

    def run(self, argv: list[str], timeout: float,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv), check=False, timeout=timeout,
                              capture_output=True, text=True, **kwargs)

    def probe(self, host: str, port: int, seconds: float) -> subprocess.Popen[bytes]:
        """Start OPTIONS probes in the namespace; `probe_result` reads what they saw."""
        return self.popen([sys.executable, __file__, "probe", host, str(port), f"{seconds:g}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def queries(self) -> list[dict[str, Any]]:
        """Every query the namespace's name server received so far."""
        return [json.loads(line) for line in self.queries_path.read_text().splitlines()
                if line.strip()]

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.send_signal(signal.SIGTERM)
            try:
                self.holder.wait(5)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait()
        self._log.close()


def probe_result(process: subprocess.Popen[bytes], timeout: float) -> list[float | None]:
    """The latencies a `Netns.probe` measured (it must end within `timeout`)."""
    out, err = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"the OPTIONS probe failed: {err.decode(errors='replace')}")
    latencies: list[float | None] = json.loads(out)["latencies"]
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hold")
    h.add_argument("--queries", type=Path, required=True)
    p = sub.add_parser("probe")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("seconds", type=float)
    args = parser.parse_args()
    if args.command == "hold":
        hold(args.queries)
    else:
        print(json.dumps(probe(args.host, args.port, args.seconds)))


if __name__ == "__main__":
    main()
