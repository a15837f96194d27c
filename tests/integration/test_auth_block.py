"""A password guesser against a digest-protected gateway: blocked, and the block shows.

SIPVicious' svcrack guesses the password of a user from 127.0.0.1, which is outside the
allow-list and must authenticate. After `max_failures` wrong answers the source is refused
outright, so the right password, late in the dictionary, is never accepted; /metrics and
the log show the block, and a caller from another address still gets in.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.gateway import Gateway
from tests.integration.sipp import SippResult

pytestmark = pytest.mark.integration

PASSWORD = "secret"  # what scenarios/auth_call.xml answers with
AUTH = {"realm": "gw", "users": {"alice": PASSWORD}, "algorithms": ["MD5"],
        "max_failures": 10, "window": 60, "block_time": 600}


@pytest.mark.skipif(shutil.which("svcrack") is None, reason="sipvicious is not installed")
def test_svcrack_is_blocked_and_a_caller_elsewhere_gets_in(
    start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult], tmp_path: Path
) -> None:
    gw = start_gateway(allow=["192.0.2.0/24"], auto_answer="silence", auth=AUTH)
    words = tmp_path / "passwords.txt"
    words.write_text("".join(f"guess{i:03d}\n" for i in range(100)) + PASSWORD + "\n")
    proc = subprocess.Popen(
        ["svcrack", "-u", "alice", "-m", "INVITE", "-d", str(words), gw.host, "-p", str(gw.port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    # Against the unprotected gateway svcrack finds the password within a second or two and
    # exits; once blocked it gets no challenge to answer and waits: 10 s is plenty.
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert PASSWORD not in out, out
    assert "call rtc_" not in gw.log()  # the guesser never got a call

    assert gw.metric("sipbridge_auth_blocks_total") == 1
    assert gw.metric("sipbridge_auth_blocked_sources") == 1
    lines = [line for line in gw.log().splitlines() if "failed authentications" in line]
    assert len(lines) == 1, lines
    assert "127.0.0.1" in lines[0] and "10 failed" in lines[0], lines

    # A legitimate caller from another address is not affected by the block.
    result = sipp(gw, "auth_call.xml", local_ip="127.0.0.2")
    assert result.ok, result.describe()
    assert gw.process.poll() is None
