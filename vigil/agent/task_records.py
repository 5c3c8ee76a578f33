"""Writing task records: the guarded read-modify-write of a task, and what its progress
and the moved VM spec look like (see vigil.agent.tasks)."""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Callable

from vigil.env.base import Clock
from vigil.hypervisor import mirror
from vigil.model import Task, VMSpec
from vigil.store import keys as K
from vigil.store.etcd import Store


async def update_task(store: Store, vm: str, task_id: str,
                      change: Callable[[Task], Task | None] | None = None, *, clock: Clock,
                      **changes: Any) -> Task | None:
    """Read-modify-write of a task, so a concurrent cancel request is never lost.
    ``change`` (vigil.policy.tasks) maps the task as read to the new one, or to None to
    leave it as it is; otherwise the keyword changes are applied. ``clock`` (the environment's)
    stamps the update."""
    for _ in range(10):
        e = await store.get(K.TASKS + vm)
        if e is None:
            return None
        t = Task.from_json(e.value)
        if t.id != task_id:
            return None
        new = change(t) if change is not None else replace(t, **changes)
        if new is None:
            return t
        new = replace(new, updated=clock.time())
        if await store.txn([store.unchanged(e.key, e.mod_revision)], [store.put_op(e.key, asdict(new))]):
            return new
    return None


def moved_spec(spec: VMSpec, datastore: str, only_disk: str | None = None) -> VMSpec:
    """The spec with its disks (or one disk) on another datastore, same relative paths."""
    disks = tuple(replace(d, datastore=datastore) if only_disk in (None, d.name) else d for d in spec.disks)
    return replace(spec, disks=disks)


def migration_progress(p: Any) -> dict[str, Any]:
    """A MigrationProgress or MigrationResult as the task's JSON progress."""
    d = asdict(p) if not isinstance(p, dict) else dict(p)
    out = {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}
    if "dirty_rate" in out:
        out["dirty_rate_mib_s"] = out["dirty_rate"] / 2**20
    if "ram_transferred" in out:  # the final result
        out["transferred"], out["total"] = out["ram_transferred"], out.get("ram_total", 0)
    return out


def mirror_progress(p: "mirror.MirrorProgress") -> dict[str, Any]:
    return {"offset": p.offset, "total": p.len, "ready": p.ready, "mb_s": p.mb_s}
