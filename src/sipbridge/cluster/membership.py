"""This node in a cluster: joins the membership in the store, beats every
`cluster_heartbeat` s, marks the nodes that stopped beating gone (and their calls ended),
and keeps the cluster's nodes in memory, so that a forwarded request needs no read of the
store.

The store being unreachable is logged once when it starts and once when it ends; beats
then resume. No node is marked gone before its heartbeat is `cluster_node_timeout` s old by
the store's clock, so an outage of the store shorter than that declares nobody gone (no
node can reach the store to sweep meanwhile, and each beats as soon as it can).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sipbridge.cluster.local import Minutes
from sipbridge.records import NodeRecord
from sipbridge.store.base import StoreError
from sipbridge.store.nodes import NodeTable

log = logging.getLogger("sipbridge.cluster")


@dataclass(frozen=True)
class Owner:
    """Where a call's node is, as this node knows it: its API and whether it is gone."""

    name: str
    api_url: str
    gone: str | None  # why the node is not to be asked (gone, stopped), or None


class ClusterNode:
    """`api.state.Nodes` for a node of a cluster, and its heartbeat."""

    def __init__(self, table: NodeTable, api_url: str, *, heartbeat: float, timeout: float,
                 live_calls: Callable[[], int], refused: Callable[[], int],
                 draining: Callable[[], bool], drain: Callable[[], None]) -> None:
        self.table = table
        self.name = table.name
        self.api_url = api_url
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.live_calls = live_calls
        self.refused = refused
        self.draining = draining
        self.drain = drain
        self.minutes = Minutes()
        self._known: dict[str, NodeRecord] = {}
        self._read_at = 0.0  # time.monotonic() of the last read of the nodes
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._drain_asked = False

    async def join(self) -> None:
        """Take the name and mark this node up (NodeNameTaken: another process has it)."""
        await asyncio.to_thread(self.table.join, self.api_url)
        self.minutes.sample(self.refused(), time.time())
        await self._read()
        self._task = asyncio.create_task(self._run())
        log.info("cluster: node %s joined (%d nodes known), API at %s", self.name,
                 len(self._known), self.api_url)

    async def leave(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await asyncio.to_thread(self.table.leave)
        except StoreError as exc:
            log.warning("cluster: could not mark node %s stopped: %s", self.name, exc)
        await asyncio.to_thread(self.table.close)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            await self.beat()

    async def beat(self) -> None:
        """One heartbeat, a sweep for gone nodes, a read of the nodes."""
        refused = self.refused()
        grown = self.minutes.sample(refused, time.time())
        try:
            asked, gone = await asyncio.to_thread(
                self.table.beat, live_calls=self.live_calls(), refused=refused,
                refused_since_last=grown, draining=self.draining())
            found = await asyncio.to_thread(self.table.sweep, self.timeout)
            await self._read()
        except StoreError as exc:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.error("cluster: heartbeat failed (%s); retried every %g s", exc,
                          self.heartbeat)
            return
        if self._failing_since is not None:
            log.warning("cluster: heartbeats resumed after %.1f s",
                        time.monotonic() - self._failing_since)
            self._failing_since = None
        if gone is not None:
            log.error("cluster: the other nodes marked node %s gone (%s) while it could "
                      "not beat; it beats again", self.name, gone)
        for name, calls in found:
            log.warning("cluster: node %s is gone (no heartbeat for %g s): %d of its calls "
                        "marked ended (abnormal: node_gone)", name, self.timeout, calls)
        if asked and not self._drain_asked:
            self._drain_asked = True
            log.warning("cluster: a drain of node %s was asked for", self.name)
            self.drain()

    async def _read(self) -> None:
        nodes = await asyncio.to_thread(self.table.nodes)
        self._known = {n["name"]: n for n in nodes}
        self._read_at = time.monotonic()

    async def owner(self, name: str) -> Owner | None:
        """The node called `name` (None: no such node), read again from the store when
        it is not known yet (a node that joined since the last heartbeat)."""
        node = self._known.get(name)
        if node is None and time.monotonic() - self._read_at > 0.2:
            try:
                await self._read()
            except StoreError as exc:
                log.warning("cluster: cannot read the nodes: %s", exc)
            node = self._known.get(name)
        if node is None:
            return None
        age = node["heartbeat_age"] + time.monotonic() - self._read_at
        gone: str | None = None
        if node["state"] in ("gone", "stopped"):
            gone = f"node {name!r} is {node['state']}"
        elif age > self.timeout:
            gone = f"node {name!r} is gone (no heartbeat for {age:.0f} s)"
        return Owner(name, node["api_url"], gone)

    # --- api.state.Nodes ------------------------------------------------------------------

    async def nodes(self) -> list[NodeRecord]:
        try:
            await self._read()
        except StoreError as exc:
            log.warning("cluster: cannot read the nodes: %s", exc)
        since = time.monotonic() - self._read_at  # 0 unless the read failed
        nodes = []
        for known in self._known.values():
            node = known.copy()
            node["heartbeat_age"] = known["heartbeat_age"] + since
            nodes.append(node)
        return nodes

    async def refusals(self, since: float) -> dict[int, int]:
        return await asyncio.to_thread(self.table.refusals, since)
