"""What sending DTMF costs a call's 20 ms tick, against the same tick with no digits
queued, in the same run.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/dtmf_tick.py [--ticks 20000] [--repeat 5]

A PCMU media session on loopback sockets sends each tick's packet to a local socket
(the kernel drops what it does not read). Three paths, in microseconds per tick, best of
``--repeat`` runs of ``--ticks`` ticks: the tick with no digits queued and silence out
(what every call pays: the DTMF check is one attribute test), the tick while digits
play (a telephone-event packet instead of the voice frame), and the sans-IO sender's
own part of that (``DtmfSender.tick``). See bench/README.md.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.media.dtmf import DtmfSender
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.session import MediaSession

DIGITS = "0123456789*#ABCD" * 4  # 64 digits: about 13 s of tones at 100 + 100 ms


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def session(sink: socket.socket) -> MediaSession:
    audio = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "127.0.0.1",
                            sink.getsockname()[1], Direction.SENDRECV, 20)
    return MediaSession("bench", PortPool(33000, 33999).allocate("127.0.0.1"), audio,
                        now=0.0, wall=time.time, timeout=0.0,
                        jitter=JitterBuffer(initial_delay_ms=0))


def ticks(s: MediaSession, count: int, *, dtmf: bool) -> float:
    """Seconds for `count` ticks; with `dtmf`, digits queued all along."""
    if dtmf:
        s.send_dtmf(DIGITS, duration_ms=1000, gap_ms=0)  # tones on every tick
    start = time.perf_counter()
    for k in range(count):
        if dtmf and k % 300 == 299:  # 64 s of tones queued per 300 ticks: never runs dry
            s.send_dtmf("1", duration_ms=1000, gap_ms=0)
        s.tick(k * 0.02)
    return time.perf_counter() - start


def sender_only(count: int) -> float:
    sender = DtmfSender(8000, 20)
    sender.queue(DIGITS, duration_ms=1000, gap_ms=0)
    start = time.perf_counter()
    for k in range(count):
        if sender.tick(k * 160) is None:
            sender.queue(DIGITS, duration_ms=1000, gap_ms=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, us = args.ticks, 1e6 / args.ticks
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    idle_session, dtmf_session = session(sink), session(sink)
    idle = best(args.repeat, lambda: ticks(idle_session, n, dtmf=False)) * us
    playing = best(args.repeat, lambda: ticks(dtmf_session, n, dtmf=True)) * us
    own = best(args.repeat, lambda: sender_only(n)) * us
    print(f"dtmf_tick: {n} ticks x {args.repeat} runs (best), PCMU session on loopback")
    print(f"{'path':40} {'us/tick':>8} {'x idle':>7}")
    print(f"{'tick, no digits queued (silence out)':40} {idle:8.2f} {1.0:7.2f}")
    print(f"{'tick, a digit playing (event out)':40} {playing:8.2f} {playing / idle:7.2f}")
    print(f"{'DtmfSender.tick alone':40} {own:8.2f} {own / idle:7.2f}")
    for s in (idle_session, dtmf_session):
        s.close()
        s.endpoint.rtp.close()
        s.endpoint.rtcp.close()
    sink.close()


if __name__ == "__main__":
    main()
