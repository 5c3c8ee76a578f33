"""Disks on two datastores: what ``vm show`` says of their copies, and their repair."""
from __future__ import annotations

import time
from typing import Any

from vigil.model import HostInfo, VMSpec
from vigil.policy.replicas import mark_in_sync, stale_map
from vigil.service.common import Conflict, Invalid, NotFound, diskstate, under, user_event
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store
from vigil.store.events import record


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


async def repair_disk(store: Store, name: str) -> str:
    """Resync a VM's stale disk copies. A running VM's agent resyncs them on its own once
    it reaches both datastores; this asks it to retry now. A powered-off VM's copies are
    copied here, from its good copy, when this machine mounts both datastores."""
    from vigil.env import dsheartbeat as dshb
    from vigil.hypervisor import replica
    from vigil.hypervisor.qemu import disk_path

    snap = await store.snapshot()
    if K.VMS + name not in snap:
        raise NotFound(f"no VM named {name!r}")
    spec = VMSpec.from_json(snap[K.VMS + name].value)
    if not spec.replicated:
        raise Invalid(f"VM {name} has no disk on two datastores")
    stale = stale_map(diskstate(snap, name))
    if not stale:
        return f"every disk copy of {name} is in sync"
    if K.OWN + name in snap:
        host = snap[K.OWN + name].value
        reach = set(HostInfo.from_json(snap[K.HOSTS + host].value).datastores) if K.HOSTS + host in snap else set()
        far = sorted({ds for ds in stale.values()} - reach)
        if far:
            raise Conflict(f"{host}, where {name} runs, does not reach datastore {', '.join(far)}; the resync "
                           "starts on its own once it does")
        await store.update(K.DISKSTATE + name, lambda st: {**(st or {}), "repair": time.time()})
        return f"{host} resyncs {', '.join(sorted(stale))} of {name} now"
    if spec.power == "on":
        raise Conflict(f"{name} is being started; try again once it runs")
    paths = {e.key[len(K.DATASTORES):]: e.value.get("path", "") for e in under(snap, K.DATASTORES).values()}
    done = []
    for d in spec.disks:
        bad = stale.get(d.name)
        if bad is None:
            continue
        good = next(ds for ds in d.copies if ds != bad)
        src, dst = disk_path(d, paths, good), disk_path(d, paths, bad)
        for ds in (good, bad):
            if not dshb.reachable(ds, paths.get(ds, "")):
                raise Conflict(f"datastore {ds} is not mounted here ({paths.get(ds) or 'no path'}); run this on "
                               f"a host that mounts {good} and {bad}")
        await replica.copy_offline(src, dst)
        await store.update(K.DISKSTATE + name, lambda st, dn=d.name: mark_in_sync(st, [dn]))
        await record(store, user_event("disk-resynced", f"{name}: disk {d.name}'s copy on {bad} copied from {good}",
                                       vm=name, disk=d.name, datastore=bad))
        done.append(d.name)
    return f"{name}: {', '.join(done)} whole again"
