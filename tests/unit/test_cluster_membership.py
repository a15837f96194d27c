"""This node's side of the cluster (`cluster.membership.ClusterNode`) over a stand-in for
the store's membership table: a store that fails logs once and once again when beats
resume, a drain asked for through the store is started once, and a call's owner is judged
up, gone or unknown from what the store last said."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sipbridge.cluster.membership import ClusterNode
from sipbridge.records import NodeRecord
from sipbridge.store.base import StoreError


def node(name: str, state: str = "up", age: float = 0.1) -> NodeRecord:
    return {"name": name, "api_url": f"http://127.0.0.1:1/{name}", "state": state,
            "started_at": 0.0, "heartbeat_age": age, "live_calls": 0, "refused": 0,
            "this": name == "b"}


class Table:
    """The parts of `store.nodes.NodeTable` a node uses, with failures on demand."""

    name = "b"

    def __init__(self) -> None:
        self.failing = False
        self.drain = False
        self.rows = [node("a"), node("b")]
        self.reads = 0
        self.beats: list[dict[str, object]] = []

    def _check(self) -> None:
        if self.failing:
            raise StoreError("cluster store postgresql://***@db/x: connection refused")

    def join(self, api_url: str) -> None:
        self._check()

    def beat(self, **kw: object) -> tuple[bool, str | None]:
        self._check()
        self.beats.append(kw)
        return self.drain, None

    def sweep(self, timeout: float) -> list[tuple[str, int]]:
        self._check()
        return []

    def nodes(self) -> list[NodeRecord]:
        self._check()
        self.reads += 1
        return [dict(r) for r in self.rows]  # type: ignore[misc]


def cluster_node(table: Table, drains: list[int], refused: list[int]) -> ClusterNode:
    return ClusterNode(table, "http://127.0.0.1:1/b", heartbeat=0.5, timeout=3.0,  # type: ignore[arg-type]
                       live_calls=lambda: 2, refused=lambda: refused[0],
                       draining=lambda: False, drain=lambda: drains.append(1))


def test_a_failing_store_is_logged_once_and_beats_resume(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    table, drains, refused = Table(), list[int](), [0]
    member = cluster_node(table, drains, refused)

    async def run() -> None:
        await member.beat()
        table.failing = True
        for _ in range(5):
            await member.beat()
        table.failing = False
        refused[0] = 7
        await member.beat()

    with caplog.at_level(logging.WARNING, "sipbridge.cluster"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records]
    assert sum("heartbeat failed" in line for line in lines) == 1, lines
    assert sum("heartbeats resumed after" in line for line in lines) == 1, lines
    assert table.beats[-1] == {"live_calls": 2, "refused": 7, "refused_since_last": 7,
                               "draining": False}


def test_a_drain_asked_through_the_store_starts_once() -> None:
    table, drains = Table(), list[int]()
    member = cluster_node(table, drains, [0])
    table.drain = True

    async def run() -> None:
        for _ in range(3):
            await member.beat()

    asyncio.run(run())
    assert drains == [1]


def test_owners_up_gone_stale_and_unknown() -> None:
    table, drains = Table(), list[int]()
    table.rows = [node("a"), node("b"), node("c", "gone", 40.0), node("d", "up", 9.0),
                  node("e", "stopped", 1.0)]
    member = cluster_node(table, drains, [0])

    async def run() -> None:
        await member.beat()
        a = await member.owner("a")
        assert a is not None and a.gone is None and a.api_url == "http://127.0.0.1:1/a"
        c = await member.owner("c")
        assert c is not None and c.gone == "node 'c' is gone"
        d = await member.owner("d")  # the store has not marked it yet; its beat is stale
        assert d is not None and d.gone is not None and "no heartbeat for 9 s" in d.gone
        e = await member.owner("e")
        assert e is not None and e.gone == "node 'e' is stopped"
        await asyncio.sleep(0.25)
        reads = table.reads
        assert await member.owner("zz") is None  # unknown: read again, at most so often
        assert await member.owner("zz") is None
        assert table.reads == reads + 1
        table.rows.append(node("zz"))
        await asyncio.sleep(0.25)
        zz = await member.owner("zz")  # a node that joined since: found
        assert zz is not None and zz.gone is None
        table.failing = True  # the store down: what it said last still serves
        assert (await member.owner("a")) is not None
        assert [n["name"] for n in await member.nodes()] == ["a", "b", "c", "d", "e", "zz"]

    asyncio.run(run())
