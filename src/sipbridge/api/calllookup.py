"""Call records as the API's GET routes and the dashboard read them: live calls (and the
ended ones the CallManager still holds) from memory, the rest from the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from sipbridge.api.errors import ApiError, conflict
from sipbridge.calls.call import CallError
from sipbridge.calls.manager import CallManager
from sipbridge.records import CallRecord
from sipbridge.store import Store


class Source(Protocol):
    calls: CallManager | None
    store: Store | None


def call_error(exc: CallError) -> ApiError:
    """A call-control refusal as the API's error (404 unknown call, 409 wrong state)."""
    if exc.kind == "not_found":
        return ApiError(404, exc.message, code="not_found")
    return conflict(exc.message)


def manager(source: Source) -> CallManager:
    """The gateway's calls (503 while it starts)."""
    if source.calls is None:
        raise ApiError(503, "The gateway is starting.", type="server_error")
    return source.calls


def _matches(call: CallRecord, state: str | None, since: float | None,
             until: float | None, caller: str | None, transfer_status: str | None) -> bool:
    created = call.get("created_at") or 0.0
    return ((state is None or call.get("state") == state)
            and (since is None or created >= since) and (until is None or created < until)
            and (caller is None or caller in str(call["sip"].get("from") or ""))
            and (transfer_status is None
                 or any(t.get("status") == transfer_status for t in call["transfers"])))


class CallRecords:
    def __init__(self, source: Source) -> None:
        self.source = source

    async def list(self, *, state: str | None = None, since: float | None = None,
                   until: float | None = None, caller: str | None = None,
                   transfer_status: str | None = None, limit: int = 100
                   ) -> list[CallRecord]:
        """Calls newest first, without timelines, the filters as the store applies them."""
        calls = manager(self.source)
        live: dict[str, CallRecord] = {
            c.id: c.to_dict(timeline=False)
            for c in (*calls.calls.values(), *reversed(calls.recent.values()))}
        stored: list[CallRecord] = []
        store = self.source.store
        if store is not None:
            stored = await asyncio.to_thread(
                store.list_calls, state=state, since=since, until=until, caller=caller,
                transfer_status=transfer_status, limit=limit)
        data = [c for c in live.values() if _matches(c, state, since, until, caller,
                                                      transfer_status)]
        data += [c for c in stored if c["id"] not in live]
        data.sort(key=lambda c: float(c.get("created_at") or 0.0), reverse=True)
        return data[:limit]

    async def get(self, call_id: str) -> CallRecord:
        """One call with its timeline (404 when neither memory nor the store has it)."""
        calls = manager(self.source)
        try:
            return calls.get(call_id).to_dict()
        except CallError as exc:
            record = None
            store = self.source.store
            if store is not None:
                record = await asyncio.to_thread(store.get_call, call_id)
            if record is None:
                raise call_error(exc) from None
            return record

    async def recording(self, call_id: str) -> Path:
        """The call's WAV file (404 when it has none)."""
        record = await self.get(call_id)
        path = record.get("recording")
        if not path or not await asyncio.to_thread(Path(str(path)).is_file):
            raise ApiError(404, f"Call '{call_id}' has no recording.", code="not_found")
        return Path(str(path))
