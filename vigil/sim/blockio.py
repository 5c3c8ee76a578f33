"""Simulated block statistics (QMP ``query-blockstats``), for Storage DRS's latency rule.

A VM a scenario gives ``iops`` does that many writes a second on each of its disks; each
one takes its datastore's latency: ``latency`` ms plus ``latency_per_iops`` ms for every
operation a second that all running VMs do on that datastore (a busy datastore is slow,
one a busy disk left is fast again). The counters are QEMU's: operations and their total
time so far, summed between two reads at the rates of the moment.
"""
from __future__ import annotations

from typing import Any

from vigil.model import VMSpec
from vigil.store import keys as K


def datastore_latency_ms(world: Any, ds: str, iops: dict[str, float]) -> float:
    base, slope = world.ds_latency.get(ds, (1.0, 0.0))
    return base + slope * iops.get(ds, 0.0)


def datastore_iops(world: Any) -> dict[str, float]:
    """Operations a second on each datastore, over every running VM of every host."""
    out: dict[str, float] = {}
    for h in world.hosts.values():
        for vm, q in h.qemus.items():
            rate = world.vm_iops.get(vm, 0.0)
            spec = _spec(world, vm)
            if q.state != "running" or not rate or spec is None:
                continue
            for d in spec.disks:
                out[d.datastore] = out.get(d.datastore, 0.0) + rate
    return out


def _spec(world: Any, vm: str) -> VMSpec | None:
    e = world.store._kv.get(K.VMS + vm)
    return VMSpec.from_json(e.value) if e is not None and isinstance(e.value, dict) else None


class SimBlockStats:
    """One simulated host's ``qemu_stats(vm, pid)`` (vigil.agent.loadreport.QemuStats)."""

    def __init__(self, world: Any, host: str, clock: Any) -> None:
        self.w, self.host, self.clock = world, host, clock
        self.acc: dict[tuple[str, int], tuple[float, float, float]] = {}  # (vm, disk) -> (when, ops, ns)

    async def __call__(self, vm: str, pid: int) -> dict[str, Any] | None:
        q = self.w.hosts[self.host].qemus.get(vm)
        spec = _spec(self.w, vm)
        if not self.w.vm_iops or q is None or q.pid != pid or q.state != "running" or spec is None:
            return None
        now = self.clock.monotonic()
        iops = datastore_iops(self.w)
        rate = self.w.vm_iops.get(vm, 0.0)
        out = []
        for i, d in enumerate(spec.disks):
            t0, ops, ns = self.acc.get((vm, i), (now, 0.0, 0.0))
            dt = max(0.0, now - t0)
            ops += rate * dt
            ns += rate * dt * datastore_latency_ms(self.w, d.datastore, iops) * 1e6
            self.acc[(vm, i)] = (now, ops, ns)
            out.append({"device": "", "qdev": f"/machine/peripheral/virtio-disk{i}/virtio-backend",
                        "stats": {"wr_operations": int(ops), "wr_total_time_ns": int(ns)}})
        return {"blockstats": out, "guest_used_mb": None}
