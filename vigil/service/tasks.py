"""Live migration, disk moves and offline disk repairs: validate, queue as a task (the
agents carry it out), read, cancel, list."""
from __future__ import annotations

import time
from dataclasses import asdict, replace

from vigil.model import TASK_ACTIVE, HostInfo, Task, VMSpec
from vigil.policy.admission import migration_admission
from vigil.policy.replicas import stale_map
from vigil.service.common import Conflict, check_revision, Invalid, NotFound, active_task, diskstate, host_for_vm, running_owner, under, user_event
from vigil.policy.view import ClusterView
from vigil.service.view import cluster_view
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store
from vigil.store.events import event_put_op


async def migrate_vm(store: Store, name: str, to: str, datastore: str | None = None, reason: str = "user",
                     revision: int | None = None) -> Task:
    """Validate a live migration and queue it; the agents carry it out. Room and rules
    are judged by ``policy.admission``, on the controller's load model."""
    snap = await store.snapshot()
    if K.VMS + name not in snap:
        raise NotFound(f"no VM named {name!r}")
    check_revision(snap[K.VMS + name], revision, f"VM {name}")
    src = migrate_checks(snap, name, to, datastore)
    return await queue_task(store, snap, Task(id=f"{name}-{int(time.time() * 1000)}", kind="migrate", vm=name,
                                              src=src, dst=to, datastore=datastore or "", reason=reason))


def migrate_checks(snap: dict[str, Entry], name: str, to: str, datastore: str | None,
                   view: ClusterView | None = None) -> str:
    """Every check of a live migration of ``name`` to ``to`` on a snapshot; the source host,
    or the refusal (NotFound, Conflict, Invalid). ``view``: the snapshot's, when the caller
    checks several destinations (built here otherwise)."""
    if K.VMS + name not in snap:
        raise NotFound(f"no VM named {name!r}")
    spec = VMSpec.from_json(snap[K.VMS + name].value)
    if K.FT + name in snap:
        raise Conflict(f"VM {name} has Fault Tolerance on: its memory is already replicated by checkpoints; "
                       f"turn it off first ('vigil vm ft disable {name}')")
    src = running_owner(snap, name)
    info = host_for_vm(snap, to)
    if to == src:
        raise Conflict(f"VM {name} already runs on {to}")
    state = diskstate(snap, name)
    if state.get("resync"):
        raise Conflict(f"VM {name} is resyncing disk {state['resync'].get('disk')}; migrate it once that is done")
    spec = spec.without_stale(stale_map(state))
    if datastore is not None and spec.replicated:
        raise Invalid(f"VM {name} has disks on two datastores; --datastore moves single-copy disks only")
    if datastore is not None:
        if datastore not in under(snap, K.DATASTORES):
            raise Invalid(f"unknown datastore {datastore!r}")
        if datastore not in info.datastores:
            raise Invalid(f"host {to} does not reach datastore {datastore}")
    else:
        missing = sorted(spec.datastores - set(info.datastores))
        if missing:
            raise Invalid(f"host {to} does not reach datastore {', '.join(missing)} "
                          f"(use --datastore to copy the disks to one it reaches)")
    ok, why = migration_admission(view or cluster_view(snap, time.time()), name, to, datastore)
    if not ok:
        raise Conflict(why)
    return src


