"""The built-in transfer tool: an application declares where calls may be transferred
(`"sipbridge": {"transfer_targets": {"sales": "tel:+14155550123"}}` on accept), the model
gets a `transfer_call` function, and when the model calls it the gateway runs the
transfer itself and gives the outcome back as the function's output. A target may be an
object (`{"uri": ..., "mode": "warm", "brief": ..., "ring_timeout": ...}`, see
`calls.targets`): the transfer then has that mode, brief and timeouts.

In a warm transfer the model briefs the person and decides with `finish_transfer`
(`DECISION_TOOL`), which the gateway adds to the session while the person listens.

The model hears "failed" only from a final outcome: a call of the tool while a transfer
is under way starts nothing and is answered `in_progress` at once; the call that started
the transfer is answered when it ends."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sipbridge.calls.call import TransferJob
from sipbridge.calls.targets import TransferSpec, parse_target
from sipbridge.calls.transfer_machine import SUCCEEDED
from sipbridge.realtime.brief import DECISION_TOOL

TOOL_NAME = "transfer_call"
CONNECTED = "connected"  # a warm transfer's success
RETURNED = "returned"  # a warm transfer the person did not take: the caller is back


def target_spec(value: object) -> TransferSpec:
    """A declared target (checked when it was declared) as a TransferSpec."""
    return parse_target(value, "target", lambda uri: None)


def tool_definition(targets: Mapping[str, object]) -> dict[str, Any]:
    """The function tool the model sees (OpenAI Realtime `tools` entry)."""
    names = sorted(targets)
    warm = [name for name in names if target_spec(targets[name]).mode == "warm"]
    how = (f" Transfers to {', '.join(warm)} are warm: the caller waits on hold while you "
           "brief the person, and you hear whether they take the call." if warm else "")
    return {
        "type": "function",
        "name": TOOL_NAME,
        "description": (
            "Transfer the caller to a person. Call it when the caller asks for a human or "
            f"for one of: {', '.join(names)}. Tell the caller you are transferring them "
            f"first. The result says whether the transfer went through.{how}"
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "target": {"type": "string", "enum": names,
                           "description": "Who to transfer the caller to."},
                "reason": {"type": "string", "description": "Why, in a few words."},
            },
            "required": ["target"],
        },
    }


def decision_tool_definition() -> dict[str, Any]:
    """The tool of a warm transfer's briefing: the model says whether to connect."""
    return {
        "type": "function",
        "name": DECISION_TOOL,
        "description": (
            "You are briefing the person a caller is being transferred to. Once the person "
            "has answered, call it: connect true when they will take the call (the caller "
            "is put through), false when they will not (the caller comes back to you)."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "connect": {"type": "boolean",
                            "description": "Whether the person takes the call."},
                "reason": {"type": "string", "description": "Why, in a few words."},
            },
            "required": ["connect"],
        },
    }


def read_decision(arguments: str) -> tuple[bool, str] | None:
    """`finish_transfer`'s arguments as (connect, reason); None when they cannot be read."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return None
    if not isinstance(args, dict) or not isinstance(args.get("connect"), bool):
        return None
    reason = args.get("reason")
    return args["connect"], (reason.strip()[:200] if isinstance(reason, str)
                             and reason.strip() else
                             "the person took the call" if args["connect"]
                             else "the person could not take the call")


def decision_output(connect: bool, error: str = "") -> str:
    """`finish_transfer`'s output: what happens now."""
    if error:
        return json.dumps({"status": "error", "error": error,
                           "instructions": "The decision was not taken; say nothing more."})
    if connect:
        return json.dumps({"status": "connecting", "instructions":
                           "The caller is being put through to the person; say nothing more."})
    return json.dumps({"status": "returning", "instructions":
                       "The caller is coming back to you; the person's call ends."})


def pick_target(targets: Mapping[str, object],
                arguments: str) -> tuple[TransferSpec | None, str]:
    """The target the model's arguments name, or None and what is wrong with them."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return None, "the arguments are not JSON"
    name = args.get("target") if isinstance(args, dict) else None
    if not isinstance(name, str) or name not in targets:
        return None, f"unknown target {name!r}; choose one of {', '.join(sorted(targets))}"
    return target_spec(targets[name]), ""


IN_PROGRESS = "in_progress"


class Outcome(Protocol):
    """What the tool's output reads of a transfer (blind or warm)."""

    @property
    def id(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def sip_status(self) -> int | None: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def final(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class ToolRun:
    """What one call of the tool did: started `job` (`started`); found `job` already under
    way and started nothing; or found no transfer to start, for `problem`."""

    job: TransferJob | None
    started: bool = False
    problem: str = ""

    def output(self) -> str:
        """The function output to give at once, when no transfer was started (a started
        transfer's output waits for its outcome)."""
        if self.job is not None:
            return in_progress_output(self.job.machine)
        return tool_output(None, self.problem)


def in_progress_output(transfer: Outcome) -> str:
    """The output for a call of the tool while `transfer` is under way: not a failure."""
    return json.dumps({
        "transfer_id": transfer.id, "status": IN_PROGRESS, "target": transfer.target,
        "instructions": ("A transfer is already in progress; nothing new was started. Tell "
                         "the caller they are being transferred and to stay on the line. Do "
                         "not call transfer_call again; its outcome will follow."),
    })


def tool_output(transfer: Outcome | None, error: str = "") -> str:
    """The function call's output for the model: the outcome, and what to do about it."""
    if transfer is None:
        return json.dumps({"status": "error", "error": error,
                           "instructions": "Tell the caller the transfer could not be started."})
    if transfer.status in (SUCCEEDED, CONNECTED):
        advice = "The caller is now with the person; say nothing more."
    elif transfer.status == RETURNED:
        advice = ("The person could not take the call and the caller is back with you. Tell "
                  "the caller the person could not take the call, apologise, and offer to "
                  "help or to try again later.")
    elif transfer.final:
        advice = ("The transfer did not go through. Tell the caller, apologise, and offer to "
                  "help or to try again later.")
    else:
        advice = "The transfer is under way; the caller is waiting."
    return json.dumps({"transfer_id": transfer.id, "status": transfer.status,
                       "sip_status": transfer.sip_status, "reason": transfer.reason,
                       "target": transfer.target, "instructions": advice})
