"""The local model in a warm transfer, over a real WebSocket as the gateway drives it: the
brief said as given or summed up from the caller's words, the person's answer turned into
`finish_transfer` while the gateway declares it, and the caller's own "no" left alone
once it is gone. Text output, so no speech synthesis is needed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sipbridge.calls.tool import decision_tool_definition, tool_definition
from sipbridge.realtime.brief import brief_instructions
from tests.integration.test_localmodel import Client, arun, connect, local_model

pytestmark = pytest.mark.integration
pytest.importorskip("yaml")

TRANSFER = tool_definition({"human": {"uri": "tel:+14155550123", "mode": "warm"}})


def said(events: list[dict[str, Any]]) -> str:
    return str(next(e for e in events if e["type"] == "response.output_text.done")["text"])


def decided(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    if not done:
        return None
    assert done[0]["name"] == "finish_transfer"
    arguments: dict[str, Any] = json.loads(done[0]["arguments"])
    return arguments


async def text(client: Client, role: str, words: str) -> None:
    kind = "input_text"
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": role, "content": [{"type": kind, "text": words}]}})
    await client.until("conversation.item.done")


async def respond(client: Client, **params: Any) -> list[dict[str, Any]]:
    await client.send({"type": "response.create", **({"response": params} if params else {})})
    return await client.until("response.done")


async def tools(client: Client, *declared: dict[str, Any]) -> None:
    await client.send({"type": "session.update",
                       "session": {"type": "realtime", "tools": list(declared)}})
    await client.until("session.updated")


def test_the_person_is_briefed_and_decides() -> None:
    async def main() -> None:
        async with local_model() as server, connect(server) as client:
            await client.send({"type": "session.update", "session": {
                "type": "realtime", "output_modalities": ["text"], "tools": [TRANSFER],
                "audio": {"input": {"turn_detection": None}}}})
            await client.until("session.updated")
            await text(client, "user", "Hello. Can you please transfer me to a human?")
            events = await respond(client)
            assert "transfer" in said(events)
            # briefing: the decision tool declared, the brief asked for
            await tools(client, TRANSFER, decision_tool_definition())
            await text(client, "system", "You now speak with the person.")
            events = await respond(client, instructions=brief_instructions("summary"))
            assert said(events) == ("I have a caller on the line. They said: Hello. Can you "
                                    "please transfer me to a human? Can you take the call?")
            assert decided(events) is None
            await text(client, "user", "I can't take it right now.")
            events = await respond(client)
            assert said(events) == "No problem, I'll tell them."
            assert decided(events) == {"connect": False,
                                       "reason": "the person cannot take the call"}
            await text(client, "user", "Yes, put them through.")
            events = await respond(client)
            assert said(events) == "Thanks, connecting you now."
            assert decided(events) == {"connect": True, "reason": "the person takes the call"}
            # a text brief is said as it is
            events = await respond(client, instructions=brief_instructions(
                "Sam Lee, about invoice 42."))
            assert said(events) == "Sam Lee, about invoice 42."
            # back with the caller: the decision tool is gone, a "no" is the caller's own
            await tools(client, TRANSFER)
            await text(client, "user", "No, thank you.")
            events = await respond(client)
            assert decided(events) is None
            assert said(events) != "No problem, I'll tell them."

    arun(main)
