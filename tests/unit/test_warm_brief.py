"""The pieces of a warm transfer's briefing on both sides of the Realtime protocol: the
instructions the gateway writes and the local model reads, the summary the local model
makes of the caller's words, and the decision tool's arguments and output."""

from __future__ import annotations

import json

import pytest

from sipbridge.calls.tool import (
    decision_output,
    decision_tool_definition,
    pick_target,
    read_decision,
    tool_definition,
    tool_output,
)
from sipbridge.calls.transfer_machine import Transfer
from sipbridge.localmodel.conversation import Conversation, summary
from sipbridge.realtime.brief import DECISION_TOOL, brief_instructions, read_brief


@pytest.mark.parametrize(("brief", "read"), [
    (None, ("summary", "")),
    ("summary", ("summary", "")),
    ("Sam calls about invoice 42.", ("say", "Sam calls about invoice 42.")),
    ('He said "hello" twice.', ("say", 'He said "hello" twice.')),
])
def test_brief_instructions_read_back(brief: str | None, read: tuple[str, str]) -> None:
    text = brief_instructions(brief)
    assert read_brief(text) == read
    assert text.endswith("and the reason in a few words.") and DECISION_TOOL in text


@pytest.mark.parametrize("other", [None, 3, "", "Be brief.", "Say exactly this: hi"])
def test_other_instructions_are_not_a_brief(other: object) -> None:
    assert read_brief(other) is None


def user(conversation: Conversation, text: str, role: str = "user") -> None:
    conversation.insert({"id": f"item_{len(conversation.items)}", "type": "message",
                         "role": role, "content": [{"type": "input_audio",
                                                    "transcript": text}]})


def test_the_summary_is_the_callers_words() -> None:
    conversation = Conversation()
    user(conversation, "Hello. Can you please transfer me to a human?")
    user(conversation, "Hello, thanks for calling.", role="assistant")
    user(conversation, "It is about my invoice.")
    reply = conversation.brief("summary", "")
    assert reply.text == ("I have a caller on the line. They said: Hello. Can you please "
                          "transfer me to a human? It is about my invoice. Can you take the "
                          "call?")
    assert reply.tool_call is None
    assert conversation.brief("say", "Sam, invoice 42.").text == "Sam, invoice 42."
    assert summary([]) == "I have a caller on the line. Can you take the call?"
    long = summary(["word"] * 500)
    assert long.count("word") == 60  # the caller's last words only


def test_the_brief_answers_what_came_before() -> None:
    from sipbridge.localmodel.policy import Policy

    pytest.importorskip("yaml")
    conversation = Conversation()
    user(conversation, "Transfer me to a human please")
    conversation.brief("summary", "")
    # nothing new since the brief: the next response is the reprompt, not a new transfer
    policy = Policy.load()
    assert conversation.decide(policy, [], greeted=True).text == policy.reprompt
    user(conversation, "Yes, put them through.")
    reply = conversation.decide(policy, [decision_tool_definition()], greeted=True)
    assert reply.tool_call is not None and reply.tool_call[0] == DECISION_TOOL


@pytest.mark.parametrize(("arguments", "read"), [
    ('{"connect": true, "reason": " free "}', (True, "free")),
    ('{"connect": false}', (False, "the person could not take the call")),
    ('{"connect": true, "reason": ""}', (True, "the person took the call")),
    ('{"connect": 1}', None),
    ("[]", None),
    ("{", None),
])
def test_read_decision(arguments: str, read: tuple[bool, str] | None) -> None:
    assert read_decision(arguments) == read


def test_decision_tool_and_outputs() -> None:
    tool = decision_tool_definition()
    assert tool["name"] == "finish_transfer"
    assert tool["parameters"]["properties"]["connect"] == {
        "type": "boolean", "description": "Whether the person takes the call."}
    assert json.loads(decision_output(True))["status"] == "connecting"
    assert json.loads(decision_output(False))["status"] == "returning"
    assert json.loads(decision_output(True, "late"))["error"] == "late"


def test_targets_with_a_mode() -> None:
    targets = {"sales": "tel:+14155550123",
               "support": {"uri": "sip:s@127.0.0.1", "mode": "warm", "ring_timeout": 20}}
    description = tool_definition(targets)["description"]
    assert "Transfers to support are warm: the caller waits on hold" in description
    assert "are warm" not in tool_definition({"sales": "tel:+14155550123"})["description"]
    spec, problem = pick_target(targets, '{"target": "support"}')
    assert spec is not None and not problem
    assert (spec.uri, spec.mode, spec.brief, dict(spec.timeouts)) == (
        "sip:s@127.0.0.1", "warm", "summary", {"ring_timeout": 20.0})
    spec, _ = pick_target(targets, '{"target": "sales"}')
    assert spec is not None and (spec.uri, spec.mode) == ("tel:+14155550123", "blind")


def test_a_returned_transfer_tells_the_model_why() -> None:
    transfer = Transfer("xfer_1", "sip:s@127.0.0.1", 0.0)
    transfer.status, transfer.final, transfer.reason = "returned", True, "busy: Busy Here"
    output = json.loads(tool_output(transfer))
    assert output["status"] == "returned" and output["reason"] == "busy: Busy Here"
    assert output["instructions"].startswith("The person could not take the call")
    transfer.status = "connected"
    assert "say nothing more" in json.loads(tool_output(transfer))["instructions"]
