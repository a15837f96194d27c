"""`sipbridge call TO`: place an outbound call through a running gateway's HTTP API
(POST /v1/realtime/calls) and follow it (GET /v1/realtime/calls/{id}) to its outcome."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from sipbridge.config import parse_host_port

FAILURES = ("busy", "no_answer", "rejected", "failed", "cancelled")
POLL = 0.25  # seconds between two looks at the call


def add_parser(sub: Any) -> None:
    p = sub.add_parser("call", help="place an outbound call through a running gateway "
                       "(its HTTP API) and follow it to its outcome")
    p.add_argument("to", help="the tel: or sip: URI to call, e.g. tel:+14155550123")
    p.add_argument("--from", dest="from_", metavar="URI",
                   help="our From: a number, a user or a URI "
                   "(default: the trunk's from_uri)")
    p.add_argument("--trunk", metavar="NAME", help="the trunk to dial through (default: [trunk])")
    p.add_argument("--instructions", metavar="TEXT", help="the agent's instructions for this call")
    p.add_argument("--ring-timeout", dest="ring_timeout", type=float, metavar="S",
                   help="seconds it may ring (default: the gateway's outbound_ring_timeout)")
    p.add_argument("--no-greet", dest="greet", action="store_false",
                   help="the agent waits for the callee to speak first")
    p.add_argument("--wait", action="store_true",
                   help="once answered, wait until the call ends")
    p.add_argument("--http", default="127.0.0.1:8080",
                   help="HOST:PORT of the gateway's HTTP API (default 127.0.0.1:8080)")
    p.add_argument("--api-key", dest="api_key", default=os.environ.get("SIPBRIDGE_API_KEY"),
                   help="an API key of the gateway (env SIPBRIDGE_API_KEY)")


def _request(args: argparse.Namespace, method: str, path: str,
             body: dict[str, Any] | None = None) -> Any:
    host, port = parse_host_port(args.http, 8080)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    shown = f"[{host}]" if ":" in host else host
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{shown}:{port}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if args.api_key:
        request.add_header("Authorization", f"Bearer {args.api_key}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def run(args: argparse.Namespace) -> int:
    """Exit 0 once the call is answered (or, with --wait, when it ends after that); 1 for
    busy, no_answer, rejected, failed or cancelled, or when the request is refused."""
    options: dict[str, Any] = {"to": args.to}
    if args.from_:
        options["from"] = args.from_
    if args.trunk:
        options["trunk"] = args.trunk
    if args.ring_timeout is not None:
        options["ring_timeout"] = args.ring_timeout
    if not args.greet:
        options["greet"] = False
    body: dict[str, Any] = {"type": "realtime", "sipbridge": options}
    if args.instructions:
        body["instructions"] = args.instructions
    try:
        record = _request(args, "POST", "/v1/realtime/calls", body)
    except urllib.error.HTTPError as exc:
        try:
            error = json.load(exc).get("error", {})
            detail = f"{error.get('message')} (param {error.get('param')})"
        except ValueError:
            detail = exc.reason
        print(f"sipbridge: call refused: HTTP {exc.code}: {detail}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"sipbridge: no gateway answers at {args.http}: {exc}", file=sys.stderr)
        return 1
    call_id = record["id"]
    print(call_id, flush=True)
    shown: str | None = None
    answered = False
    while True:
        outbound = record.get("outbound") or {}
        status = outbound.get("status")
        if status != shown:
            shown = status
            extra = "".join(f" {v}" for v in (outbound.get("sip_status"),
                                               outbound.get("reason")) if v)
            print(f"{status}{extra}", flush=True)
        answered = answered or status == "answered"
        if status in FAILURES:
            return 1
        if answered and (not args.wait or record.get("state") == "ended"):
            if record.get("state") == "ended":
                print(f"ended {record.get('end_reason')}", flush=True)
            return 0
        time.sleep(POLL)
        try:
            record = _request(args, "GET", f"/v1/realtime/calls/{call_id}")
        except (OSError, ValueError) as exc:
            print(f"sipbridge: lost the gateway while following {call_id}: {exc}",
                  file=sys.stderr)
            return 1
