"""sipbridge's command line: `serve` runs the gateway, `demo` places a real call at one
(transferred to a human), `calls` and `trace` read the call store, `status` asks a running
gateway for its registrations, `cluster` and `drain` show and drain the nodes of a
cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from sipbridge import callcli, eventloop, logs
from sipbridge.config import ConfigError, load_config, parse_host_port
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
    p.add_argument("--transfer-mode", dest="transfer_mode", choices=("blind", "warm"),
                   help="how the agent transfers to --transfer-to: blind (REFER, the "
                   "default) or warm (the person is dialed and briefed first)")
    p.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    p.add_argument("--api-key", dest="api_key", action="append",
                   help="an API key the HTTP API accepts as 'Bearer KEY' (repeatable)")
    p.add_argument("--webhook-url", dest="webhook_url",
                   help="the application's webhook URL (realtime.call.incoming): calls ring "
                   "until it accepts them; more endpoints and event types: [[webhook]]")
    p.add_argument("--webhook-secret", dest="webhook_secret",
                   help="whsec_... secret that signs the webhooks (Standard Webhooks)")
    p.add_argument("--http-tls-cert", dest="http_tls_cert",
                   help="PEM certificate (chain) to serve the API, sideband and dashboard "
                   "over HTTPS/WSS")
    p.add_argument("--http-tls-key", dest="http_tls_key",
                   help="PEM private key of --http-tls-cert")
    p.add_argument("--public-address", dest="public_address",
                   help="the address peers reach us by, behind NAT: in SIP headers and SDP")
    p.add_argument("--sip-public-address", dest="sip_public_address",
                   help="the address in Via and Contact, when it differs from the media's "
                   "(default: --public-address)")
    p.add_argument("--media-public-address", dest="media_public_address",
                   help="the address in SDP c= and o= lines (default: --public-address)")


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
    status = sub.add_parser("status", help="the running gateway's registrations and calls "
                            "(through its HTTP API)")
    status.add_argument("--http", default="127.0.0.1:8080",
                        help="HOST:PORT of the gateway's HTTP API (default 127.0.0.1:8080)")
    status.add_argument("--api-key", dest="api_key", default=os.environ.get("SIPBRIDGE_API_KEY"),
                        help="an API key of the gateway (env SIPBRIDGE_API_KEY)")
    cluster = sub.add_parser("cluster", help="the nodes of a cluster: state, calls, heartbeat "
                             "(from the shared store)")
    cluster.add_argument("--config", help="TOML config file (for the store's URL)")
    cluster.add_argument("--store", help="the cluster's postgresql:// store (default: the "
                         "config's)")
    drain = sub.add_parser("drain", help="drain a node of a cluster: it takes no new calls, "
                           "lets its calls end (up to drain_timeout), then stops")
    drain.add_argument("node", help="the node's name")
    drain.add_argument("--config", help="TOML config file (for the store's URL)")
    drain.add_argument("--store", help="the cluster's postgresql:// store (default: the "
                       "config's)")
    callcli.add_parser(sub)
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
    demo.add_argument("--warm", action="store_true",
                      help="a warm transfer: the agent briefs the human, who takes the call")
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
        scheme = "https" if gateway.http.tls else "http"
        print(f"sipbridge: HTTP API on {scheme}://{f'[{h}]' if ':' in h else h}:"
              f"{gateway.http.port}/v1", file=sys.stderr, flush=True)
    stop, drain = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    logging.getLogger("sipbridge").info("event loop: %s", eventloop.name(loop))
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # SIGTERM drains (a second one stops at once): new calls refused, calls under way
    # waited for up to drain_timeout.
    loop.add_signal_handler(signal.SIGTERM,
                            lambda: stop.set() if drain.is_set() else drain.set())
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(drain.wait()),
             asyncio.ensure_future(gateway.drain_requested.wait())]  # `sipbridge drain`
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if (drain.is_set() or gateway.drain_requested.is_set()) and not stop.is_set():
        drain.set()
        print("sipbridge: draining", file=sys.stderr, flush=True)
        draining = asyncio.ensure_future(gateway.drain(gateway.config.drain_timeout))
        await asyncio.wait([draining, waits[0]], return_when=asyncio.FIRST_COMPLETED)
        draining.cancel()
    for wait in waits:
        wait.cancel()
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
            http_tls_cert=args.http_tls_cert, http_tls_key=args.http_tls_key,
            public_address=args.public_address, sip_public_address=args.sip_public_address,
            media_public_address=args.media_public_address,
            transfer_mode=args.transfer_mode,
        )
    except ConfigError as exc:
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level)
    from sipbridge.store import StoreError

    try:
        factory = eventloop.loop_factory(config.event_loop,
                                         tls_listener=config.sip_tls_bind is not None)
    except eventloop.EventLoopError as exc:
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(_serve(Gateway(config)))
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
                    target=args.transfer_to, warm=args.warm,
                    out=lambda line: print(line, flush=True))


def _store_arg(args: argparse.Namespace) -> str | None:
    """The store `--store` names, else the config's; None (said why) when the config does
    not load."""
    if args.store is not None:
        return str(args.store)
    try:
        return load_config(args.config or os.environ.get("SIPBRIDGE_CONFIG")).store
    except ConfigError as exc:
        print(f"sipbridge: {exc}", file=sys.stderr)
        return None


def show(args: argparse.Namespace) -> int:
    """`calls` and `trace`, read from the store (no running gateway needed)."""
    from sipbridge.store import StoreError, is_database_url, open_store
    from sipbridge.trace import calls_table, ladder

    path = _store_arg(args)
    if path is None:
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


def cluster(args: argparse.Namespace) -> int:
    """`cluster` and `drain`, through the store's membership (no node needs to answer)."""
    from sipbridge.store import StoreError, is_database_url
    from sipbridge.trace import cluster_table

    url = _store_arg(args)
    if url is None:
        return 2
    if not is_database_url(url):
        print("sipbridge: a cluster's store is a postgresql:// URL (--store or the config's "
              "store)", file=sys.stderr)
        return 2
    try:
        from sipbridge.store.nodes import NodeTable
    except ImportError as exc:
        print(f"sipbridge: a PostgreSQL store needs psycopg: pip install "
              f"'sipbridge[postgres]' ({exc})", file=sys.stderr)
        return 1
    table = NodeTable(url, "")
    try:
        if args.command == "drain":
            if not table.request_drain(args.node):
                print(f"sipbridge: no node {args.node!r} is up in {table.label}",
                      file=sys.stderr)
                return 1
            print(f"sipbridge: node {args.node} drains from its next heartbeat")
            return 0
        print(cluster_table(table.nodes()))
        return 0
    except StoreError as exc:
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 1
    finally:
        table.close()


