"""Where a call may be transferred and how: a target's URI, its mode (a blind REFER, or a
warm transfer the agent briefs), the brief, and the timeouts of that transfer.

The same keys are read wherever a transfer can be shaped: the values of accept's
`"sipbridge": {"transfer_targets": {...}}` (per target), accept's `"sipbridge"` options
themselves (per call: the timeouts) and refer's `"sipbridge"` options (per request). The
layers combine with `timers_for`: the request over the target over the call over the
config.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sipbridge.calls.transfer_machine import TransferTimers

MODES = ("blind", "warm")
SUMMARY = "summary"  # a warm transfer's brief: the model sums up the conversation so far
MAX_BRIEF = 2000  # characters of a brief given as text
# Each timeout key and its upper bound in seconds (all must be above 0).
TIMEOUTS: dict[str, float] = {
    "refer_timeout": 64.0,
    "notify_timeout": 600.0,
    "ring_timeout": 300.0,
    "brief_timeout": 600.0,
}


class SpecError(ValueError):
    """A transfer option that cannot be used: `param` names it (dotted, from the body's
    root, e.g. "sipbridge.transfer_targets.sales.ring_timeout")."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


@dataclass(frozen=True, slots=True)
class TransferSpec:
    """How to transfer to one target."""

    uri: str
    mode: str = "blind"  # "blind" (REFER) or "warm"
    brief: str | None = None  # warm only: what the agent tells the person, or SUMMARY
    timeouts: Mapping[str, float] = field(default_factory=dict)


def read_timeouts(options: Mapping[str, object], where: str) -> dict[str, float]:
    """The timeout keys present in `options`, checked (SpecError names the bad one)."""
    found: dict[str, float] = {}
    for key, limit in TIMEOUTS.items():
        if key not in options or options[key] is None:
            continue
        value = options[key]
        param = f"{where}.{key}" if where else key
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(param, f"{key} must be a number of seconds, not {value!r}.")
        if not math.isfinite(value) or not 0 < value <= limit:
            raise SpecError(param, f"{key} must be above 0 and at most {limit:g} seconds, "
                            f"not {value!r}.")
        found[key] = float(value)
    return found


def read_mode(options: Mapping[str, object], where: str) -> tuple[str, str | None]:
    """The `mode` ("blind" unless given) and the `brief` (warm only; default SUMMARY)."""
    prefix = f"{where}." if where else ""
    mode = options.get("mode", "blind")
    if mode is None:
        mode = "blind"
    if mode not in MODES:
        raise SpecError(f"{prefix}mode", f"Invalid value: {mode!r}. Supported values are: "
                        f"{', '.join(repr(m) for m in MODES)}.")
    brief = options.get("brief")
    if brief is not None:
        if mode != "warm":
            raise SpecError(f"{prefix}brief", "brief is for a warm transfer (mode \"warm\").")
        if not isinstance(brief, str) or not brief.strip():
            raise SpecError(f"{prefix}brief", "brief must be the text to tell the person, "
                            f"or {SUMMARY!r}.")
        if len(brief) > MAX_BRIEF:
            raise SpecError(f"{prefix}brief", f"brief must be at most {MAX_BRIEF} characters.")
        brief = brief.strip()
    elif mode == "warm":
        brief = SUMMARY
    return str(mode), brief


TARGET_KEYS = frozenset({"uri", "mode", "brief", *TIMEOUTS})


def parse_target(value: object, where: str,
                 uri_problem: Callable[[str], str | None]) -> TransferSpec:
    """A target as accept declares it: a URI string (blind, the call's timeouts), or an
    object {"uri": ..., "mode": ..., "brief": ..., "ring_timeout": ..., ...}.
    `uri_problem` says what is wrong with a URI (None: nothing)."""
    if isinstance(value, str):
        problem = uri_problem(value)
        if problem is not None:
            raise SpecError(where, problem)
        return TransferSpec(value)
    if not isinstance(value, Mapping):
        raise SpecError(where, "a transfer target is a tel: or sip: URI, or an object with "
                        "its \"uri\".")
    unknown = sorted(str(k) for k in value if k not in TARGET_KEYS)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}", f"Unknown parameter: '{unknown[0]}'. "
                        f"Known: {', '.join(sorted(TARGET_KEYS))}.")
    uri = value.get("uri")
    if not isinstance(uri, str):
        raise SpecError(f"{where}.uri", "uri must be a tel: or sip: URI.")
    problem = uri_problem(uri)
    if problem is not None:
        raise SpecError(f"{where}.uri", problem)
    mode, brief = read_mode(value, where)
    return TransferSpec(uri, mode, brief, read_timeouts(value, where))


def timers_for(base: TransferTimers, *layers: Mapping[str, float]) -> TransferTimers:
    """`base` with each layer's timeouts put over it, later layers winning."""
    merged: dict[str, float] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if k in TIMEOUTS})
    if not merged:
        return base
    return dataclasses.replace(
        base,
        refer_timeout=merged.get("refer_timeout", base.refer_timeout),
        notify_timeout=merged.get("notify_timeout", base.notify_timeout),
        ring_timeout=merged.get("ring_timeout", base.ring_timeout),
        brief_timeout=merged.get("brief_timeout", base.brief_timeout),
    )
