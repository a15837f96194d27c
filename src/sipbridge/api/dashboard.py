"""The operator's dashboard, served by the gateway's HTTP API: `/dashboard` lists the calls
(live ones marked, refreshed every second), `/dashboard/calls/{id}` shows one call: who,
how it ended, the transfer's outcome, the ladder (`sipbridge.trace.steps`, the same rows
as `sipbridge trace`), the transcript and the recording; `/dashboard/overview` shows the
whole cluster (nodes, calls per minute, transfers, latencies: `sipbridge.api.overview`),
refreshed every few seconds from `/dashboard/api/overview`.

The pages read calls the way the API's GET routes do (`CallRecords`: live calls from the
CallManager, else the store). With API keys configured every dashboard route wants HTTP
Basic auth, any user name and an API key as the password (a browser sends it on its own
requests, the audio player's included). Everything from a call is escaped: SIP headers come from the
internet. Scripts are served as files and the Content-Security-Policy allows no others.
"""

from __future__ import annotations

import base64
import binascii
import html
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from sipbridge.api import overview
from sipbridge.api.errors import ApiError
from sipbridge.api.overview import DEFAULT_MINUTES, MAX_MINUTES
from sipbridge.api.state import State
from sipbridge.records import CallRecord, TransferRecord
from sipbridge.trace import FAILING, Step, Summary, outcome, step, steps, summarize

T = TypeVar("T")

