"""The agents' transfer tool path (`Agents.tool`, and the transfer's events back to the
model) over a real UA core, SIP driver and CallManager with a fake clock: the REFER
waits for the agent's words, a second request while a transfer is pending is answered
`in_progress` and starts nothing, and the model hears "failed" only from a final
outcome."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from sipbridge.agent.lifecycle import Agents
from sipbridge.calls.call import Call
from sipbridge.config import load_config
from sipbridge.metrics import Metrics
from sipbridge.realtime.sideband import SidebandHubs
from tests.unit.callharness import Harness, ack, answered_app_call, notify

SUPPORT = '{"target": "support", "reason": "asked for a person"}'


class FakeBridge:
    """The model's side as the gateway sees it: function outputs, held actions."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, dict[str, Any], bool]] = []
        self.held: list[tuple[float, Callable[[str, float], None]]] = []

    def function_output(self, call_id: str, output: str, *, respond: bool = True) -> None:
        self.outputs.append((call_id, json.loads(output), respond))

    def after_speech(self, limit: float, then: Callable[[str, float], None]) -> None:
        self.held.append((limit, then))


def wired(speech_wait: float = 5.0) -> tuple[Agents, Harness, Call, FakeBridge]:
    h, call = answered_app_call()
    config = load_config(store="off", http="off", transfer_speech_wait=speech_wait)
    agents = Agents(config, "", h.manager, h.events, SidebandHubs(), Metrics(lambda: 0),
                    h.media, None)
    h.events.subscribe(agents)
    model = FakeBridge()
    agents.bridges[call.id] = model  # type: ignore[assignment]
    return agents, h, call, model


def refers(h: Harness) -> int:
    return sum(1 for r in h.requests if r.method == "REFER")


def test_the_refer_waits_for_the_words_and_a_second_request_starts_nothing() -> None:
    agents, h, call, model = wired()
    agents.tool(call, "transfer_call", "call_1", SUPPORT)
    # Requested at once, on the timeline and the record; the REFER waits for the words.
    assert refers(h) == 0 and len(call.transfers) == 1
    job = call.transfers[0]
    assert job.status == "requested" and "agent's words" in (job.machine.reason or "")
    assert [limit for limit, _ in model.held] == [5.0] and model.outputs == []
    # Asked again during the wait: "in progress", and nothing new.
    agents.tool(call, "transfer_call", "call_2", '{"target": "sales"}')
    assert refers(h) == 0 and len(call.transfers) == 1 and len(model.held) == 1
    assert model.outputs[-1][0] == "call_2"
    assert model.outputs[-1][1]["status"] == "in_progress"
    assert model.outputs[-1][1]["transfer_id"] == job.id and model.outputs[-1][2]
    # The words are out: the REFER goes, once.
    model.held[0][1]("played", 1.4)
    assert refers(h) == 1 and job.status == "sent"
    wait = [e for e in call.timeline if e["kind"] == "agent" and e["status"] == "speech_wait"]
    assert wait and wait[0]["outcome"] == "played" and wait[0]["transfer_id"] == job.id
    # Asked again while the carrier works on it: still "in progress", no second REFER.
    assert notify(h, "refer", "SIP/2.0 180 Ringing", cseq=2) == 200
    agents.tool(call, "transfer_call", "call_3", SUPPORT)
    assert refers(h) == 1 and len(call.transfers) == 1
    assert [o["status"] for _, o, _ in model.outputs] == ["in_progress", "in_progress"]
    # Only the final outcome says it failed, to the call that started it.
    assert notify(h, "refer", "SIP/2.0 486 Busy Here", cseq=3) == 200
    assert job.status == "failed"
    call_id, output, respond = model.outputs[-1]
    assert call_id == "call_1" and output["status"] == "failed" and respond
    assert output["sip_status"] == 486 and "did not go through" in output["instructions"]
    # After the outcome, a new request starts a new transfer.
    agents.tool(call, "transfer_call", "call_4", SUPPORT)
    assert len(call.transfers) == 2 and len(model.held) == 2


