"""VMs: define, read, power, delete; live migration, disk moves and repair (202 + a task);
Fault Tolerance on and off; which hosts a VM could move to now."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

from fastapi import APIRouter, Depends, Query, Request, Response

from vigil import service
from vigil.api import readmodel
from vigil.api.problems import problem_responses
from vigil.api.routes.tasks import task_out
from vigil.api.schemas import Done, EventOut, MigrateIn, MoveDiskIn, RepairOut, TargetOut, TaskOut, VmIn, VmOut
from vigil.api.schemas_admission import ResizeIn
from vigil.api.security import OPERATE, READ, if_match
from vigil.model import BootSpec, DiskSpec, VMSpec
from vigil.service.common import NotFound
from vigil.store import keys as K
from vigil.store.events import parse_events

router = APIRouter(tags=["vms"])
WRITE = problem_responses(401, 403, 404, 409, 422, 503)


def spec_of(body: VmIn) -> VMSpec:
    disks = tuple(DiskSpec(name=f"disk{i}", datastore=d.datastore, path=d.path or f"{body.name}/disk{i}.qcow2",
                           size_mb=d.size_mb, replica=d.replica) for i, d in enumerate(body.disks))
    boot = BootSpec(**body.boot.model_dump()) if body.boot else None
    return VMSpec(name=body.name, memory_mb=body.memory_mb, vcpus=body.vcpus, disks=disks, boot=boot,
                  restart_priority=body.restart_priority, isolation_response=body.isolation_response,
                  shutdown_timeout_s=body.shutdown_timeout_s, power=body.power, networks=tuple(body.networks),
                  ready=body.ready, ready_delay_s=body.ready_delay_s, ready_timeout_s=body.ready_timeout_s,
                  balloon=body.balloon)


async def vm_out(request: Request, name: str) -> dict[str, Any]:
    v = (await readmodel.cluster(request.app))["by_name"].get(name)
    if v is None:
        raise NotFound(f"no VM named {name!r}")
    return v


@router.get("/vms", response_model=list[VmOut], dependencies=[READ], responses=problem_responses(401, 403, 503))
async def list_vms(request: Request) -> Response:
    return Response(await readmodel.encoded(request.app, "vms"), media_type="application/json")


@router.post("/vms", response_model=Done, status_code=201, dependencies=[OPERATE], responses=WRITE)
async def create_vm(body: VmIn, request: Request) -> Done:
    """Define a VM; it starts at once when ``power`` is on (on ``host``, or where the controller places it)."""
    await service.create_vm(request.app.state.store, spec_of(body), body.host)
    on = f", starting{' on ' + body.host if body.host else ''}" if body.power == "on" else ""
    return Done(changed=True, message=f"VM {body.name} created{on}")


@router.get("/vms/{name}", response_model=VmOut, dependencies=[READ], responses=problem_responses(401, 403, 404, 503))
async def get_vm(name: str, request: Request, response: Response) -> dict[str, Any]:
    """One VM; its ``revision`` (also the ETag) guards a later write (If-Match)."""
    v = await vm_out(request, name)
    response.headers["ETag"] = f'"{v["revision"]}"'
    return v


@router.delete("/vms/{name}", response_model=Done, dependencies=[OPERATE], responses=WRITE)
async def delete_vm(name: str, request: Request, force: bool = False,
                    revision: Optional[int] = Depends(if_match)) -> Done:
    """Delete a stopped VM (its disks stay on the datastore); ``force`` also a running one."""
    await service.delete_vm(request.app.state.store, name, force, revision)
    return Done(changed=True, message=f"{name}: deleted")


@router.post("/vms/{name}/start", response_model=Done, dependencies=[OPERATE], responses=WRITE)
async def start_vm(name: str, request: Request, revision: Optional[int] = Depends(if_match)) -> Done:
    changed = await service.set_power(request.app.state.store, name, "on", revision)
    return Done(changed=changed, message=f"{name}: " + ("starting" if changed else "already powered on"))


@router.post("/vms/{name}/resize", response_model=Done, dependencies=[OPERATE], responses=WRITE)
async def resize_vm(name: str, body: ResizeIn, request: Request, revision: Optional[int] = Depends(if_match)) -> Done:
    """New memory or vCPUs, taken by QEMU at the VM's next start; a powered-on VM reserves
    them at once (admission control may refuse: 409 with its figures)."""
    changed = await service.resize_vm(request.app.state.store, name, body.memory_mb, body.vcpus, revision)
    return Done(changed=changed, message=f"{name}: " + ("resized (QEMU takes it at its next start)" if changed
                                                        else "already that size"))


@router.post("/vms/{name}/stop", response_model=Done, dependencies=[OPERATE], responses=WRITE)
async def stop_vm(name: str, request: Request, revision: Optional[int] = Depends(if_match)) -> Done:
    """ACPI shutdown, then power off after the VM's shutdown timeout."""
    changed = await service.set_power(request.app.state.store, name, "off", revision)
    return Done(changed=changed, message=f"{name}: " + ("stopping" if changed else "already powered off"))


