"""The cluster as a whole, its hosts (maintenance mode) and its datastores (evacuation)."""
from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Request, Response

from vigil import service
from vigil.api import readmodel
from vigil.api.problems import problem_responses
from vigil.api.schemas import ClusterOut, DatastoreIn, DatastoreOut, Done, EvacuateIn, EvacuationOut, HostOut
from vigil.api.security import ADMIN, OPERATE, READ, if_match
from vigil.model import DatastoreSpec
from vigil.service.common import Conflict, NotFound
from vigil.service.datastore_clusters import datastore_figures

router = APIRouter(tags=["cluster"])
@router.get("/cluster", response_model=ClusterOut, dependencies=[READ], responses=problem_responses(401, 403, 503))
async def get_cluster(request: Request) -> dict[str, Any]:
    """Leader, etcd members, hosts with their state and load, every VM: one snapshot."""
    c = await readmodel.cluster(request.app)
    hosts = c["hosts"]
    return {**c, "etcd": await readmodel.etcd_members(request.app),
            "memory_mb": sum(h["memory_mb"] for h in hosts), "memory_used_mb": sum(h["memory_used_mb"] for h in hosts),
            "cpus": sum(h["cpus"] for h in hosts), "vcpus_used": sum(h["vcpus_used"] for h in hosts)}


@router.get("/hosts", response_model=list[HostOut], dependencies=[READ], responses=problem_responses(401, 403, 503))
async def list_hosts(request: Request) -> Response:
    return Response(await readmodel.encoded(request.app, "hosts"), media_type="application/json")


@router.get("/hosts/{name}", response_model=HostOut, dependencies=[READ],
            responses=problem_responses(401, 403, 404, 503))
async def get_host(name: str, request: Request) -> dict[str, Any]:
    for h in (await readmodel.cluster(request.app))["hosts"]:
        if h["name"] == name:
            return h
    raise NotFound(f"unknown host {name!r}")


@router.put("/hosts/{name}/maintenance", response_model=Done, dependencies=[OPERATE],
            responses=problem_responses(401, 403, 404, 409, 422, 503))
async def enter_maintenance(name: str, request: Request, revision: Optional[int] = Depends(if_match)) -> Done:
    """Enter maintenance mode: the controller migrates the host's VMs away, HA places nothing there."""
    changed = await service.set_maintenance(request.app.state.store, name, True, revision)
    return Done(changed=changed, message=f"{name}: " + (
        "entering maintenance mode (its VMs are being migrated away; see 'vigil host list')"
        if changed else "already in maintenance mode"))


@router.delete("/hosts/{name}/maintenance", response_model=Done, dependencies=[OPERATE],
               responses=problem_responses(401, 403, 404, 409, 422, 503))
async def exit_maintenance(name: str, request: Request, revision: Optional[int] = Depends(if_match)) -> Done:
    changed = await service.set_maintenance(request.app.state.store, name, False, revision)
    return Done(changed=changed, message=f"{name}: " + ("left maintenance mode" if changed else "was not in maintenance mode"))


@router.post("/hosts/{name}/fence", response_model=Done, dependencies=[ADMIN],
             responses=problem_responses(401, 403, 404, 409, 503))
async def fence(name: str, request: Request) -> Done:
    """Power the host off through its BMC and confirm it (STONITH). Its VMs then restart
    elsewhere as for a failed host. Admin only: it cuts a host's power."""
    from vigil.service.fencing import fence_host

    ok, message = await fence_host(request.app.state.store, name)
    if not ok:
        raise Conflict(message)
    return Done(changed=True, message=message)


@router.get("/datastores", response_model=list[DatastoreOut], dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def list_datastores(request: Request) -> list[dict[str, Any]]:
    store = request.app.state.store
    dss, c = await service.datastores(store), await readmodel.cluster(request.app)
    figs = await datastore_figures(store)  # Storage DRS: cluster, space, latency
    return [{"name": n, "path": d.path, "hosts": [h["name"] for h in c["hosts"] if n in h["datastores"]],
             **figs.get(n, {})} for n, d in sorted(dss.items())]


@router.post("/datastores", response_model=Done, status_code=201, dependencies=[ADMIN],
             responses=problem_responses(401, 403, 409, 422, 503))
async def add_datastore(body: DatastoreIn, request: Request) -> Done:
    """Declare a shared file system that hosts mount at ``path``."""
    if not await service.add_datastore(request.app.state.store, DatastoreSpec(name=body.name, path=body.path)):
        raise Conflict(f"a datastore named {body.name!r} already exists")
    return Done(changed=True, message=f"datastore {body.name} added")


@router.post("/datastores/{name}/evacuate", response_model=EvacuationOut, status_code=202, dependencies=[OPERATE],
             responses=problem_responses(401, 403, 404, 422, 503))
async def evacuate(name: str, body: EvacuateIn, request: Request) -> dict[str, Any]:
    """One round of evacuation: a disk move queued for each running VM with a disk on the
    datastore and no task under way. Call again until nothing is queued or waiting."""
    return await service.evacuation_step(request.app.state.store, name, body.to)
