"""`GET /metrics`: the gateway's counters in Prometheus' text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sipbridge.api.state import State
from sipbridge.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(api: State) -> Response:
    return Response(api.control.metrics.render(), media_type=CONTENT_TYPE)