BASE = "/dashboard"
LIVE_STATES = ("ringing", "active")
MAX_ID = 128  # longer call ids are not ours: 404 without a lookup
STATIC = {"dashboard.css": "text/css; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; media-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CHALLENGE = {"WWW-Authenticate": 'Basic realm="sipbridge"'}
LANE = {"carrier": 0, "sipbridge": 1, "app": 2, "model": 2}


class _Unauthorized(Exception):
    """No or wrong Basic credentials on a dashboard route."""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def basic_password(header: str | None) -> str | None:
    """The password of an `Authorization: Basic` header (RFC 7617), or None."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


def authorize(request: Request, state: State) -> None:
    """With API keys configured: an API key as the Basic password, else 401 (a page that
    asks the browser to sign in)."""
    if not state.keys:
        return
    password = basic_password(request.headers.get("authorization"))
    if password is None or not any(secrets.compare_digest(password.encode(), k)
                                    for k in state.keys):
        raise _Unauthorized


async def unauthorized(_: Request, __: Exception) -> Response:
    return _page("Sign in", "<h1>Sign in</h1><p>The dashboard wants an API key as the "
                 "password (any user name).</p>", status=401, headers=CHALLENGE)


router = APIRouter(prefix=BASE, dependencies=[Depends(authorize)], include_in_schema=False)


async def _read(what: Callable[[str], Awaitable[T]], call_id: str) -> T | Response:
    """What the call records give for the call, or the page that says why they cannot."""
    if len(call_id) > MAX_ID:
        return _error_page(404, "No such call.")
    try:
        return await what(call_id)
    except ApiError as exc:
        return _error_page(exc.status, exc.message)


@router.get("")
async def calls_page() -> Response:
    return _page("Calls", _LIST, page="list", source=f"{BASE}/api/calls")


@router.get("/api/calls")
async def calls_data(state: State, limit: int = Query(100, ge=1, le=1000)) -> Response:
    try:
        listed = await state.records.list(limit=limit)
    except ApiError as exc:
        return JSONResponse(exc.body(), status_code=exc.status, headers=HEADERS)
    now = time.time()
    rows = [_row(summarize(c, now)) for c in listed]
    return JSONResponse({"now": now, "calls": rows}, headers=HEADERS)


@router.get("/overview")
async def overview_page(minutes: int = Query(DEFAULT_MINUTES, ge=1, le=MAX_MINUTES)
                        ) -> Response:
    return _page("Overview", overview.frame(BASE, minutes), page="overview",
                 source=f"{BASE}/api/overview?minutes={minutes}")


@router.get("/api/overview")
async def overview_data(state: State, minutes: int = Query(DEFAULT_MINUTES, ge=1,
                                                           le=MAX_MINUTES)) -> Response:
    try:
        data = await overview.figures(state, minutes, time.time(), tone)
    except ApiError as exc:
        return JSONResponse(exc.body(), status_code=exc.status, headers=HEADERS)
    return JSONResponse(data, headers=HEADERS)


@router.get("/calls/{call_id}")
async def call_page(call_id: str, state: State) -> Response:
    record = await _read(state.records.get, call_id)
    if isinstance(record, Response):
        return record
    summary = summarize(record)
    return _page(f"Call {summary.id}", render_call(record), page="call",
                 live="1" if summary.state in LIVE_STATES else "0")


@router.get("/calls/{call_id}/recording")
async def call_recording(call_id: str, state: State) -> Response:
    path = await _read(state.records.recording, call_id)
    if isinstance(path, Response):
        return path
    return FileResponse(str(path), media_type="audio/wav", filename=f"{call_id}.wav",
                        headers=HEADERS)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return _error_page(404, "No such file.")
    files = resources.files("sipbridge.api") / "static"
    return Response((files / name).read_bytes(), media_type=STATIC[name], headers=HEADERS)


@router.get("/{rest:path}")
async def elsewhere(rest: str) -> Response:
    return _error_page(404, "No such page.")


def mount_dashboard(app: FastAPI) -> None:
    """Add the dashboard's routes to the API's app (after the API's own routes)."""
    app.add_exception_handler(_Unauthorized, unauthorized)
    app.include_router(router)


def _row(c: Summary) -> dict[str, object]:
    """One call as the list page's JSON row (the page's script shows it as text)."""
    transfer = c.transfer
    return {"id": c.id, "href": _href(c.id), "state": c.state, "live": c.state in LIVE_STATES,
            "caller": c.caller, "callee": c.callee, "started": c.started,
            "duration": _duration(c.seconds), "end_reason": c.end_reason,
            "transfer": None if transfer is None else {
                "outcome": c.outcome, "tone": _tone(transfer), "reason": transfer.get("reason"),
                "target": transfer.get("target_uri")}}


def _href(call_id: str) -> str:
    return f"{BASE}/calls/{quote(call_id, safe='')}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def tone(status: object, final: bool) -> str:
    """How a transfer went, as a colour: bad (failed...), good, pending or neutral."""
    if status in FAILING:
        return "bad"
    if status in ("succeeded", "connected"):
        return "good"
    return "neutral" if final else "pending"


def _tone(transfer: TransferRecord) -> str:
    return tone(transfer.get("status"), bool(transfer.get("final")))


def _page(title: str, main: str, *, status: int = 200,
          headers: Mapping[str, str] | None = None, **data: str) -> HTMLResponse:
    attributes = "".join(f' data-{name}="{_e(value)}"' for name, value in data.items())
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)} · sipbridge</title><link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{BASE}/static/dashboard.css">'
        f'<script src="{BASE}/static/dashboard.js" defer></script></head>'
        f'<body{attributes}><header class="top"><a class="brand" href="{BASE}">sipbridge'
        f'</a><nav class="views">{_views(data.get("page"))}</nav></header>'
        f'<main id="main">{main}</main></body></html>\n')
    return HTMLResponse(document, status_code=status, headers={**HEADERS, **(headers or {})})


def _views(page: str | None) -> str:
    """The header's links to the dashboard's two views, the one shown marked."""
    views = (("list", BASE, "Calls"), ("overview", f"{BASE}/overview", "Overview"))
    current = ' aria-current="page"'
    return "".join(f'<a href="{href}"{current if page == name else ""}>{label}</a>'
                   for name, href, label in views)


