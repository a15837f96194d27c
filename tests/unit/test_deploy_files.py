"""The deployment examples in deploy/: the two cluster nodes' configs load and form one
cluster, and the systemd unit runs a node so that stopping it drains."""

from __future__ import annotations

import configparser
from pathlib import Path

from sipbridge.config import Config, load_config

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_the_cluster_examples_are_two_nodes_of_one_cluster() -> None:
    a, b = (load_config(DEPLOY / "cluster" / f"node-{n}.toml") for n in ("a", "b"))
    assert (a.node_name, b.node_name) == ("a", "b")
    for shared in ("store", "cluster_secret", "api_key", "public_address"):
        assert getattr(a, shared) == getattr(b, shared), shared
    assert a.store.startswith("postgresql://")
    assert a.sip != b.sip and a.http != b.http and a.node_api_url != b.node_api_url
    (a_low, a_high), (b_low, b_high) = a.rtp_port_range, b.rtp_port_range
    assert a_high < b_low or b_high < a_low  # one host: RTP ranges apart
    assert a.node_api_url == f"http://{a.http}" and b.node_api_url == f"http://{b.http}"


def test_the_systemd_unit_serves_a_node_and_drains_on_stop() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "sipbridge@.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("sipbridge serve --config /etc/sipbridge/%i.toml")
    assert service["KillSignal"] == "SIGTERM"  # SIGTERM drains
    # systemd waits out a whole drain before it kills the node
    assert float(service["TimeoutStopSec"]) > Config.model_fields["drain_timeout"].default
    assert service["Restart"] == "on-failure"  # a drained node (exit 0) stays down
    assert int(service["LimitNOFILE"]) >= 65536
