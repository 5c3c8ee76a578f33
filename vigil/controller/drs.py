"""DRS in the controller: a round every ``interval_s`` (vigil.policy.drs), its
recommendations written to ``drs/recommendations`` for ``vigil drs recommendations``, and
in ``automatic`` mode its moves started as migration tasks (each one an event)."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Protocol

from vigil.model import TASK_DONE
from vigil.policy.drs import TASK_REASON, Memory, Round, drs_round
from vigil.policy.drs_settings import safe_drs_settings
from vigil.policy.plan_actions import StartMigration
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
    """Seconds since each VM's last migration ended (its cool-down; any migration counts,
    so that DRS does not undo at once what a person just did)."""
    return {r.task.vm: max(0.0, wall - r.task.updated) for r in state.tasks.values()
            if r.task.kind == "migrate" and r.task.state in TASK_DONE}


def record(r: Round, mode: str, threshold: int, wall: float) -> dict[str, Any]:
    """The ``drs/recommendations`` value."""
    return {"time": wall, "mode": mode, "threshold": threshold, "imbalance": r.imbalance,
            "imbalance_after": r.imbalance_after, "tolerated": round(r.tolerated, 4), "reason": r.reason,
            "moves": [{"id": m.id, "vm": m.vm, "src": m.src, "dst": m.dst, "mandatory": m.mandatory,
                       "reason": m.reason, "imbalance_after": m.imbalance_after, "memory_mb": m.memory_mb}
                      for m in r.moves]}


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
        r = drs_round(view, settings, self.memory, recent_moves(state, wall))
        self.memory = r.memory
        rec = record(r, settings.mode, settings.threshold, wall)
        old = dict(stored.value) if stored is not None and isinstance(stored.value, dict) else {}
        if {k: v for k, v in old.items() if k != "time"} != {k: v for k, v in rec.items() if k != "time"}:
            ops = [ctl.store.put_op(K.DRS, rec)]
            if r.moves and settings.mode == "manual":
                ev = make_event("drs-recommendations", f"DRS recommends {len(r.moves)} move(s): {r.reason}",
                                source="controller", at=wall)
                ops.append(event_put_op(ctl.store, ev))
            await ctl._guarded([], ops)
        if settings.mode != "automatic":
            return
        for m in r.moves:
            log.info("DRS: %s %s -> %s (%s)", m.vm, m.src, m.dst, m.reason)
            await ctl.apply(StartMigration(m.vm, m.src, m.dst, f"DRS {m.reason}", task_reason=TASK_REASON))
