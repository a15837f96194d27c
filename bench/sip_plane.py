"""The SIP plane's CPU per call set-up, in process: no sockets, no event loop, no calls layer.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/sip_plane.py [--calls 3000] [--repeat 5] [--base-src DIR]

Each call is what bench/sip_cps.py's SIPp ``uac`` sends and what the gateway answers:
INVITE (with an SDP offer), the offer parsed and answered (``sip.sdp``) in the same
turn -> 200 with the answer (and a 100 Trying before it only from a tree that sends one
regardless), ACK, BYE -> 200, every message parsed by the UA core
(``UserAgent.receive``) and every response serialised, then the transactions' timers run
out so that the core holds nothing. Each call has its own Call-ID, tags and branches,
as SIPp's do; the URIs, addresses and the SDP offer repeat across calls, as SIPp's do.

``--base-src DIR`` times another source tree too (a ``src`` directory, e.g. main's from
``git archive``), in the same run, alternating with this one in fresh processes; the
figure that counts is the ratio. ``--profile`` prints a cProfile of this tree instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "src"

OFFER = (
    b"v=0\r\n"
    b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

PEER = "127.0.0.1:5061"
US = "127.0.0.1:5060"


def request(method: str, n: int, cseq: int, branch: str, to_tag: str = "",
            body: bytes = b"") -> bytes:
    """One of SIPp uac's requests for call `n` (its default scenario's headers)."""
    to = f"service <sip:service@{US}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:service@{US} SIP/2.0",
        f"Via: SIP/2.0/UDP {PEER};branch=z9hG4bK-4242-{n}-{branch}",
        f"From: sipp <sip:sipp@{PEER}>;tag=4242SIPpTag00{n}",
        f"To: {to}",
        f"Call-ID: {n}-4242@127.0.0.1",
        f"CSeq: {cseq} {method}",
        f"Contact: sip:sipp@{PEER}",
        "Max-Forwards: 70",
        "Subject: Performance Test",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run(calls: int) -> float:
    """Microseconds of CPU per call over `calls` calls (after a warm-up)."""
    from sipbridge.sip.access import AccessGuard
    from sipbridge.sip.address import Address
    from sipbridge.sip.events import IncomingCall
    from sipbridge.sip.sdp import answer_offer, parse_sdp
    from sipbridge.sip.ua import UaConfig, UserAgent

    ua = UserAgent(UaConfig(), AccessGuard(["127.0.0.0/8"]))
    source = Address("udp", "127.0.0.1", 5061)
    clock = [1000.0]
    sent = [0]

    def drain() -> None:
        for data, _ in ua.outgoing():
            sent[0] += len(data)

    def one(n: int) -> None:
        now = clock[0]
        ua.receive(request("INVITE", n, 1, "0", body=OFFER), source, now)
        (incoming,) = [e for e in ua.events() if isinstance(e, IncomingCall)]
        leg_id = incoming.leg_id
        answer, _ = answer_offer(parse_sdp(incoming.request.body), local_address="127.0.0.1",
                                 local_port=40000, session_id=n, session_version=1)
        ua.answer(leg_id, answer.to_bytes(), now)  # at once, as the gateway's auto-answer
        drain()
        ua.receive(request("ACK", n, 1, "5", to_tag=leg_id), source, now)
        ua.receive(request("BYE", n, 2, "7", to_tag=leg_id), source, now)
        drain()
        ua.events()
        clock[0] += 0.001
        if n % 64 == 0:
            ua.handle_timer(clock[0] + 40.0)  # past Timer J and L: forget what ended
            clock[0] += 40.0

    # SIPp's requests are built outside the timed loop in the real benchmark too: build
    # them here as well, so only the SIP plane is timed.
    for n in range(1, 201):
        one(n)
    ua.handle_timer(clock[0] + 100.0)
    assert not any(ua.held.values()), ua.held
    start = time.process_time()
    for n in range(1000, 1000 + calls):
        one(n)
    ua.handle_timer(clock[0] + 100.0)
    spent = time.process_time() - start
    assert not any(ua.held.values()), ua.held
    # The bytes of the requests cost time to build; measure that and take it off.
    start = time.process_time()
    for n in range(1000, 1000 + calls):
        request("INVITE", n, 1, "0", body=OFFER)
        request("ACK", n, 1, "5", to_tag="x")
        request("BYE", n, 2, "7", to_tag="x")
    spent -= time.process_time() - start
    return spent / calls * 1e6


def child(src: str, calls: int) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--calls", str(calls)],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--base-src", help="another tree's src directory, timed alternately")
    parser.add_argument("--profile", action="store_true", help="cProfile this tree")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key (tottime, cumulative)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(f"{run(args.calls):.2f}")
        return
    if args.profile:
        import cProfile
        import pstats

        sys.path.insert(0, str(HERE))
        prof = cProfile.Profile()
        prof.runcall(run, args.calls)
        pstats.Stats(prof).sort_stats(args.sort).print_stats(30)
        return
    trees = [("this tree", str(HERE))]
    if args.base_src:
        trees.insert(0, ("base", str(Path(args.base_src).resolve())))
    results: dict[str, list[float]] = {name: [] for name, _ in trees}
    for _ in range(args.repeat):
        for name, src in trees:
            results[name].append(child(src, args.calls))
    for name, values in results.items():
        print(f"{name:10s} us/call: median {statistics.median(values):7.1f}  "
              f"min {min(values):7.1f}  ({', '.join(f'{v:.1f}' for v in values)})")
    if args.base_src:
        base = statistics.median(results["base"])
        ours = statistics.median(results["this tree"])
        print(f"ratio this tree / base: {ours / base:.3f}")


if __name__ == "__main__":
    main()
