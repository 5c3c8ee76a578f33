"""Cumulative HA figures for /metrics: restarts, failover times, migration downtimes.

The API servers are stateless and the event log is trimmed, so counters cannot be
derived from events (they would fall when old events go). The leader's controller keeps
them in one etcd key instead, written only while it is the leader; a new leader carries
on from what is stored. The folding is pure (``fold_*``); the controller loads, folds and saves
(vigil.controller.loop), the API reads (vigil.api.metrics).

Failover time is "power loss detected to running again": from the moment the controller
classified the VM's old host failed (or isolated) to the ``since`` its new host reports.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from vigil.model import Task

FAILOVER_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
DOWNTIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def empty() -> dict[str, Any]:
    return {"restarts_total": 0, "failovers": hist(FAILOVER_BUCKETS), "downtime": hist(DOWNTIME_BUCKETS),
            "pending": {}, "counted_tasks": []}


def hist(buckets: Iterable[float]) -> dict[str, Any]:
    bs = list(buckets)
    return {"buckets": bs, "counts": [0] * len(bs), "count": 0, "sum": 0.0}


def observe(h: dict[str, Any], value: float) -> dict[str, Any]:
    """A histogram with one more observation (counts per bucket, not cumulative)."""
    counts = list(h["counts"])
    for i, b in enumerate(h["buckets"]):
        if value <= b:
            counts[i] += 1
            break
    return {**h, "counts": counts, "count": h["count"] + 1, "sum": h["sum"] + value}


def fold_restart(stats: dict[str, Any], vm: str, gen: int, detected: float) -> dict[str, Any]:
    """A restart (or FT failover) was written: count it, and wait for the VM to run."""
    return {**stats, "restarts_total": stats["restarts_total"] + 1,
            "pending": {**stats["pending"], vm: {"gen": gen, "detected": detected}}}


def fold_running(stats: dict[str, Any], running: Mapping[str, tuple[int, float]]) -> dict[str, Any]:
    """``running``: VM -> (assignment gen, running since) for the VMs that run where they are
    assigned. A pending failover whose generation runs is done: its time is observed."""
    pending, failovers = dict(stats["pending"]), stats["failovers"]
    for vm, p in stats["pending"].items():
        got = running.get(vm)
        if got is not None and got[0] >= p["gen"]:
            failovers = observe(failovers, max(0.0, got[1] - p["detected"]))
            del pending[vm]
    return {**stats, "pending": pending, "failovers": failovers}


def fold_tasks(stats: dict[str, Any], tasks: Iterable[Task]) -> dict[str, Any]:
    """Finished live migrations not counted yet: their downtime is observed once. The
    counted ids kept are those still in etcd (one task per VM there)."""
    present = {t.id: t for t in tasks}
    counted = [i for i in stats["counted_tasks"] if i in present]
    downtime = stats["downtime"]
    for t in present.values():
        ms = t.progress.get("downtime_ms")
        if t.kind == "migrate" and t.state == "done" and ms is not None and t.id not in counted:
            downtime = observe(downtime, float(ms) / 1000.0)
            counted.append(t.id)
    return {**stats, "downtime": downtime, "counted_tasks": counted}


def loaded(value: Any) -> dict[str, Any]:
    """Stored figures, or a fresh set when there are none (or they cannot be read)."""
    base = empty()
    if not isinstance(value, dict):
        return base
    return {k: value.get(k, v) for k, v in base.items()}

