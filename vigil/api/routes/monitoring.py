"""VM and application monitoring: the cluster's settings, a VM's own, its resets."""
from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from vigil.api.problems import problem_responses
from vigil.api.schemas import Strict
from vigil.api.security import ADMIN, OPERATE, READ, if_match
from vigil.model import MonitoringSpec
from vigil.service import monitoring as M

router = APIRouter(tags=["monitoring"])
WRITE = problem_responses(401, 403, 404, 409, 422, 503)


class MonitoringIn(Strict):
    """A preset (off, high, medium, low, custom) and values over it; a VM's own may leave
    any out (it takes the cluster's)."""

    preset: Optional[str] = Field(None, max_length=16)
    interval_s: Optional[float] = Field(None, ge=1, le=86400)
    max_resets: Optional[int] = Field(None, ge=0, le=1000)
    window_s: Optional[float] = Field(None, ge=0, le=366 * 86400)
    min_uptime_s: Optional[float] = Field(None, ge=0, le=86400)
    application: Optional[bool] = None


class MonitoringOut(BaseModel):
    preset: str
    interval_s: float
    max_resets: int
    window_s: float
    min_uptime_s: float
    application: bool
    enabled: bool
    summary: str
    revision: int


class VmMonitoringOut(BaseModel):
    vm: str
    settings: MonitoringOut  # in force for this VM
    own: Optional[dict[str, Any]]  # its own values (None: the cluster's)
    resets: list[float]  # when monitoring reset it (wall-clock seconds)
    resets_in_window: int
    last_reset: Optional[dict[str, Any]]


@router.get("/cluster/monitoring", response_model=MonitoringOut, dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def get_monitoring(request: Request) -> dict[str, Any]:
    return await M.get_monitoring(request.app.state.store)


@router.put("/cluster/monitoring", response_model=MonitoringOut, dependencies=[ADMIN], responses=WRITE)
async def put_monitoring(body: MonitoringIn, request: Request, revision: Optional[int] = Depends(if_match)
                         ) -> dict[str, Any]:
    """Set the cluster's VM monitoring; values not given take the preset's."""
    return await M.set_monitoring(request.app.state.store, body.model_dump(), revision)


@router.get("/vms/{name}/monitoring", response_model=VmMonitoringOut, dependencies=[READ],
            responses=problem_responses(401, 403, 404, 503))
async def get_vm_monitoring(name: str, request: Request) -> dict[str, Any]:
    return await M.vm_monitoring(request.app.state.store, name)


@router.put("/vms/{name}/monitoring", response_model=VmMonitoringOut, dependencies=[OPERATE], responses=WRITE)
async def put_vm_monitoring(name: str, body: MonitoringIn, request: Request,
                            revision: Optional[int] = Depends(if_match)) -> dict[str, Any]:
    """The VM's own settings, over the cluster's (running VMs take them without a restart)."""
    own = MonitoringSpec(**body.model_dump())
    return await M.set_vm_monitoring(request.app.state.store, name, own, revision)


@router.delete("/vms/{name}/monitoring", response_model=VmMonitoringOut, dependencies=[OPERATE], responses=WRITE)
async def delete_vm_monitoring(name: str, request: Request, revision: Optional[int] = Depends(if_match)
                               ) -> dict[str, Any]:
    """The cluster's settings for this VM again."""
    return await M.set_vm_monitoring(request.app.state.store, name, None, revision)
