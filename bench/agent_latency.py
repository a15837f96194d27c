"""How long a caller waits for the agent: end of caller speech to the first agent RTP packet.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/agent_latency.py [--rounds 10]

Each round is one call to a gateway with ``--auto-answer agent`` (the built-in model,
its default policy). SIPp places the call; the caller's RTP is sent from here
(tests/integration/rtpcaller.py), so the caller's words and the agent's packets are
timed on one clock. After the greeting the caller asks (espeak-ng) "What are your
opening hours?"; a sideband client (the official SDK) times the model's events. The
wait is split into shares:

- VAD: last caller frame sent -> `input_audio_buffer.speech_stopped` (includes the
  500 ms of silence that server VAD waits for by default);
- transcription: -> `conversation.item.input_audio_transcription.completed`;
- policy: -> `response.created`;
- synthesis: -> the first `response.output_audio.delta`;
- gateway: -> the first agent RTP packet with sound at the caller.

Prints p50 and p99 of each share and of the total, in ms. Everything runs on loopback.
``--warmup N`` rounds (default 1) come first and are not counted: the gateway loads its
speech models (Whisper, the natural voice's process) in the background at start.
``--voice-engine`` sets the gateway's ``agent_voice_engine`` (default auto: the natural
voice when the ``voice`` extra is installed; synthesis is then piper's first clause).

``--calls N`` places N such calls at once in each round (their questions a second
apart, so that each one's transcription and answer run while the others' audio plays)
and prints each call's p50 and p99, and the late frames of each call's RTP from the
gateway (what the caller hears): a packet more than 20 ms behind the 20 ms grid its
stream keeps (sequence numbers against the earliest arrival), over the whole call.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import openai
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sip_cps import LOOPBACK, start_sipbridge, stop, workdir

from tests.integration.peers import make_speech_wav
from tests.integration.rtpcaller import RtpCaller, voiced

KEY = "sk-agent-latency"
QUESTION = "What are your opening hours?"
SHARES = ("VAD", "transcription", "policy", "synthesis", "gateway", "total")


class _Gateway:
    """What RtpCaller needs of a gateway."""

    def __init__(self, port: int, http: int) -> None:
        self.address = f"{LOOPBACK}:{port}"
        self.http_port = http


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def watch(base: str, call_id: str, events: list[tuple[float, str]]) -> None:
    client = openai.OpenAI(api_key=KEY, base_url=base)
    with client.realtime.connect(call_id=call_id) as conn:
        try:
            while True:
                kind = json.loads(conn.recv_bytes()).get("type", "")
                events.append((time.monotonic(), kind))
        except websockets.exceptions.ConnectionClosed:
            pass


def first_after(events: list[tuple[float, str]], kind: str, after: float) -> float | None:
    return next((t for t, k in events if k == kind and t >= after), None)


def late_share(arrivals: list[tuple[int, float]]) -> tuple[int, int]:
    """(late, packets) of a stream's (extended sequence, arrival) pairs: late is more
    than 20 ms behind the grid set by the earliest packet so far (sequence * 20 ms)."""
    late, base = 0, float("inf")
    for seq, at in sorted(arrivals):
        base = min(base, at - 0.020 * seq)
        late += at - (base + 0.020 * seq) > 0.020
    return late, len(arrivals)


def stream_of(packets: list[Any]) -> list[tuple[int, float]]:
    """(extended sequence number, arrival) of each packet, wrap-arounds unrolled."""
    out: list[tuple[int, float]] = []
    last = None
    cycles = 0
    for p in packets:
        if last is not None and p.sequence < last and last - p.sequence > 32768:
            cycles += 65536
        last = p.sequence
        out.append((cycles + p.sequence, p.arrival))
    return out


def one_round(gateway: _Gateway, workdir: Path, question: Any, delay: float = 0.0,
              lateness: list[tuple[int, int]] | None = None) -> dict[str, float] | None:
    events: list[tuple[float, str]] = []
    with RtpCaller(gateway, workdir, hold_ms=11000, api_key=KEY) as caller:  # type: ignore[arg-type]
        call = caller.answered()
        base = f"http://{LOOPBACK}:{gateway.http_port}/v1"
        watcher = threading.Thread(target=watch, args=(base, call["id"], events), daemon=True)
        watcher.start()
        _, last = caller.speak(question, lead_s=4.0 + delay, tail_s=4.0)
        if lateness is not None:
            lateness.append(late_share(stream_of(list(caller.sink.packets))))
    watcher.join(10)
    marks = [last]
    for kind in ("input_audio_buffer.speech_stopped",
                 "conversation.item.input_audio_transcription.completed",
                 "response.created", "response.output_audio.delta"):
        at = first_after(events, kind, marks[-1])
        if at is None:
            print(f"  round without {kind}", file=sys.stderr)
            return None
        marks.append(at)
    heard = voiced(caller.sink, marks[-1])
    if not heard:
        print("  round without agent audio after the answer", file=sys.stderr)
        return None
    marks.append(heard[0])
    shares = {name: marks[i + 1] - marks[i] for i, name in enumerate(SHARES[:-1])}
    shares["total"] = marks[-1] - marks[0]
    return shares


def run(args: argparse.Namespace, workdir: Path) -> int:
    server = start_sipbridge(workdir, None, "udp", auto_answer="agent",
                             extra_config=f'api_key = ["{KEY}"]\nmedia_timeout = 0\n'
                             f'agent_turn_detection = "{args.turn_detection}"\n'
                             f'agent_voice_engine = "{args.voice_engine}"\n')
    gateway = _Gateway(server.port, server.http)
    question = make_speech_wav(workdir / "question.wav", QUESTION)
    # The end of the caller's speech is the last sample above -40 dBFS, not the
    # silence espeak-ng leaves after the words.
    loud = np.flatnonzero(np.abs(question.astype(np.int32)) > 328)
    question = question[: loud[-1] + 1]
    if args.calls > 1:
        try:
            return run_together(args, workdir, gateway, question)
        finally:
            stop(server.proc)
    results: list[dict[str, float]] = []
    try:
        for i in range(-args.warmup, args.rounds):
            round_dir = workdir / f"round{i}"
            round_dir.mkdir()
            shares = one_round(gateway, round_dir, question)
            if shares is not None and i >= 0:
                results.append(shares)
            if shares is not None:
                print(f"{'round' if i >= 0 else 'warm-up'} {i + 1 if i >= 0 else ''}: "
                      f"total {1000 * shares['total']:.0f} ms", flush=True)
    finally:
        stop(server.proc)
    print(f"agent_latency: {len(results)}/{args.rounds} rounds, question {QUESTION!r}")
    print(f"{'share':<14} {'p50 ms':>8} {'p99 ms':>8}")
    for name in SHARES:
        values = [r[name] for r in results]
        print(f"{name:<14} {1000 * percentile(values, 50):>8.0f} "
              f"{1000 * percentile(values, 99):>8.0f}")
    return 0 if len(results) == args.rounds else 1


def run_together(args: argparse.Namespace, workdir: Path, gateway: _Gateway,
                 question: Any) -> int:
    """`--calls N`: N calls at once in each round; each call's figures."""
    totals: list[list[float]] = [[] for _ in range(args.calls)]
    lateness: list[list[tuple[int, int]]] = [[] for _ in range(args.calls)]
    for i in range(-args.warmup, args.rounds):
        got: list[dict[str, float] | None] = [None] * args.calls

        def place(n: int, i: int = i, got: list[dict[str, float] | None] = got) -> None:
            place_dir = workdir / f"round{i}-call{n}"
            place_dir.mkdir()
            got[n] = one_round(gateway, place_dir, question, delay=1.0 * n,
                               lateness=lateness[n])

        threads = [threading.Thread(target=place, args=(n,)) for n in range(args.calls)]
        for t in threads:
            t.start()
            time.sleep(0.3)  # the calls' set-ups apart
        for t in threads:
            t.join(120)
        if i < 0:
            for n in range(args.calls):
                del lateness[n][:]
            print("warm-up: " + ", ".join(
                "-" if s is None else f"{1000 * s['total']:.0f} ms" for s in got), flush=True)
            continue
        for n, shares in enumerate(got):
            if shares is not None:
                totals[n].append(shares["total"])
        print(f"round {i + 1}: " + ", ".join(
            "-" if s is None else f"{1000 * s['total']:.0f} ms" for s in got), flush=True)
    print(f"agent_latency: {args.calls} calls at once, {args.rounds} rounds, "
          f"question {QUESTION!r}")
    print(f"{'call':<6} {'answers':>7} {'p50 ms':>8} {'p99 ms':>8} {'late frames':>12}")
    complete = True
    for n in range(args.calls):
        late = sum(x for x, _ in lateness[n])
        packets = sum(y for _, y in lateness[n])
        share = 100 * late / packets if packets else float("nan")
        print(f"{n + 1:<6} {len(totals[n]):>7} {1000 * percentile(totals[n], 50):>8.0f} "
              f"{1000 * percentile(totals[n], 99):>8.0f} {share:>11.2f}%  "
              f"({late} of {packets})")
        complete = complete and len(totals[n]) == args.rounds
    return 0 if complete else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--turn-detection", choices=("semantic_vad", "server_vad"),
                    default="semantic_vad", help="the gateway's agent_turn_detection")
    ap.add_argument("--calls", type=int, default=1,
                    help="calls at once in each round (default 1): each call's p50 and p99, "
                    "and the late frames of its RTP")
    ap.add_argument("--warmup", type=int, default=1,
                    help="rounds first, not counted (default 1): the gateway loads its speech "
                    "models in the background at start, and its first calls share the CPU "
                    "with that")
    ap.add_argument("--voice-engine", choices=("auto", "piper", "espeak"), default="auto",
                    help="the gateway's agent_voice_engine")
    ap.add_argument("--keep", metavar="DIR", help="keep the gateway's and SIPp's files here")
    args = ap.parse_args()
    for tool in ("sipp", "espeak-ng"):
        if shutil.which(tool) is None:
            print(f"agent_latency: {tool} is not installed (bash scripts/setup.sh)",
                  file=sys.stderr)
            return 1
    with workdir(args.keep, "agent_latency-") as root:
        return run(args, root)


if __name__ == "__main__":
    sys.exit(main())
