"""Restart orchestration settings (``settings/orchestration``): when a restarted VM counts
as ready for the VMs that wait on it, per cluster and per restart priority tier."""
from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Body, Depends, Request

from vigil.api.problems import problem_responses
from vigil.api.security import ADMIN, READ, if_match
from vigil.policy.orchestration import SETTING, read_settings, settings_to_json
from vigil.service.cluster_settings import set_orchestration
from vigil.service.settings import get_setting

router = APIRouter(tags=["cluster"])


@router.get("/cluster/orchestration", dependencies=[READ], responses=problem_responses(401, 403, 503))
async def get_orchestration(request: Request) -> dict[str, Any]:
    """The settings in force (defaults filled in), as stored, and the revision (0: never set)."""
    raw, rev = await get_setting(request.app.state.store, SETTING)
    return {"effective": settings_to_json(read_settings(raw)), "stored": raw, "revision": rev}


@router.put("/cluster/orchestration", dependencies=[ADMIN], responses=problem_responses(401, 403, 409, 422, 503))
async def put_orchestration(request: Request, body: dict[str, Any] = Body(...),
                            revision: Optional[int] = Depends(if_match)) -> dict[str, Any]:
    """Replace the settings: ``{"ready": allocated|powered-on|guest|app, "delay_s", "timeout_s",
    "tiers": {priority: {the same}}}``; absent fields keep their defaults."""
    rev = await set_orchestration(request.app.state.store, body, revision)
    return {"effective": settings_to_json(read_settings(body)), "stored": body, "revision": rev}
