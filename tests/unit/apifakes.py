"""The gateway's side of the API app, faked: live calls (`Manager`), stored records
(`Store`), the cluster's nodes (`Nodes`) and the control object `create_app` takes
(`Control`); `basic` makes HTTP Basic credentials."""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any

from sipbridge.calls.call import Call, CallError
from sipbridge.callstats import CallStats, from_records
from sipbridge.realtime.sideband import SidebandHubs
from sipbridge.records import CallRecord, NodeRecord

KEY = "sk-dashboard-test"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Manager:
    """The CallManager's read side: live calls and recently ended ones."""

    def __init__(self, *live: Call) -> None:
        self.calls = {c.id: c for c in live}
        self.recent: dict[str, Call] = {}

    def get(self, call_id: str) -> Call:
        call = self.calls.get(call_id) or self.recent.get(call_id)
        if call is None:
            raise CallError("not_found", f"No call found with id '{call_id}'.")
        return call


class Store:
    """The store's read side: the records it holds, by id."""

    def __init__(self, *records: CallRecord) -> None:
        self.records = {r["id"]: r for r in records}
        self.stats_reads = 0

    def get_call(self, call_id: str) -> CallRecord | None:
        record = self.records.get(call_id)
        return copy.deepcopy(record) if record is not None else None

    def list_calls(self, **_: object) -> list[CallRecord]:
        listed: list[CallRecord] = []
        for r in self.records.values():
            row = r.copy()
            row.pop("timeline", None)
            listed.append(row)
        return listed

    def call_stats(self, since: float, until: float | None = None) -> CallStats:
        """The figures of the records held, counted as the store counts them."""
        self.stats_reads += 1
        return from_records(self.records.values(), since, 1e12 if until is None else until)


@dataclass
class Nodes:
    """The cluster's nodes as the store knows them, and their refusals per minute."""

    listed: list[NodeRecord]
    refused: dict[int, int] = field(default_factory=dict)
    asked: list[float] = field(default_factory=list)  # the `since` of each refusals()

    async def nodes(self) -> list[NodeRecord]:
        return self.listed

    async def refusals(self, since: float) -> dict[int, int]:
        self.asked.append(since)
        return {m: n for m, n in self.refused.items() if m + 60 > since}


@dataclass
class Control:
    calls: Any
    store: Any
    sideband: SidebandHubs = field(default_factory=SidebandHubs)
    metrics: Any = None
    registrations: Any = None
