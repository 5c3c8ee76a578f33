"""Disks on two datastores: what ``vm show`` says of their copies, and their repair."""
from __future__ import annotations

import time
from typing import Any

from vigil.model import HostInfo, Task, VMSpec
from vigil.policy.repair import offline_copies, repair_host
from vigil.policy.replicas import stale_map
from vigil.service.common import Conflict, Invalid, NotFound, active_task, diskstate, under
from vigil.service.tasks import write_task
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store


def disk_state(snap: dict[str, Entry], spec: VMSpec) -> list[dict[str, Any]]:
    """What ``vm show`` says of each disk: its copies and whether each is in sync."""
    state = diskstate(snap, spec.name)
    stale = state.get("stale") or {}
    resync = state.get("resync") or {}
    out = []
    for d in spec.disks:
        copies = []
        for ds in d.copies:
            c: dict[str, Any] = {"datastore": ds, "state": "in-sync"}
            s = stale.get(d.name)
            if s and s.get("datastore") == ds:
                c |= {"state": "stale", "since": s.get("since"), "why": s.get("why", "")}
                if resync.get("disk") == d.name:
                    c |= {"state": "resyncing", "done": resync.get("done", 0), "total": resync.get("total", 0)}
            copies.append(c)
        out.append({"name": d.name, "datastore": d.datastore, "replica": d.replica, "path": d.path,
                    "size_mb": d.size_mb, "copies": copies})
    return out


async def repair_disk(store: Store, name: str) -> tuple[str, Task | None]:
    """Resync a VM's stale disk copies; returns what happens, and the task queued if any.

    A running VM's agent resyncs them on its own, live, once it reaches both datastores;
    this asks it to retry now. A powered-off VM's copies are copied by a host that reaches
    both datastores, as a repair-disk task (vigil.agent.task_repair) written here in one
    guarded transaction: the VM still powered off, unowned, its stale copies as seen, the
    host alive. While that task runs, the VM is not powered on (vigil.service.vms)."""
    snap = await store.snapshot()
    if K.VMS + name not in snap:
        raise NotFound(f"no VM named {name!r}")
    spec = VMSpec.from_json(snap[K.VMS + name].value)
    if not spec.replicated:
        raise Invalid(f"VM {name} has no disk on two datastores")
    stale = stale_map(diskstate(snap, name))
    if not stale:
        return f"every disk copy of {name} is in sync", None
    if K.OWN + name in snap:
        host = snap[K.OWN + name].value
        reach = set(HostInfo.from_json(snap[K.HOSTS + host].value).datastores) if K.HOSTS + host in snap else set()
        far = sorted({ds for ds in stale.values()} - reach)
        if far:
            raise Conflict(f"{host}, where {name} runs, does not reach datastore {', '.join(far)}; the resync "
                           "starts on its own once it does")
        await store.update(K.DISKSTATE + name, lambda st: {**(st or {}), "repair": time.time()})
        return f"{host} resyncs {', '.join(sorted(stale))} of {name} now", None
    if spec.power == "on":
        raise Conflict(f"{name} is being started; try again once it runs")
    alive = under(snap, K.ALIVE)
    busy = active_task(snap, name)
    if busy is not None and not (busy.kind == "repair-disk" and busy.src not in alive):
        raise Conflict(f"VM {name} is busy: {busy.kind} task {busy.id} is {busy.state}")
    copies = offline_copies(spec, stale)
    reach = {h: HostInfo.from_json(e.value).datastores for h, e in under(snap, K.HOSTS).items() if h in alive}
    host, why = repair_host(copies, reach)
    if host is None:
        raise Conflict(f"cannot repair {name}'s disks: {why}")
    ds_e = snap.get(K.DISKSTATE + name)
    task = Task(id=f"{name}-{int(time.time() * 1000)}", kind="repair-disk", vm=name, src=host,
                disk=",".join(d for d, _, _ in copies), reason="user")
    task = await write_task(store, snap, task, [
        store.absent(K.OWN + name), store.unchanged(K.VMS + name, snap[K.VMS + name].mod_revision),
        store.unchanged(K.DISKSTATE + name, ds_e.mod_revision if ds_e else 0),
        store.unchanged(K.ALIVE + host, alive[host].mod_revision)])
    return f"{name}: {host} copies the good copies over the stale ones ({why})", task
