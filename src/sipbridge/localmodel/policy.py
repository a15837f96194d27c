"""The local model's dialog policy: what to say, and which tool to call, for a transcript.

A policy is YAML (`DEFAULT_POLICY` is the built-in one):

```yaml
greeting: Hello, thanks for calling. How can I help you?   # the first response, no input
reprompt: Is there anything else I can help you with?      # later responses with no input
fallback: Sorry, I didn't catch that. ...                  # no intent matched
intents:                                 # tried in order; the first that matches answers
  - name: decline_transfer               # a warm transfer's briefed person says no
    phrases: [can't, cannot, "no", busy, not now, decline]
    reply: No problem, I'll tell them.
    tool: {name: finish_transfer, arguments: {connect: false, reason: the person declined}}
    skip_without_tool: true              # optional: not declared -> the next intent is tried
  - name: transfer
    phrases: [human, person, operator]   # case-insensitive
    match: word                          # "word" (default: whole words) or "substring"
    reply: Sure, I'll transfer you now.
    tool: {name: transfer_call, arguments: {target: human}}   # optional
    reply_without_tool: Sorry, I can't transfer calls.         # optional: tool not declared
tool_results:                            # the line after a function_call_output, by status
  succeeded: You're being transferred.
  pending: Please hold while I transfer you.
  failed: Sorry, the transfer didn't go through.
```

A tool is called only when the session declared a function tool of that name; an intent
with `skip_without_tool: true` is passed over when it is not declared (the built-in
policy's decisions of a warm transfer, `finish_transfer`, come first and count only while
the gateway has declared that tool, when the model briefs the person). An argument
whose value the tool's JSON schema does not allow (`enum`) takes the schema's first value
(the gateway's `transfer_call` lists the transfer targets it was given).

The briefing of a warm transfer does not go through the intents: a `response.create` whose
`response.instructions` are in one of the two forms `sipbridge.realtime.brief` writes says
the given text exactly, or sums up the caller's words ("I have a caller on the line. They
said: ... Can you take the call?").
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_POLICY = """\
greeting: Hello, thanks for calling. How can I help you?
reprompt: Is there anything else I can help you with?
fallback: >-
  Sorry, I can only tell you our opening hours or transfer you to a person.
  How can I help you?