def _error_page(status: int, message: str) -> HTMLResponse:
    return _page(f"{status}", f'<section class="panel error-page"><h1>{status}</h1>'
                 f'<p>{_e(message)}</p><p><a href="{BASE}">All calls</a></p></section>',
                 status=status)


_LIST = (
    '<section class="panel"><div class="panel-head"><h1>Calls</h1>'
    '<span id="status" class="muted" role="status">loading...</span></div>'
    '<div class="table-wrap"><table class="calls"><thead><tr><th>State</th><th>Call</th>'
    '<th>From</th><th>To</th>'
    '<th>Started</th><th class="num">Duration</th><th>End reason</th><th>Transfer</th></tr>'
    '</thead><tbody id="calls"></tbody></table></div>'
    '<p id="empty" class="empty" hidden>No calls yet.</p>'
    '<noscript><p class="empty">This page lists the calls with JavaScript; the same data is '
    f'at <a href="{BASE}/api/calls">{BASE}/api/calls</a>.</p></noscript></section>')


def render_call(record: CallRecord) -> str:
    """The call page's content: header, transfer outcome, recording, transcript, ladder."""
    summary = summarize(record)
    rows = steps(record)
    return "".join((
        f'<nav class="crumbs"><a href="{BASE}">&larr; All calls</a></nav>',
        _header(record, summary), _transfers(record, summary), _recording(record, summary),
        _transcript(record, summary),
        '<section class="panel" id="ladder"><h2>Ladder</h2>',
        _ladder([(i, r) for i, r in enumerate(rows) if r.kind != "transcript"]),
        "</section>"))


def _header(record: CallRecord, c: Summary) -> str:
    sip = record.get("sip") or {}
    live = '<span class="live-dot" title="live"></span>' if c.state in LIVE_STATES else ""
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(c.started))
    facts = [("Started", f'<time data-epoch="{c.started:.3f}">{_e(started)}</time>'),
             ("Duration", _e(_duration(c.seconds))),
             ("End reason", _e(c.end_reason or "-")),
             ("SIP Call-ID", f'<span class="mono">{_e(sip.get("call_id") or "-")}</span>'),
             ("Source", _e(sip.get("source") or "-")),
             ("Codec", _e(sip.get("codec") or "-"))]
    if sip.get("final_status"):
        facts.append(("Answered with", _e(sip.get("final_status"))))
    return (
        f'<section class="panel call-head"><div class="title-row">{live}'
        f'<span class="state state-{_e(c.state)}">{_e(c.state)}</span>'
        f'<h1 class="mono" id="call-id">{_e(c.id)}</h1></div>'
        f'<p class="route"><span class="party" id="caller">{_e(c.caller)}</span>'
        f'<span class="to">&rarr;</span><span class="party" id="callee">{_e(c.callee)}</span>'
        f'</p>{_facts(facts)}</section>')


def _facts(facts: list[tuple[str, str]]) -> str:
    """A definition list; the values are HTML already escaped."""
    items = "".join(f"<div><dt>{name}</dt><dd>{value}</dd></div>" for name, value in facts)
    return f'<dl class="facts">{items}</dl>'


def _transfers(record: CallRecord, c: Summary) -> str:
    transfers = [t for t in record.get("transfers") or [] if isinstance(t, Mapping)]
    if not transfers:
        return ('<section class="panel transfer tone-none" id="transfer"><h2>Transfer</h2>'
                '<p class="muted">No transfer on this call.</p></section>')
    last = transfers[-1]
    status = _e(last.get("status"))
    sip = " ".join(_e(v) for v in (last.get("sip_status"), last.get("reason")) if v)
    fallback = last.get("fallback")
    details = [("Target", f'<span class="mono">{_e(last.get("target_uri"))}</span>'),
               ("Transfer id", f'<span class="mono">{_e(last.get("id"))}</span>')]
    if isinstance(fallback, Mapping):
        details.append(("Fallback", _e(_fallback(fallback))))
    earlier = "".join(f'<li><span class="mono">{_e(t.get("target_uri"))}</span>: '
                      f'{_e(outcome(t))}</li>' for t in transfers[:-1])
    return (
        f'<section class="panel transfer tone-{_tone(last)}" id="transfer"><h2>Transfer</h2>'
        f'<div class="outcome"><span class="outcome-status" id="transfer-status">{status}'
        f'</span><span class="outcome-sip" id="transfer-sip">{sip or "no SIP status"}</span>'
        f'</div>{_facts(details)}'
        + (f'<p class="muted">Earlier transfers:</p><ul class="earlier">{earlier}</ul>'
           if earlier else "")
        + "</section>")


