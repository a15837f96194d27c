"""What an echoed frame costs through the media engine's own read and dispatch: N calls
in echo on loopback, each 20 ms step one PCMU packet to every call's port, then what the
event loop would call (on the compiled path the epoll set's reader, `_batch`; on the
Python path each RTP socket's reader), then each call's tick and the pass's sends.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/batch_echo.py [--calls 50] [--frames 400] [--repeat 3]
        [--media-path python,compiled]

Only the engine's calls are timed (microseconds of CPU time per echoed frame, best of
``--repeat``): not the sender, not the event loop's own wake-ups (bench/media_echo.py
measures the whole gateway; this one is steady enough to compare two trees on a shared
machine: put the other tree's src/ first on PYTHONPATH and run both in turn). The
engine runs on a loop that is not running, its clock set by hand, the sockets' kernel
stamps off, so each path sees the same arrivals; the echoes each path sends are checked
to be the same bytes. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import select
import socket
import time

import numpy as np

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.media import speed
from sipbridge.media.engine import MediaConfig, MediaEngine
from sipbridge.media.g711 import PCMU
from sipbridge.media.pacer import Tick
from sipbridge.media.ports import SO_TIMESTAMPNS
from sipbridge.media.rtp import build_rtp


def run(compiled: bool, calls: int, frames: int, ports: tuple[int, int],
        unread: bool = False) -> tuple[float, list[bytes]]:
    """Seconds in the engine for the whole run, and what came back. `unread`: the
    packets are still in the sockets at the ticks (a busy pass: the reader has not run)."""
    loop = asyncio.new_event_loop()
    clock = [1000.0]
    loop.time = lambda: clock[0]  # type: ignore[method-assign]
    engine = MediaEngine(MediaConfig(ports=ports, timeout=0, compiled=compiled), loop)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    audio = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "127.0.0.1", peer.getsockname()[1],
                            Direction.SENDRECV, 20)
    random.seed(1)
    keys, endpoints = [], []
    for i in range(calls):
        key = f"bench_{i}"
        endpoint = engine.allocate(key, "127.0.0.1")
        endpoint.rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 0)
        endpoint.timestamps = False
        engine.echo(engine.start(key, audio))
        keys.append(key)
        endpoints.append(endpoint)
    pcm = (6000 * np.sin(np.arange(160 * frames) * 0.05)).astype(np.int16)
    payloads = [PCMU.encode(pcm[160 * k:160 * (k + 1)]) for k in range(frames)]
    fd = engine._poller.fileno() if compiled else -1
    watches = [e.watch for e in endpoints]
    echoed: list[bytes] = []
    spent = 0.0
    start = clock[0]
    for k in range(frames):
        clock[0] = start + 0.020 * k
        for i, endpoint in enumerate(endpoints):
            peer.sendto(build_rtp(0, k, 160 * k, 0x1000 + i, payloads[k]),
                        ("127.0.0.1", endpoint.port))
        t0 = time.process_time()
        if unread:
            pass
        elif compiled:
            while select.select([fd], [], [], 0)[0]:
                engine._batch()
        else:
            for watch in watches:
                engine._rtp_ready(watch)  # type: ignore[arg-type]
        at = start + 0.020 * k + 0.010
        clock[0] = at
        for key in keys:
            engine._on_tick(Tick(key, k, at, 0.0))
        engine._flush()
        spent += time.process_time() - t0
        while True:
            try:
                echoed.append(peer.recv(2048))
            except BlockingIOError:
                break
    engine.close()
    loop.close()
    peer.close()
    return spent, echoed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--media-path", default="python,compiled")
    parser.add_argument("--unread", action="store_true",
                        help="no read before the ticks: each tick finds its packet unread, "
                        "as in a pass that takes longer than the packets' spacing")
    args = parser.parse_args()
    paths = [p.strip() for p in args.media_path.split(",") if p.strip()]
    if "compiled" in paths and speed.missing():
        raise SystemExit("the compiled modules are not built: run scripts/setup.sh")
    best = dict.fromkeys(paths, float("inf"))
    reference: list[bytes] | None = None
    for _ in range(args.repeat):
        for n, name in enumerate(paths):
            spent, echoed = run(name == "compiled", args.calls, args.frames,
                                (37000 + 1000 * n, 37999 + 1000 * n), args.unread)
            if len(echoed) < args.calls * (args.frames - 2):
                raise SystemExit(f"{name}: only {len(echoed)} echoes came back")
            if reference is None:
                reference = sorted(echoed)
            elif sorted(echoed) != reference:
                raise SystemExit(f"{name}: the echoes differ from the first path's")
            best[name] = min(best[name], spent)
    print(f"batch_echo: {args.calls} calls x {args.frames} PCMU frames, best of {args.repeat}: "
          "the engine's read, dispatch, ticks and sends per echoed frame"
          + (" (read at the ticks)" if args.unread else ""))
    print(f"{'path':<12}{'us/frame':>9}")
    for name, seconds in best.items():
        print(f"{name:<12}{seconds / (args.calls * args.frames) * 1e6:>9.2f}")


if __name__ == "__main__":
    main()
