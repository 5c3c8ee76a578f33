"""Maintenance mode (the controller then empties the host) and datastore evacuation."""
from __future__ import annotations

import time
from typing import Any

from vigil.model import HostInfo, SpecError, Task, VMSpec
from vigil.policy.admission_control import Change
import vigil.service.admission as admission
from vigil.service.common import Conflict, Invalid, NotFound, active_task, known, running_owner, under, user_event
from vigil.service.tasks import move_disk
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store
from vigil.store.events import event_put_op


async def set_maintenance(store: Store, host: str, enter: bool, revision: int | None = None) -> bool:
    """Put a host in maintenance mode or take it out; False when it already was so.
    ``revision``: the host's, as the caller read it (its maintenance key's, or the host's)."""
    snap = await store.snapshot()
    if K.HOSTS + host not in snap:
        hosts = under(snap, K.HOSTS)
        raise NotFound(f"unknown host {host!r} (known: {known(hosts)})")
    now = host_revision(snap, host)
    if revision is not None and revision != now:
        raise Conflict(f"host {host} changed since revision {revision} (now {now}); read it again")
    key = K.MAINTENANCE + host
    if enter == (key in snap):
        return False
    ev = user_event("maintenance-" + ("enter" if enter else "exit"),
                    f"{host} {'enters' if enter else 'leaves'} maintenance mode", host=host)
    op = store.put_op(key, {"since": time.time()}) if enter else store.delete_op(key)
    more, also = admission.guarded(store, snap, Change(what=f"putting {host} in maintenance mode",
                                                       leave=frozenset({host}))) if enter else ([], [])
    return await store.txn([store.absent(key) if enter else store.tx.version(key.encode()) > 0, *more],
                           [op, event_put_op(store, ev), *also])


def host_revision(snap: dict[str, Entry], host: str) -> int:
    """A host object's revision: the newest of its info and its maintenance key (entering or
    leaving maintenance is a change to the host)."""
    m = snap.get(K.MAINTENANCE + host)
    return max(snap[K.HOSTS + host].mod_revision, m.mod_revision if m else 0)


async def evacuation_step(store: Store, ds: str, to: str | None = None) -> dict[str, Any]:
    """One round of `vigil datastore evacuate`: queue a disk move for every running VM that
    has a disk on ``ds`` and no task under way. Returns what is left and why."""
    snap = await store.snapshot()
    if K.DATASTORES + ds not in snap:
        raise NotFound(f"unknown datastore {ds!r}")
    if to is not None and K.DATASTORES + to not in snap:
        raise Invalid(f"unknown datastore {to!r}")
    if to == ds:
        raise Invalid("the target datastore is the one being evacuated")
    queued, waiting, blocked = [], [], []
    for name, e in sorted(under(snap, K.VMS).items()):
        spec = VMSpec.from_json(e.value)
        disk = next((d for d in spec.disks if d.datastore == ds), None)
        if disk is None:
            continue
        if active_task(snap, name) is not None:
            waiting.append(name)
            continue
        last = snap.get(K.TASKS + name)
        if last is not None:
            lt = Task.from_json(last.value)
            if lt.kind == "move-disk" and lt.disk == disk.name and lt.state in ("failed", "cancelled"):
                blocked.append(f"{name}: its last disk move {lt.state}: {lt.error} "
                               f"(retry with 'vigil vm move-disk {name} {disk.name} --to DS')")
                continue
        try:
            host = running_owner(snap, name)
        except SpecError:
            blocked.append(f"{name}: not running (move its disks while it runs)")
            continue
        reach = HostInfo.from_json(snap[K.HOSTS + host].value).datastores
        target = to or next((d for d in sorted(reach) if d != ds), None)
        if target is None or target not in reach:
            blocked.append(f"{name}: host {host} reaches no other datastore")
            continue
        try:
            await move_disk(store, name, disk.name, target)
            queued.append(f"{name}/{disk.name} -> {target}")
        except SpecError as err:
            blocked.append(f"{name}: {err}")
    return {"queued": queued, "waiting": waiting, "blocked": blocked}