async def move_disk(store: Store, name: str, disk: str, to: str, bwlimit_mib_s: float = 0.0,
                    revision: int | None = None) -> Task:
    """Validate a Storage vMotion and queue it; the owner's agent carries it out.
    ``bwlimit_mib_s``: cap the copy so that other I/O on the datastores keeps its share."""
    if bwlimit_mib_s < 0:
        raise Invalid(f"--bwlimit must be positive (MiB/s), not {bwlimit_mib_s:g}")
    snap = await store.snapshot()
    if K.VMS + name not in snap:
        raise NotFound(f"no VM named {name!r}")
    check_revision(snap[K.VMS + name], revision, f"VM {name}")
    spec = VMSpec.from_json(snap[K.VMS + name].value)
    if K.FT + name in snap:
        raise Conflict(f"VM {name} has Fault Tolerance on: its standbys use the disks where they are; "
                       f"turn it off first ('vigil vm ft disable {name}')")
    d = next((x for x in spec.disks if x.name == disk), None)
    if d is None:
        raise NotFound(f"VM {name} has no disk {disk!r} (disks: {', '.join(x.name for x in spec.disks) or 'none'})")
    if d.replica:
        raise Invalid(f"disk {disk} of {name} has copies on {' and '.join(d.copies)}; moving a replicated disk "
                      "is not supported")
    if to not in under(snap, K.DATASTORES):
        raise Invalid(f"unknown datastore {to!r}")
    if d.datastore == to:
        raise Conflict(f"disk {disk} of {name} is already on {to}")
    src = running_owner(snap, name)
    if to not in HostInfo.from_json(snap[K.HOSTS + src].value).datastores:
        raise Invalid(f"host {src}, where {name} runs, does not reach datastore {to}")
    return await queue_task(store, snap, Task(id=f"{name}-{int(time.time() * 1000)}", kind="move-disk", vm=name,
                                              src=src, datastore=to, disk=disk, reason="user",
                                              bwlimit_mib_s=bwlimit_mib_s))


async def queue_task(store: Store, snap: dict[str, Entry], task: Task) -> Task:
    """Write the task, guarded: the VM has no task under way and still runs on its source."""
    busy = active_task(snap, task.vm)
    if busy is not None:
        raise Conflict(f"VM {task.vm} is busy: {busy.kind} task {busy.id} is {busy.state}")
    return await write_task(store, snap, task, [store.equals(K.OWN + task.vm, task.src)])


async def write_task(store: Store, snap: dict[str, Entry], task: Task, guards: list) -> Task:
    """Write the task and its event in one transaction: the VM's task key as in ``snap``,
    and ``guards`` (what the caller validated) still true; Conflict otherwise."""
    prev = snap.get(K.TASKS + task.vm)
    task = replace(task, created=time.time(), updated=time.time())
    ev = user_event(f"task-{task.kind}", f"{task.vm}: {task.kind} queued ({task_summary(task)})",
                    vm=task.vm, host=task.src, task=task.id)
    vm = snap[K.VMS + task.vm]
    ok = await store.txn(
        [store.unchanged(K.TASKS + task.vm, prev.mod_revision if prev else 0),
         store.unchanged(K.VMS + task.vm, vm.mod_revision), *guards],
        [store.put_op(K.TASKS + task.vm, asdict(task)), event_put_op(store, ev)])
    if not ok:
        raise Conflict(f"VM {task.vm} changed meanwhile; try again")
    return task


def task_summary(t: Task) -> str:
    """``host1 -> host2`` or ``disk disk0 -> ds2 on host1``: a task in a few words."""
    if t.kind == "migrate":
        return f"{t.src} -> {t.dst}" + (f", disks to {t.datastore}" if t.datastore else "")
    if t.kind == "repair-disk":
        return f"stale copies of {t.disk.replace(',', ', ')} copied on {t.src}"
    return f"disk {t.disk} -> {t.datastore} on {t.src}"


async def get_task(store: Store, vm: str) -> Task | None:
    """The VM's last task (finished ones included), or None."""
    e = await store.get(K.TASKS + vm)
    return Task.from_json(e.value) if e else None


async def cancel_task(store: Store, vm_or_id: str) -> Task:
    """Ask the agent to cancel the task under way for a VM (or of that id)."""
    tasks = {n: (Task.from_json(e.value), e) for n, e in (await store.get_prefix(K.TASKS)).items()}
    for t, e in tasks.values():
        if (t.vm == vm_or_id or t.id == vm_or_id) and t.state in TASK_ACTIVE:
            if await store.txn([store.unchanged(e.key, e.mod_revision)],
                               [store.put_op(e.key, asdict(replace(t, cancel=True)))]):
                return t
            raise Conflict("the task changed meanwhile; try again")
    raise NotFound(f"no running task for {vm_or_id!r}")


async def tasks(store: Store) -> list[Task]:
    """Every task, oldest first."""
    return sorted((Task.from_json(e.value) for e in (await store.get_prefix(K.TASKS)).values()),
                  key=lambda t: t.created)
