"""A warm transfer the person does not take brings the caller back to the agent, who says
so: the demo's pair of baresip phones and the built-in local model, the agent's own
transfer tool in warm mode, and a person who does not answer (SIPp ringing forever), is
busy (SIPp answering 486) or hangs up during the brief (SIPp answering, then sending BYE
two seconds later).

Each run checks the transfer's outcome and reason, the steps in order on the timeline and
in `sipbridge trace`, and that the agent, back with the caller, told them: its words on
the timeline after `returned`, and those words in the agent's channel of the call's
recording (the agent's speech synthesised again and found there)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.peers import SippUas, needs_phones

pytestmark = [
    pytest.mark.integration,
    needs_phones,
]

NUMBER = "+61420351258"
MIN_HEARD = 0.8


@contextmanager
def person(kind: str, workdir: Path) -> Iterator[str]:
    """The transfer target for `kind`: a SIPp that rings forever, is busy, or answers and
    hangs up two seconds later (during the brief)."""
    scenario = {"no_answer": "uas_ring_forever.xml", "busy": "uas_busy.xml",
                "hung_up": "uas_answer_then_bye.xml"}[kind]
    with SippUas(workdir / "sipp", scenario, rtp_echo=False) as sipp:
        yield f"sip:{NUMBER}@{sipp.address}"


@pytest.mark.parametrize(("kind", "steps"), [
    ("no_answer", ["requested", "dialing", "ringing", "returned"]),
    ("busy", ["requested", "dialing", "returned"]),
    ("hung_up", ["requested", "dialing", "ringing", "answered", "briefing", "returned"]),
])
def test_the_caller_returns_to_the_agent_who_says_so(
        kind: str, steps: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sipbridge.localmodel.server")
    from sipbridge.config import load_config
    from sipbridge.demo import run
    from sipbridge.demo.audio import heard_in
    from sipbridge.localmodel.tts import spoken as as_spoken
    from sipbridge.media.resample import MODEL_RATE, resample

    def config(*args: Any, **kwargs: Any) -> Any:
        # espeak-ng: the same words are the same samples, to find them in the recording
        return load_config(*args, **{**kwargs, "transfer_ring_timeout": 3,
                                     "agent_voice_engine": "espeak"})

    monkeypatch.setattr(run, "load_config", config)
    lines: list[str] = []
    with person(kind, tmp_path) as target:
        result = asyncio.run(run.Demo(tmp_path / "demo", http="off", out=lines.append,
                                      target=target, warm=True).run())
    out = "\n".join(lines)
    transfer = result.transfer
    assert transfer is not None and result.call_id is not None, out
    assert transfer["status"] == "returned", out
    assert str(transfer["reason"]).startswith(f"{kind}: "), out
    assert [s["status"] for s in transfer["steps"]] == steps, out

    # The agent told the caller, after the return: on the timeline ...
    returned_at = out.index("transfer             returned")
    told = out.index("agent says           \"Sorry, the transfer didn't go through.",
                     returned_at)
    assert told > returned_at, out
    said = next(text for role, text in reversed(result.transcripts)
                if role == "agent" and text.startswith("Sorry, the transfer"))
    # ... and in the agent's channel of the recording.
    with wave.open(str(tmp_path / "demo" / "recordings" / f"{result.call_id}.wav")) as w:
        rate = w.getframerate()
        agent = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)[:, 1]
    spoken = resample(as_spoken(said), MODEL_RATE, rate)
    assert heard_in(spoken, agent, rate) > MIN_HEARD, out

    # The steps in order in `sipbridge trace`.
    ladder = subprocess.run(
        [sys.executable, "-m", "sipbridge", "trace", result.call_id, "--store",
         str(tmp_path / "demo" / "calls.db")],
        capture_output=True, text=True, timeout=30, check=True).stdout
    at = [ladder.index(f"transfer {status}") for status in steps]
    assert at == sorted(at), ladder
