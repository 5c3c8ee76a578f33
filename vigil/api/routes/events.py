"""The event log: read with filters, or followed live (Server-Sent Events)."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from vigil.api.problems import problem_responses
from vigil.api.schemas import EventOut
from vigil.api.security import READ
from vigil.api.stream import matches, sse
from vigil.store import keys as K
from vigil.store.events import parse_events

router = APIRouter(tags=["events"])
FILTER = {"max_length": 64}


@router.get("/events", response_model=list[EventOut], dependencies=[READ],
            responses=problem_responses(401, 403, 422, 503))
async def list_events(request: Request, host: Optional[str] = Query(None, **FILTER), vm: Optional[str] = Query(None, **FILTER),
                      kind: Optional[str] = Query(None, description="a kind or its start (vm-, task-)", **FILTER),
                      since: float = Query(0.0, ge=0, description="only events after this time (Unix seconds)"),
                      limit: int = Query(200, ge=1, le=2000)) -> list[dict[str, Any]]:
    """The newest events (up to ``limit``), oldest first."""
    evs = parse_events(await request.app.state.store.get_prefix(K.EVENTS))
    out = [d for d in (asdict(e) for e in evs) if d["time"] > since and matches(d, host, vm, kind)]
    return out[-limit:]


@router.get("/stream", dependencies=[READ], responses={
    200: {"description": "Server-Sent Events: `event` (a new event, filtered), `change` (etcd revision moved)",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **problem_responses(401, 403, 422, 503)}, response_class=StreamingResponse)
async def stream(request: Request, host: Optional[str] = Query(None, **FILTER), vm: Optional[str] = Query(None, **FILTER),
                 kind: Optional[str] = Query(None, **FILTER),
                 changes: bool = Query(True, description="also send `change` when anything changed")) -> StreamingResponse:
    """Live: each new event as it is written, and a `change` notice within 0.2 s of any change."""
    return StreamingResponse(sse(request.app.state.hub, host, vm, kind, changes), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
