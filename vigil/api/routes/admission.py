"""Admission control, restart retries and what-if: /cluster/admission, /cluster/retries,
/cluster/capacity, /cluster/what-if. A refused user action elsewhere (a power-on, say) is
a 409 problem whose detail gives admission control's figures."""
from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Query, Request

from vigil.api.problems import problem_responses
from vigil.api.schemas_admission import (AdmissionIn, AdmissionOut, CapacityOut, DrsWhatIfOut, RetriesIn, RetriesOut,
                                         WhatIfOut)
from vigil.api.security import ADMIN, READ, if_match
from vigil.service import admission

router = APIRouter(tags=["cluster"])


@router.get("/cluster/admission", response_model=AdmissionOut, dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def get_admission(request: Request) -> dict[str, Any]:
    """The cluster's admission control policy (``off`` until one is set)."""
    s, rev = await admission.get_admission(request.app.state.store)
    return {**s.to_json(), "revision": rev}


@router.put("/cluster/admission", response_model=AdmissionOut, dependencies=[ADMIN],
            responses=problem_responses(401, 403, 409, 422, 503))
async def put_admission(body: AdmissionIn, request: Request, revision: Optional[int] = Depends(if_match)) -> dict[str, Any]:
    """Set the policy; from then on power-on, create, FT enable and maintenance are checked."""
    s, rev = await admission.set_admission(request.app.state.store, body.model_dump(), revision)
    return {**s.to_json(), "revision": rev}


@router.get("/cluster/retries", response_model=RetriesOut, dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def get_retries(request: Request) -> dict[str, Any]:
    """When a VM whose start failed is tried again."""
    s, rev = await admission.get_retries(request.app.state.store)
    return {**s.to_json(), "revision": rev}


@router.put("/cluster/retries", response_model=RetriesOut, dependencies=[ADMIN],
            responses=problem_responses(401, 403, 409, 422, 503))
async def put_retries(body: RetriesIn, request: Request, revision: Optional[int] = Depends(if_match)) -> dict[str, Any]:
    s, rev = await admission.set_retries(request.app.state.store, body.model_dump(), revision)
    return {**s.to_json(), "revision": rev}


@router.get("/cluster/capacity", response_model=CapacityOut, dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def get_capacity(request: Request) -> dict[str, Any]:
    """Slots (or reserved shares), used, free, and how many host failures the cluster tolerates now."""
    return await admission.cluster_capacity(request.app.state.store)


@router.get("/cluster/what-if", response_model=WhatIfOut, dependencies=[READ],
            responses=problem_responses(401, 403, 422, 503))
async def what_if(request: Request, fail: list[str] = Query(...,
                                                            description="a host to fail (repeatable)")) -> dict[str, Any]:
    """Where every VM of the failed hosts would go, in order, and which would not restart and
    why: the controller's plan on the present state, nothing changed."""
    return await admission.cluster_what_if(request.app.state.store, fail)


@router.get("/cluster/what-if/drs", response_model=DrsWhatIfOut, dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def drs_what_if(request: Request) -> dict[str, Any]:
    """What DRS would do now: the moves a round would recommend on the present load, as if
    the imbalance had lasted its hold time and whatever the mode; nothing changed."""
    return await admission.drs_what_if(request.app.state.store)
