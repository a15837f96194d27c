"""`python -m sipbridge.localmodel --port N [--host H] [--policy FILE]`: the local model alone.

Prints `sipbridge-localmodel: listening on ws://HOST:PORT/v1/realtime` on stderr when ready
and stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from sipbridge.localmodel.policy import Policy, PolicyError
from sipbridge.localmodel.server import LocalModelServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sipbridge.localmodel",
        description="The built-in local model: OpenAI's Realtime protocol over WebSocket, "
                    "offline (faster-whisper, a YAML dialog policy, piper-tts or espeak-ng).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    parser.add_argument("--policy", metavar="FILE", help="dialog policy (YAML); default: "
                                                         "the built-in one")
    parser.add_argument("--chunk-ms", type=int, default=100,
                        help="audio per response.output_audio.delta")
    parser.add_argument("--voice-engine", choices=("auto", "piper", "espeak"), default="auto",
                        help="auto: the natural voice (piper-tts) when the voice extra is "
                             "installed, else espeak-ng")
    parser.add_argument("--verbose", "-v", action="store_true", help="log at debug level")
    return parser


async def _serve(server: LocalModelServer, host: str, port: int) -> None:
    await server.start(host, port)
    print(f"sipbridge-localmodel: listening on {server.url}", file=sys.stderr, flush=True)
    if not server.transcriber.available():
        print(f"sipbridge-localmodel: speech to text unavailable: {server.transcriber.reason}",
              file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the local model until a signal; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        policy = Policy.load(args.policy)
    except PolicyError as exc:
        print(f"sipbridge-localmodel: {exc}", file=sys.stderr)
        return 2
    server = LocalModelServer(policy=policy, chunk_ms=args.chunk_ms,
                              voice_engine=args.voice_engine)
    try:
        asyncio.run(_serve(server, args.host, args.port))
    except OSError as exc:
        print(f"sipbridge-localmodel: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