intents:
  - name: decline_transfer
    phrases: [can't, cannot, can not, "no", busy, not now, decline]
    reply: No problem, I'll tell them.
    tool:
      name: finish_transfer
      arguments: {connect: false, reason: the person cannot take the call}
    skip_without_tool: true
  - name: accept_transfer
    phrases: [put them through, put him through, put her through, "yes", sure, okay, ok,
              connect]
    reply: Thanks, connecting you now.
    tool:
      name: finish_transfer
      arguments: {connect: true, reason: the person takes the call}
    skip_without_tool: true
  - name: transfer
    phrases: [human, humans, person, agent, agents, operator, representative, transfer,
              transferred]
    reply: Sure, I'll transfer you now.
    tool:
      name: transfer_call
      arguments: {target: human}
    reply_without_tool: Sorry, I can't transfer calls right now. How else can I help you?
  - name: hours
    phrases: [hours, open, opening, close, closing, closed]
    reply: We're open Monday to Friday, from nine in the morning to five in the evening.
tool_results:
  succeeded: You're being transferred.
  pending: Please hold while I transfer you.
  failed: Sorry, the transfer didn't go through. Is there anything else I can help you with?
"""

SUCCEEDED_STATUSES = frozenset({"succeeded", "success", "ok", "completed", "done"})
PENDING_STATUSES = frozenset({"requested", "sent", "accepted", "progress", "in_progress",
                              "pending", "ringing"})
"""Function output statuses read as success or as still under way; any other is a failure."""


class PolicyError(ValueError):
    """A policy file that cannot be used."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function call an intent makes."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Intent:
    """Phrases that select a reply, and possibly a tool call."""

    name: str
    phrases: tuple[str, ...]
    reply: str
    tool: ToolSpec | None = None
    match: Literal["word", "substring"] = "word"
    reply_without_tool: str | None = None
    skip_without_tool: bool = False

    def matches(self, transcript: str) -> bool:
        """Whether any phrase occurs in the transcript (case-insensitive)."""
        if self.match == "substring":
            text = transcript.casefold()
            return any(phrase.casefold() in text for phrase in self.phrases)
        words = f" {_words(transcript)} "
        return any(f" {_words(phrase)} " in words for phrase in self.phrases if _words(phrase))


@dataclass(frozen=True, slots=True)
class Reply:
    """What the model says, and the function call it makes: (name, arguments as JSON)."""

    text: str
    tool_call: tuple[str, str] | None = None
    intent: str | None = None


def _words(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+(?:'[^\W_]+)*", text.casefold()))


def _text(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(f"policy: '{key}' must be a non-empty string")
    return value.strip()


def _function_tools(tools: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {
        str(tool["name"]): tool
        for tool in tools
        if isinstance(tool, Mapping) and tool.get("type", "function") == "function"
        and isinstance(tool.get("name"), str)
    }


def fit_arguments(arguments: Mapping[str, Any], tool: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments, each value the tool's schema restricts to an `enum` it does not
    contain replaced by the enum's first value."""
    parameters = tool.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    fitted = dict(arguments)
    if not isinstance(properties, Mapping):
        return fitted
    for key, value in arguments.items():
        schema = properties.get(key)
        enum = schema.get("enum") if isinstance(schema, Mapping) else None
        if isinstance(enum, list) and enum and value not in enum:
            fitted[key] = enum[0]
    return fitted


class Policy:
    """A dialog policy (see the module docstring for its YAML)."""

    def __init__(
        self,
        greeting: str,
        fallback: str,
        intents: Sequence[Intent] = (),
        *,
        reprompt: str | None = None,
        tool_results: Mapping[str, str] | None = None,
    ) -> None:
        self.greeting = greeting
        self.fallback = fallback
        self.intents = tuple(intents)
        self.reprompt = reprompt or greeting
        results = {"succeeded": "Done.", "pending": "One moment, please.",
                   "failed": "Sorry, that didn't work."}
        results.update(tool_results or {})
        self.tool_results = results

    @classmethod
    def load(cls, path: str | Path | None = None) -> Policy:
        """The policy in a YAML file, or the built-in one when `path` is None."""
        if path is None:
            return cls.from_yaml(DEFAULT_POLICY)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"policy: cannot read {path}: {exc}") from exc
        return cls.from_yaml(text)

    @classmethod
    def from_yaml(cls, text: str) -> Policy:
        """A policy from YAML text. Raises PolicyError."""
        try:
            yaml = importlib.import_module("yaml")
        except ImportError as exc:
            raise PolicyError("policy: PyYAML is not installed (pip install pyyaml)") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"policy: not valid YAML: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Policy:
        """A policy from its parsed form. Raises PolicyError."""
        if not isinstance(data, Mapping):
            raise PolicyError("policy: the document must be a mapping")
        unknown = set(data) - {"greeting", "reprompt", "fallback", "intents", "tool_results"}
        if unknown:
            raise PolicyError(f"policy: unknown keys {sorted(map(str, unknown))}")
        raw_intents = data.get("intents") or []
        if not isinstance(raw_intents, list):
            raise PolicyError("policy: 'intents' must be a list")
        results = data.get("tool_results") or {}
        if not isinstance(results, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in results.items()
        ):
            raise PolicyError("policy: 'tool_results' must map statuses to strings")
        return cls(
            _text(data, "greeting"),
            _text(data, "fallback"),
            [_intent(raw, i) for i, raw in enumerate(raw_intents)],
            reprompt=_text(data, "reprompt") if data.get("reprompt") is not None else None,
            tool_results=dict(results),
        )

    def respond(self, transcript: str | None, tools: Sequence[Mapping[str, Any]] = ()) -> Reply:
        """The reply to what the caller said; the greeting when there is no input (None).

        `tools` are the session's tools (OpenAI `tools` entries): a tool is called only when
        declared there."""
        if transcript is None:
            return Reply(self.greeting)
        declared = _function_tools(tools)
        for intent in self.intents:
            if not intent.matches(transcript):
                continue
            if intent.tool is None:
                return Reply(intent.reply, None, intent.name)
            tool = declared.get(intent.tool.name)
            if tool is None and intent.skip_without_tool:
                continue
            if tool is None:
                return Reply(intent.reply_without_tool or self.fallback, None, intent.name)
            arguments = fit_arguments(intent.tool.arguments, tool)
            return Reply(intent.reply, (intent.tool.name, json.dumps(arguments)), intent.name)
        return Reply(self.fallback)

    def after_tool(self, name: str, output: str) -> Reply:
        """What to say once a function's output is back: by the `status` in the output
        (JSON), one of `tool_results` succeeded, pending or failed."""
        return Reply(self.tool_results[tool_outcome(output)], None, f"{name}:result")


def tool_outcome(output: str) -> Literal["succeeded", "pending", "failed"]:
    """A function output read as succeeded, pending or failed: its JSON `status` (or
    `error`); output that is not JSON counts as succeeded unless it says it failed."""
    try:
        data = json.loads(output)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        status = data.get("status")
        if isinstance(status, str):
            key = status.strip().lower()
            if key in SUCCEEDED_STATUSES:
                return "succeeded"
            return "pending" if key in PENDING_STATUSES else "failed"
        if data.get("error") or data.get("success") is False or data.get("ok") is False:
            return "failed"
        return "succeeded"
    failed = re.search(r"\b(error|fail(ed|ure)?)\b", output, re.IGNORECASE)
    return "failed" if failed else "succeeded"


def _intent(raw: Any, index: int) -> Intent:
    where = f"intents[{index}]"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"policy: {where} must be a mapping")
    unknown = set(raw) - {"name", "phrases", "reply", "tool", "match", "reply_without_tool",
                          "skip_without_tool"}
    if unknown:
        raise PolicyError(f"policy: {where} has unknown keys {sorted(map(str, unknown))}")
    phrases = raw.get("phrases")
    if isinstance(phrases, str):
        phrases = [phrases]
    if not isinstance(phrases, list) or not phrases or not all(
        isinstance(p, str) and p.strip() for p in phrases
    ):
        raise PolicyError(f"policy: {where}.phrases must be a non-empty list of strings")
    match = raw.get("match", "word")
    if match not in ("word", "substring"):
        raise PolicyError(f"policy: {where}.match must be 'word' or 'substring'")
    tool = raw.get("tool")
    spec: ToolSpec | None = None
    if tool is not None:
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            raise PolicyError(f"policy: {where}.tool must be a mapping with a 'name'")
        arguments = tool.get("arguments") or {}
        if not isinstance(arguments, Mapping):
            raise PolicyError(f"policy: {where}.tool.arguments must be a mapping")
        spec = ToolSpec(tool["name"], dict(arguments))
    without = raw.get("reply_without_tool")
    if without is not None and not isinstance(without, str):
        raise PolicyError(f"policy: {where}.reply_without_tool must be a string")
    skip = raw.get("skip_without_tool", False)
    if not isinstance(skip, bool) or (skip and spec is None):
        raise PolicyError(f"policy: {where}.skip_without_tool must be true or false, and "
                          "true only with a tool")
    name = raw.get("name", f"intent{index}")
    return Intent(
        name=str(name),
        phrases=tuple(p.strip() for p in phrases),
        reply=_text(raw, "reply"),
        tool=spec,
        match=match,
        reply_without_tool=without,
        skip_without_tool=skip,
    )
