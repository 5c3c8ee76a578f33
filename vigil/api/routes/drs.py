"""DRS: its settings, the controller's recommendations, and applying them."""
from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from vigil.api.problems import problem_responses
from vigil.api.schemas import Strict
from vigil.api.security import ADMIN, OPERATE, READ, if_match
from vigil.service import drs as service

router = APIRouter(tags=["drs"])


class DrsSettingsIn(Strict):
    mode: Optional[Literal["off", "manual", "automatic"]] = None
    threshold: Optional[int] = Field(None, ge=1, le=5, description="1: mandatory moves only ... 5: most eager")
    interval_s: Optional[float] = Field(None, gt=0)
    hold_rounds: Optional[int] = Field(None, ge=1)
    cooldown_s: Optional[float] = Field(None, ge=0)
    max_moves: Optional[int] = Field(None, ge=1)
    gain_per_gib: Optional[float] = Field(None, ge=0)
    space_threshold: Optional[float] = Field(None, ge=0.1, le=0.99, description="Storage DRS: share of a datastore")
    latency_threshold_ms: Optional[float] = Field(None, ge=1, le=1000,
                                                  description="Storage DRS: mean disk operation time, ms")


class DrsApplyIn(Strict):
    ids: list[str] = Field(default=[], max_length=1000)
    all: bool = False


@router.get("/drs/settings", response_model=dict[str, Any], dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def get_settings(request: Request) -> dict[str, Any]:
    """Mode (off, manual, automatic), threshold (1..5) and the rest, defaults filled in."""
    s, rev = await service.get_drs(request.app.state.store)
    return {**s, "revision": rev}


@router.put("/drs/settings", response_model=dict[str, Any], dependencies=[ADMIN],
            responses=problem_responses(401, 403, 409, 422, 503))
async def put_settings(body: DrsSettingsIn, request: Request,
                       revision: Optional[int] = Depends(if_match)) -> dict[str, Any]:
    """Change the settings given; the others keep their value."""
    return await service.set_drs(request.app.state.store, body.model_dump(), revision)


@router.get("/drs/recommendations", response_model=dict[str, Any], dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def get_recommendations(request: Request) -> dict[str, Any]:
    """The last DRS round: imbalance now and after, why, and each move with its effect."""
    return await service.recommendations(request.app.state.store)


@router.post("/drs/apply", response_model=list[dict[str, Any]], dependencies=[OPERATE],
             responses=problem_responses(401, 403, 404, 422, 503))
async def apply(body: DrsApplyIn, request: Request) -> list[dict[str, Any]]:
    """Start the recommended migrations named (or all); each result names its task or why not."""
    return await service.apply_recommendations(request.app.state.store, body.ids, body.all)
