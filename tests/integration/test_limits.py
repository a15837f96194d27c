"""A gateway under `ulimit -n 1024` holding more idle TCP connections than it has file
descriptors for: it refuses the connections past its limit at once, so calls are still
answered, the API still answers, and the log stays short."""

from __future__ import annotations

import resource
import socket
from collections.abc import Callable

import httpx
import pytest

from tests.integration.gateway import Gateway
from tests.integration.sipp import SippResult

pytestmark = pytest.mark.integration

IDLE = 1100  # idle connections opened against a limit of 1024 descriptors
LOG_BOUND = 20_000  # bytes of log for the whole test: a few lines, not one per connection


def test_idle_tcp_connections_cannot_starve_calls_or_the_api(
        start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE + 200:
        pytest.skip(f"the test itself needs {IDLE + 200} descriptors (hard limit {hard})")
    if soft != resource.RLIM_INFINITY and soft < IDLE + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gw = start_gateway(auto_answer="silence", nofile=1024, tcp_max_connections=300,
                       max_calls=100, tcp_first_message_timeout=60, log_level="info")
    limits = open(f"/proc/{gw.process.pid}/limits").read()  # noqa: SIM115
    assert any(line.startswith("Max open files") and line.split()[3:5] == ["1024", "1024"]
               for line in limits.splitlines()), limits
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            sock = socket.socket()
            sock.settimeout(5)
            sock.connect((gw.host, gw.port))
            idle.append(sock)
        # Calls are answered (UDP), and over TCP too: the limit is on connections.
        result = sipp(gw, "uac", calls=5, rate=5, trace_msg=False)
        assert (result.returncode, result.successful, result.failed) == (0, 5, 0), \
            result.describe()
        response = httpx.get(f"http://{gw.host}:{gw.http_port}/v1/realtime/calls", timeout=5)
        assert response.status_code == 200
        status = gw.options(timeout=2)
        assert status is not None and status.startswith("SIP/2.0 200"), status
    finally:
        for sock in idle:
            sock.close()
    log = gw.log()
    assert "TCP connections refused" in log
    assert len(log.encode()) < LOG_BOUND, f"{len(log)} bytes of log:\n{log[-3000:]}"
    assert "Traceback" not in log and "Too many open files" not in log
