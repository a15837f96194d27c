"""Two gateway processes as one cluster over a real PostgreSQL store: the official `openai`
SDK talks to node B about a call that node A holds (webhook, accept, the sideband,
refer reaching the carrier, the transfer's outcome), a forged forwarded request is
refused, a second node with a taken name refuses to start, `sipbridge cluster` and
`sipbridge drain` work from the store alone, and a node killed with SIGKILL is marked
gone, its calls ended and the API's control of them answered 409."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.realtime import RealtimeSessionCreateRequest
from websockets.exceptions import ConnectionClosed
from websockets.sync import client as wsclient

from tests.integration.appside import KEY, SECRET, WebhookSink
from tests.integration.callrecords import call_record, wait_record
from tests.integration.gateway import Gateway
from tests.integration.sipp import SippResult, run_sipp

pytestmark = pytest.mark.integration

CLUSTER_SECRET = "cluster-secret-for-the-tests-0123"


@dataclass
class Cluster:
    a: Gateway
    b: Gateway
    sink: WebhookSink
    pg_url: str
    tmp: Path

    def client(self, node: Gateway) -> openai.OpenAI:
        return openai.OpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{node.http_port}/v1",
                             webhook_secret=SECRET, max_retries=0, timeout=10)

    def base(self, node: Gateway) -> str:
        return f"http://127.0.0.1:{node.http_port}/v1"

    def incoming(self) -> Any:
        body, headers = self.sink.next(timeout=15)
        return self.client(self.b).webhooks.unwrap(body, headers)


def node_config(name: str, pg_url: str, sink: WebhookSink, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "node_name": name, "store": pg_url, "cluster_secret": CLUSTER_SECRET,
        "cluster_heartbeat": 0.5, "cluster_node_timeout": 3,
        "agent_url": "",  # no model: the calls here are about control, not speech
        "webhook_url": sink.url, "webhook_secret": SECRET, "api_key": [KEY],
        "accept_timeout": 20,
        "webhook": [{"url": sink.url, "secret": SECRET, "events": ["realtime.call.transfer.*"]}],
    }
    config.update(extra)
    return config


@pytest.fixture
def cluster(start_gateway: Callable[..., Gateway], pg_url: str, tmp_path: Path
            ) -> Iterator[Cluster]:
    sink = WebhookSink()
    a = start_gateway(**node_config("a", pg_url, sink, recordings=str(tmp_path / "rec-a")))
    b = start_gateway(**node_config("b", pg_url, sink))
    yield Cluster(a, b, sink, pg_url, tmp_path)
    sink.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sipbridge", *args], capture_output=True,
                          text=True, timeout=30, check=False)


def call_in_background(cluster: Cluster, node: Gateway, scenario: str, **options: Any
                       ) -> Callable[[], SippResult]:
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    workdir = cluster.tmp / f"sipp-{time.monotonic_ns()}"
    future = pool.submit(run_sipp, node.address, scenario, workdir, **options)
    pool.shutdown(wait=False)
    return lambda: future.result(timeout=90)


def test_the_sdk_drives_a_call_of_node_a_through_node_b(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    sipp = call_in_background(cluster, a, "app_refer.xml", timeout=40, recv_timeout=20)
    event = cluster.incoming()
    call_id = event.data.call_id
    assert call_id.endswith("_a"), call_id  # the node is in the id
    client = cluster.client(b)
    client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime",
                                 instructions="You answer the phone for Acme.")
    record = wait_record(cluster.base(b), KEY, call_id, lambda r: r["state"] == "active",
                         "active, read through node b")
    assert record["sip"]["codec"] == "PCMU"

    with client.realtime.connect(call_id=call_id) as conn:  # proxied by b to a
        created = conn.recv()
        assert created.type == "session.created"
        assert isinstance(created.session, RealtimeSessionCreateRequest)
        assert created.session.instructions == "You answer the phone for Acme."
        conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
        updated = conn.recv()
        assert updated.type == "session.updated"
        assert isinstance(updated.session, RealtimeSessionCreateRequest)
        assert updated.session.instructions == "Be brief."

    client.realtime.calls.refer(call_id, target_uri="tel:+61420351258")
    result = sipp()
    assert result.ok, result.describe()
    assert "Refer-To: <tel:+61420351258>" in result.messages  # the REFER reached the carrier
    record = wait_record(cluster.base(b), KEY, call_id, lambda r: r["state"] == "ended",
                         "ended, read through node b")
    assert record["end_reason"] == "transferred"
    [transfer] = record["transfers"]
    assert (transfer["status"], transfer["sip_status"]) == ("succeeded", 200)
    kinds: set[str] = set()
    deadline = time.monotonic() + 10
    while "realtime.call.transfer.succeeded" not in kinds:
        assert time.monotonic() < deadline, f"no transfer outcome webhook: {kinds}"
        body, _ = cluster.sink.next(timeout=10)
        kinds.add(json.loads(body)["type"])
    # The sideband through b reached a, and closed there when the client closed.
    sideband = [e["status"] for e in call_record(cluster.base(a), KEY, call_id)["timeline"]
                if e["kind"] == "sideband"]
    assert sideband[0] == "connected" and sideband[-1] == "disconnected", sideband
    # The recording, on a's disk, through b.
    wav = httpx.get(f"{cluster.base(b)}/realtime/calls/{call_id}/recording",
                    headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF", wav.text[:200]
    assert wav.headers["content-type"] == "audio/wav"
    assert int(wav.headers["content-length"]) == len(wav.content) > 1000
    # The owner served them: b holds no call.
    assert b.metric("sipbridge_calls_active", KEY) == 0
    client.close()


def test_forged_internal_requests_names_and_the_cli(cluster: Cluster, start_gateway:
                                                     Callable[..., Gateway]) -> None:
    a, b = cluster.a, cluster.b
    forged = httpx.post(f"{cluster.base(a)}/realtime/calls/rtc_{'0' * 32}_a/hangup",
                        headers={"Authorization": f"Bearer {KEY}",
                                 "X-Sipbridge-Cluster": "guessed"}, timeout=5)
    assert forged.status_code == 401, forged.text
    assert forged.json()["error"]["code"] == "invalid_cluster_secret"
    deadline = time.monotonic() + 5
    while "wrong cluster secret" not in a.log():
        assert time.monotonic() < deadline, a.log()
        time.sleep(0.1)
    # A call on an unknown node: 404, as any unknown call.
    unknown = httpx.post(f"{cluster.base(b)}/realtime/calls/rtc_{'0' * 32}_zz/hangup",
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert unknown.status_code == 404, unknown.text

    with pytest.raises(pytest.fail.Exception) as refused:  # it exits before answering
        start_gateway(**node_config("a", cluster.pg_url, cluster.sink))
    assert "sipbridge exited with 1" in str(refused.value)
    assert "node name 'a' is in use by a running node" in str(refused.value)

    overview = httpx.get(f"http://127.0.0.1:{b.http_port}/dashboard/api/overview",
                         auth=("ops", KEY), timeout=10)
    assert overview.status_code == 200, overview.text
    shown = {n["name"]: (n["state"], n["this"]) for n in overview.json()["nodes"]}
    assert shown == {"a": ("up", False), "b": ("up", True)}, shown  # b shows the cluster

    listing = cli("cluster", "--store", cluster.pg_url)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert any(line.split()[:2] == ["a", "up"] for line in lines), listing.stdout
    assert any(line.split()[:2] == ["b", "up"] for line in lines), listing.stdout
    assert "p@ss" not in listing.stdout + listing.stderr

    drained = cli("drain", "b", "--store", cluster.pg_url)
    assert drained.returncode == 0, drained.stderr
    b.process.wait(15)  # no calls: the drain ends at once, exit 0
    assert b.process.returncode == 0, b.log()
    assert "drain of node b was asked for" in b.log()
    stopped = cli("cluster", "--store", cluster.pg_url)
    assert any(line.split()[:2] == ["b", "stopped"] for line in stopped.stdout.splitlines()
               ), stopped.stdout
    assert cli("drain", "nosuch", "--store", cluster.pg_url).returncode == 1


def test_a_killed_node_is_marked_gone_and_its_calls_answer_409(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    sipp = call_in_background(cluster, a, "uac_wait_bye.xml", timeout=60, recv_timeout=40)
    call_id = cluster.incoming().data.call_id
    client = cluster.client(b)
    client.realtime.calls.accept(call_id, type="realtime")
    wait_record(cluster.base(b), KEY, call_id, lambda r: r["state"] == "active", "active")

    sideband = wsclient.connect(f"ws://127.0.0.1:{b.http_port}/v1/realtime?call_id={call_id}",
                                additional_headers={"Authorization": f"Bearer {KEY}"})
    assert '"session.created"' in str(sideband.recv(timeout=5))
    a.process.send_signal(signal.SIGKILL)
    a.process.wait(5)
    # The proxied sideband is closed, saying why.
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            sideband.recv(timeout=5)
    assert closed.value.rcvd is not None, closed.value
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "node a went away")

    # Without an API key nothing is carried to a (401 from b itself, not a's silence).
    stranger = httpx.post(f"{cluster.base(b)}/realtime/calls/{call_id}/hangup", timeout=5)
    assert stranger.status_code == 401, stranger.text
    # Before b has marked a gone: control answers 409 (a does not answer), never hangs.
    started = time.monotonic()
    with pytest.raises(openai.ConflictError) as early:
        client.realtime.calls.hangup(call_id)
    assert time.monotonic() - started < 5
    assert "does not answer" in early.value.message or "gone" in early.value.message

    record = wait_record(cluster.base(b), KEY, call_id, lambda r: r["state"] == "ended",
                         "marked ended by node b", timeout=10)
    assert record["end_reason"] == "abnormal: node_gone"
    assert any(e["kind"] == "gateway" and e.get("status") == "node_gone"
               for e in record["timeline"])
    with pytest.raises(openai.ConflictError) as late:
        client.realtime.calls.refer(call_id, target_uri="tel:+15550100")
    assert late.value.code == "call_node_gone" and "node 'a' is gone" in late.value.message
    assert "node a is gone" in b.log()
    listing = cli("cluster", "--store", cluster.pg_url)
    assert any(line.split()[:2] == ["a", "gone"] for line in listing.stdout.splitlines()
               ), listing.stdout
    client.close()
    sipp()  # SIPp's call just times out (its gateway was killed)
