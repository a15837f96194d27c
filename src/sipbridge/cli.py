"""sipbridge's command line: `serve` runs the gateway, `demo` places a real call at one."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from sipbridge.config import ConfigError, load_config
from sipbridge.gateway import Gateway


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (env SIPBRIDGE_CONFIG)")
    p.add_argument("--sip", help="HOST:PORT for SIP over UDP and TCP (default 0.0.0.0:5060)")
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
    demo = sub.add_parser("demo", help="start a gateway and place real SIPp calls at it")
    demo.add_argument("--calls", type=int, default=5, help="how many calls SIPp places")
    return parser


async def _serve(gateway: Gateway) -> int:
    await gateway.start()
    host = gateway.transport.host
    shown = f"[{host}]" if ":" in host else host
    print(f"sipbridge: listening on udp+tcp {shown}:{gateway.port}", file=sys.stderr, flush=True)
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
            sip=args.sip, http=args.http, auto_answer=args.auto_answer,
            log_level=args.log_level, api_key=args.api_key, webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret, transfer_to=args.transfer_to,
        )
    except ConfigError as exc:
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_serve(Gateway(config)))
    except OSError as exc:
        print(f"sipbridge: cannot bind {config.sip} or {config.http}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 2


async def _demo(calls: int) -> int:
    """Start a gateway on loopback and have SIPp (a carrier-like UAC) call it."""
    sipp = shutil.which("sipp")
    if sipp is None:
        print("sipbridge demo: SIPp is not installed (apt-get install sip-tester)",
              file=sys.stderr)
        return 1
    config = load_config(None, sip="127.0.0.1:0", http="off", store="off", auto_answer="silence")
    gateway = Gateway(config)
    await gateway.start()
    print(f"gateway listening on udp+tcp 127.0.0.1:{gateway.port} (auto-answer: silence)")
    with tempfile.TemporaryDirectory() as tmp:
        proc = await asyncio.create_subprocess_exec(
            sipp, "-sn", "uac", f"127.0.0.1:{gateway.port}", "-i", "127.0.0.1", "-p", "0",
            "-m", str(calls), "-r", "5", "-d", "500", "-timeout", "30", "-timeout_error",
            "-nostdin", "-trace_stat", "-stf", str(Path(tmp) / "stat.csv"),
            cwd=tmp, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        await gateway.stop()
        stats = _sipp_counts(Path(tmp) / "stat.csv")
    assert gateway.calls is not None
    ok, failed = stats
    print(f"SIPp placed {calls} calls: {ok} succeeded, {failed} failed "
          f"(INVITE, 100, 180, 200, ACK, BYE, 200); the gateway saw "
          f"{gateway.calls.ended} calls end")
    if proc.returncode != 0 or ok != calls:
        print(err.decode(errors="replace")[-2000:], file=sys.stderr)
        print("demo FAILED", file=sys.stderr)
        return 1
    print("demo OK")
    return 0


def _sipp_counts(path: Path) -> tuple[int, int]:
    """(successful, failed) cumulative calls from SIPp's -trace_stat CSV."""
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return 0, 0
    if len(lines) < 2:
        return 0, 0
    names = lines[0].split(";")
    values = lines[-1].split(";")
    row = dict(zip(names, values, strict=False))
    return int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))


def show(args: argparse.Namespace) -> int:
    """`calls` and `trace`, read from the store (no running gateway needed)."""
    from sipbridge.store import SqliteStore
    from sipbridge.trace import calls_table, ladder

    path = args.store
    if path is None:
        try:
            path = load_config(args.config or os.environ.get("SIPBRIDGE_CONFIG")).store
        except ConfigError as exc:
            print(f"sipbridge: {exc}", file=sys.stderr)
            return 2
    if path == "off" or not Path(path).is_file():
        print(f"sipbridge: no call store at {path}", file=sys.stderr)
        return 1
    store = SqliteStore(path)
    try:
        if args.command == "calls":
            print(calls_table(store.list_calls(state=args.state, caller=args.caller,
                                               transfer_status=args.transfer_status,
                                               limit=args.limit)))
            return 0
        call = store.get_call(args.call_id)
        if call is None:
            print(f"sipbridge: no call {args.call_id} in {path}", file=sys.stderr)
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
        return asyncio.run(_demo(args.calls))
    return 2


if __name__ == "__main__":
    sys.exit(main())
