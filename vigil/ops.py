"""User operations on the cluster (create, start, stop, delete VMs ...), shared by the CLI.

Each operation validates everything first and then writes once, in one transaction, so a
refused request leaves etcd exactly as it was.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

from vigil.model import Assignment, DatastoreSpec, HostInfo, SpecError, VMSpec, VMStatus
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store
from vigil.store.events import event_put_op, make_event


def _under(snap: dict[str, Entry], prefix: str) -> dict[str, Entry]:
    return {K.name_of(k, prefix): e for k, e in snap.items() if k.startswith(prefix)}


async def datastores(store: Store) -> dict[str, DatastoreSpec]:
    return {n: DatastoreSpec(**e.value) for n, e in (await store.get_prefix(K.DATASTORES)).items()
            for n in [K.name_of(n, K.DATASTORES)]}


async def add_datastore(store: Store, ds: DatastoreSpec) -> bool:
    ds.validate()
    return await store.create(K.DATASTORES + ds.name, asdict(ds))


async def create_vm(store: Store, spec: VMSpec, host: str | None = None) -> None:
    spec.validate()
    snap = await store.snapshot()
    if K.VMS + spec.name in snap:
        raise SpecError(f"a VM named {spec.name!r} already exists")
    known_ds = _under(snap, K.DATASTORES)
    for d in spec.disks:
        if d.datastore not in known_ds:
            raise SpecError(
                f"disk {d.name}: unknown datastore {d.datastore!r} (known: {', '.join(sorted(known_ds)) or 'none'})")
    ops = [store.put_op(K.VMS + spec.name, spec.to_json()),
           event_put_op(store, make_event("vm-created", f"{spec.name} created", vm=spec.name, source="cli"))]
    compare = [store.absent(K.VMS + spec.name), store.absent(K.ASSIGN + spec.name)]
    if host is not None:
        hosts = _under(snap, K.HOSTS)
        if host not in hosts:
            raise SpecError(f"unknown host {host!r} (known: {', '.join(sorted(hosts)) or 'none'})")
        if host not in _under(snap, K.ALIVE):
            raise SpecError(f"host {host} is not running")
        info = HostInfo.from_json(hosts[host].value)
        missing = spec.datastores - set(info.datastores)
        if missing:
            raise SpecError(f"host {host} does not reach datastore {', '.join(sorted(missing))}")
        ops.append(store.put_op(K.ASSIGN + spec.name, asdict(Assignment(host=host, gen=1, reason="place"))))
    if not await store.txn(compare, ops):
        raise SpecError(f"a VM named {spec.name!r} already exists")


async def get_vm(store: Store, name: str) -> tuple[VMSpec, Entry]:
    e = await store.get(K.VMS + name)
    if e is None:
        raise SpecError(f"no VM named {name!r}")
    return VMSpec.from_json(e.value), e


async def set_power(store: Store, name: str, power: str) -> bool:
    """Ask for a VM to run or not; returns False when it already was so."""
    spec, e = await get_vm(store, name)
    if spec.power == power:
        return False
    new = replace(spec, power=power)
    ev = make_event(f"vm-power-{power}", f"{name}: power {power} requested", vm=name, source="cli")
    if not await store.txn([store.unchanged(K.VMS + name, e.mod_revision)],
                           [store.put_op(K.VMS + name, new.to_json()), event_put_op(store, ev)]):
        raise SpecError(f"{name} changed meanwhile; try again")
    return True


async def delete_vm(store: Store, name: str, force: bool = False) -> None:
    """Delete a VM's spec; it must be powered off and stopped first unless ``force``."""
    spec, e = await get_vm(store, name)
    if not force:
        if spec.power == "on":
            raise SpecError(f"{name} is powered on; run 'vigil vm stop {name}' first (or --force)")
        if await store.get(K.OWN + name) is not None:
            raise SpecError(f"{name} is still running somewhere; wait until it stopped (or --force)")
    ev = make_event("vm-deleted", f"{name} deleted", vm=name, source="cli")
    ok = await store.txn([store.unchanged(K.VMS + name, e.mod_revision)], [
        store.delete_op(K.VMS + name), store.delete_op(K.ASSIGN + name),
        store.delete_op(K.VMSTATUS + name), event_put_op(store, ev)])
    if not ok:
        raise SpecError(f"{name} changed meanwhile; try again")


async def cluster(store: Store) -> dict[str, Any]:
    """Everything the listings show, from one snapshot."""
    snap = await store.snapshot()
    alive = set(_under(snap, K.ALIVE))
    states = {h: e.value for h, e in _under(snap, K.HOSTSTATE).items()}
    leader = snap.get(K.LEADER)
    hosts = []
    vms_by_host: dict[str, list[str]] = {}
    own = {n: e.value for n, e in _under(snap, K.OWN).items()}
    for n, o in own.items():
        vms_by_host.setdefault(o, []).append(n)
    for h, e in sorted(_under(snap, K.HOSTS).items()):
        info = HostInfo.from_json(e.value)
        hosts.append({
            "name": h, "address": info.address, "state": states.get(h, {}).get("state", "running" if h in alive else "unknown"),
            "lease": h in alive, "leader": bool(leader and leader.value == h), "memory_mb": info.memory_mb,
            "cpus": info.cpus, "datastores": list(info.datastores), "accel": info.accel,
            "vms": sorted(vms_by_host.get(h, [])),
        })
    assign = {n: e.value for n, e in _under(snap, K.ASSIGN).items()}
    status = {n: VMStatus.from_json(e.value) for n, e in _under(snap, K.VMSTATUS).items()}
    vms = []
    for n, e in sorted(_under(snap, K.VMS).items()):
        spec = VMSpec.from_json(e.value)
        st = status.get(n)
        vms.append({
            "name": n, "power": spec.power, "memory_mb": spec.memory_mb, "vcpus": spec.vcpus,
            "priority": spec.restart_priority, "isolation_response": spec.isolation_response,
            "assigned": assign.get(n, {}).get("host"), "gen": assign.get(n, {}).get("gen", 0),
            "owner": own.get(n), "state": st.state if st else "-", "host": st.host if st else None,
            "guest": st.guest if st else "-", "acked": st.acked if st else -1,
            "message": st.message if st else "", "since": st.since if st else 0.0,
            "disks": [asdict(d) for d in spec.disks],
        })
    return {"hosts": hosts, "vms": vms, "leader": leader.value if leader else None, "time": time.time()}
