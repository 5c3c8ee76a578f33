"""The cluster policies behind one shape: /cluster/settings (all of them) and
/cluster/settings/{name} for admission, retries, monitoring, orchestration and drs.

A body is checked first by the policy's own request model (the one its own route uses:
the field named in each refusal), then by its service validation; their own routes
(/cluster/admission, /drs/settings, ...) stay as they were."""
from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from vigil.api.problems import problem_responses
from vigil.api.routes.drs import DrsSettingsIn
from vigil.api.routes.monitoring import MonitoringIn
from vigil.api.schemas_admission import AdmissionIn, RetriesIn
from vigil.api.security import ADMIN, READ, if_match
from vigil.service import cluster_settings as service

router = APIRouter(tags=["cluster"])
Name = Literal["admission", "retries", "monitoring", "orchestration", "drs"]
MODELS: dict[str, type[BaseModel]] = {"admission": AdmissionIn, "retries": RetriesIn, "monitoring": MonitoringIn,
                                      "drs": DrsSettingsIn}
NAME = Path(description="admission | retries | monitoring | orchestration | drs")


class SettingOut(BaseModel):
    name: str
    value: dict[str, Any]  # every field in force, defaults filled in: what a PUT takes back
    stored: dict[str, Any]  # the object as stored ({}: never set)
    summary: str
    revision: int  # 0: never set; give it as If-Match to refuse a write over another's


def checked(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body through the policy's request model (a 422 naming each bad field)."""
    model = MODELS.get(name)
    if model is None:
        return body
    try:
        return model.model_validate(body).model_dump()
    except ValidationError as e:
        raise RequestValidationError([{**x, "loc": ("body", *x["loc"])} for x in e.errors()]) from None


@router.get("/cluster/settings", response_model=list[SettingOut], dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def list_settings(request: Request) -> list[dict[str, Any]]:
    """Every cluster policy: its values in force, as stored, a summary and its revision."""
    return await service.all_policies(request.app.state.store)


@router.get("/cluster/settings/{name}", response_model=SettingOut, dependencies=[READ],
            responses=problem_responses(401, 403, 422, 503))
async def get_setting(request: Request, name: Name = NAME) -> dict[str, Any]:
    return await service.get_policy(request.app.state.store, name)


@router.put("/cluster/settings/{name}", response_model=SettingOut, dependencies=[ADMIN],
            responses=problem_responses(401, 403, 409, 422, 503))
async def put_setting(request: Request, name: Name = NAME,
                      body: dict[str, Any] = Body(..., description="the policy's fields, as GET gives them in "
                                                  "``value``; those not given take their defaults"),
                      revision: Optional[int] = Depends(if_match)) -> dict[str, Any]:
    """Replace one policy; refused whole (422, the field named; nothing written) when a value is bad."""
    return await service.set_policy(request.app.state.store, name, checked(name, body), revision)
