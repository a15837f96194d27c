"""The local model's dialog policy: intents, tool calls only when declared, tool results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sipbridge.calls.tool import tool_definition
from sipbridge.localmodel.policy import (
    Policy,
    PolicyError,
    Reply,
    fit_arguments,
    tool_outcome,
)

pytest.importorskip("yaml", reason="PyYAML is not installed (pip install 'sipbridge[agent]')")


def transfer_tool(*targets: str) -> dict[str, Any]:
    """The tool the gateway declares (`sipbridge.calls.tool`)."""
    return tool_definition({name: f"tel:+1555000{i:04d}" for i, name in enumerate(targets)})


@pytest.fixture
def policy() -> Policy:
    return Policy.load()


def test_default_policy_greets_and_answers_hours(policy: Policy) -> None:
    assert policy.respond(None) == Reply("Hello, thanks for calling. How can I help you?")
    for said in ("What are your opening hours?", "WHEN ARE YOU OPEN", "hours please"):
        reply = policy.respond(said, [transfer_tool("human")])
        assert reply.intent == "hours" and reply.tool_call is None
        assert "Monday to Friday" in reply.text


@pytest.mark.parametrize("said", [
    "Hello, can you please transfer me to a human?",
    "I want to talk to a real person.",
    "Agent!", "operator", "Get me a representative, please.",
])
def test_default_policy_transfers_when_the_tool_is_declared(policy: Policy, said: str) -> None:
    reply = policy.respond(said, [transfer_tool("human", "sales")])
    assert reply.text == "Sure, I'll transfer you now."
    assert reply.tool_call == ("transfer_call", json.dumps({"target": "human"}))


def test_no_tool_call_unless_declared(policy: Policy) -> None:
    said = "Transfer me to a human."
    for tools in ([], [{"type": "function", "name": "other_tool"}],
                  [{"type": "mcp", "name": "transfer_call", "server_label": "x"}]):
        reply = policy.respond(said, tools)
        assert reply.tool_call is None
        assert "can't transfer" in reply.text


def test_a_target_the_tool_does_not_offer_becomes_its_first(policy: Policy) -> None:
    reply = policy.respond("Let me speak to a person", [transfer_tool("support", "billing")])
    assert reply.tool_call is not None
    assert json.loads(reply.tool_call[1]) == {"target": "billing"}  # sorted: billing first
    assert fit_arguments({"target": "x", "n": 1}, {"parameters": {"properties": {
        "target": {"enum": ["a", "b"]}, "n": {"type": "integer"}}}}) == {"target": "a", "n": 1}
    assert fit_arguments({"target": "x"}, {}) == {"target": "x"}


def test_fallback_and_word_matching(policy: Policy) -> None:
    assert policy.respond("", []).text == policy.fallback
    assert policy.respond("I'd like a pizza", []).text == policy.fallback
    # whole words: "personal" is not "person", "agenda" not "agent"
    assert policy.respond("my personal agenda", [transfer_tool("human")]).tool_call is None


def test_custom_policy_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "greeting: Acme, hi.\n"
        "fallback: Say that again?\n"
        "intents:\n"
        "  - name: refund\n"
        "    phrases: [refund, money back]\n"
        "    reply: Refunds take five days.\n"
        "  - name: billing\n"
        "    match: substring\n"
        "    phrases: [BILL]\n"
        "    reply: Let me get billing.\n"
        "    tool: {name: transfer_call, arguments: {target: billing, reason: bills}}\n"
        "tool_results: {succeeded: Connected., failed: No luck.}\n",
        encoding="utf-8",
    )
    policy = Policy.load(path)
    assert policy.respond(None).text == "Acme, hi."
    assert policy.respond("can I get my Money Back?").intent == "refund"
    reply = policy.respond("a question about my billing", [transfer_tool("billing", "human")])
    assert reply.tool_call == ("transfer_call",
                               json.dumps({"target": "billing", "reason": "bills"}))
    assert policy.respond("something else").text == "Say that again?"
    assert policy.reprompt == "Acme, hi."  # none given: the greeting
    assert policy.after_tool("transfer_call", '{"status": "succeeded"}').text == "Connected."
    assert policy.after_tool("transfer_call", '{"status": "busy"}').text == "No luck."
    assert policy.after_tool("transfer_call", '{"status": "progress"}').text == (
        "One moment, please.")  # not given: the built-in default


def test_tool_results_by_status(policy: Policy) -> None:
    assert policy.after_tool("transfer_call", json.dumps({"status": "succeeded"})).text == (
        "You're being transferred.")
    for status in ("failed", "rejected", "timed_out", "cancelled", "error"):
        text = policy.after_tool("transfer_call", json.dumps({"status": status})).text
        assert text.startswith("Sorry, the transfer didn't go through"), status
    assert tool_outcome(json.dumps({"status": "accepted"})) == "pending"
    assert tool_outcome("not json, but it failed") == "failed"
    assert tool_outcome("42") == "succeeded"
    assert tool_outcome(json.dumps({"error": "boom"})) == "failed"


@pytest.mark.parametrize("text, problem", [
    ("- a list", "must be a mapping"),
    ("greeting: hi\n", "'fallback'"),
    ("greeting: hi\nfallback: x\nextra: 1\n", "unknown keys"),
    ("greeting: hi\nfallback: x\nintents: [{reply: x}]\n", "phrases"),
    ("greeting: hi\nfallback: x\nintents: [{phrases: [a], reply: x, match: regex}]\n", "match"),
    ("greeting: hi\nfallback: x\nintents: [{phrases: [a], reply: x, tool: {args: 1}}]\n",
     "tool"),
    ("greeting: [unclosed\n", "not valid YAML"),
    ("greeting: hi\nfallback: x\nintents: [{phrases: [a], reply: x, skip_without_tool: "
     "true}]\n", "skip_without_tool"),
    ("greeting: hi\nfallback: x\nintents: [{phrases: [a], reply: x, tool: {name: t}, "
     "skip_without_tool: maybe}]\n", "skip_without_tool"),
])
def test_bad_policies_are_refused(text: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        Policy.from_yaml(text)


def test_missing_file() -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load("/nonexistent/policy.yaml")


DECISION = {"type": "function", "name": "finish_transfer",
            "parameters": {"type": "object", "properties": {
                "connect": {"type": "boolean"}, "reason": {"type": "string"}}}}


@pytest.mark.parametrize(("said", "connect"), [
    ("Yes, put them through.", True),
    ("Sure.", True),
    ("Okay, connect them.", True),
    ("Put her through please", True),
    ("I can't take it right now.", False),
    ("No, I'm busy.", False),
    ("Not now, sorry.", False),
    ("I cannot, I decline.", False),
    ("Yes, but not now.", False),  # a refusal wins
])
def test_a_briefed_person_decides(policy: Policy, said: str, connect: bool) -> None:
    reply = policy.respond(said, [transfer_tool("human"), DECISION])
    assert reply.tool_call is not None
    name, arguments = reply.tool_call
    assert name == "finish_transfer" and json.loads(arguments)["connect"] is connect
    assert reply.text == ("Thanks, connecting you now." if connect
                          else "No problem, I'll tell them.")


@pytest.mark.parametrize("said", ["Yes, a person please.", "No, I want a human."])
def test_decisions_count_only_while_the_tool_is_declared(policy: Policy, said: str) -> None:
    reply = policy.respond(said, [transfer_tool("human")])
    assert reply.tool_call is not None and reply.tool_call[0] == "transfer_call"
    reply = policy.respond("No thanks.", [transfer_tool("human")])
    assert reply.tool_call is None and reply.text == policy.fallback  # not "I can't"


def test_skip_without_tool_tries_the_next_intent() -> None:
    custom = Policy.from_yaml(
        "greeting: hi\nfallback: what?\nintents:\n"
        "  - {phrases: [sure], reply: ok, tool: {name: t}, skip_without_tool: true}\n"
        "  - {phrases: [sure], reply: plain yes}\n")
    assert custom.respond("sure").text == "plain yes"
    reply = custom.respond("sure", [{"type": "function", "name": "t"}])
    assert reply.text == "ok" and reply.tool_call == ("t", "{}")
