"""What SRTP costs per 20 ms frame, against the same frame in clear, in the same run.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/srtp_frame.py [--frames 20000] [--repeat 5]

One frame is a 160-octet G.711 payload in RTP (172 octets). The clear path is what the
media session does per frame at its socket: build the RTP packet it sends and parse the
one it receives. The SRTP path adds ``protect`` before the send and ``unprotect`` after
the read (libsrtp through pylibsrtp: AES-128 counter mode, HMAC-SHA1 tag), for each suite.
Each figure is the best of ``--repeat`` runs of ``--frames`` frames, in microseconds per
frame; the ratio is against the clear path. See bench/README.md.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Callable

import numpy as np

from sipbridge.audiostream import SrtpKeys
from sipbridge.media.g711 import ulaw_encode
from sipbridge.media.rtp import build_rtp, parse_rtp
from sipbridge.media.srtp import PROFILES, SrtpContext

PAYLOAD = ulaw_encode((np.sin(np.arange(160) / 5) * 8000).astype(np.int16))


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def clear_path(frames: int) -> float:
    """Seconds for `frames` frames: build, then parse (what a frame costs at the socket)."""
    start = time.perf_counter()
    for seq in range(frames):
        parse_rtp(build_rtp(0, seq & 0xFFFF, seq * 160, 0x1234, PAYLOAD))
    return time.perf_counter() - start


def srtp_path(suite: str, frames: int) -> tuple[float, float, float]:
    """Seconds for `frames` frames: the clear path with protect and unprotect; and each."""
    a, b = secrets.token_bytes(30), secrets.token_bytes(30)
    sender, receiver = SrtpContext(SrtpKeys(suite, 1, a, b)), SrtpContext(SrtpKeys(suite, 1, b, a))
    packets = [build_rtp(0, seq & 0xFFFF, seq * 160, 0x1234, PAYLOAD) for seq in range(frames)]
    start = time.perf_counter()
    protected = [sender.protect(p) for p in packets]
    protect = time.perf_counter() - start
    start = time.perf_counter()
    for p in protected:
        receiver.unprotect(p)
    unprotect = time.perf_counter() - start
    return protect + unprotect, protect, unprotect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, us = args.frames, 1e6 / args.frames
    clear = best(args.repeat, lambda: clear_path(n)) * us
    print(f"srtp_frame: {n} frames x {args.repeat} runs (best), 172-octet PCMU RTP packets")
    print(f"{'path':36} {'us/frame':>9} {'protect':>8} {'unprotect':>9} {'x clear':>8}")
    print(f"{'clear (build + parse)':36} {clear:9.2f} {'':>8} {'':>9} {1.0:8.2f}")
    for suite in PROFILES:
        runs = [srtp_path(suite, n) for _ in range(args.repeat)]
        total, protect, unprotect = min(runs)
        added = clear + total * us
        print(f"{'SRTP ' + suite:36} {added:9.2f} {protect * us:8.2f} {unprotect * us:9.2f} "
              f"{added / clear:8.2f}")


if __name__ == "__main__":
    main()
