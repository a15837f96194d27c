"""Fixtures for integration tests: a real sipbridge process and real SIPp calls.

Everything runs on loopback (see gateway.py, sipp.py and probe.py for the handles):

- ``free_port``: a port on 127.0.0.1 free for both UDP and TCP.
- ``start_gateway(**config) -> Gateway``: a factory that starts gateways with those
  config keys (:func:`tests.integration.gateway.launch`); stopped at teardown.
- ``gateway``: a gateway with ``auto_answer = "silence"``.
- ``sipp(target, scenario, ...) -> SippResult``: runs SIPp once.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sipbridge.demo.baresip import find_free_port
from tests.integration.gateway import LOOP_STALL_MS, STALL_LINE, Gateway, launch
from tests.integration.sipp import SippResult, run_sipp

_gateways_key = pytest.StashKey[list[Gateway]]()

# The modules whose calls run with the watch (besides tests marked watch_loop).
WATCH_LOOP_MODULES = ("test_sipp_calls", "test_transfers", "test_dtmf", "test_media_echo",
                      "test_agent_call", "test_routing")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)  # a test function's module
        if module is not None and module.__name__.rsplit(".", 1)[-1] in WATCH_LOOP_MODULES:
            item.add_marker(pytest.mark.watch_loop)


@pytest.fixture
def free_port() -> int:
    """A port on 127.0.0.1 free for both UDP and TCP."""
    return find_free_port()


@pytest.fixture
def start_gateway(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., Gateway]]:
    """Factory: ``start_gateway(auto_answer="silence", ring_time=5)`` starts a
    gateway with those config keys (``sip`` and ``http`` get free loopback
    ports unless given; ``nofile=N`` runs it under ``ulimit -n N``) and returns a
    ready :class:`Gateway`. Every gateway is
    stopped (SIGINT, then SIGKILL) at teardown; a failed test shows its log.

    In a test marked ``watch_loop`` each gateway watches its event loop
    (``slow_callback_ms``), and the test fails at teardown if the loop stalled
    longer than ``LOOP_STALL_MS``."""
    started: list[Gateway] = request.node.stash.setdefault(_gateways_key, [])
    watch = request.node.get_closest_marker("watch_loop") is not None

    def start(**config: Any) -> Gateway:
        if watch:
            config.setdefault("slow_callback_ms", LOOP_STALL_MS)
        gw = launch(tmp_path, f"gateway{len(started) + 1}", config)
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
