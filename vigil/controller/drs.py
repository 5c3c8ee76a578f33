"""DRS in the controller: a round every ``interval_s`` (vigil.policy.drs, and Storage DRS:
vigil.policy.sdrs), its recommendations written to ``drs/recommendations`` for ``vigil drs
recommendations``, and in ``automatic`` mode its moves started as migration and move-disk
tasks (each one an event)."""
from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, Mapping, Protocol, Sequence

from vigil.model import TASK_ACTIVE, TASK_DONE, Task
from vigil.policy.drs import TASK_REASON, Memory, Round, drs_round
from vigil.policy.drs_settings import safe_drs_settings
from vigil.policy.plan_actions import StartMigration
from vigil.policy.sdrs import DiskMove, sdrs_round
from vigil.policy.view import ClusterView
from vigil.store import keys as K
from vigil.store.etcd import Entry
from vigil.store.events import event_put_op, make_event
from vigil.store.state import ClusterState

log = logging.getLogger("vigil.controller")


class _Controller(Protocol):
    store: Any
    env: Any

    async def apply(self, action: object) -> None: ...

    async def _guarded(self, compare: list, ops: list) -> bool: ...


def recent_moves(state: ClusterState, wall: float) -> dict[str, float]:
    """Seconds since each VM's last migration or disk move ended (its cool-down; any move
    counts, so that DRS does not undo at once what a person just did)."""
    return {r.task.vm: max(0.0, wall - r.task.updated) for r in state.tasks.values()
            if r.task.kind in ("migrate", "move-disk") and r.task.state in TASK_DONE}


def record(r: Round, mode: str, threshold: int, wall: float, disks: Sequence[DiskMove] = (),
           disk_reason: str = "") -> dict[str, Any]:
    """The ``drs/recommendations`` value."""
    return {"time": wall, "mode": mode, "threshold": threshold, "imbalance": r.imbalance,
            "imbalance_after": r.imbalance_after, "tolerated": round(r.tolerated, 4), "reason": r.reason,
            "moves": [{"id": m.id, "vm": m.vm, "src": m.src, "dst": m.dst, "mandatory": m.mandatory,
                       "reason": m.reason, "imbalance_after": m.imbalance_after, "memory_mb": m.memory_mb}
                      for m in r.moves],
            "disk_reason": disk_reason,
            "disk_moves": [{"id": d.id, "vm": d.vm, "disk": d.disk, "src": d.src, "dst": d.dst,
                            "size_mb": d.size_mb, "reason": d.reason} for d in disks]}


class DrsRunner:
    """What DRS keeps between rounds: the hold count and when the next round is due."""

    def __init__(self) -> None:
        self.memory = Memory()
        self.next_at = 0.0
        self.last: Mapping[str, Any] | None = None

    async def cycle(self, ctl: _Controller, view: ClusterView, state: ClusterState, stored: Entry | None) -> None:
        settings = safe_drs_settings(state.settings.get("drs"))
        if settings.mode == "off":
            self.memory, self.next_at = Memory(), 0.0
            if stored is not None:
                await ctl._guarded([], [ctl.store.delete_op(K.DRS)])
            return
        now = view.now
        if now < self.next_at:
            return
        self.next_at = now + settings.interval_s
        wall = ctl.env.clock.time()
        recent = recent_moves(state, wall)
        r = drs_round(view, settings, self.memory, recent)
        self.memory = r.memory
        in_flight = sum(1 for t in view.tasks if t.reason == TASK_REASON)
        moved = max((x.task.updated for x in state.tasks.values() if x.task.kind == "move-disk"
                     and x.task.state in TASK_DONE), default=0.0)
        disks, disk_reason = sdrs_round(view, settings, recent, settings.max_moves - in_flight - len(r.moves), moved)
        busy = {m.vm for m in r.moves}
        disks = [d for d in disks if d.vm not in busy]  # one task per VM at a time
        rec = record(r, settings.mode, settings.threshold, wall, disks, disk_reason)
        old = dict(stored.value) if stored is not None and isinstance(stored.value, dict) else {}
        if {k: v for k, v in old.items() if k != "time"} != {k: v for k, v in rec.items() if k != "time"}:
            ops = [ctl.store.put_op(K.DRS, rec)]
            if (r.moves or disks) and settings.mode == "manual":
                what = f"{len(r.moves)} move(s): {r.reason}" + (f"; {disk_reason}" if disks else "")
                ev = make_event("drs-recommendations", f"DRS recommends {what}", source="controller", at=wall)
                ops.append(event_put_op(ctl.store, ev))
            await ctl._guarded([], ops)
        if settings.mode != "automatic":
            return
        for m in r.moves:
            log.info("DRS: %s %s -> %s (%s)", m.vm, m.src, m.dst, m.reason)
            await ctl.apply(StartMigration(m.vm, m.src, m.dst, f"DRS {m.reason}", task_reason=TASK_REASON))
        for d in disks:
            await self._move_disk(ctl, view, d, wall)

    async def _move_disk(self, ctl: _Controller, view: ClusterView, d: DiskMove, wall: float) -> None:
        """Queue a Storage DRS disk move as the owner's move-disk task, guarded like a
        migration the controller starts: no task under way and the VM still on its host."""
        st = ctl.store
        owner = view.vms[d.vm].owner if d.vm in view.vms else None
        if owner is None:
            return
        task = Task(id=f"{d.vm}-{int(wall * 1000)}", kind="move-disk", vm=d.vm, src=owner, datastore=d.dst,
                    disk=d.disk, reason=TASK_REASON, created=wall, updated=wall)
        ev = make_event("task-move-disk", f"{d.vm}: disk {d.disk} {d.src} -> {d.dst} (Storage DRS: {d.reason})",
                        vm=d.vm, host=owner, source="controller", at=wall, task=task.id)
        prev = await st.get(K.TASKS + d.vm)
        if prev is not None and Task.from_json(prev.value).state in TASK_ACTIVE:
            return
        log.info("Storage DRS: %s/%s %s -> %s (%s)", d.vm, d.disk, d.src, d.dst, d.reason)
        await ctl._guarded([st.unchanged(K.TASKS + d.vm, prev.mod_revision if prev else 0),
                            st.equals(K.OWN + d.vm, owner)],
                           [st.put_op(K.TASKS + d.vm, asdict(task)), event_put_op(st, ev)])
