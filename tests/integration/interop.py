"""What the interop tests share: reading SIP messages off a call's timeline, and checks that
are all evaluated before the test fails, so one run names every expectation a real
stack's call broke (a transfer's outcome, the path of each request, what the caller heard)
rather than the first."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.integration.callrecords import call_record


class Checks:
    """Expectations collected during a test; :meth:`verify` fails with all that did not hold.

    ``checks.that(record["end_reason"] == "transferred", "the gateway left the call",
    record["end_reason"])``."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed: list[str] = []

    def that(self, condition: bool, expectation: str, *found: object) -> bool:
        if condition:
            self.passed.append(expectation)
        else:
            detail = "; ".join(str(f) for f in found)
            self.failed.append(f"{expectation}" + (f" (found: {detail})" if detail else ""))
        return condition

    def verify(self, context: str = "") -> None:
        if self.failed:
            lines = "\n".join(f"  - {f}" for f in self.failed)
            held = "\n".join(f"  + {p}" for p in self.passed)
            raise AssertionError(f"{len(self.failed)} expectation(s) failed:\n{lines}\n"
                                 f"held:\n{held}\n{context}")


def sip_line(entry: dict[str, Any]) -> str:
    return str(entry.get("line", ""))


def sip_entries(
    record: dict[str, Any], *, direction: str | None = None, method: str | None = None,
    status: int | None = None, cseq: str | None = None,
) -> list[dict[str, Any]]:
    """The call's ``sip`` timeline entries, filtered: ``direction`` "in"/"out", a request's
    ``method``, a response's ``status``, the CSeq method ``cseq`` (of a response)."""
    found = []
    for entry in record.get("timeline", []):
        if entry.get("kind") != "sip":
            continue
        line = sip_line(entry)
        if direction is not None and entry.get("dir") != direction:
            continue
        if method is not None and not line.startswith(f"{method} "):
            continue
        if status is not None and not line.startswith(f"SIP/2.0 {status} "):
            continue
        if cseq is not None and cseq_method(entry) != cseq:
            continue
        found.append(entry)
    return found


def cseq_method(entry: dict[str, Any]) -> str | None:
    """The method in the CSeq header of a timeline entry's message text."""
    for line in str(entry.get("text", "")).splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "cseq":
            return value.split()[-1] if value.split() else None
    return None


def describe_sip(record: dict[str, Any]) -> str:
    """One line per SIP message of the call, with its time from the first and its peer."""
    entries = sip_entries(record)
    if not entries:
        return "(no SIP messages on the timeline)"
    start = float(entries[0]["at"])
    return "\n".join(f"{float(e['at']) - start:8.3f} {e.get('dir', ''):3} {e.get('peer', '')}"
                     f"  {sip_line(e)}" for e in entries)


def transfer_steps(record: dict[str, Any]) -> list[str]:
    transfers = record.get("transfers") or []
    return [s["status"] for s in transfers[0]["steps"]] if transfers else []


def poll_record(base: str, key: str, call_id: str, check: Callable[[dict[str, Any]], bool],
                timeout: float) -> tuple[dict[str, Any], bool]:
    """Poll ``GET /realtime/calls/{id}`` until `check` holds: (the last record, whether it
    held). Not a wait that fails: the :class:`Checks` that follow judge the record, so one
    run names every expectation the call broke."""
    deadline = time.monotonic() + timeout
    while True:
        record = call_record(base, key, call_id)
        if check(record):
            return record, True
        if time.monotonic() > deadline:
            return record, False
        time.sleep(0.1)