@router.post("/vms/{name}/migrate", response_model=TaskOut, status_code=202, dependencies=[OPERATE], responses=WRITE)
async def migrate_vm(name: str, body: MigrateIn, request: Request, revision: Optional[int] = Depends(if_match)) -> dict:
    """Live migration (vMotion): queued as a task, which GET /tasks/{id} or the stream follow."""
    t = await service.migrate_vm(request.app.state.store, name, body.to, body.datastore, revision=revision)
    return task_out(t)


@router.get("/vms/{name}/migration-targets", response_model=list[TargetOut], dependencies=[READ],
            responses=problem_responses(401, 403, 404, 503))
async def migration_targets(name: str, request: Request) -> list[dict[str, Any]]:
    """Every host, whether the VM can be live-migrated there now, and why not."""
    return await service.migration_choices(request.app.state.store, name)


@router.post("/vms/{name}/move-disk", response_model=TaskOut, status_code=202, dependencies=[OPERATE], responses=WRITE)
async def move_disk(name: str, body: MoveDiskIn, request: Request, revision: Optional[int] = Depends(if_match)) -> dict:
    """Storage vMotion of one disk, queued as a task."""
    t = await service.move_disk(request.app.state.store, name, body.disk, body.to, body.bwlimit_mib_s, revision=revision)
    return task_out(t)


@router.post("/vms/{name}/repair-disk", response_model=RepairOut, status_code=202, dependencies=[OPERATE],
             responses=WRITE)
async def repair_disk(name: str, request: Request) -> dict[str, Any]:
    """Resync the stale copies of a VM's disks kept on two datastores: a running VM's host
    does it live (no task); a powered-off VM's copies are made by a host that mounts both
    datastores, as a task."""
    msg, task = await service.repair_disk(request.app.state.store, name)
    return {"message": msg, "task": task_out(task) if task is not None else None}


@router.put("/vms/{name}/ft", response_model=Done, dependencies=[OPERATE], responses=WRITE)
async def ft_on(name: str, request: Request, revision: Optional[int] = Depends(if_match)) -> Done:
    """Fault Tolerance on: the controller places a secondary, kept in step by checkpoints."""
    changed = await service.ft_enable(request.app.state.store, name, revision)
    return Done(changed=changed, message=f"{name}: " + ("Fault Tolerance on; the controller places its secondary"
                                                        if changed else "Fault Tolerance was on already"))


@router.delete("/vms/{name}/ft", response_model=Done, dependencies=[OPERATE], responses=WRITE)
async def ft_off(name: str, request: Request, revision: Optional[int] = Depends(if_match)) -> Done:
    changed = await service.ft_disable(request.app.state.store, name, revision)
    return Done(changed=changed, message=f"{name}: " + ("Fault Tolerance off" if changed else "Fault Tolerance was off"))


@router.get("/vms/{name}/events", response_model=list[EventOut], dependencies=[READ],
            responses=problem_responses(401, 403, 404, 422, 503))
async def vm_events(name: str, request: Request, limit: int = Query(100, ge=1, le=2000)) -> list[dict[str, Any]]:
    store = request.app.state.store
    if await store.get(K.VMS + name) is None:
        raise NotFound(f"no VM named {name!r}")
    evs = [e for e in parse_events(await store.get_prefix(K.EVENTS)) if e.vm == name]
    return [asdict(e) for e in evs[-limit:]]
