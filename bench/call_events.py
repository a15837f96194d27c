"""What one call's events cost the call plane: its SIP messages traced onto its timeline
and its records through `CallEvents` to the gateway's own sinks, as bench/sip_cps.py's
calls make them (INVITE, 100, 180, 200, ACK, BYE, 200), in one process, no sockets.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/call_events.py [--calls 3000] [--repeat 5] [--compare OLD_SRC]

Each call, in the order the registry makes them: the INVITE traced before the call
exists, the call created (`Changed`), answered (`Changed`, `MediaStarted`), the INVITE
and the three responses traced; the ACK and the BYE traced; the end (the `media` and
`call` timeline entries, `Changed`, `Ended`) and the 200 to the BYE traced. The sinks
are those a gateway with a store and no webhooks subscribes, in its order: the timeline,
the store (a temporary SQLite file, writes handed over once per message as the event
loop's turn ends; ``--no-store``: none, the call plane's own part alone), the metrics,
the sideband, the agents. The media session is a stand-in (no agent runs).
Microseconds per call of this thread (what the event loop pays) and of the whole
process (the store's writer thread too, the store flushed before the clock stops),
best of ``--repeat`` runs of ``--calls`` calls.

``--compare OLD_SRC`` runs this same script with OLD_SRC (a ``src`` directory, say the
code before a change: ``git archive HEAD src | tar -x -C /tmp/base``) first on
``PYTHONPATH`` as well, the two trees taking turns, and prints each one's figures and
the ratio. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import sipbridge
from sipbridge.agent.lifecycle import Agents
from sipbridge.api.callevents import SidebandSink
from sipbridge.calls.call import Call, CallState
from sipbridge.calls.events import CallEvents, Changed, Ended, MediaStarted, note
from sipbridge.calls.sinks import MetricsSink, StoreSink
from sipbridge.calls.sipids import SipCallIds, SipTrace
from sipbridge.config import load_config
from sipbridge.media.session import MediaSession
from sipbridge.metrics import Metrics
from sipbridge.realtime.sideband import SidebandHubs
from sipbridge.records import MediaFigures
from sipbridge.sip.address import Address
from sipbridge.store import open_store

PEER = Address("udp", "127.0.0.1", 48655)
_HEAD = ("Via: SIP/2.0/UDP 127.0.0.1:48655;branch=z9hG4bK-{cid}-{branch}\r\n"
         "From: sipp <sip:sipp@127.0.0.1:48655>;tag=12150SIPpTag00{cid}\r\n"
         "To: service <sip:service@127.0.0.1:5060>{to_tag}\r\n"
         "Call-ID: {cid}-12150@127.0.0.1\r\n")
_SDP_IN = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
           "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 51956 RTP/AVP 0\r\n"
           "a=rtpmap:0 PCMU/8000\r\n")
_SDP_OUT = ("v=0\r\no=sipbridge 1458901784 1 IN IP4 127.0.0.1\r\ns=sipbridge\r\n"
            "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 10002 RTP/AVP 0\r\n"
            "a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n")
_UAC = ("Contact: sip:sipp@127.0.0.1:48655\r\nMax-Forwards: 70\r\n"
        "Subject: Performance Test\r\n")
_US = "Contact: <sip:sipbridge@127.0.0.1:5060>\r\n"
_TAG = ";tag=11805905fb9592d9"
# (direction, start line, To tag, branch, the headers after Call-ID, body), as SIPp's
# uac and the gateway send them.
_MESSAGES = (
    ("in", "INVITE sip:service@127.0.0.1:5060 SIP/2.0", "", 0,
     "CSeq: 1 INVITE\r\n" + _UAC + "Content-Type: application/sdp\r\n", _SDP_IN),
    ("out", "SIP/2.0 100 Trying", "", 0, "CSeq: 1 INVITE\r\n", ""),
    ("out", "SIP/2.0 180 Ringing", _TAG, 0, "CSeq: 1 INVITE\r\n" + _US, ""),
    ("out", "SIP/2.0 200 OK", _TAG, 0,
     "CSeq: 1 INVITE\r\n" + _US + "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, "
     "REFER\r\nSupported: norefersub\r\nServer: sipbridge\r\n"
     "Content-Type: application/sdp\r\n", _SDP_OUT),
    ("in", "ACK sip:service@127.0.0.1:5060 SIP/2.0", _TAG, 5, "CSeq: 1 ACK\r\n" + _UAC, ""),
    ("in", "BYE sip:service@127.0.0.1:5060 SIP/2.0", _TAG, 7, "CSeq: 2 BYE\r\n" + _UAC, ""),
    ("out", "SIP/2.0 200 OK", _TAG, 7, "CSeq: 2 BYE\r\n", ""),
)
FIGURES: MediaFigures = {
    "packets_in": 0, "packets_out": 0, "lost": 0, "duplicates": 0, "reordered": 0,
    "jitter_ms": 0.0, "late": 0, "concealed": 0, "skipped": 0, "stalled": 0, "rtcp_in": 0,
    "rtcp_out": 0, "stun": 0,
    "stun_answered": 0, "dtmf": "", "dropped": {}, "srtp": False}


def messages(n: int) -> list[bytes]:
    """Call number `n`'s seven SIP messages, in `_MESSAGES`' order."""
    out = []
    for _, line, to_tag, branch, rest, body in _MESSAGES:
        head = _HEAD.format(cid=n, branch=branch, to_tag=to_tag)
        out.append(f"{line}\r\n{head}{rest}Content-Length: {len(body)}\r\n\r\n{body}"
                   .encode())
    return out


class Plane:
    """The calls plane's events and sinks, as a gateway with a store subscribes them."""

    def __init__(self, store_path: Path | None) -> None:
        self.clock = 0.0
        self.events = events = CallEvents()
        self.store = None if store_path is None else open_store(str(store_path))
        self.turn: list[Callable[[], None]] = []
        if self.store is not None:
            events.subscribe(StoreSink(self.store, None, self.turn.append))
        metrics = Metrics(lambda: 0)
        events.subscribe(MetricsSink(metrics))
        hubs = SidebandHubs()
        events.subscribe(SidebandSink(hubs))
        config = load_config(store="off", http="off")
        events.subscribe(Agents(config, "", cast(Any, None), events, hubs, metrics,
                                cast(Any, None), None))
        self.ids = SipCallIds(lambda: self.clock, linger=37.0, limit=1000)
        self.trace = SipTrace(self.ids, events)
        self.media = cast(MediaSession, object())  # no agent runs: it is not looked at

    def end_turn(self) -> None:
        """What the event loop runs at the end of a turn (the store's hand-over)."""
        turn, self.turn[:] = list(self.turn), []
        for callback in turn:
            callback()

    def call(self, n: int, sip: list[bytes]) -> None:
        invite, trying, ringing, ok, ack, bye, bye_ok = sip
        trace, emit, end_turn = self.trace.trace, self.events.emit, self.end_turn
        self.clock += 0.002
        trace(invite, PEER, "in", early=True)  # a new Call-ID: traced once the call exists
        call = Call(id="rtc_" + secrets.token_hex(16), leg_id=f"leg{n}",
                    caller="sip:sipp@127.0.0.1:48655", callee="sip:service@127.0.0.1:5060",
                    created_at=time.time(), sip_call_id=f"{n}-12150@127.0.0.1",
                    source="127.0.0.1:48655")
        self.ids[call.sip_call_id] = call
        emit(Changed(call))
        call.state, call.answered_at = CallState.ACTIVE, time.time()
        emit(Changed(call))
        emit(MediaStarted(call, self.media))
        trace(invite, PEER, "in")
        for out in (trying, ringing, ok):
            trace(out, PEER, "out")
        end_turn()
        trace(ack, PEER, "in", early=True)
        end_turn()
        trace(bye, PEER, "in", early=True)
        call.state, call.end_reason, call.ended_at = CallState.ENDED, "remote_bye", time.time()
        call.media = media = FIGURES.copy()
        emit(note(call, "media", **media))
        emit(note(call, "call", status="ended", reason=call.end_reason))
        self.ids.ended(call)
        emit(Changed(call))
        emit(Ended(call))
        trace(bye_ok, PEER, "out")
        end_turn()


