"""A call record as the store takes it (`call`), a transfer as far as the store looks at one
(`transfer`), and a process that writes a record, flushes and is killed
(`run_killed_child`), for the durability tests of each backend."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import cast

from sipbridge.records import CallRecord, TransferRecord

SRC = Path(__file__).resolve().parents[2] / "src"


def call(call_id: str, caller: str = "sip:+14155550100@carrier.example",
         **fields: object) -> CallRecord:
    """A call record shaped as `Call.to_dict` makes one (the caller in its sip part).

    Not every key of a `CallRecord`: no "object" nor "media", and a sip part of its own
    (with a From tag), since the store keeps whatever record it is given and gives it back
    as it was; `fields` may add keys or set odd values (a record the store refuses)."""
    record: dict[str, object] = {
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
    return cast("CallRecord", record)


def transfer(status: str) -> TransferRecord:
    """A transfer with nothing but its status, which is all the store reads of one (the
    list's `transfer_status` filter)."""
    return cast("TransferRecord", {"status": status})


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
