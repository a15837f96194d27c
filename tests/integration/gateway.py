"""A real ``sipbridge serve`` process for the integration tests.

``launch(directory, name, config)`` writes the config (TOML; ``sip`` and ``http`` get
free loopback ports unless given) and starts ``python -m sipbridge serve --config FILE``,
waiting until it answers an OPTIONS over UDP; the :class:`Gateway` it returns is the
handle the tests use (its address, its log, its metrics, stopping it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sipbridge.demo.baresip import find_free_port
from tests.integration.probe import LOOPBACK, send_options

# seconds for the gateway to answer its first OPTIONS: importing it alone takes 1.5-2 s on
# this 2-core machine when quiet, 4-5 s when both cores are busy, more at a peak
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0  # seconds between the stop signal and SIGKILL

# The event loop may not stall longer than this in tests marked watch_loop: 100 ms is five
# 20 ms media frames held back at once (past what a phone's jitter buffer hides: the call
# is heard to break up) and a fifth of SIP's T1; the scheduling noise of this shared
# machine stays well under it.
LOOP_STALL_MS = 100
# What the gateway logs when its loop stalled longer than ``slow_callback_ms``.
STALL_LINE = "event loop stalled"


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

    def metric(self, name: str, key: str | None = None) -> float:
        """The value of one unlabelled series on ``/metrics`` (``key``: the API key, when
        the gateway asks for one); fails when the series is not there."""
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        text = httpx.get(f"http://{self.host}:{self.http_port}/metrics", headers=headers,
                         timeout=5).text
        found = re.search(rf"(?m)^{name} (\S+)$", text)
        assert found is not None, f"{name} not in /metrics:\n{text}"
        return float(found.group(1))

    def log(self) -> str:
        """What the gateway wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Send ``sig`` (SIGINT: stop at once; SIGTERM drains first), wait, kill if
        needed; the exit code (negative: killed)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def launch(directory: Path, name: str, config: dict[str, Any]) -> Gateway:
    """Start a gateway with ``config`` (its files ``NAME.toml``, ``NAME.log`` and
    ``NAME.db`` in ``directory``; ``nofile=N`` runs it under ``ulimit -n N``) and wait
    until it answers an OPTIONS; the test fails with its log when it does not."""
    config = dict(config)
    nofile = config.pop("nofile", None)  # the process's open-file limit (soft and hard)
    # SIPBRIDGE_TEST_MEDIA_PATH=python|compiled runs the gateways on that media path.
    if os.environ.get("SIPBRIDGE_TEST_MEDIA_PATH") and "media_path" not in config:
        config["media_path"] = os.environ["SIPBRIDGE_TEST_MEDIA_PATH"]
    config.setdefault("sip", f"{LOOPBACK}:{find_free_port()}")
    config.setdefault("http", f"{LOOPBACK}:{find_free_port(udp=False)}")
    config.setdefault("store", str(directory / f"{name}.db"))
    host, port_text = str(config["sip"]).rsplit(":", 1)
    port = int(port_text)
    http_port = int(str(config["http"]).rsplit(":", 1)[1])

    config_path = directory / f"{name}.toml"
    config_path.write_text(to_toml(config))
    log_path = directory / f"{name}.log"

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
            cwd=directory,
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
