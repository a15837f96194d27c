"""The seed's transfer with Kamailio in front of the gateway: the carrier (SIPp) calls the
proxy, the application (the official `openai` SDK) accepts the call and refers it, and the
REFER, the NOTIFYs and their answers, and the BYE must each take the path RFC 3261 gives
them (12.2.1.1: an in-dialog request goes to the first Route when the route set is loose,
else to the remote target; 18.2.2: a response goes where the Via says).

- stateful proxy that record-routes with ``<sip:127.0.0.1:RR_PORT;lr>`` while it sends
  from its carrier port: the gateway's REFER and BYE go to RR_PORT (not to the address
  the INVITE came from), through the proxy to the carrier's Contact;
- stateless forwarder that does not record-route: the gateway's REFER and BYE go straight
  to the carrier's Contact; sent to the proxy, they would be forwarded back to the
  gateway itself.

Each case runs with NOTIFY "SIP/2.0 200 OK" (``succeeded``, the gateway leaves with its
BYE) and with NOTIFY "SIP/2.0 486 Busy Here" (``failed`` 486, the call stays up).
Paths are read from Kamailio's TRACE log lines, the gateway's timeline (the peer of each
``sip`` entry) and SIPp's own verdict (it fails when a message it waits for never comes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.appside import App, start_app
from tests.integration.gateway import Gateway
from tests.integration.interop import Checks, describe_sip, sip_entries, transfer_steps
from tests.integration.kamailio import Kamailio, kamailio_binary
from tests.integration.probe import LOOPBACK
from tests.integration.sipp import SCENARIOS, SippResult, run_sipp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(kamailio_binary() is None,
                       reason="kamailio is not installed (scripts/setup.sh installs it)"),
]

TARGET = "tel:+61420351258"
REFER_WAIT_MS = 8000  # how long SIPp waits for the REFER before it fails the call


@pytest.fixture
def app(start_gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[App]:
    yield from start_app(start_gateway, tmp_path, transfer_refer_timeout=3,
                         transfer_notify_timeout=5, transfer_fallback="announce")


@pytest.fixture
def proxy(request: pytest.FixtureRequest, app: App, tmp_path: Path) -> Iterator[Kamailio]:
    """Kamailio with the config named by the test's ``kind`` parameter, in front of `app`."""
    kind: str = request.param
    with Kamailio(tmp_path / f"kamailio-{kind}", kind, gateway=app.gateway.address) as k:
        yield k


@dataclass
class Run:
    record: dict[str, Any]
    transfer: dict[str, Any] | None
    sipp: SippResult
    sipp_address: str  # where SIPp listens: its Contact's host:port
    gateway: str  # "udp:HOST:PORT" of the gateway, as timeline peers are written
    context: str


def run_transfer(app: App, proxy: Kamailio, scenario: str) -> Run:
    """SIPp calls through `proxy`; the application accepts and refers; everything collected."""
    text = (SCENARIOS / scenario).read_text()
    text = (text.replace("__PROXY_IP__", LOOPBACK)
            .replace("__PROXY_PORT__", str(proxy.carrier_port))
            .replace("__REFER_WAIT__", str(REFER_WAIT_MS)))
    path = app.tmp / f"{Path(scenario).stem}-{time.monotonic_ns()}.xml"
    path.write_text(text)
    workdir = app.tmp / f"sipp-{time.monotonic_ns()}"
    future = app.pool.submit(run_sipp, proxy.address, path, workdir, timeout=30,
                             recv_timeout=15)
    call_id = app.incoming().data.call_id
    app.client.realtime.calls.accept(call_id, type="realtime", instructions="Acme front desk")
    app.wait_for(call_id, lambda r: r["state"] == "active", "active")
    app.client.realtime.calls.refer(call_id, target_uri=TARGET)
    app.wait_for(call_id, lambda r: bool(r["transfers"]) and r["transfers"][0]["final"],
                 "with a final transfer outcome", timeout=12)
    sipp = future.result(timeout=60)
    record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended", timeout=10)
    sipp_port = sipp.command[sipp.command.index("-p") + 1]
    sip_call_id = record["sip"]["call_id"]
    context = (f"--- gateway timeline ---\n{describe_sip(record)}\n"
               f"--- kamailio ({proxy.kind}: carrier side {proxy.address}, "
               f"other socket {proxy.rr_address}) ---\n{proxy.trace_text(sip_call_id)}\n"
               f"--- sipp ---\n{sipp.describe()[-6000:]}")
    transfers = record.get("transfers") or []
    return Run(record, transfers[0] if transfers else None, sipp, f"{LOOPBACK}:{sipp_port}",
               f"udp:{app.gateway.address}", context)


def peers(run: Run, method: str) -> list[str]:
    """Where the gateway sent each `method` request of the call."""
    return [str(e.get("peer")) for e in sip_entries(run.record, direction="out", method=method)]


def proxy_hops(proxy: Kamailio, run: Run, kind: str, method: str) -> list[Any]:
    return [h for h in proxy.trace(run.record["sip"]["call_id"])
            if h.kind == kind and h.method == method]


def check_outcome(checks: Checks, run: Run, status: str, sip_status: int) -> None:
    t = run.transfer or {}
    checks.that((t.get("status"), t.get("sip_status")) == (status, sip_status),
                f"the transfer's outcome is {status} {sip_status}",
                t.get("status"), t.get("sip_status"), t.get("reason"), transfer_steps(run.record))
    checks.that(run.sipp.ok, "SIPp (the carrier) saw every message it waited for "
                "(the REFER, the answers to its NOTIFYs, the BYE) and nothing unexpected",
                f"exit {run.sipp.returncode}", run.sipp.errors.strip()[-300:])


