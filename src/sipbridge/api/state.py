"""What the API's handlers share, and how they reach it: one `ApiState` on the application,
handed to each handler by FastAPI's dependency injection (`State`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends
from starlette.requests import HTTPConnection

from sipbridge.api.calllookup import CallRecords
from sipbridge.calls.manager import CallManager
from sipbridge.metrics import Metrics
from sipbridge.realtime.sideband import SidebandHubs
from sipbridge.records import NodeRecord
from sipbridge.registrations import Registrations
from sipbridge.store import Store


class Control(Protocol):
    """What the API needs from the gateway."""

    calls: CallManager | None
    sideband: SidebandHubs
    store: Store | None
    metrics: Metrics
    registrations: Registrations | None


class Nodes(Protocol):
    """The cluster's nodes, as the store (or, on its own, the gateway) knows them."""

    async def nodes(self) -> list[NodeRecord]:
        """Every node the cluster knows, this one included."""
        ...

    async def refusals(self, since: float) -> dict[int, int]:
        """New calls refused with 503 (overload, draining) by all nodes, per minute:
        the minute's start (Unix time, a multiple of 60) -> count, from `since` on."""
        ...


@dataclass(frozen=True)
class ApiState:
    """The gateway the API controls, the call records it reads, and the API keys it takes
    (none: the API is open)."""

    control: Control
    records: CallRecords
    keys: tuple[bytes, ...]
    open_metrics: bool = False  # /metrics open even with keys (a scraper on loopback)
    nodes: Nodes | None = None  # the cluster's nodes (None: not known, as in unit tests)


def api_state(connection: HTTPConnection) -> ApiState:
    """The application's `ApiState` (set by `create_app`)."""
    state = connection.app.state.sipbridge
    if not isinstance(state, ApiState):
        raise TypeError("the application was not made by create_app")
    return state


State = Annotated[ApiState, Depends(api_state)]
"""A handler parameter of this type receives the application's `ApiState`."""
