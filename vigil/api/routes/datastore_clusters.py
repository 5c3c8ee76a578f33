"""Datastore clusters: the groups of datastores Storage DRS balances within."""
from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from vigil.api.problems import problem_responses
from vigil.api.schemas import Done, Strict
from vigil.api.security import ADMIN, READ, if_match
from vigil.service import datastore_clusters as service

router = APIRouter(tags=["datastore-clusters"])


class DatastoreClusterIn(Strict):
    datastores: list[str] = Field(min_length=1, max_length=256, description="its datastores (each in one cluster)")


class DatastoreClusterOut(BaseModel):
    name: str
    datastores: list[str]
    size_mb: int = Field(description="summed over its datastores, as the agents report them")
    used_mb: int
    iops: float = Field(description="operations a second of every disk on its datastores, smoothed")
    latency_ms: Optional[float] = Field(description="their mean time per operation; null: no I/O reported")
    revision: int = Field(description="of settings/datastore-clusters, for If-Match")


@router.get("/datastore-clusters", response_model=list[DatastoreClusterOut], dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def list_clusters(request: Request) -> list[dict[str, Any]]:
    """Each datastore cluster, its datastores, their space and their disks' latency."""
    return await service.list_clusters(request.app.state.store)


@router.put("/datastore-clusters/{name}", response_model=dict[str, Any], dependencies=[ADMIN],
            responses=problem_responses(401, 403, 404, 409, 422, 503))
async def put_cluster(name: str, body: DatastoreClusterIn, request: Request,
                      revision: Optional[int] = Depends(if_match)) -> dict[str, Any]:
    """Create the cluster or give it these datastores (taken out of no other cluster: a
    datastore in another one is refused)."""
    return await service.set_cluster(request.app.state.store, name, body.datastores, revision)


@router.delete("/datastore-clusters/{name}", response_model=Done, dependencies=[ADMIN],
               responses=problem_responses(401, 403, 404, 409, 503))
async def delete_cluster(name: str, request: Request, revision: Optional[int] = Depends(if_match)) -> Done:
    """Remove the cluster; its datastores are in none then."""
    await service.delete_cluster(request.app.state.store, name, revision)
    return Done(changed=True, message=f"datastore cluster {name} removed")
