"""Two gateways behind Kamailio with the repository's dispatcher config
(deploy/kamailio/kamailio.cfg): calls spread over both; a node drained with SIGTERM
answers 503, Kamailio sends each call it refuses on to the other node, so no call
through Kamailio fails meanwhile, while the drained node's own call goes on to its end.
The dispatcher's OPTIONS probe is set to 30 s in that test, so that it is the failover on
503 that is seen, not the probe (which would take the node out). Then the whole cluster:
PostgreSQL, Kamailio and two nodes under load; and Kamailio's optional TLS."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.appside import KEY, SECRET, WebhookSink
from tests.integration.callrecords import call_record, wait_record
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
        # New calls right away: each one the draining node refuses with 503 goes on to the
        # other node.
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


class Accepter:
    """The application for every call of a load: it takes each realtime.call.incoming
    webhook and accepts the call through the node that does NOT hold it (the owner when
    that node is down), with the official SDK; keeps who held each call, and when."""

    def __init__(self, sink: WebhookSink, clients: dict[str, openai.OpenAI]) -> None:
        self.sink = sink
        self.clients = clients
        self.owners: list[tuple[float, str, str]] = []  # (monotonic, call id, node)
        self.failures: list[str] = []
        self.forwarded = 0
        self._stop = threading.Event()
        self.paused = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.paused.is_set():
                time.sleep(0.02)
                continue
            try:
                body, headers = self.sink.next(timeout=0.1)
            except queue.Empty:
                continue
            next(iter(self.clients.values())).webhooks.verify_signature(body, headers)
            event = json.loads(body)
            if event.get("type") != "realtime.call.incoming":
                continue
            call_id = event["data"]["call_id"]
            owner = call_id.rsplit("_", 1)[1]
            self.owners.append((time.monotonic(), call_id, owner))
            other = next(n for n in self.clients if n != owner)
            for node in (other, owner):
                try:
                    self.clients[node].realtime.calls.accept(call_id, type="realtime")
                    self.forwarded += node != owner
                    break
                except openai.APIConnectionError:
                    continue
                except openai.APIError as exc:
                    self.failures.append(f"{call_id} via {node}: {exc}")
                    break
            else:
                self.failures.append(f"{call_id}: no node answered")

    def by(self, node: str, after: float = 0.0) -> list[str]:
        return [c for t, c, n in self.owners if n == node and t >= after]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def cluster_node(name: str, pg_url: str, sink: WebhookSink, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "node_name": name, "store": pg_url, "cluster_secret": "cluster-secret-0123456789",
        "cluster_heartbeat": 0.5, "cluster_node_timeout": 3, "agent_url": "",
        "webhook_url": sink.url, "webhook_secret": SECRET, "api_key": [KEY],
        "accept_timeout": 20, "drain_timeout": 30,
        "webhook": [{"url": sink.url, "secret": SECRET, "events": ["realtime.call.transfer.*"]}],
    }
    config.update(extra)
    return config


def test_a_cluster_behind_kamailio_takes_load_restarts_node_by_node_and_survives_a_kill(
        start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult],
        pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL, Kamailio (deploy/kamailio/kamailio.cfg, probing every second) and two
    nodes; the application accepts every call through the other node."""
    sink = WebhookSink()
    a = start_gateway(**cluster_node("a", pg_url, sink))
    b = start_gateway(**cluster_node("b", pg_url, sink))
    nodes = tmp_path / "dispatcher.list"
    nodes.write_text(f"1 sip:{a.address}\n1 sip:{b.address}\n")
    base = {"a": f"http://127.0.0.1:{a.http_port}/v1", "b": f"http://127.0.0.1:{b.http_port}/v1"}
    clients = {n: openai.OpenAI(api_key=KEY, base_url=u, webhook_secret=SECRET, max_retries=0,
                                timeout=5) for n, u in base.items()}
    app = Accepter(sink, clients)

    def rolling_restart(node: Gateway, name: str, drain: Callable[[], object]) -> Gateway:
        got: dict[str, SippResult] = {}
        steady = threading.Thread(target=lambda: got.update(r=sipp(
            proxy.address, "uac_routed.xml", calls=60, rate=20, extra=["-d", "1000"],
            timeout=60)))
        steady.start()
        time.sleep(1.5)
        drain()
        steady.join(90)
        assert (got["r"].successful, got["r"].failed) == (60, 0), (
            got["r"].describe() + proxy.trace_text()[-3000:])
        node.process.wait(30)
        assert node.process.returncode == 0, node.log()
        again = start_gateway(**cluster_node(name, pg_url, sink, sip=node.config["sip"],
                                             http=node.config["http"]))
        deadline = time.monotonic() + 10  # Kamailio's probe takes it back in
        while True:
            before = len(app.by(name))
            sipp(proxy.address, "uac_routed.xml", calls=4, rate=10, extra=["-d", "100"],
                 timeout=30)
            if len(app.by(name)) > before:
                return again
            assert time.monotonic() < deadline, f"Kamailio never sent a call to {name} again"

    try:
        with Kamailio(tmp_path / "kamailio", "dispatcher",
                      defines={"DISPATCHER_LIST": str(nodes), "DS_PING_INTERVAL": "1"}) as proxy:
            # 200 calls: both nodes take calls, none fails, each accepted by the other node.
            load = sipp(proxy.address, "uac_routed.xml", calls=200, rate=50,
                        extra=["-d", "300"], timeout=90)
            assert (load.successful, load.failed) == (200, 0), (
                load.describe() + proxy.trace_text()[-3000:])
            assert app.failures == [] and len(app.owners) == 200
            assert min(len(app.by("a")), len(app.by("b"))) >= 50, (
                len(app.by("a")), len(app.by("b")))
            assert app.forwarded == 200

            # The seed's flow through node b for a call of node a: the app's requests
            # all go to b.
            app.paused.set()
            seed_flow(sipp, proxy, sink, a, clients["b"], base["b"], tmp_path)
            app.paused.clear()

            # A rolling restart: each node in turn drains during a steady load (a with
            # `sipbridge drain a`, b with SIGTERM, as systemd stops it), exits 0 and
            # starts again on its ports; no call fails.
            got: dict[str, SippResult] = {}
            a = rolling_restart(a, "a", lambda: subprocess.run(
                [sys.executable, "-m", "sipbridge", "drain", "a", "--store", pg_url],
                capture_output=True, text=True, timeout=30, check=True))
            b = rolling_restart(b, "b", lambda: b.process.send_signal(signal.SIGTERM))
            assert app.failures == []

            # Calls held on both nodes; a is killed; new calls all go to b at once.
            held = threading.Thread(target=lambda: got.update(held=sipp(
                proxy.address, "uac_routed.xml", calls=4, rate=20, extra=["-d", "12000"],
                timeout=60)))
            held.start()
            deadline = time.monotonic() + 10
            while a.metric("sipbridge_calls_active", KEY) < 2 or \
                    b.metric("sipbridge_calls_active", KEY) < 2:
                assert time.monotonic() < deadline, "the held calls did not come up"
                time.sleep(0.1)
            on_a = [c for c in app.by("a")
                    if call_record(base["b"], KEY, c)["state"] == "active"]
            assert len(on_a) == 2, on_a
            a.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            a.process.wait(5)
            after = sipp(proxy.address, "uac_routed.xml", calls=30, rate=20,
                         extra=["-d", "200"], timeout=60)
            assert (after.successful, after.failed) == (30, 0), after.describe()
            assert app.by("a", after=killed) == [], "a call went to the killed node"
            assert len(app.by("b", after=killed)) == 30
            for call_id in on_a:  # a's calls: marked ended; control answers 409
                record = wait_record(base["b"], KEY, call_id,
                                     lambda r: r["state"] == "ended", "marked ended", 10)
                assert record["end_reason"] == "abnormal: node_gone"
                with pytest.raises(openai.ConflictError) as gone:
                    clients["b"].realtime.calls.hangup(call_id)
                assert gone.value.code == "call_node_gone"
            held.join(60)
            assert got["held"].successful == 2, got["held"].describe()  # b's two
    finally:
        app.stop()
        for client in clients.values():
            client.close()
        sink.close()


