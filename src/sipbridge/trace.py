"""`sipbridge calls` and `sipbridge trace CALL_ID`: calls and their timelines from the store,
as a table and as a ladder (SIP, API, webhooks, sideband, model and transfer steps
interleaved in time, the failing step marked)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

FAILING = {"failed", "rejected", "timed_out", "unconfirmed", "cancelled"}
WIDTH = 44  # the arrow's width between two columns


def calls_table(calls: Iterable[Mapping[str, Any]]) -> str:
    rows = [("CALL", "STATE", "FROM", "TO", "STARTED", "SECONDS", "END", "TRANSFER")]
    for c in calls:
        started = c.get("created_at") or 0.0
        ended = c.get("ended_at") or (time.time() if c.get("state") != "ended" else started)
        transfers = c.get("transfers") or []
        outcome = "-"
        if transfers:
            last = transfers[-1]
            outcome = f"{last.get('status')}" + (f" {last['sip_status']}"
                                                 if last.get("sip_status") else "")
        sip = c.get("sip") or {}
        rows.append((str(c.get("id")), str(c.get("state")), str(sip.get("from") or ""),
                     str(sip.get("to") or ""),
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
                     f"{max(0.0, ended - started):.1f}", str(c.get("end_reason") or "-"),
                     outcome))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _arrow(text: str, right: bool) -> str:
    text = f" {text} "
    if len(text) > WIDTH - 3:
        text = text[: WIDTH - 6] + "... "
    fill = WIDTH - 2 - len(text)
    left, rest = fill // 2, fill - fill // 2
    return ("-" * left + text + "-" * rest + "->") if right else ("<-" + "-" * left + text
                                                                   + "-" * rest)


def _line(entry: Mapping[str, Any]) -> tuple[str, bool]:
    """The ladder line of one timeline entry, and whether it is a failing step."""
    kind = entry.get("kind")
    blank = " " * WIDTH
    if kind == "sip":
        line = str(entry.get("line", ""))
        failing = line.startswith("SIP/2.0 ") and line[8:11].isdigit() \
            and int(line[8:11]) >= 400 and line[8:11] not in ("401", "407", "487")
        if entry.get("dir") == "in":
            return f"carrier {_arrow(line, True)} sipbridge", failing
        return f"carrier {_arrow(line, False)} sipbridge", failing
    if kind == "api":
        details = " ".join(f"{k}={v}" for k, v in entry.items()
                           if k not in ("at", "kind", "action"))
        action = f"{entry.get('action')} {details}".strip()
        return f"        {blank} sipbridge {_arrow(action, False)} app", False
    if kind == "webhook":
        result = entry.get("status_code") or entry.get("error")
        text = f"{entry.get('type')} #{entry.get('attempt')}: {result}"
        failing = bool(entry.get("error")) or not str(result).startswith("2")
        return f"        {blank} sipbridge {_arrow(text, True)} app", failing
    if kind == "sideband":
        text = f"sideband {entry.get('status')} {entry.get('event') or ''}".strip()
        return f"        {blank} sipbridge {_arrow(text, False)} app", bool(entry.get("error"))
    if kind == "agent":
        status = f"model {entry.get('status')}"
        return (f"        {blank} sipbridge {_arrow(status, True)} model",
                entry.get("status") in ("dropped", "failed"))
    if kind in ("transfer", "fallback"):
        status = str(entry.get("status"))
        sip = f" {entry['sip_status']}" if entry.get("sip_status") else ""
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        mode = f"{entry.get('mode')} " if kind == "fallback" else ""
        failing = kind == "transfer" and status in FAILING and bool(entry.get("final"))
        return (f"        {blank} sipbridge: {kind} {mode}{status}{sip}{reason}",
                failing or (kind == "fallback" and status == "failed"))
    details = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "kind"))
    return f"        {blank} sipbridge: {kind} {details}", False


def ladder(call: Mapping[str, Any], *, full: bool = False) -> str:
    """The call's timeline as a ladder; `full` adds each SIP message's text."""
    start = float(call.get("created_at") or 0.0)
    sip = call.get("sip") or {}
    head = (f"call {call.get('id')}  {sip.get('from', '')} -> {sip.get('to', '')}  "
            f"state {call.get('state')}  end {call.get('end_reason') or '-'}")
    out = [head, ""]
    for entry in call.get("timeline") or []:
        text, failing = _line(entry)
        at = float(entry.get("at") or start) - start
        out.append(f"{at:+9.3f}s  {text}" + ("   <== FAILED" if failing else ""))
        if full and entry.get("kind") == "sip" and entry.get("text"):
            out.extend("              | " + ln for ln in str(entry["text"]).splitlines())
    return "\n".join(out)
