"""Two gateways behind Kamailio with the repository's dispatcher config
(deploy/kamailio/kamailio.cfg): calls spread over both; a node drained with SIGTERM
answers 503, Kamailio sends each call it refuses on to the other node (and takes it out
of the rotation), so no call through Kamailio fails meanwhile, while the drained node's
own call goes on to its end. The dispatcher's OPTIONS probe is set to 30 s here, so
that it is the failover on 503 that is seen, not the probe."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.gateway import Gateway
from tests.integration.kamailio import Kamailio, kamailio_binary
from tests.integration.sipp import SippResult

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(kamailio_binary() is None, reason="kamailio is not installed"),
]


def ended(gw: Gateway) -> int:
    """Calls the node has ended by the caller's BYE (its metrics)."""
    text = httpx.get(f"http://{gw.host}:{gw.http_port}/metrics", timeout=5).text
    found = re.search(r'(?m)^sipbridge_calls_total\{reason="remote_bye"\} (\S+)$', text)
    return int(float(found.group(1))) if found else 0


def test_calls_spread_over_two_nodes_and_a_draining_node_is_passed_over(
        start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult],
        tmp_path: Path) -> None:
    a = start_gateway(auto_answer="echo", drain_timeout=30)
    b = start_gateway(auto_answer="echo", drain_timeout=30)
    nodes = tmp_path / "dispatcher.list"
    nodes.write_text(f"1 sip:{a.address}\n1 sip:{b.address}\n")
    with Kamailio(tmp_path / "kamailio", "dispatcher",
                  defines={"DISPATCHER_LIST": str(nodes), "DS_PING_INTERVAL": "30"}) as proxy:
        spread = sipp(proxy.address, "uac_routed.xml", calls=40, rate=20,
                      extra=["-d", "300"], timeout=40)
        assert (spread.successful, spread.failed) == (40, 0), (
            spread.describe() + proxy.trace_text()[-3000:])
        first = {"a": ended(a), "b": ended(b)}
        assert first["a"] + first["b"] == 40 and min(first.values()) >= 10, first

        # One long call; the node that holds it is drained.
        got: dict[str, Any] = {}
        held = threading.Thread(target=lambda: got.update(result=sipp(
            proxy.address, "uac_routed.xml", calls=1, extra=["-d", "6000"], timeout=30)))
        held.start()
        deadline = time.monotonic() + 10
        while a.metric("sipbridge_calls_active") + b.metric("sipbridge_calls_active") < 1:
            assert time.monotonic() < deadline, "the long call did not come up"
            time.sleep(0.05)
        holder, other = (a, b) if a.metric("sipbridge_calls_active") else (b, a)
        before = ended(other)
        holder.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert holder.options() is not None and holder.options().startswith(  # type: ignore[union-attr]
            "SIP/2.0 503"), holder.log()
        # New calls right away: the draining node's 503 sends a call on to the other node,
        # and marks the draining one out of the rotation.
        during = sipp(proxy.address, "uac_routed.xml", calls=20, rate=20, extra=["-d", "300"],
                      timeout=40)
        assert (during.successful, during.failed) == (20, 0), (
            during.describe() + proxy.trace_text()[-3000:])
        assert ended(other) - before == 20
        passed_on = [line for line in proxy.trace_text().splitlines()
                     if line.startswith("TRACE next INVITE")]
        assert passed_on and holder.address in passed_on[0], proxy.trace_text()[-3000:]
        held.join(40)
        result = got["result"]
        assert (result.successful, result.failed) == (1, 0), result.describe()
        holder.process.wait(10)
        assert holder.process.returncode == 0, holder.log()
        assert "refused_draining=" in holder.log(), holder.log()
