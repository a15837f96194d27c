"""The conversation of a local model session: its items in order, which of them the last
response answered, the reply the policy gives to what came since, the items a client adds,
and the transcripts of the caller's audio."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from sipbridge.localmodel.policy import Policy, Reply
from sipbridge.localmodel.stt import Transcriber
from sipbridge.media.resample import MODEL_RATE
from sipbridge.realtime.errors import RealtimeError, wrong_type
from sipbridge.realtime.events import base64_field, string_field
from sipbridge.realtime.ids import new_id

log = logging.getLogger("sipbridge.localmodel")


class Conversation:
    """The items (messages, function calls and their outputs) by id, oldest first."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        self._answered_seq = -1

    def last_id(self) -> str | None:
        """The newest item's id, or None."""
        return next(reversed(self.items), None)

    def insert(self, item: dict[str, Any]) -> str | None:
        """Append `item`; the id of the item before it (or None)."""
        previous = self.last_id()
        self.items[item["id"]] = item
        self._seq[item["id"]] = self._next_seq
        self._next_seq += 1
        return previous

    def named(self, event: dict[str, Any]) -> dict[str, Any]:
        """The item a client event names by `item_id`."""
        item_id = string_field(event, "item_id", "item_id")
        item = self.items.get(item_id)
        if item is None:
            raise RealtimeError(f"Item with item_id '{item_id}' not found.", param="item_id",
                                code="item_not_found")
        return item

    def caller_said(self) -> list[str]:
        """The caller's words so far: the user messages' texts and transcripts, in order."""
        return [text for item in self.items.values()
                if item["type"] == "message" and item.get("role") == "user"
                and (text := _said(item))]

    def brief(self, form: str, text: str) -> Reply:
        """The reply that briefs a warm transfer's person: `text` ("say") or a summary of
        what the caller said ("summary"); what came before counts as answered."""
        said = text if form == "say" else summary(self.caller_said())
        self._answered_seq = self._next_seq - 1
        return Reply(said, None, f"brief:{form}")

    def decide(self, policy: Policy, tools: list[dict[str, Any]], *, greeted: bool) -> Reply:
        """The reply to the newest input since the last response (the greeting if none came
        and none was said yet, else the reprompt); that input counts as answered."""
        fresh = [item for item in self.items.values()
                 if self._seq.get(item["id"], -1) > self._answered_seq]
        self._answered_seq = self._next_seq - 1
        for item in reversed(fresh):
            if item["type"] == "function_call_output":
                name = next((i["name"] for i in self.items.values()
                             if i["type"] == "function_call" and i["call_id"] == item["call_id"]),
                            "")
                return policy.after_tool(name, item["output"])
            if item["type"] == "message" and item.get("role") == "user":
                return policy.respond(_said(item), tools)
        if not greeted:
            return policy.respond(None, tools)
        return Reply(policy.reprompt)


SUMMARY_WORDS = 60  # of the caller's words at most in a summary


def _said(item: dict[str, Any]) -> str:
    """A user message's words: its texts and transcripts."""
    return " ".join(str(part.get("text") or part.get("transcript") or "")
                    for part in item["content"]).strip()


def summary(said: list[str]) -> str:
    """A brief for the person a warm transfer reached, from what the caller said."""
    words = " ".join(said).split()
    if not words:
        return "I have a caller on the line. Can you take the call?"
    text = " ".join(words[-SUMMARY_WORDS:]).rstrip(",;: ")
    end = "" if text.endswith((".", "!", "?")) else "."
    return f"I have a caller on the line. They said: {text}{end} Can you take the call?"


