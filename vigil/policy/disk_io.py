"""A VM's disk latency, from QEMU's block statistics (QMP ``query-blockstats``), for
Storage DRS's I/O rule (vigil.policy.sdrs_latency).

QEMU counts, per disk, the operations done and the time they took in total (read, write,
flush). Between two samples, latency = delta time / delta operations. Both rates are
smoothed over the same window as the rest of the load (vigil.policy.load_smoothing), the
time and the operations apart, so that the latency reported is the mean of the
operations in the window (weighted by them), not the mean of noisy per-sample figures.
A disk is named by its index in the VM's spec (its device ``virtio-disk<i>``; its node
names change on a disk move, the device does not).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from vigil.policy.load_smoothing import ewma

KINDS = ("rd", "wr", "flush")  # QEMU's prefixes: rd_operations, rd_total_time_ns, ...
NAMES = {"rd": "read_ms", "wr": "write_ms", "flush": "flush_ms"}
_INDEX = re.compile(r"(?:virtio-)?disk(\d+)")


def disk_index(entry: Mapping[str, Any]) -> int | None:
    """The spec index of one ``query-blockstats`` entry: from its device's qdev path
    (``/machine/peripheral/virtio-disk0/virtio-backend``), else its node name."""
    for field in ("qdev", "device", "node-name"):
        for part in str(entry.get(field) or "").split("/"):
            m = _INDEX.fullmatch(part)
            if m:
                return int(m.group(1))
    return None


Counters = tuple[tuple[int, int], ...]  # per kind (KINDS order): (operations, total time ns)


def counters(stats: Sequence[Mapping[str, Any]]) -> dict[int, Counters]:
    """Disk index -> its counters so far, from a ``query-blockstats`` answer."""
    out: dict[int, Counters] = {}
    for e in stats:
        i = disk_index(e)
        s = e.get("stats") or {}
        if i is None or i in out:
            continue
        try:
            out[i] = tuple((int(s.get(f"{k}_operations", 0)), int(s.get(f"{k}_total_time_ns", 0))) for k in KINDS)
        except (TypeError, ValueError):
            continue
    return out


@dataclass
class DiskAverage:
    """One disk's smoothed rates: per kind (operations/s, busy ns/s), and its last counters."""

    last: Counters
    rates: tuple[tuple[float, float], ...] | None = None

    def fold(self, now: Counters, dt: float) -> None:
        if dt <= 0:
            return
        new = []
        for j, ((ops, ns), (o0, n0)) in enumerate(zip(now, self.last)):
            d_ops, d_ns = ops - o0, ns - n0
            if d_ops < 0 or d_ns < 0:  # counters started again (a new QEMU): a fresh start
                d_ops, d_ns = 0, 0
            old = self.rates[j] if self.rates else None
            new.append((ewma(old[0] if old else None, d_ops / dt, dt), ewma(old[1] if old else None, d_ns / dt, dt)))
        self.rates, self.last = tuple(new), now

    def figures(self) -> dict[str, float] | None:
        """What the load record holds: operations/s, and each kind's and the overall
        latency in ms (0 for a kind with no operations)."""
        if self.rates is None:
            return None
        ops = sum(r[0] for r in self.rates)
        out = {"iops": round(ops, 2), "latency_ms": round(sum(r[1] for r in self.rates) / ops / 1e6, 3) if ops > 0 else 0.0}
        for k, (o, n) in zip(KINDS, self.rates):
            out[NAMES[k]] = round(n / o / 1e6, 3) if o > 0 else 0.0
        return out


class DiskIo:
    """The smoothed disk I/O of a host's VMs, sample after sample."""

    def __init__(self) -> None:
        self.disks: dict[tuple[str, int], DiskAverage] = {}
        self.at: float | None = None

    def fold(self, now: float, sample: Mapping[str, Mapping[int, Counters]]) -> None:
        """``sample``: VM -> disk index -> counters; a VM left out (QMP busy) keeps its
        average, a VM gone is dropped."""
        dt = now - self.at if self.at is not None else 0.0
        self.at = now
        for vm, disks in sample.items():
            for i, c in disks.items():
                avg = self.disks.get((vm, i))
                if avg is None:
                    self.disks[(vm, i)] = DiskAverage(c)
                else:
                    avg.fold(c, dt)

    def keep(self, vms: set[str]) -> None:
        self.disks = {k: v for k, v in self.disks.items() if k[0] in vms}

    def record(self) -> dict[str, dict[str, dict[str, float]]]:
        """VM -> disk index (a string, as JSON keys are) -> figures."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for (vm, i), avg in sorted(self.disks.items()):
            f = avg.figures()
            if f is not None:
                out.setdefault(vm, {})[str(i)] = f
        return out


def latency_changed(old: Mapping[str, Any], new: Mapping[str, Any], step: float = 0.2, floor_ms: float = 1.0) -> bool:
    """A disk's latency moved enough (``step`` relative, at least ``floor_ms``) to write
    the load record again, or a disk appeared or went."""
    if set(old) != set(new):
        return True
    for k, n in new.items():
        a, b = float(old[k].get("latency_ms", 0.0)), float(n.get("latency_ms", 0.0))
        if abs(a - b) >= max(floor_ms, step * max(a, b)):
            return True
    return False