def _fallback(fallback: Mapping[str, object]) -> str:
    """"announce", "bridge: failed (no outbound trunk configured)"."""
    mode, status, reason = (fallback.get(k) for k in ("mode", "status", "reason"))
    text = f"{mode}: {status}" if status and status != mode else str(mode)
    return f"{text} ({reason})" if reason else text


def _recording(record: CallRecord, c: Summary) -> str:
    path = record.get("recording")
    if c.state in LIVE_STATES or not path or not Path(str(path)).is_file():
        return ""
    src = f"{_href(c.id)}/recording"
    return ('<section class="panel" id="recording"><h2>Recording</h2><div class="player">'
            f'<audio controls preload="metadata" src="{_e(src)}"></audio>'
            f'<a href="{_e(src)}" download>Download WAV</a></div>'
            '<p class="muted">Stereo: the caller on the left, the agent on the right.</p>'
            '</section>')


_WHO = {"agent": "Agent", "person": "Person"}  # "person": a warm transfer's, briefed


def _transcript(record: CallRecord, c: Summary) -> str:
    turns = [(step(e, c.started).at, e) for e in record.get("timeline") or []
             if isinstance(e, Mapping) and e.get("kind") == "transcript"]
    if not turns:
        return ""
    items = "".join(
        f'<li class="turn {"agent" if e.get("role") == "agent" else "caller"}">'
        f'<span class="who">{_WHO.get(str(e.get("role")), "Caller")}</span>'
        f'<span class="at">{at:+.1f} s</span><p>{_e(e.get("text"))}</p></li>'
        for at, e in turns)
    return (f'<section class="panel" id="transcript"><h2>Transcript</h2>'
            f'<ol class="turns">{items}</ol></section>')


def _ladder(rows: list[tuple[int, Step]]) -> str:
    head = ('<li class="lanes" aria-hidden="true"><span class="lane l0">carrier</span>'
            '<span class="lane l1">sipbridge</span><span class="lane l2">app / model</span></li>')
    if not rows:
        return f'<ol class="ladder">{head}</ol><p class="muted">Nothing on the timeline yet.</p>'
    return f'<ol class="ladder">{head}{"".join(_ladder_row(i, r) for i, r in rows)}</ol>'


def _ladder_row(index: int, row: Step) -> str:
    flag = '<span class="flag">FAILED</span>' if row.failing else ""
    label = f'<span class="label" title="{_e(row.text)}">{_e(row.text)}</span>'
    if row.target is None:
        body = f'<span class="note">{label}</span>'
    else:
        a, b = LANE.get(row.source, 1), LANE.get(row.target, 1)
        span = "span-01" if 0 in (a, b) else "span-12"
        body = (f'<span class="arrow {span} {"right" if b > a else "left"} '
                f'{"model" if "model" in (row.source, row.target) else ""}">{label}</span>')
    cells = f'<span class="at">{row.at:+.3f} s</span>{body}{flag}'
    classes = f'step kind-{_e(row.kind)}{" failing" if row.failing else ""}'
    if row.sip_text is None:
        return f'<li class="{classes}"><div class="row">{cells}</div></li>'
    return (f'<li class="{classes}"><details id="step-{index}"><summary class="row">{cells}'
            f'</summary><pre class="sip-text">{_e(row.sip_text)}</pre></details></li>')
