"""Datastore clusters for the CLI and the API: named groups of datastores, the unit
Storage DRS balances in (vigil.policy.datastore_clusters validates them; the object is
``settings/datastore-clusters``), and each datastore's figures as the agents report
them: space, and the latency and operations of the disks on it."""
from __future__ import annotations

import time
from typing import Any

from vigil.model import SpecError
from vigil.policy.datastore_clusters import SETTING, cluster_of, datastore_clusters, safe_datastore_clusters
from vigil.policy.sdrs import space
from vigil.policy.sdrs_latency import latency
from vigil.service.cluster import datastores
from vigil.service.common import Invalid, NotFound
from vigil.service.settings import get_setting, put_setting
from vigil.service.view import cluster_view
from vigil.store.etcd import Store


async def get_clusters(store: Store) -> tuple[dict[str, tuple[str, ...]], int]:
    """Name -> datastores, and the object's revision (0: never set)."""
    raw, rev = await get_setting(store, SETTING)
    try:
        return datastore_clusters(raw), rev
    except SpecError:
        return {}, rev


async def set_cluster(store: Store, name: str, members: list[str], revision: int | None = None) -> dict[str, Any]:
    """Create a datastore cluster or give it new members; a datastore is in one cluster
    at most, and must be declared (vigil datastore add)."""
    known = await datastores(store)
    unknown = sorted(set(members) - set(known))
    if unknown:
        raise NotFound(f"no datastore {', '.join(unknown)} (see 'vigil datastore list')")
    clusters, rev = await get_clusters(store)
    new = {n: list(m) for n, m in clusters.items()}
    new[name] = sorted(set(members))
    try:
        parsed = datastore_clusters({"clusters": new})
    except SpecError as e:
        raise Invalid(str(e)) from None
    await put_setting(store, SETTING, {"clusters": new}, revision if revision is not None else (rev or None))
    return {"name": name, "datastores": list(parsed[name])}


async def delete_cluster(store: Store, name: str, revision: int | None = None) -> None:
    """Remove a datastore cluster (its datastores are in none then: Storage DRS leaves
    them alone while other clusters exist)."""
    clusters, rev = await get_clusters(store)
    if name not in clusters:
        raise NotFound(f"no datastore cluster {name}")
    new = {n: list(m) for n, m in clusters.items() if n != name}
    await put_setting(store, SETTING, {"clusters": new}, revision if revision is not None else (rev or None))


async def datastore_figures(store: Store) -> dict[str, dict[str, Any]]:
    """Per datastore reported by some agent: its cluster, size and used MiB, and the
    operations a second and mean latency (ms) of the disks on it (None: no I/O reported)."""
    snap = await store.snapshot()
    view = cluster_view(snap, time.time())
    where = cluster_of(safe_datastore_clusters(view.settings.get(SETTING)))
    sp, lat = space(view.loads), latency(view)
    out: dict[str, dict[str, Any]] = {}
    for ds in sorted(set(sp) | set(lat) | set(where)):
        s, u = sp.get(ds, (None, None))
        x = lat.get(ds)
        out[ds] = {"cluster": where.get(ds, ""), "size_mb": round(s) if s is not None else None,
                   "used_mb": round(u) if u is not None else None,
                   "iops": round(x.iops, 1) if x else None, "latency_ms": round(x.latency_ms, 2) if x else None}
    return out


async def list_clusters(store: Store) -> list[dict[str, Any]]:
    """Each datastore cluster with its datastores and their figures summed: space, and the
    operations and latency of all the disks on them."""
    clusters, rev = await get_clusters(store)
    figs = await datastore_figures(store)
    out = []
    for name, members in sorted(clusters.items()):
        f = [figs.get(ds, {}) for ds in members]
        size = sum(x.get("size_mb") or 0 for x in f)
        used = sum(x.get("used_mb") or 0 for x in f)
        ops = sum(x.get("iops") or 0.0 for x in f)
        ms = sum((x.get("iops") or 0.0) * (x.get("latency_ms") or 0.0) for x in f) / ops if ops else None
        out.append({"name": name, "datastores": list(members), "size_mb": size, "used_mb": used,
                    "iops": round(ops, 1), "latency_ms": round(ms, 2) if ms is not None else None,
                    "revision": rev})
    return out
