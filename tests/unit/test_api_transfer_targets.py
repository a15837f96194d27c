"""accept's transfer options: targets given as URIs or objects (mode, brief, timeouts),
and the call's own timeouts; each bad one is a 400 naming it, before the call is touched."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sipbridge.api.calls import _with_transfer_tool, accept
from sipbridge.api.errors import ApiError
from sipbridge.realtime.schemas import SessionConfig


def config(options: dict[str, Any]) -> SessionConfig:
    return SessionConfig.model_validate({"type": "realtime", "sipbridge": options})


def test_target_objects_give_the_tool_its_targets() -> None:
    targets = {"sales": "tel:+14155550123",
               "support": {"uri": "sip:support@127.0.0.1:5090", "mode": "warm",
                           "brief": "A caller for support.", "ring_timeout": 20}}
    session = _with_transfer_tool(config({}), targets).session_object()
    [tool] = session["tools"]
    assert tool["parameters"]["properties"]["target"]["enum"] == ["sales", "support"]
    assert "support are warm" in tool["description"]


@pytest.mark.parametrize(("options", "param", "words"), [
    ({"transfer_targets": {"s": {"uri": "mailto:x"}}}, "sipbridge.transfer_targets.s.uri",
     "Invalid transfer target 's'"),
    ({"transfer_targets": {"s": {"mode": "warm"}}}, "sipbridge.transfer_targets.s.uri",
     "uri must be"),
    ({"transfer_targets": {"s": {"uri": "tel:+14155550123", "mode": "hot"}}},
     "sipbridge.transfer_targets.s.mode", "'hot'"),
    ({"transfer_targets": {"s": {"uri": "tel:+14155550123", "brief": "hi"}}},
     "sipbridge.transfer_targets.s.brief", "warm"),
    ({"transfer_targets": {"s": {"uri": "tel:+14155550123", "ring_timeout": 0}}},
     "sipbridge.transfer_targets.s.ring_timeout", "above 0"),
    ({"transfer_targets": {"s": {"uri": "tel:+14155550123", "colour": "red"}}},
     "sipbridge.transfer_targets.s.colour", "Unknown parameter"),
    ({"transfer_targets": {"s": 5}}, "sipbridge.transfer_targets.s", "tel: or sip: URI"),
    ({"transfer_targets": {"bad name": "tel:+14155550123"}},
     "sipbridge.transfer_targets.bad name", "names are"),
    ({"transfer_targets": []}, "sipbridge.transfer_targets", "target objects"),
    ({"ring_timeout": "soon"}, "sipbridge.ring_timeout", "number of seconds"),
    ({"brief_timeout": 601}, "sipbridge.brief_timeout", "at most 600"),
    ({"refer_timeout": True}, "sipbridge.refer_timeout", "number of seconds"),
])
def test_bad_transfer_options_are_400(options: dict[str, Any], param: str,
                                      words: str) -> None:
    with pytest.raises(ApiError) as bad:
        asyncio.run(accept("rtc_1", config(options), None))  # type: ignore[arg-type]
    assert bad.value.status == 400 and bad.value.param == param
    assert words in bad.value.message
