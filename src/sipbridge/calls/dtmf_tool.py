"""The built-in `send_dtmf` tool: with `"sipbridge": {"send_dtmf": true}` on accept the
model gets a function that presses keys on the call, so an agent can walk a phone menu.
When the model calls it the gateway sends the digits (the call's DTMF method) and gives
the model the function output once they are sent, or at once when they cannot be."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sipbridge.calls.call import CallError, DtmfSend

TOOL_NAME = "send_dtmf"
OPTION = "send_dtmf"  # accept's `sipbridge` key that offers the tool


def tool_definition() -> dict[str, Any]:
    """The function tool the model sees (OpenAI Realtime `tools` entry)."""
    return {
        "type": "function",
        "name": TOOL_NAME,
        "description": (
            "Press keys on the phone keypad of this call (DTMF), e.g. to choose an option "
            "in an automated phone menu or to enter a number. The result says when the "
            "keys have been sent."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "digits": {"type": "string", "pattern": "^[0-9*#A-Da-d]{1,64}$",
                           "description": "The keys to press, in order: 0-9, * and #."},
            },
            "required": ["digits"],
        },
    }


def output(send: DtmfSend | None, error: str = "") -> str:
    """The function output: sent, or the error and why."""
    if send is None or send.status == "failed":
        why = error or (send.reason if send is not None else "") or "unknown"
        return json.dumps({"status": "error", "error": why,
                           "instructions": "The keys were not sent. Do not assume the menu "
                                           "moved on."})
    return json.dumps({"status": "sent", "digits": send.digits, "method": send.method})


Sender = Callable[..., DtmfSend]


def run(send_dtmf: Sender, call_id: str, arguments: str,
        reply: Callable[[str], None]) -> DtmfSend | None:
    """Send what the model's `arguments` name with `send_dtmf` (CallManager.send_dtmf);
    `reply` gets the function output once the digits are sent, or at once with the error
    when nothing can be sent."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        reply(output(None, "the arguments are not JSON"))
        return None
    digits = args.get("digits") if isinstance(args, dict) else None
    if not isinstance(digits, str):
        reply(output(None, "give the keys to press as a string in 'digits'"))
        return None
    try:
        return send_dtmf(call_id, digits, requested_by="agent",
                         on_done=lambda send: reply(output(send)))
    except ValueError as exc:
        reply(output(None, str(exc)))
    except CallError as exc:
        reply(output(None, exc.message))
    return None
