"""The model's `send_dtmf` tool: offered when accept asks for it, and when the model calls
it the gateway sends the digits and gives the function output once they are sent (or at
once with the error), over a real UA core, SIP driver and CallManager with a fake clock."""

from __future__ import annotations

from fastapi.testclient import TestClient

from sipbridge.agent.lifecycle import Agents
from sipbridge.api.app import create_app
from sipbridge.calls.call import Call
from tests.unit.apifakes import Control, Store
from tests.unit.callharness import Harness, ack, app_call
from tests.unit.test_agent_transfer_tool import FakeBridge
from tests.unit.test_agent_transfer_tool import wired as transfer_wired
from tests.unit.test_dtmf_calls import answer, infos


def wired(options: dict[str, object]) -> tuple[Agents, Harness, Call, FakeBridge]:
    agents, h, call, model = transfer_wired()
    call.options = options
    return agents, h, call, model


def test_the_model_hears_back_once_the_keys_are_sent() -> None:
    agents, h, call, model = wired({"send_dtmf": True})
    call.dtmf_method = "info"
    agents.tool(call, "send_dtmf", "fc_1", '{"digits": "2#"}')
    assert [r.body for r in infos(h)] == [b"Signal=2\r\nDuration=100\r\n"]
    assert model.outputs == []  # not until they are sent
    answer(h, infos(h)[0])
    h.advance(0.2)
    answer(h, infos(h)[1])
    assert model.outputs == [("fc_1", {"status": "sent", "digits": "2#", "method": "info"},
                              True)]
    entry = [e for e in call.timeline if e["kind"] == "dtmf"][-1]
    assert entry["requested_by"] == "agent" and entry["status"] == "sent"


def test_bad_digits_and_failures_are_told_to_the_model() -> None:
    agents, h, call, model = wired({"send_dtmf": True})
    agents.tool(call, "send_dtmf", "fc_1", '{"digits": "12x"}')
    agents.tool(call, "send_dtmf", "fc_2", "not json")
    agents.tool(call, "send_dtmf", "fc_3", '{"keys": "1"}')
    assert [(c, o["status"]) for c, o, _ in model.outputs] == [
        ("fc_1", "error"), ("fc_2", "error"), ("fc_3", "error")]
    assert "'X' is not a DTMF digit" in model.outputs[0][1]["error"]
    assert not infos(h) and not any(e["kind"] == "dtmf" for e in call.timeline)
    call.dtmf_method = "info"
    agents.tool(call, "send_dtmf", "fc_4", '{"digits": "1"}')
    answer(h, infos(h)[0], 488)
    assert model.outputs[-1][0] == "fc_4" and "488" in model.outputs[-1][1]["error"]


def test_the_tool_does_nothing_unless_the_call_asked_for_it() -> None:
    agents, h, call, model = wired({})
    call.dtmf_method = "info"
    agents.tool(call, "send_dtmf", "fc_1", '{"digits": "1"}')
    assert not infos(h) and model.outputs == []


def test_accept_offers_the_tool_and_checks_the_option() -> None:
    h, call = app_call()
    client = TestClient(create_app(Control(calls=h.manager, store=Store()), []))
    r = client.post(f"/v1/realtime/calls/{call.id}/accept",
                    json={"type": "realtime", "sipbridge": {"send_dtmf": "yes"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "sipbridge.send_dtmf"
    r = client.post(f"/v1/realtime/calls/{call.id}/accept",
                    json={"type": "realtime", "sipbridge": {"send_dtmf": True}})
    assert r.status_code == 200, r.text
    h.send(ack(h.sent[-1].to.tag or ""))
    tools = call.session.get("tools") if call.session else None
    assert isinstance(tools, list)
    assert [t["name"] for t in tools] == ["send_dtmf"]
    assert tools[0]["parameters"]["required"] == ["digits"]
    assert call.options == {"send_dtmf": True}
