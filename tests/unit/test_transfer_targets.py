"""Transfer targets and their options: accept's targets, per-call and per-request timeouts."""

from __future__ import annotations

import pytest

from sipbridge.calls.targets import (
    SUMMARY,
    SpecError,
    TransferSpec,
    parse_target,
    read_mode,
    read_timeouts,
    timers_for,
)
from sipbridge.calls.transfer_machine import TransferTimers


def no_problem(uri: str) -> str | None:
    return None if uri.startswith(("tel:", "sip:")) else "not a tel: or sip: URI"


def test_a_plain_uri_is_a_blind_target() -> None:
    assert parse_target("tel:+14155550123", "t.sales", no_problem) == TransferSpec(
        "tel:+14155550123")


def test_an_object_gives_mode_brief_and_timeouts() -> None:
    spec = parse_target({"uri": "sip:desk@pbx", "mode": "warm", "ring_timeout": 12,
                         "brief_timeout": 20.5}, "t.desk", no_problem)
    assert spec.mode == "warm" and spec.brief == SUMMARY
    assert spec.timeouts == {"ring_timeout": 12.0, "brief_timeout": 20.5}


@pytest.mark.parametrize(("value", "param"), [
    ("http://x", "t.a"),
    (5, "t.a"),
    ({"mode": "warm"}, "t.a.uri"),
    ({"uri": "mailto:x"}, "t.a.uri"),
    ({"uri": "tel:+1", "mode": "cold"}, "t.a.mode"),
    ({"uri": "tel:+1", "brief": "hi"}, "t.a.brief"),
    ({"uri": "tel:+1", "mode": "warm", "brief": " "}, "t.a.brief"),
    ({"uri": "tel:+1", "ring_timeout": 0}, "t.a.ring_timeout"),
    ({"uri": "tel:+1", "refer_timeout": 65}, "t.a.refer_timeout"),
    ({"uri": "tel:+1", "notify_timeout": True}, "t.a.notify_timeout"),
    ({"uri": "tel:+1", "notify_timeout": "5"}, "t.a.notify_timeout"),
    ({"uri": "tel:+1", "ringtimeout": 5}, "t.a.ringtimeout"),
])
def test_bad_targets_name_the_parameter(value: object, param: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_target(value, "t.a", no_problem)
    assert caught.value.param == param


def test_timeouts_layer_later_over_earlier() -> None:
    base = TransferTimers()
    timers = timers_for(base, {"ring_timeout": 10.0, "refer_timeout": 3.0},
                        {"ring_timeout": 5.0})
    assert (timers.ring_timeout, timers.refer_timeout) == (5.0, 3.0)
    assert timers.notify_timeout == base.notify_timeout
    assert timers_for(base) is base


def test_read_helpers_at_the_root() -> None:
    assert read_timeouts({"notify_timeout": 9, "other": 1}, "") == {"notify_timeout": 9.0}
    assert read_mode({}, "") == ("blind", None)
    assert read_mode({"mode": "warm", "brief": " Sales lead "}, "") == ("warm", "Sales lead")
    with pytest.raises(SpecError) as caught:
        read_mode({"mode": "x"}, "")
    assert caught.value.param == "mode"


def test_timers_refuse_a_bad_ring_timeout() -> None:
    with pytest.raises(ValueError, match="ring_timeout"):
        TransferTimers(ring_timeout=0)
