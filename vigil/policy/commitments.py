"""The load model every placement decision shares: what each host has given away and
where each VM is or is going."""
from __future__ import annotations

from typing import Mapping

from vigil.model import HostState
from vigil.policy.hoststate import LOSES_VMS, vm_lost_on
from vigil.policy.placement import Load, LoadIndex, host_load
from vigil.policy.view import ClusterView, VMView


def commitments(view: ClusterView, states: Mapping[str, HostState]) -> tuple[dict[str, Load], dict[str, str]]:
    """The load model every placement decision shares (this cycle's plan and the service's
    migration admission): what each host has given away, and where each VM is or is going.

    A VM counts on its assigned host until that host is known to have lost it; a VM
    powered off by request only until it stopped; an FT standby on its secondary; a VM
    being migrated on its destination already."""

    def still_there(v: VMView) -> bool:
        a = v.assignment
        if a is None or a.host not in view.hosts:
            return False
        s = states[a.host]
        return s not in LOSES_VMS or not vm_lost_on(s, view.hosts[a.host], v.spec.name)

    there = [(n, v) for n, v in view.vms.items() if v.assignment and still_there(v)]  # asked once per VM
    load: dict[str, Load] = host_load(
        # a powered-off VM's room is free for others once it has stopped (vSphere counts
        # only powered-on VMs too); until then it still holds its memory
        [(v.assignment.host, v.spec) for _, v in there  # type: ignore[union-attr]
         if v.spec.power == "on" or holds_memory(v)]
        # admission control counts an FT secondary's memory on its host (where one runs)
        + [(v.ft.secondary, v.spec) for v in view.vms.values() if standby_counted(v, view)]
    )
    where = {n: v.assignment.host for n, v in there}  # type: ignore[union-attr]
    for t in view.tasks:  # a VM on its way counts on its destination already
        if t.kind == "migrate" and t.dst and t.vm in view.vms:
            load[t.dst] = load.get(t.dst, Load()).plus(view.vms[t.vm].spec)
            where[t.vm] = t.dst
    return LoadIndex(load), where  # a dict; place() finds its host faster with it


def holds_memory(v: VMView) -> bool:
    """A VM powered off by request still holds its memory until its host reports it stopped."""
    return v.status is not None and v.status.state not in ("stopped", "failed")


def standby_counted(v: VMView, view: ClusterView) -> bool:
    """Whether the VM's FT standby takes memory on its secondary host: FT on, the VM
    powered on and the secondary a known host other than the VM's own."""
    ft = v.ft
    if ft is None or ft.secondary not in view.hosts or v.spec.power != "on":
        return False
    return v.assignment is None or v.assignment.host != ft.secondary
