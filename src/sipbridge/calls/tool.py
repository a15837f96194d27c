"""The built-in transfer tool: an application declares where calls may be transferred
(`"sipbridge": {"transfer_targets": {"sales": "tel:+14155550123"}}` on accept), the model
gets a `transfer_call` function, and when the model calls it the gateway runs the
transfer itself and gives the outcome back as the function's output.

The model hears "failed" only from a final outcome: a call of the tool while a transfer
is under way starts nothing and is answered `in_progress` at once; the call that started
the transfer is answered when it ends."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sipbridge.calls.call import TransferJob
from sipbridge.calls.transfer_machine import SUCCEEDED, Transfer
from sipbridge.calls.warm import WarmTransfer

TOOL_NAME = "transfer_call"


def tool_definition(targets: Mapping[str, str]) -> dict[str, Any]:
    """The function tool the model sees (OpenAI Realtime `tools` entry)."""
    names = sorted(targets)
    return {
        "type": "function",
        "name": TOOL_NAME,
        "description": (
            "Transfer the caller to a person. Call it when the caller asks for a human or "
            f"for one of: {', '.join(names)}. Tell the caller you are transferring them "
            "first. The result says whether the transfer went through."
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


def pick_target(targets: Mapping[str, str], arguments: str) -> tuple[str | None, str]:
    """The URI the model's arguments name, or None and what is wrong with them."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return None, "the arguments are not JSON"
    name = args.get("target") if isinstance(args, dict) else None
    if not isinstance(name, str) or name not in targets:
        return None, f"unknown target {name!r}; choose one of {', '.join(sorted(targets))}"
    return targets[name], ""


IN_PROGRESS = "in_progress"


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


def in_progress_output(transfer: Transfer | WarmTransfer) -> str:
    """The output for a call of the tool while `transfer` is under way: not a failure."""
    return json.dumps({
        "transfer_id": transfer.id, "status": IN_PROGRESS, "target": transfer.target,
        "instructions": ("A transfer is already in progress; nothing new was started. Tell "
                         "the caller they are being transferred and to stay on the line. Do "
                         "not call transfer_call again; its outcome will follow."),
    })


def tool_output(transfer: Transfer | WarmTransfer | None, error: str = "") -> str:
    """The function call's output for the model: the outcome, and what to do about it."""
    if transfer is None:
        return json.dumps({"status": "error", "error": error,
                           "instructions": "Tell the caller the transfer could not be started."})
    if transfer.status == SUCCEEDED:
        advice = "The caller is now with the person; say nothing more."
    elif transfer.final:
        advice = ("The transfer did not go through. Tell the caller, apologise, and offer to "
                  "help or to try again later.")
    else:
        advice = "The transfer is under way; the caller is waiting."
    return json.dumps({"transfer_id": transfer.id, "status": transfer.status,
                       "sip_status": transfer.sip_status, "reason": transfer.reason,
                       "target": transfer.target, "instructions": advice})
