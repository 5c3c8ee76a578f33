"""What DRS may move and where: the rules it always keeps, and the broken ones it fixes
first (vSphere's mandatory recommendations).

VM-VM rules are ``model.Rule`` (``placement.rule_conflict`` judges a destination). VM-host
rules plug in at ``host_rule_conflict``: the one place that says whether a VM may run on
a host; a "must" rule a VM's present host breaks makes its move mandatory.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from vigil.model import Rule
from vigil.policy.view import ClusterView, VMView


def host_rule_conflict(view: ClusterView, vm: str, host: str) -> str | None:
    """None when ``vm`` may run on ``host`` under the VM-host rules, else which rule
    forbids it. The hook for VM-host rules: none exist yet, so every host is allowed."""
    return None


def unmovable(v: VMView, view: ClusterView, moving: set[str]) -> str | None:
    """Why DRS cannot live-migrate ``v`` now (None: it can)."""
    a, st = v.assignment, v.status
    if v.spec.power != "on" or a is None:
        return "not running"
    if v.ft is not None:
        return "Fault Tolerance on: it leaves a host by handing over to its secondary, not by migration"
    if v.spec.name in moving:
        return "a task of it is under way"
    if v.owner != a.host or st is None or st.state != "running" or st.host != a.host:
        return "not running on its assigned host"
    if v.diskstate.get("resync"):
        return "a disk of it is resyncing"
    return None


def broken_rules(rules: Sequence[Rule], where: Mapping[str, str]) -> list[tuple[Rule, list[str]]]:
    """Each VM-VM rule the present placement breaks, with the VMs that should move to
    keep it (anti-affinity: all but one of each host's; affinity: those away from the
    host that holds most of the group)."""
    out: list[tuple[Rule, list[str]]] = []
    for r in rules:
        on = {vm: where[vm] for vm in r.vms if vm in where}
        by_host: dict[str, list[str]] = {}
        for vm, h in sorted(on.items()):
            by_host.setdefault(h, []).append(vm)
        if r.kind == "anti-affinity":
            extra = [vm for vms in by_host.values() for vm in vms[1:]]
        else:
            if len(by_host) < 2:
                continue
            keep = max(sorted(by_host), key=lambda h: len(by_host[h]))
            extra = [vm for h, vms in by_host.items() if h != keep for vm in vms]
        if extra:
            out.append((r, extra))
    return out
