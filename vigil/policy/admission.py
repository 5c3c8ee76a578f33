"""Admission of a user's live migration: does the destination have room, and does the
move keep the VM-VM rules?

It counts load exactly as the controller's ``plan()`` does (``plan.commitments``), so a
migration the service admits is one the controller would have room for too: FT standbys
take room on their secondary, migrations in flight on their destination, a VM powered off
by request until it stopped.
"""
from __future__ import annotations

from dataclasses import replace

from vigil.model import HostState
from vigil.policy.admission_control import failover_hosts
from vigil.policy.placement import Load, VCPU_OVERCOMMIT, fits, rule_conflict
from vigil.policy.plan import classify_all, commitments
from vigil.policy.view import ClusterView


def migration_admission(view: ClusterView, vm: str, dst: str, datastore: str | None = None) -> tuple[bool, str]:
    """(True, why it fits) or (False, why not) for moving ``vm`` to ``dst``.

    ``datastore``: the disks are copied there on the way (a shared-nothing migration), so
    the destination must reach that datastore rather than the VM's present ones. The
    VM's own tasks are left out of the count: a VM already on its way somewhere is
    refused as busy by the caller, not counted twice."""
    v = view.vms.get(vm)
    if v is None:
        return False, f"no VM named {vm!r}"
    h = view.hosts.get(dst)
    if h is None or h.info is None:
        return False, f"unknown host {dst!r}"
    if dst in failover_hosts(view):
        return False, f"{dst} is a failover host (admission control): nothing runs there in normal operation"
    spec = v.spec
    if datastore is not None:
        spec = replace(spec, disks=tuple(replace(d, datastore=datastore, replica="") for d in spec.disks))
    view = replace(view, tasks=tuple(t for t in view.tasks if t.vm != vm))
    states: dict[str, HostState] = {n: s for n, (s, _) in classify_all(view).items()}
    load, where = commitments(view, states)
    used = load.get(dst, Load())
    why = fits(spec, h.info, used)
    if why:
        return False, f"no room for {vm} on {dst}: {why}"
    conflict = rule_conflict(vm, dst, view.rules, {n: x for n, x in where.items() if n != vm})
    if conflict:
        return False, f"moving {vm} to {dst} would break {conflict}"
    free_mem = h.info.memory_mb - used.memory_mb
    free_cpu = h.info.cpus * VCPU_OVERCOMMIT - used.vcpus
    return True, (f"{dst}: {free_mem} MiB free, needs {spec.memory_mb}; "
                  f"{free_cpu} vCPUs free, needs {spec.vcpus}")
