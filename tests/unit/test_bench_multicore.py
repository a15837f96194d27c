"""bench/multicore.py's arithmetic: ratios paired by repeat, shares of datagrams, and the
decision's reasons drawn from the figures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ is not a package: its scripts import each other by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import multicore
from multicore import Figures, Scaling, decide, ratios, shares, span, spreads


def test_ratios_pair_each_repeat_with_its_own_single_process() -> None:
    # Repeat 1: (55 + 45) / 2 over 50; repeat 2: (44 + 40) / 2 over 40.
    assert ratios([50.0, 40.0], [[55.0, 45.0], [44.0, 40.0]]) == pytest.approx([1.0, 1.05])


def test_ratios_leave_out_a_repeat_with_a_missing_figure() -> None:
    assert ratios([0.0, 40.0, 50.0], [[55.0, 45.0], [44.0, 0.0], [60.0, 60.0]]) == [1.2]
    assert ratios([50.0], [[]]) == []


def test_ratios_refuse_repeats_that_do_not_pair() -> None:
    with pytest.raises(ValueError):
        ratios([50.0, 40.0], [[55.0, 45.0]])


def test_scaling_ratio_is_the_median_of_the_repeats() -> None:
    found = Scaling("media", [50.0, 40.0, 100.0], [[55.0, 55.0], [44.0, 44.0], [200.0, 200.0]])
    assert found.ratio() == pytest.approx(1.1)
    assert "1.10-2.00x the CPU of one" in found.line()
    assert Scaling("media", [], []).ratio() is None


def test_span_gives_the_range_or_one_figure() -> None:
    assert span([1.13, 1.07, 1.1], ".2f", "x") == "1.07-1.13x"
    assert span([1.071, 1.074], ".2f", "x") == "1.07x"
    assert span([]) == "-"


def test_shares_and_spreads() -> None:
    assert shares([2000, 0]) == [100.0, 0.0]
    assert shares([1050, 950]) == pytest.approx([52.5, 47.5])
    assert shares([0, 0]) == [0.0, 0.0]
    assert not spreads([2000, 0])
    assert not spreads([0, 0])
    assert spreads([1999, 1])


def test_decide_weighs_each_hand_over_against_a_second_process() -> None:
    lines = decide(Figures(
        frame_us=25.0, media_ratio=1.10, call_us=1000.0, setup_ratio=0.94,
        back_us=60.0, batched_us=2.0, one_way_us=5.0, socket_us=10.0,
        one_source_spreads=False,
    ))
    text = "\n".join(lines)
    assert lines[0].startswith("decision: one gateway process per core behind Kamailio")
    assert "CPU per echoed frame of 25 us: a second process +10%" in text
    assert "feeding a worker one way +20% (5.0 us)" in text
    assert "there and back +240% (60.0 us)" in text
    assert f"batched by {multicore.BATCH}" in text and "+8% (2.0 us)" in text
    assert "CPU per call set up of 1000 us: a second process -6%; handing the call's socket " \
        "to a worker +1.0% (10.0 us)" in text
    assert "no hand-over saves CPU over a second process" in text
    assert "SO_REUSEPORT gives one source (a trunk) to one process" in text


def test_decide_says_so_when_frames_fed_one_way_cost_less_than_a_second_process() -> None:
    text = "\n".join(decide(Figures(frame_us=25.0, media_ratio=1.20, one_way_us=2.5,
                                    one_source_spreads=True)))
    assert "frames fed one way to a worker cost less than a second process here" in text
    assert "SO_REUSEPORT shared one source's datagrams" in text


def test_decide_with_nothing_measured_names_no_figure() -> None:
    lines = decide(Figures())
    assert len(lines) == 2
    assert "%" not in "".join(lines) and "us" not in lines[1].split()
