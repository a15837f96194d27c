"""The agents' part in a warm transfer (`Agents` observing the transfer's steps), driven
by a made-up stream of `TransferStepped` events with fake media sessions and a fake call
manager: quiet while the person is dialed, briefing them on the person's session with the
decision tool, the decision passed to the manager, and the caller never left in silence
when the transfer returns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from sipbridge.agent.lifecycle import Agents
from sipbridge.calls.call import Call, CallError, CallState
from sipbridge.calls.events import CallEvents, TransferStepped
from sipbridge.calls.transfer_machine import TransferStep
from sipbridge.config import load_config
from sipbridge.metrics import Metrics
from sipbridge.realtime.brief import SPEAKING_TO, read_brief
from sipbridge.realtime.sideband import SidebandHubs


@dataclass
class FakeSession:
    name: str


@dataclass
class FakeBridge:
    """What the agents use of an AgentBridge, recorded."""

    media: Any
    paused: bool = False
    session_tools: list[dict[str, Any]] = field(default_factory=lambda: [
        {"type": "function", "name": "transfer_call"}])
    sent: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    responses: int = 0

    def pause(self) -> None:
        self.paused = True

    def move(self, media: Any) -> None:
        self.media, self.paused = media, False

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.session_tools)

    def set_tools(self, tools: list[dict[str, Any]]) -> None:
        self.session_tools = tools
        self.sent.append({"type": "session.update", "session": {"tools": tools}})

    def send(self, event: dict[str, Any]) -> None:
        self.sent.append(event)

    def function_output(self, call_id: str, output: str, *, respond: bool = True) -> None:
        self.outputs.append((call_id, json.loads(output), respond))

    def respond(self) -> None:
        self.responses += 1

    held: list[Any] = field(default_factory=list)  # what waits for the model's words
    speaking: bool = False

    def after_speech(self, limit: float, then: Any) -> None:
        if self.speaking:
            self.held.append(then)
        else:
            then("played", 0.0)


@dataclass
class FakeMachine:
    id: str = "xfer_1"
    target: str = "sip:alex@127.0.0.1:5090"
    status: str = "requested"
    sip_status: int | None = None
    reason: str | None = None
    final: bool = False


@dataclass
class FakeWarm:
    media_key: str = "rtc_w:warm"
    brief: str | None = "summary"


@dataclass
class FakeJob:
    machine: FakeMachine = field(default_factory=FakeMachine)
    mode: str = "warm"
    requested_by: str = "agent"
    warm: FakeWarm = field(default_factory=FakeWarm)
    fallback: dict[str, object] | None = None

    @property
    def id(self) -> str:
        return self.machine.id

    @property
    def final(self) -> bool:
        return self.machine.final


@dataclass
class FakeCalls:
    decisions: list[tuple[str, str, bool, str]] = field(default_factory=list)
    refuse: str | None = None

    def warm_decision(self, call_id: str, transfer_id: str, connect: bool,
                      reason: str) -> None:
        if self.refuse:
            raise CallError("conflict", self.refuse)
        self.decisions.append((call_id, transfer_id, connect, reason))


@dataclass
class FakeMedia:
    sessions: dict[str, FakeSession] = field(default_factory=dict)


CALLER = FakeSession("caller")
PERSON = FakeSession("person")


def wired(*, bridge: bool = True) -> tuple[Agents, FakeCalls, Call, FakeJob, FakeBridge]:
    calls = FakeCalls()
    media = FakeMedia({"rtc_w": CALLER, "rtc_w:warm": PERSON})
    agents = Agents(load_config(store="off", http="off"), "", calls,  # type: ignore[arg-type]
                    CallEvents(), SidebandHubs(), Metrics(lambda: 0),
                    media, None)  # type: ignore[arg-type]
    call = Call("rtc_w", "leg", "sip:caller@127.0.0.1", "sip:agent@127.0.0.1", 0.0,
                state=CallState.ACTIVE)
    job = FakeJob()
    call.transfers.append(job)  # type: ignore[arg-type]
    model = FakeBridge(CALLER)
    if bridge:
        agents.bridges[call.id] = model  # type: ignore[assignment]
    return agents, calls, call, job, model


def step(agents: Agents, call: Call, job: FakeJob, status: str, reason: str | None = None,
         final: bool = False) -> None:
    job.machine.status, job.machine.reason, job.machine.final = status, reason, final
    agents.observe(TransferStepped(call, job,  # type: ignore[arg-type]
                                   TransferStep(1.0, status, None, reason, final)))


def decision_tool(model: FakeBridge) -> bool:
    return any(t.get("name") == "finish_transfer" for t in model.session_tools)


def test_the_model_briefs_the_person_and_connects_them() -> None:
    agents, calls, call, job, model = wired()
    agents._tool_calls[job.id] = (call.id, "call_t")
    step(agents, call, job, "requested")
    assert not model.paused
    step(agents, call, job, "dialing")
    assert model.paused and model.media is CALLER  # quiet; the caller's session untouched
    for status in ("ringing", "answered"):
        step(agents, call, job, status)
    assert model.paused and not model.sent
    step(agents, call, job, "briefing")
    assert model.media is PERSON and not model.paused
    assert decision_tool(model)
    assert [t["name"] for t in model.session_tools] == ["transfer_call", "finish_transfer"]
    update, message, respond = model.sent
    assert update["type"] == "session.update"
    assert message["type"] == "conversation.item.create"
    assert message["item"]["role"] == "system"
    assert SPEAKING_TO in message["item"]["content"][0]["text"]
    assert respond["type"] == "response.create"
    assert read_brief(respond["response"]["instructions"]) == ("summary", "")
    # The person says yes: the model decides.
    agents.tool(call, "finish_transfer", "call_d", '{"connect": true, "reason": "free now"}')
    assert calls.decisions == [(call.id, job.id, True, "free now")]
    assert model.outputs == [("call_d", {"status": "connecting", "instructions": (
        "The caller is being put through to the person; say nothing more.")}, False)]
    step(agents, call, job, "connecting")
    assert model.paused
    step(agents, call, job, "connected", final=True)
    assert call.id not in agents.bridges  # the model left the call
    assert job.id not in agents._tool_calls


def test_a_text_brief_is_said_as_given() -> None:
    agents, _, call, job, model = wired()
    job.warm.brief = "Caller Sam about invoice 42."
    step(agents, call, job, "briefing")
    instructions = model.sent[-1]["response"]["instructions"]
    assert read_brief(instructions) == ("say", "Caller Sam about invoice 42.")
    assert "finish_transfer" in instructions


def test_a_returned_transfer_is_told_through_the_transfer_tool() -> None:
    agents, calls, call, job, model = wired()
    agents._tool_calls[job.id] = (call.id, "call_t")
    step(agents, call, job, "dialing")
    step(agents, call, job, "briefing")
    agents.tool(call, "finish_transfer", "call_d", '{"connect": false, "reason": "in a meeting"}')
    assert calls.decisions == [(call.id, job.id, False, "in a meeting")]
    assert model.outputs[-1][1]["status"] == "returning" and model.outputs[-1][2] is False
    step(agents, call, job, "returned", "declined: in a meeting", final=True)
    assert model.media is CALLER and not model.paused  # back with the caller
    assert not decision_tool(model)
    assert model.sent[-1] == {"type": "session.update",
                              "session": {"tools": [{"type": "function",
                                                     "name": "transfer_call"}]}}
    call_id, output, respond = model.outputs[-1]
    assert call_id == "call_t" and respond  # the model is asked to speak
    assert output["status"] == "returned" and output["reason"] == "declined: in a meeting"
    assert "could not take the call" in output["instructions"]
    assert job.id not in agents._tool_calls


def test_a_returned_transfer_the_app_asked_for_is_a_system_message() -> None:
    agents, _, call, job, model = wired()
    job.requested_by = "app"
    step(agents, call, job, "dialing")
    step(agents, call, job, "returned", "no_answer: no answer within 30 s", final=True)
    assert model.media is CALLER and not model.paused
    message = model.sent[-1]
    assert message["item"]["role"] == "system"
    text = message["item"]["content"][0]["text"]
    assert "no_answer: no answer within 30 s" in text and "tell them" in text
    assert model.responses == 1 and not model.outputs  # never silence


def test_a_cancelled_transfer_says_nothing() -> None:
    agents, _, call, job, model = wired()
    step(agents, call, job, "dialing")
    step(agents, call, job, "briefing")
    step(agents, call, job, "cancelled", "the call ended", final=True)
    assert model.media is CALLER and not decision_tool(model)
    assert model.responses == 0 and not model.outputs


def test_without_an_agent_the_person_is_connected_unbriefed() -> None:
    agents, calls, call, job, _ = wired(bridge=False)
    step(agents, call, job, "briefing")
    assert calls.decisions == [(call.id, job.id, True, "no agent to brief the person")]


@pytest.mark.parametrize(("arguments", "problem"), [
    ("not json", "the arguments must be"),
    ('{"connect": "yes"}', "the arguments must be"),
    ('{"reason": "x"}', "the arguments must be"),
])
def test_bad_decisions_are_answered_and_decide_nothing(arguments: str, problem: str) -> None:
    agents, calls, call, job, model = wired()
    step(agents, call, job, "briefing")
    agents.tool(call, "finish_transfer", "call_d", arguments)
    assert not calls.decisions
    _, output, respond = model.outputs[-1]
    assert output["status"] == "error" and problem in output["error"] and respond


def test_a_decision_with_nothing_to_decide() -> None:
    agents, calls, call, job, model = wired()
    # not briefing: a finish_transfer is the application's own tool, left to it
    agents.tool(call, "finish_transfer", "call_c", '{"connect": true}')
    assert not calls.decisions and not model.outputs
    step(agents, call, job, "briefing")
    call.transfers.clear()
    agents.tool(call, "finish_transfer", "call_d", '{"connect": true}')
    assert not calls.decisions
    assert model.outputs[-1][1]["error"] == "no warm transfer is being briefed"
    # the manager refusing (not briefing any more): its words go back to the model
    call.transfers.append(job)  # type: ignore[arg-type]
    calls.refuse = "transfer xfer_1 is not being briefed"
    agents.tool(call, "finish_transfer", "call_e", '{"connect": true}')
    assert model.outputs[-1][1] == {
        "status": "error", "error": "transfer xfer_1 is not being briefed",
        "instructions": "The decision was not taken; say nothing more."}


def test_the_persons_words_are_theirs_on_the_timeline() -> None:
    from sipbridge.calls.events import Noted

    agents, _, call, job, _ = wired()
    seen: list[dict[str, object]] = []

    class Collect:
        def observe(self, event: object) -> None:
            if isinstance(event, Noted) and event.entry.get("kind") == "transcript":
                seen.append(event.entry)

    agents.events.subscribe(Collect())
    heard = {"type": "conversation.item.input_audio_transcription.completed",
             "item_id": "i", "transcript": "Yes, put them through."}
    agents._event(call, heard)
    step(agents, call, job, "briefing")
    agents._event(call, heard)
    step(agents, call, job, "connecting")
    agents._event(call, heard)
    step(agents, call, job, "returned", "failed: connecting failed", final=True)
    agents._event(call, heard)
    assert [e["role"] for e in seen] == ["caller", "person", "person", "caller"]


def test_the_decision_waits_for_the_words_said_with_it() -> None:
    agents, calls, call, job, model = wired()
    step(agents, call, job, "dialing")
    step(agents, call, job, "briefing")
    model.speaking = True  # "No problem, I'll tell them." is still playing to the person
    agents.tool(call, "finish_transfer", "call_d", '{"connect": false, "reason": "busy"}')
    assert calls.decisions == [] and model.outputs == []
    (then,) = model.held
    then("played", 1.2)
    assert calls.decisions == [(call.id, job.id, False, "busy")]
    assert model.outputs[-1][1]["status"] == "returning"
