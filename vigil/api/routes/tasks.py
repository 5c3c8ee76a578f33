"""Tasks (migrations, disk moves), rules and host groups."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

from fastapi import APIRouter, Depends, Request

from vigil import service
from vigil.api.problems import problem_responses
from vigil.api.schemas import Done, HostGroupIn, HostGroupOut, RuleIn, RuleOut, TaskOut
from vigil.api.security import OPERATE, READ, if_match
from vigil.model import TASK_ACTIVE, HostGroup, Rule, Task
from vigil.service.common import NotFound
from vigil.store import keys as K

router = APIRouter(tags=["tasks and rules"])


def task_out(t: Task) -> dict[str, Any]:
    return {**asdict(t), "summary": service.task_summary(t)}


@router.get("/tasks", response_model=list[TaskOut], dependencies=[READ], responses=problem_responses(401, 403, 422, 503))
async def list_tasks(request: Request, all: bool = False) -> list[dict[str, Any]]:  # noqa: A002 - the query's name
    """Tasks under way (``all``: also the last finished one of each VM), oldest first."""
    return [task_out(t) for t in await service.tasks(request.app.state.store) if all or t.state in TASK_ACTIVE]


@router.get("/tasks/{ident}", response_model=TaskOut, dependencies=[READ],
            responses=problem_responses(401, 403, 404, 503))
async def get_task(ident: str, request: Request) -> dict[str, Any]:
    """A task by its id, or a VM's last task by the VM's name; poll it for progress."""
    for t in await service.tasks(request.app.state.store):
        if ident in (t.id, t.vm):
            return task_out(t)
    raise NotFound(f"no task {ident!r}")


@router.post("/tasks/{ident}/cancel", response_model=TaskOut, dependencies=[OPERATE],
             responses=problem_responses(401, 403, 404, 409, 503))
async def cancel_task(ident: str, request: Request) -> dict[str, Any]:
    """Cancel a migration or disk move (by task id or VM name); the VM keeps running where it was."""
    return task_out(await service.cancel_task(request.app.state.store, ident))


@router.get("/rules", response_model=list[RuleOut], dependencies=[READ], responses=problem_responses(401, 403, 503))
async def list_rules(request: Request) -> list[dict[str, Any]]:
    snap = await request.app.state.store.snapshot()
    return [{**r.to_json(), "revision": snap[K.RULES + r.name].mod_revision} for r in service.rules(snap)]


@router.get("/rules/conflicts", response_model=list[str], dependencies=[READ], responses=problem_responses(401, 403, 503))
async def rule_conflicts(request: Request) -> list[str]:
    """The rules that cannot all be kept, and VMs that run against a VM-host rule, one line each."""
    return service.conflicts(await request.app.state.store.snapshot())


@router.post("/rules", response_model=Done, status_code=201, dependencies=[OPERATE],
             responses=problem_responses(401, 403, 409, 422, 503))
async def create_rule(body: RuleIn, request: Request) -> Done:
    """Keep VMs apart (anti-affinity) or together (affinity), restart them after others
    (depends-on), or on or off a host group (VM-host rules). A dependency cycle, or a must
    rule that leaves a VM no host, is refused (422); what cannot be kept on today's hosts
    is named in the message."""
    warnings = await service.create_rule(request.app.state.store, Rule(
        name=body.name, kind=body.kind, vms=tuple(body.vms), on=tuple(body.on), group=body.group))
    more = f"; cannot be kept now: {'; '.join(warnings)}" if warnings else ""
    return Done(changed=True, message=f"rule {body.name} created{more}")


@router.delete("/rules/{name}", response_model=Done, dependencies=[OPERATE],
               responses=problem_responses(401, 403, 404, 409, 422, 503))
async def delete_rule(name: str, request: Request, revision: Optional[int] = Depends(if_match)) -> Done:
    await service.delete_rule(request.app.state.store, name, revision)
    return Done(changed=True, message=f"rule {name} deleted")


@router.get("/hostgroups", response_model=list[HostGroupOut], dependencies=[READ],
            responses=problem_responses(401, 403, 503))
async def list_host_groups(request: Request) -> list[dict[str, Any]]:
    snap = await request.app.state.store.snapshot()
    return [{**g.to_json(), "revision": snap[K.HOSTGROUPS + g.name].mod_revision} for g in service.host_groups(snap)]


@router.post("/hostgroups", response_model=Done, status_code=201, dependencies=[OPERATE],
             responses=problem_responses(401, 403, 409, 422, 503))
async def create_host_group(body: HostGroupIn, request: Request) -> Done:
    """A named set of hosts, for VM-host rules."""
    await service.create_host_group(request.app.state.store, HostGroup(name=body.name, hosts=tuple(body.hosts)))
    return Done(changed=True, message=f"host group {body.name} created")


@router.delete("/hostgroups/{name}", response_model=Done, dependencies=[OPERATE],
               responses=problem_responses(401, 403, 404, 409, 422, 503))
async def delete_host_group(name: str, request: Request, revision: Optional[int] = Depends(if_match)) -> Done:
    await service.delete_host_group(request.app.state.store, name, revision)
    return Done(changed=True, message=f"host group {name} deleted")
