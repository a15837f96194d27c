"""The shared playout scheduler on a fake clock, and its asyncio driver on a real one."""

from __future__ import annotations

import asyncio
import collections
from fractions import Fraction

import pytest

from sipbridge.media.pacer import PacerDriver, PlayoutScheduler, Tick


def run_until(sched: PlayoutScheduler, end: float) -> list[Tick]:
    """Calls `due` exactly at each deadline, as a perfect driver would."""
    out: list[Tick] = []
    while (deadline := sched.deadline()) is not None and deadline <= end:
        out += sched.due(deadline)
    return out


def test_an_hour_of_ticks_stays_on_the_grid() -> None:
    sched = PlayoutScheduler()
    start = 1234.567
    sched.add("call", start)
    ticks = run_until(sched, start + 3600 - 0.01)
    assert len(ticks) == 180_000 and sched.ticks == 180_000
    worst = max(
        abs(Fraction(t.at) - (Fraction(start) + t.index * Fraction(1, 50)))
        for t in ticks[::997] + ticks[-5:]
    )
    assert worst < Fraction(1, 10**6)
    assert [t.index for t in ticks[-3:]] == [179_997, 179_998, 179_999]
    assert sched.late == 0 and sched.skipped == 0
    assert max(t.lateness for t in ticks) == 0.0


def test_five_hundred_sessions_tick_fifty_times_a_second() -> None:
    sched = PlayoutScheduler()
    for n in range(500):
        sched.add(n, 10.0 + n * 0.02 / 500)  # phases spread over one interval
    ticks = run_until(sched, 11.0 - 1e-9)
    counts = collections.Counter(t.key for t in ticks)
    assert len(counts) == 500 and set(counts.values()) == {50}
    assert [t.at for t in ticks] == sorted(t.at for t in ticks)
    assert sched.late == 0 and len(sched) == 500
    # a coarse 1 ms driver: every tick still comes, at most 1 ms late
    coarse = PlayoutScheduler()
    for n in range(500):
        coarse.add(n, 10.0 + n * 0.02 / 500)
    got = [t for ms in range(10_000, 11_001) for t in coarse.due(ms / 1000) if t.at < 11.0]
    assert len(got) == 25_000 and max(t.lateness for t in got) <= 0.001 + 1e-9
    assert coarse.late == 0


def test_a_stall_skips_ticks_then_returns_to_the_grid() -> None:
    sched = PlayoutScheduler()
    sched.add("a", 0.0)
    assert [t.index for t in run_until(sched, 0.2)] == list(range(11))
    burst = sched.due(0.32)  # 100 ms stalled past the tick at 0.22
    # ticks 11..16 are due: the last three fire at once, the rest are skipped
    assert [t.index for t in burst] == [14, 15, 16]
    assert sched.skipped == 3 and sched.late == 2  # 40 and 20 ms late; the third is on time
    assert burst[0].lateness == pytest.approx(0.32 - 0.28)
    after = run_until(sched, 0.5)
    assert [t.index for t in after] == list(range(17, 26))
    assert all(t.at == t.index * 0.02 for t in after)
    assert all(t.lateness == 0 for t in after) and sched.late == 2


def test_remove_stops_a_session() -> None:
    sched = PlayoutScheduler()
    sched.add("a", 0.0)
    sched.add("b", 0.01)
    run_until(sched, 0.1)
    sched.remove("b")
    assert "b" not in sched and {t.key for t in run_until(sched, 0.2)} == {"a"}
    sched.remove("a")
    assert sched.deadline() is None and sched.due(10.0) == []
    with pytest.raises(KeyError):
        sched.remove("a")
    sched.add("a", 0.3)  # the same key again starts afresh
    with pytest.raises(ValueError):
        sched.add("a", 0.3)
    assert [(t.index, t.at) for t in sched.due(0.32)] == [(0, 0.3), (1, 0.32)]
    for n in range(1000):  # churn does not leave the heap full of dead entries
        sched.add(n, 1.0)
        sched.remove(n)
    assert sched.heap_size < 50


def test_lateness_is_measured() -> None:
    sched = PlayoutScheduler(late_threshold=0.005)
    sched.add("a", 1.0)
    (tick,) = sched.due(1.003)
    assert tick.lateness == pytest.approx(0.003) and sched.late == 0
    (tick,) = sched.due(1.028)
    assert tick.index == 1 and tick.lateness == pytest.approx(0.008) and sched.late == 1
    assert sched.due(1.039) == [] and sched.deadline() == pytest.approx(1.04)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        PlayoutScheduler(interval=0)
    with pytest.raises(ValueError):
        PlayoutScheduler(max_catch_up=0)


def test_driver_on_a_real_loop() -> None:
    async def main() -> tuple[collections.Counter[object], PlayoutScheduler]:
        loop = asyncio.get_running_loop()
        sched = PlayoutScheduler()
        counts: collections.Counter[object] = collections.Counter()
        driver = PacerDriver(sched, lambda tick: counts.update([tick.key]))
        driver.start()
        t0 = loop.time() + 0.01
        for n in range(20):
            sched.add(n, t0 + n * 0.001)
            driver.poke()
        await asyncio.sleep(t0 + 0.49 - loop.time())
        driver.stop()
        await asyncio.sleep(0.05)  # nothing fires once stopped
        return counts, sched

    counts, sched = asyncio.run(main())
    assert len(counts) == 20
    assert all(22 <= c <= 28 for c in counts.values()), counts
    assert sum(counts.values()) == sched.ticks


def test_driver_survives_a_failing_callback_and_removal() -> None:
    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        sched = PlayoutScheduler(interval=0.005)
        seen: list[object] = []

        def on_tick(tick: Tick) -> None:
            seen.append(tick.key)
            if tick.key == "boom":
                sched.remove("boom")
                raise RuntimeError("callback failed")

        driver = PacerDriver(sched, on_tick, loop)
        now = loop.time()
        sched.add("boom", now)
        sched.add("ok", now)
        driver.start()
        await asyncio.sleep(0.05)
        driver.stop()
        return seen

    seen = asyncio.run(main())
    assert seen.count("boom") == 1 and seen.count("ok") >= 5
