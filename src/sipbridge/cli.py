"""sipbridge's command line: `serve` runs the gateway, `demo` places a real call at one
(transferred to a human), `calls` and `trace` read the call store."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path

from sipbridge import logs
from sipbridge.config import ConfigError, load_config
from sipbridge.gateway import Gateway


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (env SIPBRIDGE_CONFIG)")
    p.add_argument("--sip", help="HOST:PORT for SIP over UDP and TCP (default 0.0.0.0:5060)")
    p.add_argument("--sip-tls", dest="sip_tls", metavar="HOST:PORT",
                   help="HOST:PORT for SIP over TLS (default port 5061; needs tls_cert and "
                   "tls_key; unset: no TLS)")
    p.add_argument("--http", help="HOST:PORT for the HTTP API (default 127.0.0.1:8080)")
    p.add_argument("--auto-answer", dest="auto_answer",
                   help="answer every call itself: silence, echo, agent or play:FILE.wav")
    p.add_argument("--transfer-to", dest="transfer_to",
                   help="with --auto-answer agent: the URI the agent transfers callers to")
    p.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    p.add_argument("--api-key", dest="api_key", action="append",
                   help="an API key the HTTP API accepts as 'Bearer KEY' (repeatable)")
    p.add_argument("--webhook-url", dest="webhook_url",
                   help="the application's webhook URL: calls ring until it accepts them")
    p.add_argument("--webhook-secret", dest="webhook_secret",
                   help="whsec_... secret that signs the webhooks (Standard Webhooks)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipbridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_args(sub.add_parser("serve", help="run the gateway"))
    calls = sub.add_parser("calls", help="the calls in the store, newest first")
    calls.add_argument("--config", help="TOML config file (for the store's path)")
    calls.add_argument("--store", help="the store (default: the config's, sipbridge.db)")
    calls.add_argument("--state", choices=["ringing", "active", "ended"])
    calls.add_argument("--transfer", dest="transfer_status", help="a transfer outcome")
    calls.add_argument("--caller", help="part of the caller's URI")
    calls.add_argument("--limit", type=int, default=50)
    trace = sub.add_parser("trace", help="one call's ladder: SIP, API, webhooks, transfer")
    trace.add_argument("call_id")
    trace.add_argument("--config", help="TOML config file (for the store's path)")
    trace.add_argument("--store", help="the store (default: the config's, sipbridge.db)")
    trace.add_argument("--full", action="store_true", help="each SIP message's full text")
    demo = sub.add_parser("demo", help="a real call to the agent, transferred to a human")
    demo.add_argument("--dir", help="where the store, recordings and phone logs go "
                      "(default: a new directory under /tmp)")
    demo.add_argument("--http", default="127.0.0.1:0",
                      help="HOST:PORT for the API and dashboard (default: a free port)")
    demo.add_argument("--stay", action="store_true",
                      help="keep the gateway and its dashboard up after the call (Ctrl-C stops)")
    demo.add_argument("--verbose", action="store_true", help="the gateway's log too")
    demo.add_argument("--transfer-to", dest="transfer_to",
                      help="transfer to this SIP URI (your own phone or PBX) instead of the "
                      "demo's human phone")
    return parser


async def _serve(gateway: Gateway) -> int:
    await gateway.start()
    host = gateway.transport.host
    shown = f"[{host}]" if ":" in host else host
    print(f"sipbridge: listening on udp+tcp {shown}:{gateway.port}", file=sys.stderr, flush=True)
    if gateway.transport.tls_port:
        print(f"sipbridge: listening on tls {shown}:{gateway.transport.tls_port}",
              file=sys.stderr, flush=True)
    if gateway.http is not None:
        h = gateway.http.host
        print(f"sipbridge: HTTP API on http://{f'[{h}]' if ':' in h else h}:{gateway.http.port}/v1",
              file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gateway.stop()
    print(f"sipbridge: stopped; {gateway.summary()}", file=sys.stderr, flush=True)
    return 0


def serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(
            args.config or os.environ.get("SIPBRIDGE_CONFIG"),
            sip=args.sip, sip_tls=args.sip_tls, http=args.http, auto_answer=args.auto_answer,
            log_level=args.log_level, api_key=args.api_key, webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret, transfer_to=args.transfer_to,
        )
    except ConfigError as exc:
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level)
    from sipbridge.store import StoreError

    try:
        return asyncio.run(_serve(Gateway(config)))
    except StoreError as exc:  # its message names the store without a password
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sipbridge: cannot bind {config.sip} or {config.http}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 2


def demo(args: argparse.Namespace) -> int:
    from sipbridge.demo.run import run_demo

    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="sipbridge-demo-"))
    return run_demo(workdir, http=args.http, stay=args.stay, verbose=args.verbose,
                    target=args.transfer_to,
                    out=lambda line: print(line, flush=True))


def show(args: argparse.Namespace) -> int:
    """`calls` and `trace`, read from the store (no running gateway needed)."""
    from sipbridge.store import StoreError, is_database_url, open_store
    from sipbridge.trace import calls_table, ladder

    path = args.store
    if path is None:
        try:
            path = load_config(args.config or os.environ.get("SIPBRIDGE_CONFIG")).store
        except ConfigError as exc:
            print(f"sipbridge: {exc}", file=sys.stderr)
            return 2
    if path == "off" or not (is_database_url(path) or Path(path).is_file()):
        print(f"sipbridge: no call store at {path}", file=sys.stderr)
        return 1
    try:
        store = open_store(path)
    except StoreError as exc:  # its message names the store without the password
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "calls":
            print(calls_table(store.list_calls(state=args.state, caller=args.caller,
                                               transfer_status=args.transfer_status,
                                               limit=args.limit)))
            return 0
        call = store.get_call(args.call_id)
        if call is None:
            print(f"sipbridge: no call {args.call_id} in {store.label}", file=sys.stderr)
            return 1
        print(ladder(call, full=args.full))
        return 0
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command in ("calls", "trace"):
        return show(args)
    if args.command == "demo":
        return demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
