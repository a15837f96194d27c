"""`sipbridge calls` and `sipbridge trace CALL_ID`: calls and their timelines from the store,
as a table and as a ladder (SIP, API, webhooks, sideband, model and transfer steps
interleaved in time, the failing step marked).

The ladder is built once, as `Step` rows (`steps(call)`); `ladder()` draws them as text and
the dashboard (`sipbridge.api.dashboard`) as HTML."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sipbridge.records import CallRecord, NodeRecord, TransferRecord

FAILING = {"failed", "rejected", "timed_out", "unconfirmed", "cancelled", "returned"}
WIDTH = 44  # the arrow's width between two columns
LANES = ("carrier", "sipbridge", "app", "model")  # app and model share the third column


@dataclass(frozen=True, slots=True)
class Step:
    """One row of a call's ladder: an arrow from lane `source` to lane `target`, or a note on
    `source` when `target` is None."""

    at: float  # seconds from the start of the call
    kind: str  # the timeline entry's kind ("sip", "api", "transfer", ...)
    source: str
    target: str | None
    text: str
    failing: bool
    sip_text: str | None = None  # a SIP message's full text


@dataclass(frozen=True, slots=True)
class Summary:
    """One call as a row of a list: who, when, how long, how it ended."""

    id: str
    state: str
    caller: str
    callee: str
    started: float
    seconds: float
    end_reason: str | None
    transfer: TransferRecord | None  # the last transfer's record

    @property
    def outcome(self) -> str:
        return outcome(self.transfer)


def outcome(transfer: TransferRecord | None) -> str:
    """A transfer's status and SIP status ("failed 486"), or "-" for none."""
    if transfer is None:
        return "-"
    sip = transfer.get("sip_status")
    return f"{transfer.get('status')}" + (f" {sip}" if sip else "")


def summarize(call: CallRecord, now: float | None = None) -> Summary:
    """The list row of a call record (a live call's duration runs until `now`)."""
    started = _seconds(call.get("created_at"), 0.0)
    ended = _seconds(call.get("ended_at"), 0.0) or (
        (time.time() if now is None else now) if call.get("state") != "ended" else started)
    transfers = [t for t in call.get("transfers") or [] if isinstance(t, Mapping)]
    sip = call.get("sip") or {}
    reason = call.get("end_reason")
    return Summary(id=str(call.get("id")), state=str(call.get("state")),
                   caller=str(sip.get("from") or ""), callee=str(sip.get("to") or ""),
                   started=started, seconds=max(0.0, ended - started),
                   end_reason=str(reason) if reason else None,
                   transfer=transfers[-1] if transfers else None)


def calls_table(calls: Iterable[CallRecord]) -> str:
    rows = [("CALL", "STATE", "FROM", "TO", "STARTED", "SECONDS", "END", "TRANSFER")]
    for c in map(summarize, calls):
        rows.append((c.id, c.state, c.caller, c.callee,
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.started)),
                     f"{c.seconds:.1f}", str(c.end_reason or "-"), c.outcome))
    return _table(rows)


def cluster_table(nodes: Iterable[NodeRecord]) -> str:
    """`sipbridge cluster`: one line per node, its state, calls and heartbeat."""
    rows = [("NODE", "STATE", "CALLS", "REFUSED", "HEARTBEAT", "STARTED", "API")]
    for n in nodes:
        rows.append((n["name"], n["state"], str(n["live_calls"]), str(n["refused"]),
                     f"{n['heartbeat_age']:.1f} s ago",
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(n["started_at"])),
                     n["api_url"]))
    return _table(rows)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _seconds(value: object, default: float) -> float:
    """A time as float; `default` for what is not one (records come from the store)."""
    if isinstance(value, (int, float, str)):
        try:
            return float(value)
        except ValueError:
            pass
    return default


def _sip_failing(line: str) -> bool:
    """A final error response, not counting challenges (401, 407) and 487 after CANCEL."""
    code = line[8:11]
    return line.startswith("SIP/2.0 ") and code.isdigit() and int(code) >= 400 \
        and code not in ("401", "407", "487")