def test_nothing_but_a_final_outcome_tells_the_model_it_failed() -> None:
    agents, h, call, model = wired()
    agents.tool(call, "transfer_call", "call_1", SUPPORT)
    model.held[0][1]("played", 0.8)
    for n in range(3):
        agents.tool(call, "transfer_call", f"again_{n}", SUPPORT)
    h.send(_refer_answer(h, 202))
    assert call.transfers[0].status == "accepted"
    said = [o for _, o, _ in model.outputs]
    assert said and all(o["status"] == "in_progress" for o in said), said
    assert not any("fail" in json.dumps(o).lower() or o.get("error") for o in said), said
    # A request the gateway cannot carry out at all is an error, and says why.
    agents2, _, call2, model2 = wired()
    agents2.tool(call2, "transfer_call", "bad", '{"target": "billing"}')
    assert model2.outputs[0][1]["status"] == "error"
    assert "unknown target" in model2.outputs[0][1]["error"] and not call2.transfers


def test_the_caller_hanging_up_during_the_wait_sends_nothing() -> None:
    agents, h, call, model = wired()
    agents.tool(call, "transfer_call", "call_1", SUPPORT)
    to_tag = next(r.to.tag for r in h.sent if r.status == 200) or ""
    h.send(ack(to_tag).replace("ACK sip", "BYE sip").replace("1 ACK", "2 BYE"))
    job = call.transfers[0]
    assert job.status == "cancelled" and job.machine.reason == \
        "the call ended before the REFER was sent"
    model.held[0][1]("closed", 0.5)  # the bridge closes with the call
    assert refers(h) == 0


def test_no_wait_configured_sends_the_refer_at_once() -> None:
    agents, h, call, model = wired(speech_wait=0.0)
    agents.tool(call, "transfer_call", "call_1", SUPPORT)
    assert refers(h) == 1 and model.held == [] and call.transfers[0].status == "sent"
    assert call.transfers[0].machine.steps[0].reason is None


@pytest.mark.parametrize("outcome", ["timed_out", "closed"])
def test_the_refer_goes_when_the_wait_ends_otherwise(outcome: str) -> None:
    agents, h, call, model = wired()
    agents.tool(call, "transfer_call", "call_1", SUPPORT)
    model.held[0][1](outcome, 5.0)
    assert refers(h) == 1
    entry = next(e for e in call.timeline if e["kind"] == "agent"
                 and e["status"] == "speech_wait")
    assert entry["outcome"] == outcome


def _refer_answer(h: Harness, status: int) -> str:
    refer = next(r for r in reversed(h.requests) if r.method == "REFER")
    via = refer.headers.get("Via")
    return (
        f"SIP/2.0 {status} Accepted\nVia: {via}\nFrom: {refer.headers.get('From')}\n"
        f"To: {refer.headers.get('To')}\nCall-ID: {refer.call_id}\n"
        f"CSeq: {refer.cseq.seq} REFER\nContent-Length: 0\n\n"
    )


def test_a_model_that_fails_during_a_transfer_leaves_the_call_to_it() -> None:
    """The model's connection dies while its transfer is under way: no failure message,
    no second transfer, no hangup; the transfer's outcome decides the call."""
    import asyncio

    agents, h, call, _model = wired(speech_wait=0)
    agents.tool(call, "transfer_call", "call_1", SUPPORT)
    assert refers(h) == 1
    loop = asyncio.new_event_loop()
    try:
        agents.loop = loop
        agents.config.agent_on_failure = "transfer"
        agents.config.transfer_to = "sip:human@127.0.0.1:6000"
        agents.status(call, "failed", "connection lost")
        pending = asyncio.all_tasks(loop)
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=30))
    finally:
        loop.close()
    assert call.state.value == "active" and refers(h) == 1
    assert not any(r.method == "BYE" for r in h.requests)
    assert notify(h, "refer", "SIP/2.0 200 OK", cseq=2) == 200
    assert call.transfers[0].status == "succeeded"


def test_the_tool_uses_the_targets_and_the_calls_timeouts() -> None:
    from tests.unit.callharness import app_call

    h, call = app_call()
    h.manager.accept(call.id, {"type": "realtime"}, {
        "refer_timeout": 9, "notify_timeout": 100,
        "transfer_targets": {"support": {"uri": "sip:support@127.0.0.1:5090",
                                         "notify_timeout": 50}}})
    h.send(ack(h.sent[-1].to.tag or ""))
    run = h.manager.run_transfer_tool(call.id, SUPPORT)
    assert run.started and run.job is not None
    timers = run.job.machine.timers
    # the target's over the call's over the config's
    assert (timers.refer_timeout, timers.notify_timeout) == (9.0, 50.0)
    assert run.job.mode == "blind" and refers(h) == 1
