"""Storage DRS, one round as a pure function: a datastore filled past the space threshold
(vSphere: 80 %) gets disks moved off it live (Storage vMotion), to datastores its VMs'
hosts reach that stay under the threshold after the move.

Space comes from the agents' load records (``datastores``: size and used MiB, as statvfs
says; the newest record per datastore wins), a disk's size from its spec. The same modes,
margin and cool-down as DRS (vigil.policy.drs_settings): a round that acts aims the margin
below the threshold, a VM whose disk just moved is left alone, and at most ``max_moves``
DRS tasks are in flight. Replicated disks and FT VMs are not moved (move-disk refuses them).
Then the I/O rule (vigil.policy.sdrs_latency) with the moves left. Both move disks only
within their datastore's cluster (vigil.policy.datastore_clusters).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from vigil.policy.datastore_clusters import SETTING, peers, safe_datastore_clusters
from vigil.policy.drs import TASK_REASON
from vigil.policy.drs_rules import unmovable
from vigil.policy.drs_settings import DrsSettings
from vigil.policy.sdrs_latency import latency_moves
from vigil.policy.view import ClusterView


@dataclass(frozen=True)
class DiskMove:
    vm: str
    disk: str
    src: str  # datastore
    dst: str
    size_mb: int
    reason: str

    @property
    def id(self) -> str:
        return f"{self.vm}/{self.disk}:{self.src}:{self.dst}"


def space(loads: Mapping[str, Mapping[str, Any]], since: float = 0.0) -> dict[str, tuple[float, float]]:
    """Per datastore: (size MiB, used MiB), from the newest record that names it, if that
    is newer than ``since`` (a disk move that ended later is not in it yet)."""
    out: dict[str, tuple[float, float, float]] = {}
    for rec in loads.values():
        t = float(rec.get("time", 0.0) or 0.0)
        if t <= since:
            continue
        for ds, v in (rec.get("datastores") or {}).items():
            try:
                size, used = float(v["size_mb"]), float(v["used_mb"])
            except (KeyError, TypeError, ValueError):
                continue
            if size > 0 and (ds not in out or out[ds][0] <= t):
                out[ds] = (t, size, used)
    return {ds: (s, u) for ds, (_, s, u) in out.items()}


def sdrs_round(view: ClusterView, settings: DrsSettings, recent: Mapping[str, float] | None = None,
               budget: int | None = None, since: float = 0.0) -> tuple[list[DiskMove], str]:
    """The disk moves that bring each datastore above the threshold back under it, and why.
    ``recent``: seconds since each VM last moved (its cool-down); ``budget``: moves allowed;
    ``since``: when the last disk move ended (space reported before it is not trusted)."""
    recent = recent or {}
    left = settings.max_moves if budget is None else budget
    if any(t.kind == "move-disk" for t in view.tasks):
        return [], "a disk move is under way: the space it frees is counted once it is done"
    sp = space(view.loads, since)
    clusters = safe_datastore_clusters(view.settings.get(SETTING))
    limit = settings.space_threshold
    # a datastore past its space threshold is a mandatory move (vSphere's threshold 1 still
    # makes those): at level 1 it is brought back just under the threshold, with no margin
    aim = limit * (1.0 - (settings.margin if settings.balances else 0.0))
    used = {ds: u for ds, (_, u) in sp.items()}
    full = sorted((ds for ds, (s, u) in sp.items() if u / s > limit and peers(clusters, ds, sp)),
                  key=lambda d: -used[d] / sp[d][0])
    moving = {t.vm for t in view.tasks}
    # what the disks on each datastore may grow to (thin images fill up to their size): a
    # target must have room for that, not only for what is written today
    provisioned: dict[str, float] = {}
    for v in view.vms.values():
        for d in v.spec.disks:
            provisioned[d.datastore] = provisioned.get(d.datastore, 0.0) + d.size_mb
    out: list[DiskMove] = []
    notes: list[str] = []
    for ds in full:
        size = sp[ds][0]
        candidates = []
        for name, v in sorted(view.vms.items()):
            if unmovable(v, view, moving) or recent.get(name, 1e18) < settings.cooldown_s:
                continue
            host = view.hosts.get(v.owner or "")
            if host is None or host.info is None:
                continue
            for d in v.spec.disks:
                if d.datastore == ds and not d.replica:
                    reach = tuple(t for t in host.info.datastores if t in peers(clusters, ds, sp))
                    candidates.append((d.size_mb, name, d.name, reach))
        # the fewest moves: the smallest disk that is enough, else the largest, again
        while used[ds] / size > aim and candidates and left > 0:
            need = used[ds] - aim * size
            enough = [c for c in candidates if c[0] >= need]
            pick = min(enough) if enough else max(candidates)
            mb, vm, disk, reach = pick
            dst_fill = {t: (max(used[t], provisioned.get(t, 0.0)) + mb) / sp[t][0]
                        for t in reach if t != ds and t in sp}
            ok = sorted((f, t) for t, f in dst_fill.items() if f <= aim)
            candidates.remove(pick)
            if not ok:
                notes.append(f"{vm}/{disk}: no datastore its host reaches has room under {aim:.0%}")
                continue
            fill, dst = ok[0]
            before = used[ds] / size
            used[ds] -= mb
            used[dst] += mb
            provisioned[ds] = provisioned.get(ds, 0.0) - mb
            provisioned[dst] = provisioned.get(dst, 0.0) + mb
            left -= 1
            moving.add(vm)
            out.append(DiskMove(vm, disk, ds, dst, mb, f"{ds} {before:.0%} full (threshold {limit:.0%}) -> "
                                f"{used[ds] / size:.0%}; {dst} {fill:.0%} after"))
        if used[ds] / size > limit and not candidates:
            notes.append(f"{ds} stays {used[ds] / size:.0%} full: no disk on it can move now")
    lat, lat_notes = latency_moves(view, settings, clusters, {d: (s, used[d]) for d, (s, _) in sp.items()},
                                   recent, left, moving, since)
    for m in lat:
        mb = next((d.size_mb for d in view.vms[m.vm].spec.disks if d.name == m.disk), 0)
        out.append(DiskMove(m.vm, m.disk, m.src, m.dst, mb, m.reason))
    notes += lat_notes
    if not out and not notes:
        return [], "every datastore under " + f"{limit:.0%}" + (" full" if sp else " (no space reported yet)") + \
            f" and {settings.latency_threshold_ms:g} ms"
    why = f"{len(out)} disk move(s)" + (f" ({len(lat)} for latency)" if lat else "") if out else "no disk move"
    return out, "; ".join([why] + notes)


__all__ = ["DiskMove", "sdrs_round", "space", "TASK_REASON"]
