"""How a call record maps to a row of `calls`, and a timeline entry to a row of `events`.

The same for every backend: scalar fields get a column each, `sip`, `transfers` and
`webhooks` a JSON column each, and every other field of the record goes into `extra` (JSON),
so a record reads back as it was written. JSON is serialised here, once, when a write is
queued, by the backend's `to_json`: `encode` (plain text, for a backend that stores JSON as
text) or `dumps` (`JsonText`, for one that binds it as a JSON type); a backend reads it back
as text and `row_to_call` / `timeline` parse it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any, cast

from sipbridge.records import CallRecord, TimelineEntry

SCALARS = ("state", "created_at", "answered_at", "ended_at", "end_reason")
# Columns read from the record's SIP part (its From and To), kept to filter by.
SIP_COLUMNS = {"caller": "from", "callee": "to"}
JSON_COLUMNS: dict[str, object] = {"sip": {}, "transfers": [], "webhooks": []}
COLUMNS = ("id", *SCALARS, *SIP_COLUMNS, "recording", *JSON_COLUMNS, "extra")
_KNOWN = {"id", "recording", "timeline", *SCALARS, *JSON_COLUMNS}


class JsonText(str):
    """Serialised JSON: a backend with a JSON column type binds it as that type."""

    __slots__ = ()


def _encoder() -> Callable[[object], str]:
    """`json.dumps(value, default=str, separators=(",", ":"))`, made once: json.dumps
    builds an encoder at every call, which costs more than encoding a small record. A
    cycle raises RecursionError (no check for it; a record has none), not ValueError."""
    # CPython's C encoder, which json.dumps uses (None without the _json module)
    c_make_encoder: Callable[..., Any] | None = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:
        return json.JSONEncoder(default=str, separators=(",", ":")).encode
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys,
    # skipkeys, allow_nan): json.JSONEncoder.iterencode's call, without circular checks
    encode: Callable[[object, int], list[str]] = c_make_encoder(
        None, str, encode_basestring_ascii, None, ":", ",", False, False, True)
    join = "".join

    def dumps(value: object) -> str:
        return join(encode(value, 0))

    return dumps


encode = _encoder()


def dumps(value: object) -> JsonText:
    """`encode`, marked as JSON for a driver that binds it as such."""
    return JsonText(encode(value))


@functools.cache
def _empty_json(to_json: Callable[[object], str]) -> tuple[str, str, str]:
    """What `to_json` makes of an empty `sip`, `transfers` and `webhooks`."""
    sip, transfers, webhooks = (to_json(empty) for empty in JSON_COLUMNS.values())
    return sip, transfers, webhooks


def call_params(record: Mapping[str, object], to_json: Callable[[object], str] = dumps
                ) -> tuple[object, ...]:
    """The values of `COLUMNS` for a call record, its JSON columns serialised by `to_json`
    (an empty one is made once). KeyError, TypeError or ValueError when the record cannot
    be stored (RecursionError when it holds itself)."""
    get = record.get
    sip = get("sip")
    transfers = get("transfers")
    webhooks = get("webhooks")
    recording = get("recording")
    sip_fields = sip if isinstance(sip, Mapping) else {}
    no_sip, no_transfers, no_webhooks = _empty_json(to_json)
    return (  # in the order of COLUMNS, spelled out: this runs for every record
        str(record["id"]),
        get("state"), get("created_at"), get("answered_at"), get("ended_at"),
        get("end_reason"),
        sip_fields.get("from"), sip_fields.get("to"),
        None if recording is None else str(recording),
        to_json(sip) if sip else no_sip,
        to_json(transfers) if transfers else no_transfers,
        to_json(webhooks) if webhooks else no_webhooks,
        to_json({k: v for k, v in record.items() if k not in _KNOWN}),
    )


def event_params(call_id: str, at: float, kind: str, data: Mapping[str, object],
                 to_json: Callable[[object], str] = dumps) -> tuple[object, ...]:
    """The values of (call_id, at, kind, data) for a timeline entry, `data` serialised by
    `to_json`."""
    return (str(call_id), float(at), str(kind),
            to_json(data if isinstance(data, dict) else dict(data)))


def row_to_call(row: Iterable[Any]) -> CallRecord:
    """A row of `COLUMNS` back into the call record it was written from."""
    values = dict(zip(COLUMNS, row, strict=True))
    extra = json.loads(values.pop("extra") or "{}")
    call: dict[str, object] = {}
    for column, value in values.items():
        if column not in SIP_COLUMNS:  # those repeat the record's sip part
            call[column] = json.loads(value) if column in JSON_COLUMNS else value
    for key, value in extra.items():
        call.setdefault(key, value)
    # What `upsert_call` was given (a `Call.to_dict`), read back: not checked again here.
    return cast("CallRecord", call)


def timeline(events: Iterable[tuple[Any, Any, Any]]) -> list[TimelineEntry]:
    """Rows of (at, kind, data), in order, as timeline entries `{"at", "kind", **data}`."""
    entries = []
    for at, kind, data in events:
        entry: TimelineEntry = {"at": at, "kind": kind}
        for key, value in json.loads(data).items():
            entry.setdefault(key, value)
        entries.append(entry)
    return entries
