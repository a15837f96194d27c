"""A warm transfer the briefed person declines, with real phones (the demo's baresip pair
and the built-in local model): the human's phone hears the brief and says it cannot take
the call, the model calls finish_transfer with connect false, the transfer ends
`returned`, and the model, back with the caller, tells them (never silence)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.peers import needs_phones

pytestmark = [
    pytest.mark.integration,
    needs_phones,
]


def test_the_person_declines_and_the_caller_is_told(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sipbridge.localmodel.server")
    pytest.importorskip("sipbridge.calls.warm", reason="warm transfers are not built in")
    from sipbridge.config import load_config
    from sipbridge.demo import run

    monkeypatch.setattr(run, "WARM_ANSWER", "Sorry, I can't take it right now.")
    # espeak-ng's pace: the return then comes before the caller speaks again (at the
    # natural voice's slower pace the caller's words at CALLER_AGAIN_AT barge in on the
    # agent's "Sorry, ..." and that reply is cut before its first clause).
    monkeypatch.setattr(run, "load_config", lambda *args, **kwargs: load_config(
        *args, **{**kwargs, "agent_voice_engine": "espeak"}))
    lines: list[str] = []
    result = asyncio.run(run.Demo(tmp_path, http="off", out=lines.append, target=None,
                                  warm=True).run())
    out = "\n".join(lines)
    assert result.transfer is not None, out
    assert result.transfer["status"] == "returned", out
    assert str(result.transfer["reason"]).startswith("declined"), out
    steps = ['transfer             briefing',
             'agent says           "I have a caller on the line.',
             'human says ', 'agent says           "No problem, I\'ll tell them."',
             'agent calls          finish_transfer({"connect": false',
             'transfer             returned',
             'agent says           "Sorry, the transfer didn\'t go through.']
    at = [out.index(step) for step in steps]
    assert at == sorted(at), out
    assert "transfer             connected" not in out