def check_item(
    raw: dict[str, Any], decode_input: Callable[[bytes], np.ndarray]
) -> tuple[dict[str, Any], tuple[np.ndarray, int] | None]:
    """A client's item (`conversation.item.create`) as stored (and echoed), and the input
    audio to transcribe with its content index (the first audio part only), decoded by
    `decode_input`."""
    kind = string_field(raw, "type", "item.type")
    item_id = raw.get("id")
    if item_id is not None and not isinstance(item_id, str):
        raise wrong_type("item.id", "a string", item_id)
    item: dict[str, Any] = {"id": item_id or new_id("item"), "object": "realtime.item",
                            "type": kind, "status": "completed"}
    audio: tuple[np.ndarray, int] | None = None
    if kind == "message":
        role = string_field(raw, "role", "item.role")
        allowed = {"user": ("input_text", "input_audio", "input_image"),
                   "assistant": ("output_text", "output_audio"),
                   "system": ("input_text",)}.get(role)
        if allowed is None:
            raise RealtimeError(f"Invalid value: '{role[:100]}'. Supported values are: "
                                "'user', 'assistant', and 'system'.", param="item.role",
                                code="invalid_value")
        content = raw.get("content")
        if not isinstance(content, list):
            raise wrong_type("item.content", "an array", content)
        parts = []
        for i, part in enumerate(content):
            where = f"item.content[{i}]"
            if not isinstance(part, dict):
                raise wrong_type(where, "an object", part)
            ptype = string_field(part, "type", f"{where}.type")
            if ptype not in allowed:
                raise RealtimeError(f"Invalid value: '{ptype[:100]}'. Supported values "
                                    f"for a {role} message are: "
                                    f"{', '.join(repr(a) for a in allowed)}.",
                                    param=f"{where}.type", code="invalid_value")
            kept = {k: v for k, v in part.items()
                    if k in ("type", "text", "transcript", "image_url", "detail")}
            if (ptype == "input_audio" and audio is None
                    and isinstance(part.get("audio"), str)):
                audio = (decode_input(base64_field(part["audio"], f"{where}.audio")), i)
                kept.setdefault("transcript", None)
            parts.append(kept)
        item.update(role=role, content=parts)
    elif kind == "function_call_output":
        item.update(call_id=string_field(raw, "call_id", "item.call_id"),
                    output=string_field(raw, "output", "item.output"))
    elif kind == "function_call":
        item.update(name=string_field(raw, "name", "item.name"),
                    arguments=string_field(raw, "arguments", "item.arguments"),
                    call_id=raw.get("call_id") if isinstance(raw.get("call_id"), str)
                    else new_id("call"))
    else:
        raise RealtimeError(f"Invalid value: '{kind[:100]}'. Supported values are: "
                            "'message', 'function_call', and 'function_call_output'.",
                            param="item.type", code="invalid_value")
    return item, audio


async def transcribe(
    transcriber: Transcriber, item: dict[str, Any], pcm: np.ndarray, index: int = 0,
    made: Awaitable[str] | None = None,
) -> dict[str, Any]:
    """Transcribe the audio of `item`'s content part `index` into its transcript; the server
    event that reports it (completed, or failed with why). `made`: a transcription of that
    audio already under way (or done), taken instead of a new one."""
    content = item["content"][index]
    problem, code = transcriber.reason, "transcription_unavailable"
    text = ""
    if not problem:
        started = time.perf_counter()
        try:
            text = await (made if made is not None
                          else asyncio.to_thread(transcriber.transcribe, pcm))
        except Exception as exc:  # noqa: BLE001 - reported to the client, as OpenAI does
            log.warning("local model: transcription failed: %s", exc)
            problem, code = f"{type(exc).__name__}: {exc}", "transcription_failed"
        log.debug("local model: %.2f s of audio transcribed in %.2f s: %r",
                  len(pcm) / MODEL_RATE, time.perf_counter() - started, text)
    content["transcript"] = text
    if problem:
        return {
            "type": "conversation.item.input_audio_transcription.failed",
            "item_id": item["id"], "content_index": index,
            "error": {"type": "transcription_error", "code": code,
                      "message": ("Speech to text failed: " if code == "transcription_failed"
                                  else "Speech to text is unavailable: ") + f"{problem}. "
                                 "The local model answers with its fallback.",
                      "param": None},
        }
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": item["id"], "content_index": index, "transcript": text,
        "usage": {"type": "duration", "seconds": round(len(pcm) / MODEL_RATE, 3)},
    }
