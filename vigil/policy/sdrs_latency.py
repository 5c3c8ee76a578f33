"""Storage DRS's I/O rule, pure: a datastore whose disks' operations take longer than the
latency threshold on average (vSphere: 15 ms) gets its busiest movable disk moved live to
the least latent datastore of its datastore cluster that its VM's host reaches.

Latency comes from the agents' load records (``vms.<vm>.disks.<index>``: operations a
second and their mean time, smoothed; vigil.policy.disk_io), a datastore's as the mean
over the operations of every disk on it (weighted by them). A round moves one disk per
datastore at most: what a move changes is seen only in the records written after it, so
records written less than SETTLE_S after the last disk move ended are not trusted. The
same margin as the space rule: the destination must be under the threshold by it (and
faster than the source by it), and must keep room under the space threshold's aim.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from vigil.policy.datastore_clusters import peers
from vigil.policy.drs_rules import unmovable
from vigil.policy.drs_settings import DrsSettings
from vigil.policy.load_smoothing import WINDOW_S
from vigil.policy.view import ClusterView

SETTLE_S = 2 * WINDOW_S  # after a disk move: the smoothed latency has mostly forgotten before it
MIN_IOPS = 1.0  # a datastore doing less than this many operations a second has no latency worth a move


@dataclass(frozen=True)
class DiskLoad:
    vm: str
    disk: str
    datastore: str
    iops: float
    latency_ms: float


@dataclass(frozen=True)
class DsLatency:
    latency_ms: float  # mean over its operations
    iops: float
    disks: tuple[DiskLoad, ...]  # busiest first


def disk_loads(view: ClusterView, since: float = 0.0) -> list[DiskLoad]:
    """Every disk's smoothed I/O, as its VM's present host reports it in a record newer
    than ``since`` + SETTLE_S. Replicated disks are left out (their writes go to two
    datastores; Storage DRS does not move them)."""
    out: list[DiskLoad] = []
    for host, rec in sorted(view.loads.items()):
        if float(rec.get("time", 0.0) or 0.0) <= since + SETTLE_S:
            continue
        for vm, v in sorted((rec.get("vms") or {}).items()):
            vv = view.vms.get(vm)
            if vv is None or vv.owner != host or not isinstance(v, Mapping):
                continue
            for idx, f in sorted((v.get("disks") or {}).items()):
                try:
                    spec = vv.spec.disks[int(idx)]
                    iops, ms = float(f["iops"]), float(f["latency_ms"])
                except (IndexError, KeyError, TypeError, ValueError):
                    continue
                if not spec.replica:
                    out.append(DiskLoad(vm, spec.name, spec.datastore, iops, ms))
    return out


def latency(view: ClusterView, since: float = 0.0) -> dict[str, DsLatency]:
    """Per datastore with I/O reported: its mean latency, operations a second, disks."""
    by: dict[str, list[DiskLoad]] = {}
    for d in disk_loads(view, since):
        by.setdefault(d.datastore, []).append(d)
    out: dict[str, DsLatency] = {}
    for ds, disks in by.items():
        ops = sum(d.iops for d in disks)
        ms = sum(d.iops * d.latency_ms for d in disks) / ops if ops > 0 else 0.0
        out[ds] = DsLatency(ms, ops, tuple(sorted(disks, key=lambda d: (-d.iops, d.vm, d.disk))))
    return out


@dataclass(frozen=True)
class LatencyMove:
    vm: str
    disk: str
    src: str
    dst: str
    reason: str


def latency_moves(view: ClusterView, settings: DrsSettings, clusters: Mapping[str, tuple[str, ...]],
                  space: Mapping[str, tuple[float, float]], recent: Mapping[str, float], budget: int,
                  moving: set[str], since: float = 0.0) -> tuple[list[LatencyMove], list[str]]:
    """One disk move off each datastore over the latency threshold (hottest first), and
    notes on those left as they are. ``space``: size and used MiB per datastore, after the
    space rule's moves; ``moving``: VMs with a task under way or just given one."""
    limit = settings.latency_threshold_ms
    aim = limit * (1.0 - settings.margin)
    space_aim = settings.space_threshold * (1.0 - settings.margin)
    lat = latency(view, since)
    hot = sorted((ds for ds, x in lat.items() if x.iops >= MIN_IOPS and x.latency_ms > limit),
                 key=lambda ds: -lat[ds].latency_ms)
    out: list[LatencyMove] = []
    notes: list[str] = []
    used = {ds: u for ds, (_, u) in space.items()}
    gets: set[str] = set()  # destinations of this round: their latency after it is not known
    for ds in hot:
        if budget <= 0:
            break
        src = lat[ds]
        targets = [t for t in peers(clusters, ds, set(lat) | set(space) | _reached(view)) if t not in gets]
        if not targets:
            notes.append(f"{ds} {src.latency_ms:.1f} ms (threshold {limit:g} ms): no other datastore in its cluster")
            continue
        picked = None
        for d in src.disks:
            v = view.vms[d.vm]
            host = view.hosts.get(v.owner or "")
            if unmovable(v, view, moving) or recent.get(d.vm, 1e18) < settings.cooldown_s:
                continue
            if host is None or host.info is None:
                continue
            size = next((x.size_mb for x in v.spec.disks if x.name == d.disk), 0)
            ok = []
            for t in targets:
                t_ms = lat[t].latency_ms if t in lat and lat[t].iops >= MIN_IOPS else 0.0
                if t not in host.info.datastores or t_ms > aim or t_ms > src.latency_ms * (1.0 - settings.margin):
                    continue
                if t in space and (used[t] + size) / space[t][0] > space_aim:
                    continue
                ok.append((t_ms, t))
            if ok:
                picked = (d, min(ok), size)
                break
        if picked is None:
            notes.append(f"{ds} {src.latency_ms:.1f} ms (threshold {limit:g} ms): no disk on it can move "
                         f"to a datastore under {aim:.1f} ms now")
            continue
        d, (t_ms, dst), size = picked
        budget -= 1
        moving.add(d.vm)
        gets.add(dst)
        if dst in used:
            used[dst] += size
        out.append(LatencyMove(d.vm, d.disk, ds, dst,
                               f"{ds} {src.latency_ms:.1f} ms per operation (threshold {limit:g} ms), "
                               f"{d.disk} {d.iops:.0f} of its {src.iops:.0f} op/s; {dst} "
                               + (f"{t_ms:.1f} ms" if dst in lat and lat[dst].iops >= MIN_IOPS else "idle")))
    return out, notes


def _reached(view: ClusterView) -> set[str]:
    return {ds for h in view.hosts.values() if h.info is not None for ds in h.info.datastores}


__all__ = ["DiskLoad", "DsLatency", "LatencyMove", "latency", "latency_moves", "disk_loads", "SETTLE_S", "MIN_IOPS"]
