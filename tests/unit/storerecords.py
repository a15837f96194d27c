"""A call record as the store takes it (`call`), and a process that writes one, flushes
and is killed (`run_killed_child`), for the durability tests of each backend."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"


def call(call_id: str, caller: str = "sip:+14155550100@carrier.example",
         **fields: Any) -> dict[str, Any]:
    """A call record shaped as `Call.to_dict` makes one (the caller in its sip part)."""
    record: dict[str, Any] = {
        "id": call_id,
        "state": "ringing",
        "created_at": 1000.0,
        "answered_at": None,
        "ended_at": None,
        "end_reason": None,
        "sip": {"call_id": f"{call_id}@carrier", "from": caller,
                "to": "sip:+14155550199@gw.example", "from_tag": "a1"},
        "transfers": [],
        "webhooks": [],
        "recording": None,
    }
    record.update(fields)
    return record
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from sipbridge.store import open_store

    store = open_store(sys.argv[1])
    store.upsert_call({"id": "rtc_crash", "state": "active", "created_at": 1.0,
                       "answered_at": 2.0, "ended_at": None, "caller": "sip:alice@x",
                       "callee": "sip:bot@y", "sip": {}, "transfers": [], "webhooks": []})
    for i in range(5):
        store.add_event("rtc_crash", 2.0 + i, "sip", {"i": i})
    assert store.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_killed_child(target: str) -> None:
    """A process that writes the call "rtc_crash" (active), flushes and gets SIGKILL."""
    pythonpath = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, target],
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr.decode()
