"""What if these hosts failed now? The controller's own ``plan()`` on the present view with
those hosts dead (no lease, datastore heartbeat long silent, no ping), read back as the
restarts it would order, in order, and the VMs it would leave down, with its reasons.

Nothing is written: the answer is the first wave the controller would send. Later waves
(a start that fails, capacity freed by another VM) are not foreseen. The service's view
has no FT checkpoints, so an FT VM shows as restarted from its disks, where a secondary
holding a valid checkpoint would in fact take over.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable

from vigil.policy.drs import Memory, Round, drs_round
from vigil.policy.drs_settings import DrsSettings
from vigil.policy.plan import AssignVM, NotRestarted, Waiting, plan
from vigil.policy.view import ClusterView

DEAD_S = 1e9  # heartbeat silence that classifies a host as failed whatever the timing


@dataclass(frozen=True)
class Restart:
    order: int  # 1, 2, ...: the controller's order (priority, then name)
    vm: str
    host: str  # where it would run
    priority: str
    kind: str  # restart | ft-failover | ...
    reason: str


@dataclass(frozen=True)
class Left:
    vm: str
    reason: str  # why it would not restart (no room, priority disabled, ...)


@dataclass(frozen=True)
class WhatIf:
    failed: tuple[str, ...]
    affected: tuple[str, ...]  # powered-on VMs on the failed hosts
    restarts: tuple[Restart, ...]
    left: tuple[Left, ...]

    def to_json(self) -> dict[str, Any]:
        return {"failed": list(self.failed), "affected": list(self.affected),
                "restarts": [r.__dict__ for r in self.restarts], "not_restarted": [x.__dict__ for x in self.left]}


def failed_view(view: ClusterView, hosts: Iterable[str]) -> ClusterView:
    """``view`` with ``hosts`` dead: no lease, heartbeat silent past any watchdog, no ping."""
    dead = set(hosts)
    return replace(view, hosts={
        n: replace(h, alive=False, lease=0, hb_age=DEAD_S, ping=False, maintenance=False, hb_isolated=False,
                   hb_vms=frozenset()) if n in dead else h
        for n, h in view.hosts.items()})


def what_if(view: ClusterView, fail: Iterable[str]) -> WhatIf:
    """The restarts ``plan()`` would order if ``fail`` failed now, and the VMs it would not
    restart, for the VMs those hosts run (or are assigned)."""
    failed = tuple(sorted(set(fail)))
    affected = sorted(n for n, v in view.vms.items()
                      if v.spec.power == "on" and v.assignment is not None and v.assignment.host in failed)
    if not affected:
        return WhatIf(failed, (), (), ())
    wanted = set(affected)
    restarts: list[Restart] = []
    left: dict[str, str] = {}
    for a in plan(failed_view(view, failed)):
        if isinstance(a, AssignVM) and a.vm in wanted:
            restarts.append(Restart(len(restarts) + 1, a.vm, a.host, view.vms[a.vm].spec.restart_priority, a.kind,
                                    a.reason))
        elif isinstance(a, (Waiting, NotRestarted)) and a.vm in wanted:
            left.setdefault(a.vm, a.reason)
    placed = {r.vm for r in restarts}
    for n in affected:  # a VM the plan said nothing of this cycle (still owned, say)
        if n not in placed and n not in left:
            left[n] = "no restart this cycle"
    return WhatIf(failed, tuple(affected), tuple(restarts), tuple(Left(n, left[n]) for n in sorted(left)))



def drs_now(view: ClusterView, settings: DrsSettings) -> Round:
    """What a DRS round would recommend on this view now: its threshold, margins and rules,
    as if the imbalance had lasted the hold time, whatever the mode (off included: the
    answer is what turning it on would do). Cool-downs are not known here (the controller
    keeps them), so a VM moved a moment ago may be named again."""
    return drs_round(view, settings, Memory(rounds_over=settings.hold_rounds))


def drs_now_json(r: Round) -> dict[str, Any]:
    return {"imbalance": r.imbalance, "imbalance_after": r.imbalance_after, "tolerated": round(r.tolerated, 4),
            "reason": r.reason,
            "moves": [{"vm": m.vm, "src": m.src, "dst": m.dst, "mandatory": m.mandatory, "reason": m.reason,
                       "imbalance_after": m.imbalance_after, "memory_mb": m.memory_mb} for m in r.moves]}
