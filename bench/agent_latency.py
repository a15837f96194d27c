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


def one_round(gateway: _Gateway, workdir: Path, question: Any) -> dict[str, float] | None:
    events: list[tuple[float, str]] = []
    with RtpCaller(gateway, workdir, hold_ms=11000, api_key=KEY) as caller:  # type: ignore[arg-type]
        call = caller.answered()
        base = f"http://{LOOPBACK}:{gateway.http_port}/v1"
        watcher = threading.Thread(target=watch, args=(base, call["id"], events), daemon=True)
        watcher.start()
        _, last = caller.speak(question, lead_s=4.0, tail_s=4.0)
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
                             extra_config=f'api_key = ["{KEY}"]\nmedia_timeout = 0\n')
    gateway = _Gateway(server.port, server.http)
    question = make_speech_wav(workdir / "question.wav", QUESTION)
    # The end of the caller's speech is the last sample above -40 dBFS, not the
    # silence espeak-ng leaves after the words.
    loud = np.flatnonzero(np.abs(question.astype(np.int32)) > 328)
    question = question[: loud[-1] + 1]
    results: list[dict[str, float]] = []
    try:
        for i in range(args.rounds):
            round_dir = workdir / f"round{i}"
            round_dir.mkdir()
            shares = one_round(gateway, round_dir, question)
            if shares is not None:
                results.append(shares)
                print(f"round {i + 1}: total {1000 * shares['total']:.0f} ms", flush=True)
    finally:
        stop(server.proc)
    print(f"agent_latency: {len(results)}/{args.rounds} rounds, question {QUESTION!r}")
    print(f"{'share':<14} {'p50 ms':>8} {'p99 ms':>8}")
    for name in SHARES:
        values = [r[name] for r in results]
        print(f"{name:<14} {1000 * percentile(values, 50):>8.0f} "
              f"{1000 * percentile(values, 99):>8.0f}")
    return 0 if len(results) == args.rounds else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
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
