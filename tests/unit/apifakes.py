"""The gateway's side of the API app, faked: live calls (`Manager`), stored records
(`Store`) and the control object `create_app` takes (`Control`); `basic` makes HTTP Basic
credentials."""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any

from sipbridge.calls.call import Call, CallError
from sipbridge.realtime.sideband import SidebandHubs
from sipbridge.records import CallRecord

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


@dataclass
class Control:
    calls: Any
    store: Any
    sideband: SidebandHubs = field(default_factory=SidebandHubs)
    metrics: Any = None
    registrations: Any = None
