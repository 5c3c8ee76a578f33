"""The cluster read model (what the listings show, from one snapshot) and datastores."""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from vigil.model import DatastoreSpec, HostInfo, SpecError, VMSpec, VMStatus, mac_address
from vigil.policy.placement import Load
from vigil.policy.plan import classify_all, commitments
from vigil.service.common import NotFound, under, validated
from vigil.service.maintenance import host_revision
from vigil.service.view import cluster_view
from vigil.service.disks import disk_state
from vigil.service.ft import ft_state
from vigil.store import keys as K
from vigil.store.etcd import Store


async def datastores(store: Store) -> dict[str, DatastoreSpec]:
    return {n: DatastoreSpec(**e.value) for n, e in (await store.get_prefix(K.DATASTORES)).items()
            for n in [K.name_of(n, K.DATASTORES)]}


async def add_datastore(store: Store, ds: DatastoreSpec) -> bool:
    """Declare a datastore; False when one of that name exists already."""
    validated(ds)
    return await store.create(K.DATASTORES + ds.name, asdict(ds))


async def cluster(store: Store) -> dict[str, Any]:
    """Everything the listings show, from one snapshot."""
    snap = await store.snapshot()
    alive = set(under(snap, K.ALIVE))
    states = {h: e.value for h, e in under(snap, K.HOSTSTATE).items()}
    leader = snap.get(K.LEADER)
    hosts = []
    vms_by_host: dict[str, list[str]] = {}
    own = {n: e.value for n, e in under(snap, K.OWN).items()}
    for n, o in own.items():
        vms_by_host.setdefault(o, []).append(n)
    now = time.time()
    view = cluster_view(snap, now)
    load, _ = commitments(view, {n: st for n, (st, _) in classify_all(view).items()})
    loads = {h: e.value for h, e in under(snap, K.LOAD).items() if isinstance(e.value, dict)}
    for h, e in sorted(under(snap, K.HOSTS).items()):
        info = HostInfo.from_json(e.value)
        used = load.get(h, Load())
        hosts.append({
            "revision": host_revision(snap, h), "maintenance": K.MAINTENANCE + h in snap,
            "memory_used_mb": used.memory_mb, "vcpus_used": used.vcpus, "networks": list(info.networks),
            "name": h, "address": info.address, "state": states.get(h, {}).get("state", "running" if h in alive else "unknown"),
            "lease": h in alive, "leader": bool(leader and leader.value == h), "memory_mb": info.memory_mb,
            "cpus": info.cpus, "datastores": list(info.datastores), "accel": info.accel,
            "vms": sorted(vms_by_host.get(h, [])), "load": host_load_out(loads.get(h)),
        })
    assign = {n: e.value for n, e in under(snap, K.ASSIGN).items()}
    status = {n: VMStatus.from_json(e.value) for n, e in under(snap, K.VMSTATUS).items()}
    vms = []
    for n, e in sorted(under(snap, K.VMS).items()):
        spec = VMSpec.from_json(e.value)
        st = status.get(n)
        vms.append({
            "revision": e.mod_revision, "name": n, "power": spec.power, "memory_mb": spec.memory_mb, "vcpus": spec.vcpus,
            "priority": spec.restart_priority, "isolation_response": spec.isolation_response,
            "assigned": assign.get(n, {}).get("host"), "gen": assign.get(n, {}).get("gen", 0),
            "restart_attempts": int(assign.get(n, {}).get("retries", 0) or 0),
            "owner": own.get(n), "state": st.state if st else "-", "host": st.host if st else None,
            "guest": st.guest if st else "-", "acked": st.acked if st else -1,
            "message": st.message if st else "", "since": st.since if st else 0.0,
            "disks": disk_state(snap, spec),
            "nics": [{"network": n, "mac": mac_address(spec.name, i)} for i, n in enumerate(spec.networks)],
            "ft": ft_state(snap, n), "load": vm_load_out(loads, own.get(n), n),
            # restart orchestration: the VM's own ready condition, delay, timeout (empty: its tier's)
            "ready": {k: x for k, x in (("ready", spec.ready), ("delay_s", spec.ready_delay_s),
                                        ("timeout_s", spec.ready_timeout_s)) if x not in ("", None)},
        })
    return {"hosts": hosts, "vms": vms, "leader": leader.value if leader else None, "time": now,
            "revision": max((x.mod_revision for x in snap.values()), default=0)}


def host_load_out(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A host's measured load as the listings show it (None: its agent reported none)."""
    if rec is None:
        return None
    return {"cpu": rec.get("cpu"), "memory_used_mb": rec.get("memory_used_mb"), "time": rec.get("time")}


def vm_load_out(loads: dict[str, dict[str, Any]], host: str | None, vm: str) -> dict[str, Any] | None:
    """A VM's measured load (CPU cores, resident MiB), from its owner's record."""
    v = (loads.get(host or "") or {}).get("vms", {}).get(vm)
    return dict(v) if isinstance(v, dict) else None


async def migration_choices(store: Store, name: str) -> list[dict[str, Any]]:
    """Every host, and whether ``name`` can be live-migrated there now (and why not): what a
    host picker offers. The same checks as ``migrate_vm``, without writing anything."""
    from vigil.service.tasks import migrate_checks

    snap = await store.snapshot()
    if K.VMS + name not in snap:
        raise NotFound(f"no VM named {name!r}")
    view = cluster_view(snap, time.time())
    out = []
    for h in sorted(under(snap, K.HOSTS)):
        try:
            migrate_checks(snap, name, h, None, view)
            out.append({"host": h, "ok": True, "why": ""})
        except SpecError as e:
            out.append({"host": h, "ok": False, "why": str(e)})
    return out
