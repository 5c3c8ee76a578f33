"""The agent's side of a repair-disk task: a powered-off VM's stale disk copies copied
over from their good copies, on the host the task names (see vigil.policy.repair).

Before each disk the VM must still be powered off and unowned, and this host must reach
both datastores; the copy is marked in sync only in a transaction that checks the VM's
spec is unchanged and nobody owns it, so a copy made while the VM ran somewhere is never
taken for a whole one. Progress goes to the task; a cancel stops the copy and leaves the
stale copy as it was (still stale).
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

from vigil.agent.context import HostContext
from vigil.hypervisor import qemu
from vigil.hypervisor import replica as R
from vigil.hypervisor.mirror import MirrorCancelled
from vigil.model import Task, VMSpec
from vigil.policy import repair as RP
from vigil.policy.replicas import mark_in_sync, stale_map
from vigil.store import keys as K
from vigil.store.etcd import Store, StoreError


class RepairRefused(Exception):
    """The repair cannot go on (the VM was powered on, a datastore lost, ...)."""


async def repair_disks(host: HostContext, t: Task, update: Callable[..., Any],
                       write: Callable[[dict[str, Any]], None], cancel: asyncio.Event) -> None:
    """Carry out repair-disk task ``t``: ``update(vm, id, **changes)`` writes the task,
    ``write(progress)`` reports progress (throttled by the caller), ``cancel`` is set when
    the task's cancel is asked for."""
    try:
        result = await _repair(host, t, write, cancel)
    except MirrorCancelled as e:
        await update(t.vm, t.id, state="cancelled", error=str(e))
        await host.event("disk-repair-cancelled", f"{t.vm}: disk repair cancelled; its stale copies stay stale",
                         vm=t.vm)
        return
    except (RepairRefused, qemu.QemuError, OSError, StoreError) as e:
        await update(t.vm, t.id, state="failed", error=str(e))
        await host.event("disk-repair-failed", f"{t.vm}: disk repair failed: {e}", vm=t.vm)
        return
    await update(t.vm, t.id, state="done", progress=result)


async def _read(store: Store, vm: str) -> tuple[VMSpec, int, str | None, dict[str, Any] | None]:
    """The VM's spec and its revision, its owner, its diskstate."""
    spec_e = await store.get(K.VMS + vm)
    if spec_e is None:
        raise RepairRefused("the VM was deleted")
    own = await store.get(K.OWN + vm)
    ds = await store.get(K.DISKSTATE + vm)
    return VMSpec.from_json(spec_e.value), spec_e.mod_revision, own.value if own else None, ds.value if ds else None


async def _repair(host: HostContext, t: Task, write: Callable[[dict[str, Any]], None],
                  cancel: asyncio.Event) -> dict[str, Any]:
    store, paths = host.store, host.cfg.datastores
    wanted = [d for d in t.disk.split(",") if d]
    spec, _, _, state = await _read(store, t.vm)
    planned = RP.offline_copies(spec, stale_map(state), wanted or None)
    by_name = {d.name: d for d in spec.disks}
    sizes = {disk: os.stat(qemu.disk_path(by_name[disk], paths, good)).st_size for disk, good, _ in planned}
    total, done = sum(sizes.values()), 0
    t0 = host.env.clock.monotonic()

    def rate(copied: int) -> float:
        return copied / 2**20 / max(host.env.clock.monotonic() - t0, 1e-6)

    repaired = []
    for disk, _, _ in planned:
        spec, spec_rev, owner, state = await _read(store, t.vm)
        now = RP.offline_copies(spec, stale_map(state), [disk])
        if not now:
            continue  # in sync meanwhile: nothing to copy
        why = RP.repair_refusal(spec.power, owner, now, host.ds_ok, host.me)
        if why is not None:
            raise RepairRefused(why)
        _, good, bad = now[0]
        d = by_name[disk]
        src, dst = qemu.disk_path(d, paths, good), qemu.disk_path(d, paths, bad)

        def progress(copied: int, _total: int, base: int = done, disk: str = disk) -> None:
            write({"offset": base + copied, "total": total, "mb_s": rate(base + copied), "disk": disk})

        await R.copy_offline(src, dst, progress=progress, cancel=cancel)
        done += sizes.get(disk, 0)
        if not await _mark_whole(store, t.vm, disk, spec_rev):
            raise RepairRefused(f"the VM changed while disk {disk} was copied; its copy on {bad} stays stale")
        repaired.append(disk)
        await host.event("disk-resynced", f"{t.vm}: disk {disk}'s copy on {bad} copied from {good} on {host.me}",
                         vm=t.vm, disk=disk, datastore=bad)
    return {"offset": done, "total": total, "mb_s": rate(done), "disks": repaired}


async def _mark_whole(store: Store, vm: str, disk: str, spec_rev: int) -> bool:
    """Mark ``disk`` in sync, if the VM's spec is still at ``spec_rev`` and nobody owns it."""
    for _ in range(10):
        e = await store.get(K.DISKSTATE + vm)
        new = mark_in_sync(e.value if e else None, [disk])
        if await store.txn([store.unchanged(K.VMS + vm, spec_rev), store.absent(K.OWN + vm),
                            store.unchanged(K.DISKSTATE + vm, e.mod_revision if e else 0)],
                           [store.put_op(K.DISKSTATE + vm, new)]):
            return True
        spec_e = await store.get(K.VMS + vm)
        if spec_e is None or spec_e.mod_revision != spec_rev or await store.get(K.OWN + vm) is not None:
            return False
    return False