def seed_flow(sipp: Callable[..., SippResult], proxy: Kamailio, sink: WebhookSink,
              a: Gateway, client: openai.OpenAI, base: str, tmp_path: Path) -> None:
    """SIPp calls node a straight (the carrier's leg through Kamailio is the load's); the
    application answers through node b: webhook, accept, sideband session.update, refer
    (reaching the carrier), the transfer's outcome."""
    got: dict[str, SippResult] = {}
    carrier = threading.Thread(target=lambda: got.update(r=sipp(
        a, "app_refer.xml", timeout=40, recv_timeout=20)))
    carrier.start()
    while True:
        body, headers = sink.next(timeout=15)
        event = client.webhooks.unwrap(body, headers)
        if event.type == "realtime.call.incoming":
            break
    call_id = event.data.call_id
    assert call_id.endswith("_a")
    client.realtime.calls.accept(call_id, type="realtime", instructions="Acme front desk")
    wait_record(base, KEY, call_id, lambda r: r["state"] == "active", "active")
    with client.realtime.connect(call_id=call_id) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
        updated = conn.recv()
        assert updated.type == "session.updated"
    client.realtime.calls.refer(call_id, target_uri="tel:+61420351258")
    carrier.join(60)
    assert got["r"].ok, got["r"].describe()
    assert "Refer-To: <tel:+61420351258>" in got["r"].messages
    record = wait_record(base, KEY, call_id, lambda r: r["state"] == "ended", "ended")
    assert record["end_reason"] == "transferred"
    assert record["transfers"][0]["status"] == "succeeded"


