"""What the jitter buffer costs per frame (one put and one get), compiled against the
Python reference, in the same run.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/jitter_frame.py [--frames 50000] [--repeat 5]

Each buffer takes the same stream of 160-byte frames, 20 ms apart, arriving with up to
30 ms of jitter and 1% loss, and a playout tick per frame (`ready`, then `get`, as a
session runs them). Figures in microseconds, best of ``--repeat`` runs: put + ready +
get per frame on a clean and on a jittery path, and building one buffer (what each call
pays at set-up). The two buffers' frames are checked to be the same. See bench/README.md.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from sipbridge.media import jitterbuffer, speed

Event = tuple[float, int, int, int]  # time, kind (0 put, 1 tick), sequence, timestamp


def stream(frames: int, spread: float, loss: float) -> list[Event]:
    rng = random.Random(1)
    events: list[Event] = []
    for k in range(frames):
        if rng.random() >= loss:
            events.append((k * 0.02 + 0.005 + rng.uniform(0, spread), 0, k & 0xFFFF,
                           (k * 160) & 0xFFFFFFFF))
        events.append((k * 0.02 + 0.011, 1, 0, 0))
    events.sort()
    return events


def run(make: Callable[[], Any], events: list[Event], payload: bytes) -> tuple[float, list[Any]]:
    """Seconds for the whole stream, and the sequence numbers played."""
    jb = make()
    put, get, ready = jb.put, jb.get, jb.ready
    out: list[Any] = []
    start = time.perf_counter()
    for t, kind, seq, ts in events:
        if kind == 0:
            put(seq, ts, payload, t)
        else:
            ready(t)
            out.append(get(t).sequence)
    return time.perf_counter() - start, out


def build(make: Callable[[], Any], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        make()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    compiled = speed.load("jitter")
    if compiled is None:
        raise SystemExit("sipbridge.media._jitter is not built: run scripts/setup.sh")
    makers = {"python": jitterbuffer.JitterBuffer, "compiled": compiled.JitterBuffer}
    payload = bytes(160)
    n, us = args.frames, 1e6 / args.frames
    print(f"jitter_frame: {n} frames x {args.repeat} runs (best), put + ready + get per frame")
    print(f"{'path':34} {'python us':>10} {'compiled us':>12} {'ratio':>6}")
    for name, spread, loss in (("clean (no jitter, no loss)", 0.0, 0.0),
                               ("jittery (0-30 ms, 1% loss)", 0.030, 0.01)):
        events = stream(n, spread, loss)
        best: dict[str, float] = {}
        played: dict[str, list[Any]] = {}
        for _ in range(args.repeat):  # alternate the two, so that both see the same load
            for key, make in makers.items():
                seconds, played[key] = run(make, events, payload)
                best[key] = min(best.get(key, seconds), seconds)
        if played["python"] != played["compiled"]:
            raise SystemExit(f"{name}: the two buffers played different frames")
        py, c = best["python"] * us, best["compiled"] * us
        print(f"{name:34} {py:10.2f} {c:12.2f} {py / c:6.1f}")
    count = 20000
    made = {key: min(build(make, count) for _ in range(args.repeat)) * 1e6 / count
            for key, make in makers.items()}
    print(f"{'a new buffer (call set-up)':34} {made['python']:10.2f} {made['compiled']:12.2f} "
          f"{made['python'] / made['compiled']:6.1f}")


if __name__ == "__main__":
    main()