def status(args: argparse.Namespace) -> int:
    """`status`: the running gateway's registrations (GET /v1/sipbridge/registrations)."""
    import json
    import time
    import urllib.error
    import urllib.request

    host, port = parse_host_port(args.http, 8080)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/v1/sipbridge/registrations"
    request = urllib.request.Request(url)
    if args.api_key:
        request.add_header("Authorization", f"Bearer {args.api_key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        print(f"sipbridge: {url}: HTTP {exc.code} {exc.reason}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"sipbridge: no gateway answers at {url}: {exc}", file=sys.stderr)
        return 1

    def when(t: object) -> str:
        if not isinstance(t, int | float):
            return "-"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
        return f"{stamp} (in {max(0, round(t - time.time()))} s)"

    print(f"calls active: {body.get('calls_active', 0)}")
    rows = body.get("data", [])
    if not rows:
        print("registrations: none configured")
    for r in rows:
        line = f"registration {r['name']}: {r['aor']} at {r['registrar']} ({r['transport']}): "
        state = r["state"]
        if state == "registered":
            line += f"registered until {when(r['expires_at'])}"
        elif state == "failing":
            after = r["next_attempt_at"]
            line += (f"failing: {r['last_status']} {r['last_reason']}; "
                     + (f"next attempt at {when(after)}" if after is not None
                        else "an attempt is under way"))
        else:
            line += state
        print(line + f"; {r['attempts']} attempts, {r['failures']} failures")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command in ("calls", "trace"):
        return show(args)
    if args.command == "demo":
        return demo(args)
    if args.command == "status":
        return status(args)
    if args.command in ("cluster", "drain"):
        return cluster(args)
    if args.command == "call":
        return callcli.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
