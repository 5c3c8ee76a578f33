"""Synthetic clusters for DRS (the benchmark, the property tests): a ``ClusterView`` of
running hosts and VMs with measured loads, built without a simulated world, so that a
round can be weighed on 500 hosts at once; and ``applied`` to carry a round's moves out
as if the migrations had finished."""
from __future__ import annotations

import random
from dataclasses import replace
from types import MappingProxyType
from typing import Iterable, Mapping

from vigil.model import Assignment, DiskSpec, HostInfo, HostState, Rule, VMSpec, VMStatus
from vigil.policy.view import ClusterView, HostView, VMView


def host_view(name: str, memory_mb: int = 65536, cpus: int = 32, maintenance: bool = False,
              datastores: tuple[str, ...] = ("ds1", "ds2")) -> HostView:
    info = HostInfo(name=name, address="10.0.0.1", memory_mb=memory_mb, cpus=cpus, datastores=datastores)
    return HostView(name=name, info=info, alive=True, hb_age=0.1, prev_state=HostState.RUNNING,
                    maintenance=maintenance)


def vm_view(name: str, host: str, memory_mb: int = 1024, vcpus: int = 1, replica: bool = False,
            ft: bool = False) -> VMView:
    from vigil.policy.view import FtView
    disk = DiskSpec(name="disk0", datastore="ds1", path=f"{name}/d.qcow2", replica="ds2" if replica else "")
    spec = VMSpec(name=name, memory_mb=memory_mb, vcpus=vcpus, disks=(disk,))
    return VMView(spec=spec, assignment=Assignment(host=host, gen=1), assign_rev=1, owner=host,
                  status=VMStatus(host=host, state="running"),
                  ft=FtView(secondary=None, epoch=1) if ft else None)


def cluster(hosts: Iterable[HostView], vms: Iterable[VMView], load: Mapping[str, tuple[float, float]],
            rules: tuple[Rule, ...] = (), drs: Mapping | None = None) -> ClusterView:
    """``load``: per VM, (CPU cores, memory MiB) as the agents would have measured."""
    vms = list(vms)
    records: dict[str, dict] = {}
    for v in vms:
        if v.spec.name in load:
            cpu, mem = load[v.spec.name]
            rec = records.setdefault(v.assignment.host, {"time": 1.0, "vms": {}})  # type: ignore[union-attr]
            rec["vms"][v.spec.name] = {"cpu": cpu, "memory_mb": mem}
    return ClusterView(now=100.0, hosts={h.name: h for h in hosts}, vms={v.spec.name: v for v in vms},
                       rules=rules, loads=MappingProxyType(records), drs=MappingProxyType(dict(drs or {})))


def random_cluster(n_hosts: int, vms_per_host: int, seed: int, skew: float = 1.0) -> ClusterView:
    """Hosts of 32 cores and 512 GiB; VMs of 1-8 GiB and 1-4 vCPUs, placed unevenly
    (``skew`` > 0 piles more VMs on the first hosts) with random measured use."""
    rnd = random.Random(seed)
    hosts = [host_view(f"h{i:03d}", memory_mb=524288, cpus=32) for i in range(n_hosts)]
    weights = [(1.0 + 4.0 * skew if i < max(1, n_hosts // 4) else 1.0) * rnd.uniform(0.7, 1.3) for i in range(n_hosts)]
    vms, load = [], {}
    room = {h.name: 524288 * 0.9 for h in hosts}
    for i in range(n_hosts * vms_per_host):
        mem = rnd.choice((1024, 2048, 4096, 8192))
        h = rnd.choices(hosts, weights)[0].name
        if room[h] < mem:
            h = max(room, key=room.__getitem__)
        room[h] -= mem
        name = f"vm{i:05d}"
        vms.append(vm_view(name, h, memory_mb=mem, vcpus=rnd.choice((1, 2, 4))))
        load[name] = (round(rnd.uniform(0.05, 3.0), 2), round(mem * rnd.uniform(0.3, 1.0)))
    return cluster(hosts, vms, load)


def applied(view: ClusterView, moves: Iterable) -> ClusterView:
    """The view once each move (vm, src, dst) is done: the VM runs on its destination and
    its measured load goes with it."""
    vms = dict(view.vms)
    loads = {h: {"time": r.get("time", 1.0), "vms": dict(r.get("vms", {}))} for h, r in view.loads.items()}
    for m in moves:
        v = vms[m.vm]
        vms[m.vm] = replace(v, assignment=Assignment(host=m.dst, gen=v.assignment.gen + 1), owner=m.dst,
                            status=VMStatus(host=m.dst, state="running"))
        rec = loads.get(m.src, {}).get("vms", {}).pop(m.vm, None)
        if rec is not None:
            loads.setdefault(m.dst, {"time": 1.0, "vms": {}})["vms"][m.vm] = rec
    return replace(view, vms=MappingProxyType(vms), loads=MappingProxyType(loads))
