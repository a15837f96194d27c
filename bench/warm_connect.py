"""How long a warm transfer takes to connect the caller and the person once the person
answered.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/warm_connect.py [--calls 40] [--connect bridge|replaces]

The gateway runs in webhook mode. SIPp plays the caller (``uac_wait_bye.xml`` for the
bridge, ``warm_replaces.xml`` for a caller that supports Replaces: 202, NOTIFY 200) and,
in a second process, the person (SIPp's built-in ``uas``, answering at once). This process
is the application, with the official ``openai`` SDK: it accepts each call, opens the
sideband and asks for a warm transfer with ``brief_timeout`` 0.001 s (the decision comes
at once: no agent briefs here), then hangs up once it is connected. Per call:

- answered -> connected: from the gateway taking the person's 200 to the transfer's
  ``connected`` step (the transfer's own step times: the gateway's clock), which covers
  starting the person's media, the (1 ms) decision and the connecting itself: joining
  the audio, or the REFER with Replaces, its 202 and its NOTIFY;
- connecting -> connected: the connecting alone;
- connected -> sideband event: until the application hears of it.

The reference, measured in the same run by the same client: the round trip of
``GET /v1/realtime/calls/{id}``. Prints p50 and p99 of each, in ms, and p50 ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sip_cps import LOOPBACK, free_port, start_sipbridge, stop, workdir
from transfer_latency import percentile, serve_calls

from tests.integration.appside import KEY, SECRET, WebhookSink
from tests.integration.sipp import SCENARIOS, sipp_command

CALLERS = {"bridge": SCENARIOS / "uac_wait_bye.xml",
           "replaces": SCENARIOS / "warm_replaces.xml"}


def step_at(transfer: dict[str, Any], status: str) -> float | None:
    return next((s["at"] for s in transfer["steps"] if s["status"] == status), None)


def run(args: argparse.Namespace, root: Path) -> int:
    sink = WebhookSink()
    server = start_sipbridge(
        root, None, "udp", auto_answer="",
        extra_config=(f'webhook_url = "{sink.url}"\nwebhook_secret = "{SECRET}"\n'
                      f'api_key = ["{KEY}"]\nmedia_timeout = 0\n'),
    )
    base = f"http://{LOOPBACK}:{server.http}/v1"
    client = openai.OpenAI(api_key=KEY, base_url=base, webhook_secret=SECRET, max_retries=0)
    http = httpx.Client(headers={"Authorization": f"Bearer {KEY}"})
    person_dir = root / "person"
    person_dir.mkdir()
    person_cmd = sipp_command(LOOPBACK, "uas", person_dir, calls=args.calls,
                              timeout=args.calls * 2 + 60, recv_timeout=args.calls * 2 + 60,
                              trace_msg=False, extra=["-mi", LOOPBACK, "-rtp_echo"])
    person_port = int(person_cmd[person_cmd.index("-p") + 1])
    person = subprocess.Popen(person_cmd, cwd=person_dir, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    time.sleep(0.5)
    connected: dict[str, tuple[float, float]] = {}  # call -> (answered->, connecting->)
    to_event: list[float] = []
    reference: list[float] = []
    errors: list[str] = []

    def handle(call_id: str) -> None:
        try:
            client.realtime.calls.accept(call_id, type="realtime")
            with client.realtime.connect(call_id=call_id) as conn:
                conn.recv_bytes()  # session.created
                for _ in range(3):
                    t = time.time()
                    http.get(f"{base}/realtime/calls/{call_id}").raise_for_status()
                    reference.append(time.time() - t)
                client.realtime.calls.refer(
                    call_id, target_uri=f"sip:alex@{LOOPBACK}:{person_port}",
                    extra_body={"sipbridge": {"mode": "warm", "brief": "bench",
                                              "brief_timeout": 0.001,
                                              "connect": args.connect}})
                heard = None
                while heard is None:
                    event = json.loads(conn.recv_bytes())
                    if event.get("type") == "call.transfer.updated" and event.get("final"):
                        heard = time.time()
                        if event.get("status") != "connected":
                            raise RuntimeError(f"{event.get('status')}: {event.get('reason')}")
            record = http.get(f"{base}/realtime/calls/{call_id}").json()
            transfer = record["transfers"][0]
            done = step_at(transfer, "connected")
            answered, connecting = step_at(transfer, "answered"), step_at(transfer, "connecting")
            assert done is not None and answered is not None and connecting is not None
            connected[call_id] = (done - answered, done - connecting)
            to_event.append(heard - done)
            if record["state"] != "ended":
                client.realtime.calls.hangup(call_id)
        except (Exception, websockets.exceptions.ConnectionClosed) as exc:  # noqa: BLE001
            errors.append(f"{call_id}: {exc!r}")

    caller_dir = root / "caller"
    caller_dir.mkdir()
    caller = subprocess.Popen(
        ["sipp", f"{LOOPBACK}:{server.port}", "-sf", str(CALLERS[args.connect]),
         "-i", LOOPBACK, "-p", str(free_port((socket.SOCK_DGRAM,))), "-m", str(args.calls),
         "-r", str(args.rate), "-l", str(args.concurrency), "-nostdin",
         "-timeout", f"{args.calls * 2 + 60}s", "-timeout_error"],
        cwd=caller_dir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    serve_calls(sink, client, handle, args, caller)
    caller_rc = caller.wait(60)
    person.terminate()
    person.wait(10)
    stop(server.proc)
    sink.close()
    answer = [a for a, _ in connected.values()]
    connect = [c for _, c in connected.values()]
    ref50 = percentile(reference, 50)
    print(f"warm_connect: {args.calls} calls by {args.connect}, {args.concurrency} at a "
          f"time, caller SIPp exit {caller_rc}, {len(errors)} errors")
    print(f"{'measure':<34} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'p50/ref':>8}")
    for name, values in (("answered -> connected", answer),
                         ("connecting -> connected", connect),
                         ("connected -> sideband event", to_event),
                         ("reference: GET call round trip", reference)):
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(f"{name:<34} {len(values):>5} {1000 * p50:>8.2f} {1000 * p99:>8.2f} "
              f"{p50 / ref50 if ref50 else float('nan'):>8.2f}")
    for line in errors[:5]:
        print("error:", line)
    return 0 if not errors and caller_rc == 0 and len(connected) == args.calls else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--rate", type=float, default=5.0, help="calls per second SIPp places")
    ap.add_argument("--concurrency", type=int, default=4, help="calls at once at most")
    ap.add_argument("--connect", choices=sorted(CALLERS), default="bridge")
    ap.add_argument("--keep", metavar="DIR", help="keep the gateway's and SIPp's files here")
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        print("warm_connect: SIPp is not installed (bash scripts/setup.sh)", file=sys.stderr)
        return 1
    with workdir(args.keep, "warm_connect-") as root:
        return run(args, root)


if __name__ == "__main__":
    sys.exit(main())
