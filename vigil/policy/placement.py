"""Choose a host for a VM: running hosts that reach all its datastores and have room.

Room is counted from the specs of the VMs assigned to each host, so decisions taken
earlier in the same cycle count too (the caller passes the updated load).
"""
from __future__ import annotations

import bisect
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
    mem: dict[str, int] = {}  # summed as numbers: one Load per host, not one per VM
    cpu: dict[str, int] = {}
    for host, spec in assigned:
        mem[host] = mem.get(host, 0) + spec.memory_mb
        cpu[host] = cpu.get(host, 0) + spec.vcpus
    return {h: Load(m, cpu[h]) for h, m in mem.items()}


class LoadIndex(dict):  # type: ignore[type-arg]  # dict[str, Load]
    """The load model (host -> Load) that also keeps the running hosts in ``place``'s order
    of preference (most free memory, then fewest vCPUs given away, then name), so that
    ``place`` takes the first that fits instead of weighing every host for every VM (a
    restart wave of hundreds of VMs over a thousand hosts). The order is made on the first
    ``place`` for the infos and states it is given, and follows every ``load[host] = ...``;
    any other change of the dict drops it (made again on the next ``place``)."""

    _order: list[tuple[int, int, str]] | None = None
    _key: dict[str, tuple[int, int, str]]
    _made_for: tuple[Any, Any] = (None, None)

    def _key_of(self, host: str, info: HostInfo) -> tuple[int, int, str]:
        l = dict.get(self, host, Load())
        return -(info.memory_mb - l.memory_mb), l.vcpus, host

    def order(self, infos: Mapping[str, HostInfo], states: Mapping[str, HostState]) -> list[tuple[int, int, str]]:
        if self._order is None or self._made_for[0] is not infos or self._made_for[1] is not states:
            self._key = {h: self._key_of(h, i) for h, i in infos.items() if states.get(h) is HostState.RUNNING}
            self._order = sorted(self._key.values())
            self._made_for = (infos, states)
        return self._order

    def __setitem__(self, host: str, value: Load) -> None:
        dict.__setitem__(self, host, value)
        if self._order is not None and host in self._key:
            old = self._key[host]
            del self._order[bisect.bisect_left(self._order, old)]
            new = self._key[host] = self._key_of(host, self._made_for[0][host])
            bisect.insort(self._order, new)

    def _drop(self) -> None:
        self._order = None

    def __delitem__(self, host: str) -> None:
        dict.__delitem__(self, host)
        self._drop()

    def pop(self, *a: Any) -> Any:
        self._drop()
        return dict.pop(self, *a)

    def popitem(self) -> Any:
        self._drop()
        return dict.popitem(self)

    def clear(self) -> None:
        self._drop()
        dict.clear(self)

    def update(self, *a: Any, **kw: Any) -> None:
        self._drop()
        dict.update(self, *a, **kw)

    def setdefault(self, *a: Any) -> Any:
        self._drop()
        return dict.setdefault(self, *a)

    def __ior__(self, other: Any) -> "LoadIndex":
        self._drop()
        dict.update(self, other)
        return self


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
    next (DRS on: vigil.policy.drs_place); then the most free memory.

    With a ``LoadIndex`` as ``load`` (and neither ``prefer`` nor a "should" rule of the VM
    to rank by), the hosts are tried in that order and the first that qualifies is taken:
    the same host the scan of all of them picks (the order is the scan's minimum), and the
    scan runs only when none qualifies, for its reasons."""
    mine = [r for r in rules if r.kind in HOST_RULE_KINDS and not r.must and spec.name in r.vms]
    if isinstance(load, LoadIndex) and prefer is None and not mine:
        for _, _, name in load.order(infos, states):
            if name in avoid:
                continue
            if (fits(spec, infos[name], load.get(name, Load())) is None
                    and rule_conflict(spec.name, name, rules, where or {}) is None):
                return name, "most free memory"
    candidates: list[tuple[int, float, int, int, str]] = []
    shoulds: dict[str, list[str]] = {}
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