def check_notify_path(checks: Checks, proxy: Kamailio, run: Run) -> None:
    """The carrier's NOTIFYs reach the gateway through the proxy and are answered 200."""
    notifies_in = sip_entries(run.record, direction="in", method="NOTIFY")
    answers = [e for e in sip_entries(run.record, direction="out", cseq="NOTIFY")]
    checks.that(len(notifies_in) == 2, "both NOTIFYs reached the gateway", len(notifies_in))
    checks.that(bool(answers) and all(str(e["line"]).startswith("SIP/2.0 200") for e in answers),
                "the gateway answered each NOTIFY 200", [e["line"] for e in answers])
    relayed = [h for h in proxy_hops(proxy, run, "in", "NOTIFY")
               if h.socket == proxy.address]
    checks.that(len(relayed) >= 2, "the NOTIFYs came in through the proxy's carrier side",
                len(relayed))


@pytest.mark.parametrize("proxy", ["stateful"], indirect=True)
@pytest.mark.parametrize(("scenario", "outcome"), [
    ("proxy_transfer_success.xml", ("succeeded", 200)),
    ("proxy_transfer_busy.xml", ("failed", 486)),
])
def test_record_routing_proxy_carries_refer_notify_and_bye(
    app: App, proxy: Kamailio, scenario: str, outcome: tuple[str, int]
) -> None:
    run = run_transfer(app, proxy, scenario)
    rr = f"udp:{proxy.rr_address}"
    checks = Checks()
    invite = sip_entries(run.record, direction="in", method="INVITE")
    record_route = f"<sip:{proxy.rr_address};lr>"
    checks.that(bool(invite) and record_route in str(invite[0].get("text", ""))
                and invite[0].get("peer") == f"udp:{proxy.address}",
                f"the INVITE came from the proxy's carrier side udp:{proxy.address} with "
                f"Record-Route {record_route} (the premise of this test)",
                [(e.get("peer"), e.get("text")) for e in invite[:1]])
    check_outcome(checks, run, *outcome)
    checks.that(peers(run, "REFER") == [rr],
                "the gateway sent its REFER to the Record-Route address (the first Route), "
                f"{rr}, not to the proxy's sending address udp:{proxy.address}",
                peers(run, "REFER"))
    refers_in = proxy_hops(proxy, run, "in", "REFER")
    checks.that([h.socket for h in refers_in] == [proxy.rr_address],
                f"Kamailio took the REFER in on its Record-Route socket {proxy.rr_address}",
                [f"from {h.source} on {h.socket}" for h in refers_in])
    checks.that(any(h.ruri and run.sipp_address in h.ruri
                    for h in proxy_hops(proxy, run, "out", "REFER")),
                f"Kamailio relayed the REFER to the carrier's Contact ({run.sipp_address})",
                proxy.trace_text(run.record["sip"]["call_id"]))
    check_notify_path(checks, proxy, run)
    if outcome[0] == "succeeded":
        checks.that(peers(run, "BYE") == [rr],
                    f"the gateway's BYE went to the Record-Route address {rr}",
                    peers(run, "BYE"))
        checks.that(run.record.get("end_reason") == "transferred",
                    "the gateway left the call after the success", run.record.get("end_reason"))
    else:
        checks.that(peers(run, "BYE") == [], "the gateway kept the call after the failure",
                    peers(run, "BYE"))
        checks.that(run.record.get("end_reason") == "remote_bye",
                    "the caller's BYE came through the proxy", run.record.get("end_reason"))
    checks.that(sip_entries(run.record, direction="in", method="REFER") == [],
                "no REFER came back to the gateway")
    checks.verify(run.context)


@pytest.mark.parametrize("proxy", ["stateless"], indirect=True)
@pytest.mark.parametrize(("scenario", "outcome"), [
    ("proxy_transfer_success.xml", ("succeeded", 200)),
    ("proxy_transfer_busy.xml", ("failed", 486)),
])
def test_forwarding_proxy_leaves_the_dialog_to_the_ends(
    app: App, proxy: Kamailio, scenario: str, outcome: tuple[str, int]
) -> None:
    run = run_transfer(app, proxy, scenario)
    contact = f"udp:{run.sipp_address}"
    checks = Checks()
    check_outcome(checks, run, *outcome)
    looped = sip_entries(run.record, direction="in", method="REFER")
    checks.that(looped == [], "the REFER did not loop back to the gateway",
                [e.get("peer") for e in looped])
    checks.that(peers(run, "REFER") == [contact],
                f"the gateway sent its REFER straight to the carrier's Contact {contact} "
                f"(no route set), not to the proxy udp:{proxy.address}", peers(run, "REFER"))
    checks.that(proxy_hops(proxy, run, "in", "REFER") == [],
                "the REFER did not pass through the proxy",
                [f"from {h.source} on {h.socket}" for h in proxy_hops(proxy, run, "in", "REFER")])
    check_notify_path(checks, proxy, run)
    if outcome[0] == "succeeded":
        checks.that(peers(run, "BYE") == [contact],
                    f"the gateway's BYE went straight to the carrier's Contact {contact}",
                    peers(run, "BYE"))
        checks.that(run.record.get("end_reason") == "transferred",
                    "the gateway left the call after the success", run.record.get("end_reason"))
    else:
        checks.that(peers(run, "BYE") == [], "the gateway kept the call after the failure",
                    peers(run, "BYE"))
    checks.verify(run.context)
