"""The call record has one shape (`sipbridge.records`): what `Call.to_dict` builds has
exactly its keys, and the OpenAPI document (`sipbridge.api.callrecord`) describes the
same keys, level by level."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from sipbridge import records
from sipbridge.api import callrecord as openapi
from sipbridge.api.webhooks import WebhookAttempt, WebhookDelivery
from sipbridge.audiostream import Codec, Direction, NegotiatedAudio
from sipbridge.calls.call import Call, CallState, TransferJob
from sipbridge.calls.transfer_machine import Transfer
from sipbridge.media.jitterbuffer import JitterBuffer
from sipbridge.media.ports import PortPool
from sipbridge.media.session import MediaSession

T0 = 1_700_000_000.0

# Each part of the record and the OpenAPI model that describes it.
PARTS: list[tuple[type, type[BaseModel]]] = [
    (records.CallRecord, openapi.CallRecord),
    (records.SipRecord, openapi.SipDetails),
    (records.TransferRecord, openapi.Transfer),
    (records.TransferStepRecord, openapi.TransferStep),
    (records.WebhookRecord, openapi.WebhookDelivery),
    (records.WebhookAttemptRecord, openapi.WebhookAttempt),
]


def keys(shape: type) -> set[str]:
    """The keys a TypedDict declares, required or not."""
    return set(shape.__required_keys__) | set(shape.__optional_keys__)  # type: ignore[attr-defined]


def described(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.mark.parametrize(("shape", "model"), PARTS, ids=[s.__name__ for s, _ in PARTS])
def test_the_openapi_document_describes_the_keys_of_the_record(
    shape: type, model: type[BaseModel]
) -> None:
    assert keys(shape) == described(model)


def test_the_summary_is_the_record_without_its_timeline() -> None:
    assert described(openapi.CallSummary) == keys(records.CallRecord) - {"timeline"}
    assert records.CallRecord.__optional_keys__ == {"timeline"}


def test_the_openapi_document_names_every_media_figure() -> None:
    named = set(re.findall(r"`([a-z_]+)`", openapi.MEDIA_FIGURES))  # and drop reasons
    assert keys(records.MediaFigures) - named == set()


def a_call() -> Call:
    """A call with each part of a record: media figures, a transfer, a webhook delivery."""
    audio = NegotiatedAudio(Codec(0, "PCMU", 8000), 101, "127.0.0.1", 9, Direction.SENDRECV, 20)
    call = Call("rtc_1", "leg_1", "sip:alice@example.com", "sip:bot@example.com", T0,
                state=CallState.ACTIVE, audio=audio, answered_at=T0 + 1)
    session = MediaSession("rtc_1", PortPool(31000, 31999).allocate("127.0.0.1"), audio,
                           now=0.0, wall=lambda: T0, timeout=5.0, jitter=JitterBuffer())
    call.media = session.figures()
    session.endpoint.close()
    machine = Transfer("xfer_1", "tel:+15551230000", 5.0, epoch=T0)
    job = TransferJob(machine, "announce")
    machine.sent(5.0, 2)
    machine.response(486, 6.0, reason="Busy Here")
    job.fallback = {"mode": "announce", "status": "announced"}
    call.transfers.append(job)
    call.webhooks.append(WebhookDelivery("evt_1", "realtime.call.incoming", [
        WebhookAttempt(1, T0, 3.0, 200, None)], "delivered"))
    call.timeline.append({"at": T0, "kind": "call", "status": "incoming"})
    return call


def parts(record: records.CallRecord) -> Iterator[tuple[type, set[str]]]:
    """Each part of a built record and the TypedDict that declares it."""
    yield records.CallRecord, set(record)
    yield records.SipRecord, set(record["sip"])
    assert record["media"] is not None
    yield records.MediaFigures, set(record["media"])
    for transfer in record["transfers"]:
        yield records.TransferRecord, set(transfer)
        for step in transfer["steps"]:
            yield records.TransferStepRecord, set(step)
    for delivery in record["webhooks"]:
        yield records.WebhookRecord, set(delivery)
        for attempt in delivery["attempts"]:
            yield records.WebhookAttemptRecord, set(attempt)


def test_a_built_record_has_exactly_the_declared_keys() -> None:
    record = a_call().to_dict()
    assert record["transfers"] and record["webhooks"] and record["timeline"]
    for shape, built in parts(record):
        assert built == keys(shape), shape.__name__
    assert "timeline" not in a_call().to_dict(timeline=False)
