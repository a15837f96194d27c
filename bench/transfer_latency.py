"""The time the gateway adds to a transfer, at both ends of it.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/transfer_latency.py [--calls 100] [--concurrency 4]

The gateway runs in webhook mode. SIPp plays the carrier with
``tests/integration/scenarios/transfer_success.xml`` (202, NOTIFY 100, NOTIFY 200,
then the gateway's BYE); this process is the application, with the official
``openai`` SDK: for each ``realtime.call.incoming`` webhook it accepts the call,
opens the sideband, and refers the call. It measures, per call:

- refer -> REFER: from just before ``client.realtime.calls.refer(...)`` is called to
  the REFER's arrival at SIPp (SIPp's ``-trace_msg`` time stamps);
- NOTIFY -> event: from SIPp sending the final NOTIFY (``SIP/2.0 200 OK``) to the
  sideband client receiving ``call.transfer.updated`` with ``succeeded``.

Both clocks are this machine's wall clock. The reference, measured in the same run
from the same client: the round trip of ``GET /v1/realtime/calls/{id}`` (the
cheapest authenticated request), so the figures can be compared across machines as
ratios. Prints p50 and p99 of each, in ms. Everything runs on loopback.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import openai
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sip_cps import LOOPBACK, free_port, start_sipbridge, stop, workdir

from tests.integration.appside import KEY, SECRET, WebhookSink

SCENARIO = (Path(__file__).resolve().parent.parent
            / "tests/integration/scenarios/transfer_success.xml")
TARGET = "tel:+61420351258"
STAMP = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)$")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def sipp_times(log: Path) -> dict[str, dict[str, float]]:
    """Per SIP Call-ID: when SIPp received the REFER and sent the final NOTIFY."""
    out: dict[str, dict[str, float]] = {}
    lines = log.read_text(errors="replace").splitlines()
    i = 0
    while i < len(lines):
        m = STAMP.match(lines[i])
        if not m:
            i += 1
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        direction = lines[i + 1] if i + 1 < len(lines) else ""
        j = i + 2
        while j < len(lines) and not lines[j].strip():
            j += 1
        start = lines[j] if j < len(lines) else ""
        block: list[str] = []
        k = j
        while k < len(lines) and not STAMP.match(lines[k]):
            block.append(lines[k])
            k += 1
        call_id = next((b.split(":", 1)[1].strip() for b in block
                        if b.lower().startswith("call-id:")), "")
        times = out.setdefault(call_id, {})
        if start.startswith("REFER ") and "received" in direction:
            times.setdefault("refer", at)
        if start.startswith("NOTIFY ") and "sent" in direction and "SIP/2.0 200 OK" in block:
            times["final_notify"] = at
        i = k
    return out


def serve_calls(sink: WebhookSink, client: openai.OpenAI, handle: Callable[[str], None],
                args: argparse.Namespace, sipp: subprocess.Popen[bytes]) -> None:
    """The application: each `realtime.call.incoming` webhook to `handle` (on a pool of
    `args.concurrency * 2` threads) until `args.calls` came, SIPp ended, or time ran out;
    returns when every `handle` returned."""
    pool = ThreadPoolExecutor(max_workers=args.concurrency * 2)
    seen = 0
    deadline = time.monotonic() + args.calls * 2 + 60
    while seen < args.calls and time.monotonic() < deadline:
        try:
            body, headers = sink.next(timeout=5)
        except Exception:  # noqa: BLE001 (queue.Empty: keep waiting until the deadline)
            if sipp.poll() is not None:
                break
            continue
        event = client.webhooks.unwrap(body, headers)
        if event.type == "realtime.call.incoming":
            seen += 1
            pool.submit(handle, event.data.call_id)
    pool.shutdown(wait=True)


def run(args: argparse.Namespace, workdir: Path) -> int:
    sink = WebhookSink()
    server = start_sipbridge(
        workdir, None, "udp", auto_answer="",
        extra_config=(f'webhook_url = "{sink.url}"\nwebhook_secret = "{SECRET}"\n'
                      f'api_key = ["{KEY}"]\nmedia_timeout = 0\n'),
    )
    base = f"http://{LOOPBACK}:{server.http}/v1"
    client = openai.OpenAI(api_key=KEY, base_url=base, webhook_secret=SECRET, max_retries=0)
    http = httpx.Client(headers={"Authorization": f"Bearer {KEY}"})
    refer_sent: dict[str, float] = {}  # rtc id -> time just before refer
    event_at: dict[str, float] = {}  # rtc id -> sideband "succeeded" received
    sip_ids: dict[str, str] = {}  # rtc id -> SIP Call-ID
    reference: list[float] = []
    errors: list[str] = []

    def handle(call_id: str) -> None:
        try:
            client.realtime.calls.accept(call_id, type="realtime")
            with client.realtime.connect(call_id=call_id) as conn:
                conn.recv_bytes()  # session.created
                for _ in range(3):
                    t = time.time()
                    record = http.get(f"{base}/realtime/calls/{call_id}").json()
                    reference.append(time.time() - t)
                sip_ids[call_id] = record["sip"]["call_id"]
                refer_sent[call_id] = time.time()
                client.realtime.calls.refer(call_id, target_uri=TARGET)
                try:
                    while True:
                        event = json.loads(conn.recv_bytes())
                        if (event.get("type") == "call.transfer.updated"
                                and event.get("status") == "succeeded"):
                            event_at[call_id] = time.time()
                except websockets.exceptions.ConnectionClosed:
                    pass
        except Exception as exc:  # noqa: BLE001 (counted and reported)
            errors.append(f"{call_id}: {exc!r}")

    sipp_dir = workdir / "sipp"
    sipp_dir.mkdir()
    sipp = subprocess.Popen(
        ["sipp", f"{LOOPBACK}:{server.port}", "-sf", str(SCENARIO), "-i", LOOPBACK,
         "-p", str(free_port((socket.SOCK_DGRAM,))), "-m", str(args.calls), "-r", str(args.rate),
         "-l", str(args.concurrency), "-nostdin", "-timeout", f"{args.calls * 2 + 60}s",
         "-timeout_error", "-trace_msg", "-message_file", str(sipp_dir / "messages.log")],
        cwd=sipp_dir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    serve_calls(sink, client, handle, args, sipp)
    sipp_rc = sipp.wait(60)
    stop(server.proc)
    sink.close()
    times = sipp_times(sipp_dir / "messages.log")
    to_wire, to_event = [], []
    for call_id, sent in refer_sent.items():
        at = times.get(sip_ids.get(call_id, ""), {})
        if "refer" in at:
            to_wire.append(at["refer"] - sent)
        if "final_notify" in at and call_id in event_at:
            to_event.append(event_at[call_id] - at["final_notify"])
    ref50, ref99 = percentile(reference, 50), percentile(reference, 99)
    print(f"transfer_latency: {args.calls} calls, {args.concurrency} at a time, SIPp exit "
          f"{sipp_rc}, {len(errors)} errors")
    print(f"{'measure':<34} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'p50/ref':>8}")
    for name, values in (("refer request -> REFER on the wire", to_wire),
                         ("final NOTIFY -> sideband event", to_event),
                         ("reference: GET call round trip", reference)):
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(f"{name:<34} {len(values):>5} {1000 * p50:>8.2f} {1000 * p99:>8.2f} "
              f"{p50 / ref50 if ref50 else float('nan'):>8.2f}")
    if reference:
        print(f"reference p50 {1000 * ref50:.2f} ms, p99 {1000 * ref99:.2f} ms; "
              f"mean refer->REFER {1000 * statistics.fmean(to_wire or [0]):.2f} ms")
    for line in errors[:5]:
        print("error:", line)
    return 0 if not errors and sipp_rc == 0 and len(to_wire) == args.calls else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--rate", type=float, default=5.0, help="calls per second SIPp places")
    ap.add_argument("--concurrency", type=int, default=4, help="calls at once at most")
    ap.add_argument("--keep", metavar="DIR", help="keep the gateway's and SIPp's files here")
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        print("transfer_latency: SIPp is not installed (bash scripts/setup.sh)", file=sys.stderr)
        return 1
    with workdir(args.keep, "transfer_latency-") as root:
        return run(args, root)


if __name__ == "__main__":
    sys.exit(main())
