"""The chat-completions policy against a local endpoint that answers in the real
protocol: every answer is checked against the `openai` package's ChatCompletion type
before it is sent, and every request against the SDK's request parameters."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from sipbridge.calls.tool import tool_definition
from sipbridge.localmodel.chat import ChatPolicy
from sipbridge.localmodel.policy import Policy


class Endpoint:
    """POST /v1/chat/completions: a transfer when the caller asks for a human, else text."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                last = body["messages"][-1]["content"]
                message: dict[str, Any] = {"role": "assistant", "content": None}
                if "human" in last and body.get("tools"):
                    message["tool_calls"] = [{"id": "call_1", "type": "function", "function": {
                        "name": "transfer_call", "arguments": '{"target": "human"}'}}]
                    finish = "tool_calls"
                else:
                    message["content"] = f"You said: {last}"
                    finish = "stop"
                answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                          "model": body["model"], "choices": [
                              {"index": 0, "message": message, "finish_reason": finish}]}
                ChatCompletion.model_validate(answer)  # the real protocol's shape
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.server.shutdown()
    e.server.server_close()


TOOLS = [tool_definition({"human": "tel:+61420351258"})]


def test_the_llm_answers_and_calls_the_transfer_tool(endpoint: Endpoint) -> None:
    policy = ChatPolicy(Policy.load(None), endpoint.url, "llama3", api_key="k")
    greeting = policy.respond(None, TOOLS)
    assert greeting.text == Policy.load(None).greeting  # the YAML policy still greets
    assert endpoint.requests == []
    reply = policy.respond("what time do you open", TOOLS)
    assert reply.text == "You said: what time do you open" and reply.tool_call is None
    reply = policy.respond("can I talk to a human please", TOOLS)
    assert reply.tool_call == ("transfer_call", '{"target": "human"}')
    request = endpoint.requests[-1]
    assert request["model"] == "llama3"
    assert [m["role"] for m in request["messages"]] == [
        "system", "user", "assistant", "user"]  # the call's history goes along
    [tool] = request["tools"]
    assert tool["function"]["name"] == "transfer_call"
    assert tool["function"]["parameters"]["properties"]["target"]["enum"] == ["human"]


def test_a_failing_endpoint_leaves_the_yaml_policy_to_answer() -> None:
    policy = ChatPolicy(Policy.load(None), "http://127.0.0.1:9/v1", "m", timeout=1)
    reply = policy.respond("I want to talk to a human", TOOLS)
    assert reply.tool_call is not None and reply.tool_call[0] == "transfer_call"
    assert reply.intent != "llm"


def test_undeclared_tools_are_not_called(endpoint: Endpoint) -> None:
    policy = ChatPolicy(Policy.load(None), endpoint.url, "m")
    reply = policy.respond("a human please", [])  # no tools declared: plain text
    assert reply.tool_call is None and reply.text.startswith("You said")
    assert "tools" not in endpoint.requests[-1]
