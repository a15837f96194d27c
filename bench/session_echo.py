"""What one echoing call's session costs per G.711 frame, on the Python path, on the
compiled path with the echo's shortcut turned off, and with it (the default), in the
same run.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/session_echo.py [--frames 20000] [--repeat 5]

A session in echo (`MediaEngine.echo`) takes a clean PCMU stream, one packet every
20 ms, each followed by `pump` and the tick at its time, as the engine runs them (the
compiled path's packets come parsed, as its batch read hands them): `receive`, the
jitter buffer, decode, 8 -> 24 -> 8 kHz, encode, the RTP packet queued to send. No
sockets: the session's own per-frame cost, without the engine's dispatch, the timer
or the system calls (bench/media_echo.py measures all of it). Microseconds per frame,
best of ``--repeat`` runs taking turns; the packets each path queued are checked to be
the same bytes. See bench/README.md.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.media import speed
from sipbridge.media.engine import MediaEngine
from sipbridge.media.g711 import PCMU
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.rtp import build_rtp
from sipbridge.media.session import MediaSession

AUDIO = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "127.0.0.1", 40000, Direction.SENDRECV, 20)
PEER = ("127.0.0.1", 40000)


def packets(frames: int) -> list[bytes]:
    out = []
    for k in range(frames):
        pcm = (6000 * np.sin((np.arange(160) + 160 * k) * 0.05)).astype(np.int16)
        out.append(build_rtp(0, k & 0xFFFF, (k * 160) & 0xFFFFFFFF, 0x1234, PCMU.encode(pcm)))
    return out


def run(pool: PortPool, data: list[bytes], *, compiled: bool,
        shortcut: bool) -> tuple[float, list[bytes]]:
    """Seconds for the stream, and the packets the session queued."""
    jitter = speed.require("jitter").JitterBuffer if compiled else JitterBuffer
    s = MediaSession("bench", pool.allocate("127.0.0.1"), AUDIO, now=0.0, wall=time.time,
                     timeout=0, jitter=jitter(initial_delay_ms=0), compiled=compiled)
    s._ssrc, s._seq, s._ts = 1, 2, 3

    def phase(at: float) -> None:
        s.next_tick = at + 0.010

    s.on_phase = phase
    s.next_tick = 0.020
    sent: list[Any] = []
    s.outgoing = sent
    MediaEngine.echo(None, s)  # type: ignore[arg-type]  # uses nothing of the engine
    if not shortcut:
        s.echo = None
    parse = speed.require("rtpio").parse if compiled else None
    parsed = [parse(p) if parse is not None else None for p in data]
    queued: list[bytes] = []
    start = time.perf_counter()
    for k, packet in enumerate(data):
        at = 0.5 + k * 0.020
        s.receive(packet, PEER, at, parsed[k])
        s.pump()
        if s.next_tick <= at + 0.015:
            now = s.next_tick
            s.tick(now)
            s.next_tick = now + 0.020
            s.pump()
        if len(sent) > 500:
            queued += [item[2] for item in sent]
            sent.clear()
    elapsed = time.perf_counter() - start
    queued += [item[2] for item in sent]
    s.close()
    s.endpoint.close()
    return elapsed, queued


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    missing = speed.missing()
    if missing:
        raise SystemExit(f"the compiled modules are not built ({', '.join(missing)}): "
                         "run scripts/setup.sh")
    pool = PortPool(36000, 36999)
    data = packets(args.frames)
    paths = {"python": (False, False), "compiled, no shortcut": (True, False),
             "compiled": (True, True)}
    best = dict.fromkeys(paths, float("inf"))
    reference: list[bytes] | None = None
    for _ in range(args.repeat):
        for name, (compiled, shortcut) in paths.items():
            elapsed, queued = run(pool, data, compiled=compiled, shortcut=shortcut)
            if reference is None:
                reference = queued
            elif queued != reference:
                raise SystemExit(f"{name}: the packets sent differ from the Python path's")
            best[name] = min(best[name], elapsed)
    print(f"session_echo: {args.frames} PCMU frames x {args.repeat} runs (best), receive + "
          "pump + tick per frame, one session in echo")
    print(f"{'path':<24}{'us/frame':>9}{'vs python':>11}")
    for name, seconds in best.items():
        us = seconds / args.frames * 1e6
        ratio = best["python"] / seconds
        print(f"{name:<24}{us:>9.2f}{ratio:>10.1f}x")


if __name__ == "__main__":
    main()
