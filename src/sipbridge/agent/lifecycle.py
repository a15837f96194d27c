"""The agents of the calls: a model session bridged to each call that talks with one, its
events on the call's timeline and sideband, the built-in transfer tool, the model's part
in a warm transfer (it briefs the person the gateway dialed and decides with
`finish_transfer`), and what the caller hears when the model fails (a spoken message,
then a person or the end)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

from sipbridge.agent.bridge import AgentBridge
from sipbridge.calls import dtmf_tool
from sipbridge.calls.call import Call, CallError, TransferJob
from sipbridge.calls.events import (
    CallEvent,
    CallEvents,
    Digit,
    Ended,
    MediaStarted,
    TransferStepped,
    note,
)
from sipbridge.calls.manager import CallManager
from sipbridge.calls.tool import (
    TOOL_NAME,
    decision_output,
    decision_tool_definition,
    read_decision,
    tool_definition,
    tool_output,
)
from sipbridge.calls.transfer_machine import SUCCEEDED
from sipbridge.config import Config
from sipbridge.media.engine import MediaEngine
from sipbridge.media.session import MediaSession
from sipbridge.metrics import Metrics
from sipbridge.realtime.brief import DECISION_TOOL, SPEAKING_TO, brief_instructions
from sipbridge.realtime.schemas import FunctionTool, SessionConfig
from sipbridge.realtime.sideband import SidebandHubs

log = logging.getLogger("sipbridge")


DECISION_SPEECH_WAIT = 4.0  # seconds a warm transfer's decision waits for the model's words


class Agents:
    """The model sessions of the calls, one per call that talks with the agent."""

    # of a call's events (CallEvents)
    wants: ClassVar[tuple[type, ...]] = (MediaStarted, Digit, TransferStepped, Ended)

    def __init__(self, config: Config, url: str, calls: CallManager, events: CallEvents,
                 sideband: SidebandHubs, metrics: Metrics, media: MediaEngine,
                 loop: asyncio.AbstractEventLoop | None) -> None:
        self.config = config
        self.url = url  # the model's WebSocket; "" for none (answered calls get silence)
        self.calls = calls
        self.events = events
        self.sideband = sideband
        self.metrics = metrics
        self.media = media
        self.loop = loop
        self.bridges: dict[str, AgentBridge] = {}
        self._tool_calls: dict[str, tuple[str, str]] = {}  # transfer id -> (call id, tool call)
        self._briefing: set[str] = set()  # calls whose model talks with a transfer's person

    def observe(self, event: CallEvent) -> None:
        match event:
            case MediaStarted(call=call, media=media):
                self._start(call, media)
            case Digit(call=call, digit=digit):
                self._digit(call.id, digit)
            case TransferStepped(call=call, job=job, step=step) if job.mode == "warm":
                if step is not None:
                    self._warm_step(call, job, step.status)
            case TransferStepped(call=call, job=job, step=step):
                if step is not None and step.final and job.id in self._tool_calls:
                    call_id, tool_call = self._tool_calls.pop(job.id)
                    bridge = self.bridges.get(call_id)
                    if bridge is not None:  # the model hears how its transfer went
                        bridge.function_output(tool_call, tool_output(job.machine),
                                               respond=step.status != SUCCEEDED)
                if (job.fallback or {}).get("status") == "answered":
                    # The caller talks with the target now: the model leaves the call.
                    self._leave(call)
            case Ended(call=call):
                self._leave(call)
            case _:
                pass

    async def close(self) -> None:
        for bridge in list(self.bridges.values()):
            await bridge.close()

    def _leave(self, call: Call) -> None:
        self._briefing.discard(call.id)
        bridge = self.bridges.pop(call.id, None)
        if bridge is not None and self.loop is not None:
            self.loop.create_task(bridge.close())

    def _start(self, call: Call, media: MediaSession) -> None:
        """An answered call that is not echoed or played to: it talks with the agent."""
        if self.config.auto_answer == "agent" and call.direction == "inbound":
            human: object = self.config.transfer_to
            if self.config.transfer_mode == "warm":
                human = {"uri": self.config.transfer_to, "mode": "warm",
                         "brief": self.config.transfer_brief}
            targets = {"human": human} if self.config.transfer_to else {}
            call.options = {"transfer_targets": targets} if targets else {}
            config = SessionConfig.model_validate({"type": "realtime", "audio": {"input": {
                "turn_detection": {"type": self.config.agent_turn_detection}}}})
            if targets:
                config = config.model_copy(
                    update={"tools": [FunctionTool(**tool_definition(targets))]})
            call.session = config.session_object()
            self.sideband.open(call, config)
        if not self.url or call.session is None:
            return
        bridge = AgentBridge(
            call.id, self.url, dict(call.session), media,
            api_key=self.config.agent_api_key,
            greet=(self.config.auto_answer == "agent" if call.direction == "inbound"
                   else call.options.get("greet", True) is not False),
            on_event=lambda event: self._event(call, event),
            on_function_call=lambda name, tool_call, args: self.tool(
                call, name, tool_call, args),
            on_status=lambda kind, detail: self.status(call, kind, detail),
            on_latency=self.metrics.model_latency.observe,
            reconnects=self.config.agent_reconnects,
        )
        self.bridges[call.id] = bridge
        self.sideband.attach_model(call.id, bridge.send)
        bridge.start()

    def _event(self, call: Call, event: dict[str, Any]) -> None:
        """A model event: to the call's sideband clients; the words said (the caller's
        transcript, the agent's), function calls and errors onto its timeline too."""
        self.sideband.publish(call.id, event)
        entry = timeline_entry(event)
        if entry is not None and entry.get("role") == "caller" and call.id in self._briefing:
            entry["role"] = "person"  # a warm transfer's person, heard while briefed
        if entry is not None:
            self.events.emit(note(call, **entry))

    def tool(self, call: Call, name: str, tool_call: str, arguments: str) -> None:
        """The model called a function: the built-in transfer tool runs here; the others
        are the application's (it sees the call on the sideband). The transfer is
        requested at once; its REFER waits until the words the agent says with the call
        are played out (`transfer_speech_wait`), since a phone puts the call on hold on
        REFER. While a transfer is under way, another call of the tool starts nothing
        and is answered `in_progress`; the model hears the outcome when there is one."""
        if name == dtmf_tool.TOOL_NAME and call.options.get(dtmf_tool.OPTION) is True:
            self._send_dtmf(call, tool_call, arguments)
            return
        if name == DECISION_TOOL and call.id in self._briefing:
            self._decision(call, tool_call, arguments)  # ours only while briefing
            return
        if name != TOOL_NAME or "transfer_targets" not in call.options:
            return
        bridge = self.bridges.get(call.id)
        wait = self.config.transfer_speech_wait if bridge is not None else 0.0
        held = (f"waiting for the agent's words to be played out (at most {wait:g} s)"
                if wait > 0 else None)
        run = self.calls.run_transfer_tool(call.id, arguments, held=held, hold_for=wait)
        if not run.started or run.job is None:
            if bridge is not None:
                bridge.function_output(tool_call, run.output())
            return
        job = run.job
        self._tool_calls[job.id] = (call.id, tool_call)
        if held is not None and bridge is not None:
            bridge.after_speech(wait, lambda outcome, waited: self._release_transfer(
                call, job, outcome, waited))

    def _send_dtmf(self, call: Call, tool_call: str, arguments: str) -> None:
        """The built-in send_dtmf tool: the model hears back once the keys are sent."""
        def reply(text: str) -> None:
            bridge = self.bridges.get(call.id)
            if bridge is not None:
                bridge.function_output(tool_call, text)

        dtmf_tool.run(self.calls.send_dtmf, call.id, arguments, reply)

    def _release_transfer(self, call: Call, job: TransferJob, outcome: str,
                          waited: float) -> None:
        """The agent's words are out (or the wait ran out): the held REFER goes, unless
        the caller hung up or the transfer ended meanwhile (its steps say so)."""
        if job.final:
            return
        detail = {"played": f"the agent's words were played out after {waited:.2f} s",
                  "timed_out": f"the agent was still speaking after {waited:.2f} s",
                  "closed": "the model left the call"}.get(outcome, outcome)
        self.events.emit(note(call, "agent", status="speech_wait", transfer_id=job.id,
                              outcome=outcome, waited=round(waited, 3), detail=detail))
        if self.calls.send_held(call.id, job):
            log.info("call %s: transfer %s: %s; REFER sent", call.id, job.id, detail)

    # ---- the warm transfer -------------------------------------------------------------

    def _warm_step(self, call: Call, job: TransferJob, status: str) -> None:
        """The model's part in a warm transfer: quiet while the person is dialed, briefing
        them once they answer, gone once the caller is connected, back with the caller
        (and told why) when the person did not take the call."""
        bridge = self.bridges.get(call.id)
        if status not in ("briefing", "connecting"):
            self._briefing.discard(call.id)
        if status in ("dialing", "connecting"):
            if bridge is not None:  # the caller's session is the transfer's meanwhile
                bridge.pause()
        elif status == "briefing":
            self._brief(call, job, bridge)
        elif status == "connected":
            self._tool_calls.pop(job.id, None)
            self._leave(call)  # the caller talks with the person now
        elif status in ("returned", "cancelled"):
            self._back(call, job, bridge, status)

    def _brief(self, call: Call, job: TransferJob, bridge: AgentBridge | None) -> None:
        warm = getattr(job, "warm", None)
        key = getattr(warm, "media_key", None) or f"{call.id}:warm"
        person = self.media.sessions.get(key)
        if bridge is None or person is None:
            self._decide_later(call, job, "no agent to brief the person" if bridge is None
                               else "no audio to brief the person on")
            return
        bridge.move(person)
        self._briefing.add(call.id)
        tools = [t for t in bridge.tools if t.get("name") != DECISION_TOOL]
        bridge.set_tools([*tools, decision_tool_definition()])
        bridge.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "system", "content": [{"type": "input_text", "text": (
                f"{SPEAKING_TO} They were reached at {job.machine.target}.")}]}})
        bridge.send({"type": "response.create", "response": {
            "instructions": brief_instructions(getattr(warm, "brief", None))}})
        self.events.emit(note(call, "agent", status="briefing", transfer_id=job.id))

    def _decide_later(self, call: Call, job: TransferJob, reason: str) -> None:
        """Connect without a briefing (after the step that asked is out)."""
        def decide() -> None:
            try:
                self.calls.warm_decision(call.id, job.id, True, reason)
            except CallError as exc:
                log.warning("call %s: transfer %s: %s", call.id, job.id, exc.message)
        if self.loop is not None:
            self.loop.call_soon(decide)
        else:
            decide()

    def _decision(self, call: Call, tool_call: str, arguments: str) -> None:
        """The model called `finish_transfer`: the briefed person's answer."""
        bridge = self.bridges.get(call.id)
        job = next((t for t in call.transfers if t.mode == "warm" and not t.final), None)
        decision = read_decision(arguments)
        if job is None or decision is None:
            problem = ("no warm transfer is being briefed" if job is None else
                       'the arguments must be {"connect": true or false, "reason": "..."}')
            if bridge is not None:
                bridge.function_output(tool_call, decision_output(False, problem),
                                       respond=job is not None)
            return
        connect, reason = decision

        def decide(outcome: str = "played", waited: float = 0.0) -> None:
            try:
                self.calls.warm_decision(call.id, job.id, connect, reason)
            except CallError as exc:  # the brief's bound ran out meanwhile, say
                output = decision_output(connect, exc.message)
            else:
                output = decision_output(connect)
            if bridge is not None:  # said while the person listens; nothing more is asked
                bridge.function_output(tool_call, output, respond=False)

        if bridge is None:
            decide()
            return
        # What the model says with its decision ("Thanks, connecting you now.") reaches the
        # person before their call is connected or ended.
        bridge.after_speech(DECISION_SPEECH_WAIT, decide)

    def _back(self, call: Call, job: TransferJob, bridge: AgentBridge | None,
              status: str) -> None:
        """The caller is back (or gone): the model talks with the caller again, without
        the decision tool, and hears why the person did not take the call."""
        tool = self._tool_calls.pop(job.id, None)
        if bridge is None:
            return
        caller = self.media.sessions.get(call.id)
        if caller is not None:
            bridge.move(caller)
        tools = bridge.tools
        if any(t.get("name") == DECISION_TOOL for t in tools):
            bridge.set_tools([t for t in tools if t.get("name") != DECISION_TOOL])
        if status != "returned":
            return  # the call ended
        if tool is not None and job.requested_by == "agent":
            bridge.function_output(tool[1], tool_output(job.machine))
            return
        bridge.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "system", "content": [{"type": "input_text", "text": (
                f"The transfer to {job.machine.target} did not go through "
                f"({job.machine.reason or 'no reason given'}). You are speaking with the "
                "caller again: tell them the person could not take the call, apologise, "
                "and offer to help.")}]}})
        bridge.respond()

    def status(self, call: Call, kind: str, detail: str) -> None:
        """The model's connection: connected, lost, failed (the caller is told)."""
        self.events.emit(note(call, "agent", status=kind, detail=detail))
        log.log(logging.INFO if kind == "connected" else logging.WARNING,
                "call %s: model %s (%s)", call.id, kind, detail)
        if kind != "failed" or call.state.value == "ended":
            return
        if any(not job.final for job in call.transfers):
            # The caller is being handed on: the transfer's outcome decides the call.
            log.info("call %s: a transfer is under way; the call is left to it", call.id)
            return
        # The caller must not sit in silence: tell them, then hand them on or end the call.
        transfer = self.config.agent_on_failure == "transfer" and bool(self.config.transfer_to)
        message = ("Sorry, we are having technical difficulties. "
                   + ("Let me put you through to a person." if transfer else "Please call again."))
        assert self.loop is not None
        self.loop.create_task(self._after_failure(call, message, transfer))

    async def _after_failure(self, call: Call, message: str, transfer: bool) -> None:
        delay = 0.0
        media = self.media.sessions.get(call.id)
        try:
            from sipbridge.localmodel.tts import synthesize

            pcm = await asyncio.to_thread(synthesize, message, None)
            if media is not None:
                media.clear_playout()
                media.play(pcm)
                delay = len(pcm) / 24000 + 0.3
        except Exception:  # noqa: BLE001 (no speech to be had: go on without the message)
            log.warning("call %s: no speech for the failure message", call.id)
        await asyncio.sleep(delay)
        if call.state.value == "ended":
            return
        calls = self.calls
        with calls.sip.command():  # what follows goes out at once
            if transfer:
                try:
                    calls.refer(call.id, str(self.config.transfer_to), requested_by="gateway")
                except Exception:
                    log.exception("call %s: transfer after the model failed", call.id)
                    calls.hangup(call.id)
            else:
                calls.hangup(call.id)
                call.end_reason = "agent_failed"

    def _digit(self, call_id: str, digit: str) -> None:
        bridge = self.bridges.get(call_id)
        if bridge is not None:
            bridge.dtmf(digit)
        else:
            self.sideband.publish(call_id, {"type": "input_audio_buffer.dtmf_event_received",
                                            "event": digit, "received_at": int(time.time())})


def timeline_entry(event: dict[str, Any]) -> dict[str, Any] | None:
    """The timeline entry for a model event worth keeping (none for audio and the rest)."""
    kind = event.get("type")
    if kind == "conversation.item.input_audio_transcription.completed":
        return {"kind": "transcript", "role": "caller", "text": str(event.get("transcript")),
                "item_id": event.get("item_id")}
    if kind == "response.output_audio_transcript.done":
        return {"kind": "transcript", "role": "agent", "text": str(event.get("transcript")),
                "item_id": event.get("item_id")}
    if kind == "response.function_call_arguments.done":
        return {"kind": "agent", "status": "function_call", "name": event.get("name"),
                "arguments": str(event.get("arguments"))[:1000]}
    if kind == "conversation.item.input_audio_transcription.failed":
        error = event.get("error") or {}
        return {"kind": "agent", "status": "transcription_failed",
                "detail": str(error.get("message") if isinstance(error, dict) else error)}
    if kind == "error":
        error = event.get("error") or {}
        return {"kind": "agent", "status": "error",
                "detail": str(error.get("message") if isinstance(error, dict) else error)}
    return None
