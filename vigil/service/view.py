"""A snapshot read as the policy's ``ClusterView``, so that the service decides with the
same pure functions as the controller.

The service sees etcd only: no datastore heartbeats, no ping. A host is then running (its
lease is alive), in maintenance, or unknown, and a VM counts where it is assigned, as the
controller counts it until its host is known to have lost it.
"""
from __future__ import annotations

from vigil.model import TASK_ACTIVE, Assignment, HostGroup, HostInfo, Rule, SpecError, Task, VMSpec, VMStatus
from vigil.policy.host_rules import resolve
from vigil.policy.replicas import stale_map
from vigil.policy.view import ClusterView, FtView, HostView, VMView
from vigil.service.common import under
from vigil.store import keys as K
from vigil.store.etcd import Entry


def cluster_view(snap: dict[str, Entry], now: float) -> ClusterView:
    """The hosts, VMs (FT secondaries and epochs included), rules and active tasks of a
    snapshot; no heartbeat ages, pings, previous host states, retries or FT checkpoints
    (load does not need them)."""
    alive = {h: e.lease for h, e in under(snap, K.ALIVE).items()}
    maintenance = set(under(snap, K.MAINTENANCE))
    hosts = {h: HostView(name=h, info=HostInfo.from_json(e.value), alive=h in alive, hb_age=None,
                         lease=alive.get(h, 0), maintenance=h in maintenance)
             for h, e in under(snap, K.HOSTS).items()}
    assign, own, status = under(snap, K.ASSIGN), under(snap, K.OWN), under(snap, K.VMSTATUS)
    diskstate, ft = under(snap, K.DISKSTATE), under(snap, K.FT)
    vms: dict[str, VMView] = {}
    for name, e in under(snap, K.VMS).items():
        try:
            spec = VMSpec.from_json(e.value)
        except SpecError:
            continue  # as the controller: a spec it cannot read places nothing
        a, ds, f = assign.get(name), diskstate.get(name), ft.get(name)
        vms[name] = VMView(
            spec=spec.without_stale(stale_map(ds.value if ds else None)),
            assignment=Assignment(**a.value) if a else None,
            assign_rev=a.mod_revision if a else 0,
            owner=own[name].value if name in own else None,
            status=VMStatus.from_json(status[name].value) if name in status else None,
            ft=FtView(secondary=f.value.get("secondary"), epoch=int(f.value.get("epoch", 0)),
                      rev=f.mod_revision) if f else None,
            diskstate=dict(ds.value) if ds and isinstance(ds.value, dict) else {},
            diskstate_rev=ds.mod_revision if ds else 0,
        )
    tasks = tuple(t for t in (Task.from_json(e.value) for e in under(snap, K.TASKS).values()) if t.state in TASK_ACTIVE)
    groups = {n: HostGroup.from_json(e.value) for n, e in under(snap, K.HOSTGROUPS).items()}
    rules = resolve((Rule.from_json(e.value) for e in under(snap, K.RULES).values()), groups)
    settings = {n: e.value for n, e in under(snap, K.SETTINGS).items() if isinstance(e.value, dict)}
    loads = {h: e.value for h, e in under(snap, K.LOAD).items() if isinstance(e.value, dict)}
    return ClusterView(now=now, hosts=hosts, vms=vms, rules=rules, tasks=tasks, settings=settings, loads=loads)
