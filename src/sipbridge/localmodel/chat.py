"""A dialog policy backed by an OpenAI-compatible chat-completions endpoint (a local
llama.cpp or Ollama server, say): the caller's words go to the LLM with the history of
the call and the session's function tools, and its answer (text, or a tool call) is
what the agent says or does. The greeting and the lines after a tool's result stay the
YAML policy's; when the endpoint fails, the YAML policy answers instead, so a caller
is never left without a reply."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from sipbridge.localmodel.policy import Policy, Reply

log = logging.getLogger("sipbridge.localmodel")

SYSTEM = ("You answer the phone. Reply in one or two short spoken sentences, with no "
          "markup. Call a function when the caller asks for what it does.")
HISTORY = 20  # messages kept for the LLM


class ChatPolicy(Policy):
    """The YAML policy's greeting and tool lines; the LLM's replies to what callers say."""

    blocking = True  # respond() waits on the network: the server runs it in a thread

    def __init__(self, base: Policy, url: str, model: str, *, api_key: str | None = None,
                 timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        super().__init__(base.greeting, base.fallback, base.intents, reprompt=base.reprompt,
                         tool_results=base.tool_results)
        self.base = base
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=timeout)
        self.history: list[dict[str, Any]] = []

    def respond(self, transcript: str | None, tools: Sequence[Mapping[str, Any]] = ()) -> Reply:
        if transcript is None:
            return self.base.respond(None, tools)
        self.history.append({"role": "user", "content": transcript})
        functions = [t for t in tools if t.get("type") == "function" and t.get("name")]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM}, *self.history[-HISTORY:]],
        }
        if functions:
            body["tools"] = [{"type": "function", "function": {
                "name": t["name"], "description": t.get("description") or "",
                "parameters": t.get("parameters") or {"type": "object", "properties": {}},
            }} for t in functions]
        try:
            response = self.client.post(self.url, json=body, headers=self.headers)
            response.raise_for_status()
            message = response.json()["choices"][0]["message"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("chat-completions endpoint %s failed (%s): the YAML policy answers",
                        self.url, exc)
            return self.base.respond(transcript, tools)
        text = str(message.get("content") or "").strip()
        call = None
        declared = {t["name"] for t in functions}
        for tool_call in message.get("tool_calls") or []:
            function = tool_call.get("function") or {}
            if function.get("name") in declared:
                call = (str(function["name"]), str(function.get("arguments") or "{}"))
                break
        self.history.append({"role": "assistant", "content": text or "(a function call)"})
        if not text:
            text = "One moment, please." if call else self.fallback
        return Reply(text, call, "llm")
