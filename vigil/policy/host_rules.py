"""VM-host rules: keep VMs on, or off, the hosts of a host group.

A "must" rule is never broken: a host it forbids is no candidate at all, so the VM waits
(and the wait's event names the rule) rather than run there. A "should" rule only ranks
hosts: one that breaks it is taken when no other fits (vSphere's "should run on").

The rules reach placement already resolved (``resolve``: each rule carries its group's
hosts), so that every caller of ``placement.place`` (restarts, maintenance evacuation,
FT secondaries, a user's migration) keeps them without more arguments. ``conflicts``
lists the rules that cannot all be kept, for the rule's creation and ``vigil rule
conflicts``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Mapping, Sequence

from vigil.model import HOST_RULE_KINDS, HostGroup, HostInfo, Rule, VMSpec


def resolve(rules: Iterable[Rule], groups: Mapping[str, HostGroup]) -> tuple[Rule, ...]:
    """The rules with each VM-host rule's ``hosts`` filled in from its group (a group that
    does not exist holds no host: a must-run-on rule on it then lets the VM run nowhere)."""
    out = []
    for r in rules:
        if r.kind in HOST_RULE_KINDS:
            g = groups.get(r.group)
            r = replace(r, hosts=frozenset(g.hosts) if g is not None else frozenset())
        out.append(r)
    return tuple(out)


def allows(rule: Rule, host: str) -> bool:
    """Whether ``host`` keeps this VM-host rule."""
    inside = host in (rule.hosts or frozenset())
    return not inside if "-not-" in rule.kind else inside


def describe(rule: Rule) -> str:
    hosts = ", ".join(sorted(rule.hosts or ())) or "no host"
    return f"{rule.kind} rule {rule.name} (group {rule.group}: {hosts})"


def must_break(vm: str, host: str, rules: Sequence[Rule]) -> str | None:
    """The first "must" VM-host rule that ``vm`` on ``host`` breaks, described; else None."""
    for r in rules:
        if r.kind in HOST_RULE_KINDS and r.must and vm in r.vms and not allows(r, host):
            return describe(r)
    return None


def should_breaks(vm: str, host: str, rules: Sequence[Rule]) -> list[str]:
    """The names of the "should" VM-host rules that ``vm`` on ``host`` breaks."""
    return [r.name for r in rules
            if r.kind in HOST_RULE_KINDS and not r.must and vm in r.vms and not allows(r, host)]


def allowed_hosts(vm: str, hosts: Iterable[str], rules: Sequence[Rule]) -> set[str]:
    """The hosts among ``hosts`` that every "must" rule of ``vm`` allows."""
    return {h for h in hosts if must_break(vm, h, rules) is None}


def conflicts(rules: Sequence[Rule], specs: Mapping[str, VMSpec], infos: Mapping[str, HostInfo]) -> list[str]:
    """Why some rules cannot all be kept, one line each (rules resolved, see ``resolve``):
    a VM whose "must" rules leave it no known host, or none that reaches its datastores
    and networks; VMs kept together (affinity) whose "must" rules share no host; VMs kept
    apart (anti-affinity) with fewer allowed hosts than VMs; a "should" rule that a "must"
    rule never lets be kept."""
    out: list[str] = []
    known = set(infos)
    vms = sorted({v for r in rules for v in r.vms})
    allowed: dict[str, set[str]] = {}
    for vm in vms:
        mine = [r for r in rules if r.kind in HOST_RULE_KINDS and vm in r.vms]
        if not mine:
            continue
        musts = [r for r in mine if r.must]
        ok = allowed_hosts(vm, known, musts)
        allowed[vm] = ok
        if musts and not ok:
            out.append(f"{vm}: rules {', '.join(r.name for r in musts)} leave it no host")
            continue
        spec = specs.get(vm)
        if musts and spec is not None:
            usable = {h for h in ok if spec.datastores <= set(infos[h].datastores)
                      and set(spec.networks) <= set(infos[h].networks)}
            if not usable:
                out.append(f"{vm}: rules {', '.join(r.name for r in musts)} allow only "
                           f"{', '.join(sorted(ok))}, none of which reaches its datastores and networks")
        for r in mine:
            if r.must:
                continue
            if not any(allows(r, h) for h in ok):
                out.append(f"{vm}: should rule {r.name} can never be kept: its must rules "
                           f"({', '.join(m.name for m in musts)}) forbid every host it wants")
    for r in rules:
        if r.kind == "affinity":
            sets = [allowed[v] for v in r.vms if v in allowed]
            if sets and not set.intersection(*sets):
                out.append(f"affinity rule {r.name}: the must rules of {', '.join(v for v in r.vms if v in allowed)} "
                           "share no host")
        elif r.kind == "anti-affinity":
            limited = [v for v in r.vms if v in allowed]
            if len(limited) > 1:
                union = set().union(*(allowed[v] for v in limited))
                if len(union) < len(limited):
                    out.append(f"anti-affinity rule {r.name}: {', '.join(limited)} must run on "
                               f"{', '.join(sorted(union)) or 'no host'}, fewer hosts than VMs")
    return out


def broken_now(rules: Sequence[Rule], where: Mapping[str, str]) -> list[str]:
    """VMs that run where one of their VM-host rules forbids (a rule made after they
    started there, or a "should" rule broken for want of room)."""
    out = []
    for r in rules:
        if r.kind not in HOST_RULE_KINDS:
            continue
        for vm in r.vms:
            h = where.get(vm)
            if h and not allows(r, h):
                out.append(f"{vm} runs on {h}, against {describe(r)}")
    return out