def measure(calls: int, store: bool = True) -> dict[str, float]:
    """One run in this process: microseconds per call (this thread, the process)."""
    with tempfile.TemporaryDirectory() as tmp:
        plane = Plane(Path(tmp) / "calls.db" if store else None)
        warm = 300
        sips = [messages(n) for n in range(warm + calls)]
        for n in range(warm):
            plane.call(n, sips[n])
        if plane.store is not None:
            plane.store.flush(30.0)
        thread, process = time.thread_time(), time.process_time()
        for n in range(warm, warm + calls):
            plane.call(n, sips[n])
        loop = time.thread_time() - thread
        if plane.store is not None and not plane.store.flush(60.0):
            raise SystemExit("call_events: the store did not flush in 60 s")
        total = time.process_time() - process
        if plane.store is not None:
            plane.store.close()
    return {"loop": loop * 1e6 / calls, "process": total * 1e6 / calls}


def child(tree: str | None, calls: int, store: bool) -> dict[str, float]:
    """`measure` in a fresh process, `tree` first on its PYTHONPATH (None: this one's)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (tree, env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, __file__, "--calls", str(calls), "--one",
                          *([] if store else ["--no-store"])],
                         env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare", metavar="OLD_SRC",
                        help="also run with this src directory first on PYTHONPATH")
    parser.add_argument("--no-store", action="store_true",
                        help="no store sink: the call plane's own part alone")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        src = str(Path(sipbridge.__file__).parent)
        print(json.dumps({**measure(args.calls, not args.no_store), "src": src}))
        return
    trees: dict[str, str | None] = {"this tree": None}
    if args.compare:
        trees = {"old (" + args.compare + ")": args.compare, **trees}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.repeat):  # the trees take turns: a noisy moment hits both
        for name, tree in trees.items():
            runs[name].append(child(tree, args.calls, not args.no_store))
    print(f"call_events: {args.calls} calls x {args.repeat} runs (best), "
          f"7 SIP messages and 14 events a call, "
          f"{'no store' if args.no_store else 'store on SQLite'}")
    print(f"{'tree':44} {'loop us/call':>12} {'process us/call':>15}")
    best = {name: (min(r["loop"] for r in rs), min(r["process"] for r in rs))
            for name, rs in runs.items()}
    for name, (loop, process) in best.items():
        print(f"{name:44} {loop:12.1f} {process:15.1f}")
    if args.compare:
        (old_loop, old_all), (new_loop, new_all) = best.values()
        print(f"this tree / old: loop {new_loop / old_loop:.2f}x, "
              f"process {new_all / old_all:.2f}x")


if __name__ == "__main__":
    main()