def step(entry: Mapping[str, object], start: float) -> Step:
    """The ladder row of one timeline entry, `start` being the call's start (epoch)."""
    kind = str(entry.get("kind"))
    at = _seconds(entry.get("at") or start, start) - start
    if kind == "sip":
        line = str(entry.get("line", ""))
        text = entry.get("text")
        source, target = ("carrier", "sipbridge") if entry.get("dir") == "in" \
            else ("sipbridge", "carrier")
        return Step(at, kind, source, target, line, _sip_failing(line),
                    str(text) if text else None)
    if kind == "api":
        details = " ".join(f"{k}={v}" for k, v in entry.items()
                           if k not in ("at", "kind", "action"))
        action = f"{entry.get('action')} {details}".strip()
        return Step(at, kind, "app", "sipbridge", action, False)
    if kind == "webhook":
        result = entry.get("status_code") or entry.get("error")
        url = f" to {entry['url']}" if entry.get("url") else ""
        text = f"{entry.get('type')} #{entry.get('attempt')}{url}: {result}"
        failing = bool(entry.get("error")) or not str(result).startswith("2")
        return Step(at, kind, "sipbridge", "app", text, failing)
    if kind == "sideband":
        text = f"sideband {entry.get('status')} {entry.get('event') or ''}".strip()
        return Step(at, kind, "app", "sipbridge", text, bool(entry.get("error")))
    if kind == "agent":
        status = entry.get("status")
        text = f"model {status}"
        if status == "function_call":
            text = f"model calls {entry.get('name')}({entry.get('arguments') or ''})"
        elif status == "speech_wait":
            text = f"REFER held {entry.get('waited')} s ({entry.get('outcome')})"
        elif status in ("error", "transcription_failed") and entry.get("detail"):
            text += f": {entry.get('detail')}"
        return Step(at, kind, "sipbridge", "model", text, status in ("dropped", "failed"))
    if kind == "transcript":
        said = f"{entry.get('role')} said \"{entry.get('text')}\""
        return Step(at, kind, "model", None, said, False)
    if kind in ("transfer", "fallback"):
        status = str(entry.get("status"))
        sip = f" {entry['sip_status']}" if entry.get("sip_status") else ""
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        mode = f"{entry.get('mode')} " if kind == "fallback" else ""
        failing = kind == "transfer" and status in FAILING and bool(entry.get("final"))
        return Step(at, kind, "sipbridge", None, f"{kind} {mode}{status}{sip}{reason}",
                    failing or (kind == "fallback" and status == "failed"))
    if kind == "dtmf" and entry.get("direction") == "out":
        status = str(entry.get("status"))
        why = f": {entry['reason']}" if entry.get("reason") else ""
        return Step(at, kind, "sipbridge", None,
                    f"dtmf out {entry.get('digits')} ({entry.get('method')}) {status}{why}",
                    status == "failed")
    details = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "kind"))
    return Step(at, kind, "sipbridge", None, f"{kind} {details}", False)


def steps(call: CallRecord) -> list[Step]:
    """The call's timeline as ladder rows, in timeline order."""
    start = _seconds(call.get("created_at") or 0.0, 0.0)
    return [step(entry, start) for entry in call.get("timeline") or []
            if isinstance(entry, Mapping)]


def _arrow(text: str, right: bool) -> str:
    text = f" {text} "
    if len(text) > WIDTH - 3:
        text = text[: WIDTH - 6] + "... "
    fill = WIDTH - 2 - len(text)
    left, rest = fill // 2, fill - fill // 2
    return ("-" * left + text + "-" * rest + "->") if right else ("<-" + "-" * left + text
                                                                   + "-" * rest)


def _draw(row: Step) -> str:
    """A row as text: carrier | sipbridge | app or model, arrows between neighbours."""
    blank = " " * WIDTH
    if row.target is None:
        return f"        {blank} {row.source}: {row.text}"
    if "carrier" in (row.source, row.target):
        return f"carrier {_arrow(row.text, row.source == 'carrier')} sipbridge"
    other = row.target if row.source == "sipbridge" else row.source
    return f"        {blank} sipbridge {_arrow(row.text, row.source == 'sipbridge')} {other}"


def _line(entry: Mapping[str, object]) -> tuple[str, bool]:
    """The ladder line of one timeline entry, and whether it is a failing step."""
    row = step(entry, 0.0)
    return _draw(row), row.failing


def ladder(call: CallRecord, *, full: bool = False) -> str:
    """The call's timeline as a ladder; `full` adds each SIP message's text."""
    sip = call.get("sip") or {}
    head = (f"call {call.get('id')}  {sip.get('from', '')} -> {sip.get('to', '')}  "
            f"state {call.get('state')}  end {call.get('end_reason') or '-'}")
    out = [head, ""]
    for row in steps(call):
        out.append(f"{row.at:+9.3f}s  {_draw(row)}" + ("   <== FAILED" if row.failing else ""))
        if full and row.sip_text:
            out.extend("              | " + ln for ln in row.sip_text.splitlines())
    return "\n".join(out)