def test_the_deployed_config_takes_sip_over_tls_with_tls_on(
        start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    """-A WITH_TLS: Kamailio's tls module with the certificate deploy/kamailio/tls.cfg's
    shape names; a carrier's OPTIONS over TLS is dispatched to a node, and its 200 comes
    back over the same TLS connection."""
    import socket
    import ssl

    from sipbridge.demo.baresip import find_free_port
    from tests.tlscerts import make_ca

    ca = make_ca(tmp_path / "ca")
    cert, key = ca.issue("proxy", dns=["localhost"], ip=["127.0.0.1"])
    deployed = (Path(__file__).parents[2] / "deploy/kamailio/tls.cfg").read_text()
    tls_cfg = tmp_path / "tls.cfg"
    tls_cfg.write_text(deployed.replace("/etc/kamailio/certs/sip.example.com.pem", str(cert))
                       .replace("/etc/kamailio/certs/sip.example.com.key", str(key)))
    node = start_gateway(auto_answer="echo")
    nodes = tmp_path / "dispatcher.list"
    nodes.write_text(f"1 sip:{node.address}\n")
    port = find_free_port("127.0.0.1", tcp=True)
    with Kamailio(tmp_path / "kamailio", "dispatcher", tls_port=port,
                  defines={"DISPATCHER_LIST": str(nodes), "WITH_TLS": "1",
                           "TLS_CONFIG": str(tls_cfg)}) as proxy:
        context = ssl.create_default_context(cafile=str(ca.cert))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            host, local_port = tls.getsockname()[:2]
            local = f"{host}:{local_port}"
            tls.sendall((
                "OPTIONS sip:+15559870000@sip.example.com SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS {local};branch=z9hG4bK-tls-1;rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:probe@{local}>;tag=t1\r\n"
                "To: <sip:+15559870000@sip.example.com>\r\n"
                "Call-ID: tls-options-1@test\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n").encode())
            answer = tls.recv(65536).decode(errors="replace")
        assert answer.startswith("SIP/2.0 200"), answer + proxy.log()[-3000:]
        assert "Keepalive" not in answer.split("\r\n", 1)[0]  # not the proxy's own
        hops = [h for h in proxy.trace("tls-options-1@test") if h.kind == "out"]
        assert hops and node.address in str(hops[0].to), proxy.trace_text()
        assert any(h.kind == "reply" and h.status == 200
                   for h in proxy.trace("tls-options-1@test")), proxy.trace_text()
