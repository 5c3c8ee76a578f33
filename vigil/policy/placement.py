"""Choose a host for a VM: running hosts that reach all its datastores and have room.

Room is counted from the specs of the VMs assigned to each host, so decisions taken
earlier in the same cycle count too (the caller passes the updated load).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from vigil.model import HOST_RULE_KINDS, HostInfo, HostState, Rule, VMSpec
from vigil.policy.host_rules import must_break, should_breaks

# vCPUs a host may carry per physical CPU; memory is never overcommitted.
VCPU_OVERCOMMIT = 8


@dataclass(frozen=True)
class Load:
    memory_mb: int = 0
    vcpus: int = 0

    def plus(self, spec: VMSpec) -> "Load":
        return Load(self.memory_mb + spec.memory_mb, self.vcpus + spec.vcpus)


def host_load(assigned: Iterable[tuple[str, VMSpec]]) -> dict[str, Load]:
    load: dict[str, Load] = {}
    for host, spec in assigned:
        load[host] = load.get(host, Load()).plus(spec)
    return load


def fits(spec: VMSpec, info: HostInfo, load: Load) -> str | None:
    """None when the VM fits on the host, else why not."""
    missing = sorted(spec.datastores - set(info.datastores))
    if missing:
        return f"does not reach datastore {', '.join(missing)}"
    absent = sorted(set(spec.networks) - set(info.networks))
    if absent:
        return f"has no network {', '.join(absent)}"
    free_mem = info.memory_mb - load.memory_mb
    if free_mem < spec.memory_mb:
        return f"{free_mem} MiB free, needs {spec.memory_mb}"
    free_cpu = info.cpus * VCPU_OVERCOMMIT - load.vcpus
    if free_cpu < spec.vcpus:
        return f"{free_cpu} vCPUs free, needs {spec.vcpus}"
    return None


def rule_conflict(vm: str, host: str, rules: Sequence[Rule], where: Mapping[str, str]) -> str | None:
    """None when placing ``vm`` on ``host`` keeps every VM-VM rule and every "must" VM-host
    rule, else which one it breaks."""
    if not rules:
        return None
    if (must := must_break(vm, host, rules)) is not None:
        return must
    for r in rules:
        if vm not in r.vms:
            continue
        others = {where[o] for o in r.vms if o != vm and o in where}
        if r.kind == "anti-affinity" and host in others:
            return f"anti-affinity rule {r.name}"
        if r.kind == "affinity" and others and host not in others:
            return f"affinity rule {r.name}"
    return None


def place(
    spec: VMSpec,
    infos: Mapping[str, HostInfo],
    states: Mapping[str, HostState],
    load: Mapping[str, Load],
    avoid: frozenset[str] = frozenset(),
    rules: Sequence[Rule] = (),
    where: Mapping[str, str] | None = None,
    prefer: Callable[[str, VMSpec], float] | None = None,
) -> tuple[str | None, str]:
    """Return (host, why): the running host with the most free memory that keeps the
    rules, or (None, reasons). A host that breaks a "should" VM-host rule is taken only
    when none that keeps them all fits. ``prefer``: a host's load with the VM on it, ranked
    next (DRS on: vigil.policy.drs_place); then the most free memory."""
    candidates: list[tuple[int, float, int, int, str]] = []
    shoulds: dict[str, list[str]] = {}
    mine = [r for r in rules if r.kind in HOST_RULE_KINDS and not r.must and spec.name in r.vms]
    reasons: list[str] = []
    for name in sorted(infos):
        info = infos[name]
        if states.get(name) is not HostState.RUNNING:
            reasons.append(f"{name}: {states.get(name, HostState.UNKNOWN).value}")
            continue
        if name in avoid:
            reasons.append(f"{name}: excluded")
            continue
        why = fits(spec, info, load.get(name, Load())) or rule_conflict(spec.name, name, rules, where or {})
        if why:
            reasons.append(f"{name}: {why}")
            continue
        l = load.get(name, Load())
        rank = round(prefer(name, spec), 6) if prefer is not None else 0.0
        if mine:
            shoulds[name] = should_breaks(spec.name, name, mine)
        candidates.append((len(shoulds[name]) if mine else 0, rank, -(info.memory_mb - l.memory_mb), l.vcpus, name))
    if not candidates:
        return None, "; ".join(reasons) or "no hosts"
    _, rank, _, _, best = min(candidates)
    why = f"least loaded with it ({rank:.0%}, DRS load model)" if prefer is not None else "most free memory"
    if shoulds.get(best):
        return best, f"{why}; breaks should rule {', '.join(shoulds[best])}: no other host fits"
    return best, why


def place_failover_first(reserved: frozenset[str]) -> Callable[..., tuple[str | None, str]]:
    """``place`` for an HA restart when admission control keeps dedicated failover hosts
    (``reserved``): one of those first, the other hosts only when none has room."""
    if not reserved:
        return place

    def pick(spec: VMSpec, infos: Mapping[str, HostInfo], states: Mapping[str, HostState],
             load: Mapping[str, Load], avoid: frozenset[str] = frozenset(), rules: Sequence[Rule] = (),
             where: Mapping[str, str] | None = None, prefer: Any = None) -> tuple[str | None, str]:
        fo = {h: i for h, i in infos.items() if h in reserved}
        host, why = place(spec, fo, states, load, avoid, rules, where, prefer=prefer)
        if host is not None:
            return host, "failover host, most free memory"
        rest, why_rest = place(spec, {h: i for h, i in infos.items() if h not in reserved}, states, load, avoid,
                               rules, where, prefer=prefer)
        if rest is not None:
            return rest, f"{why_rest} (no failover host has room: {why})"
        return None, "; ".join(x for x in (why, why_rest) if x != "no hosts") or "no hosts"

    return pick
