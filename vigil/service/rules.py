"""Rules (VM-VM affinity and anti-affinity, depends-on, VM-host) and host groups: list,
create, delete, and the rules that cannot all be kept.

A depends-on rule that closes a cycle, or makes a VM wait for one of lower restart
priority, is refused (422). A VM-host rule whose "must" rules together leave some VM no
host at all is refused too; one that cannot be kept on today's hosts (none reaches the
VM's datastores, an anti-affinity rule with too few allowed hosts...) is created, and the
reason comes back with it and stays listed by ``conflicts``.
"""
from __future__ import annotations

from vigil.model import HOST_RULE_KINDS, HostGroup, HostInfo, Rule, SpecError, VMSpec
from vigil.policy import host_rules
from vigil.policy.orchestration import dependency_problems
from vigil.service.common import Conflict, Invalid, NotFound, check_revision, under, validated
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store


def rules(snap: dict[str, Entry]) -> list[Rule]:
    """The rules in a snapshot."""
    return [Rule.from_json(e.value) for e in under(snap, K.RULES).values()]


def host_groups(snap: dict[str, Entry]) -> list[HostGroup]:
    return [HostGroup.from_json(e.value) for e in under(snap, K.HOSTGROUPS).values()]


def _specs(snap: dict[str, Entry]) -> dict[str, VMSpec]:
    out = {}
    for n, e in under(snap, K.VMS).items():
        try:
            out[n] = VMSpec.from_json(e.value)
        except SpecError:
            continue
    return out


def conflicts(snap: dict[str, Entry], extra: Rule | None = None) -> list[str]:
    """Why the rules of ``snap`` (with ``extra``) cannot all be kept, one line each: the
    VM-host ones (vigil.policy.host_rules.conflicts), VMs running against them now, and
    unknown hosts in groups."""
    groups = {g.name: g for g in host_groups(snap)}
    rs = host_rules.resolve(rules(snap) + ([extra] if extra else []), groups)
    infos = {n: HostInfo.from_json(e.value) for n, e in under(snap, K.HOSTS).items()}
    out = host_rules.conflicts(rs, _specs(snap), infos)
    for r in rs:
        if r.kind in HOST_RULE_KINDS and r.group not in groups:
            out.append(f"rule {r.name}: no host group named {r.group}")
    for g in sorted(groups.values(), key=lambda g: g.name):
        unknown = sorted(set(g.hosts) - set(infos))
        if unknown:
            out.append(f"host group {g.name}: no host named {', '.join(unknown)} (yet)")
    where = {n: e.value for n, e in under(snap, K.OWN).items() if isinstance(e.value, str)}
    out += host_rules.broken_now(rs, where)
    return out


async def create_rule(store: Store, rule: Rule) -> list[str]:
    """Write a new rule once it is valid and names only VMs (and a host group) that exist.
    Returns what about it cannot be kept on today's hosts (empty: nothing)."""
    validated(rule)
    snap = await store.snapshot()
    missing = [v for v in rule.vms + rule.on if K.VMS + v not in snap]
    if missing:
        raise Invalid(f"rule {rule.name}: no VM named {', '.join(missing)}")
    if rule.kind in HOST_RULE_KINDS and K.HOSTGROUPS + rule.group not in snap:
        raise Invalid(f"rule {rule.name}: no host group named {rule.group}")
    if rule.kind == "depends-on":
        problems = dependency_problems(rules(snap) + [rule], _specs(snap))
        if problems:
            raise Invalid(f"rule {rule.name}: {'; '.join(problems)}")
    warnings: list[str] = []
    if rule.kind in HOST_RULE_KINDS or rule.kind in ("affinity", "anti-affinity"):
        before = set(conflicts(snap))
        new = [c for c in conflicts(snap, rule) if c not in before]
        never = [c for c in new if "leave it no host" in c or "share no host" in c]
        if never:
            raise Invalid(f"rule {rule.name} contradicts the must rules: {'; '.join(never)}")
        warnings = new
    if not await store.create(K.RULES + rule.name, rule.to_json()):
        raise Conflict(f"a rule named {rule.name!r} already exists")
    return warnings


async def delete_rule(store: Store, name: str, revision: int | None = None) -> None:
    e = await store.get(K.RULES + name)
    if e is None:
        raise NotFound(f"no rule named {name!r}")
    check_revision(e, revision, f"rule {name}")
    if not await store.txn([store.unchanged(e.key, e.mod_revision)], [store.delete_op(e.key)]):
        raise Conflict(f"rule {name} changed meanwhile; read it again")


async def create_host_group(store: Store, group: HostGroup) -> None:
    """A new host group (its hosts need not have joined yet: ``conflicts`` names them)."""
    validated(group)
    if not await store.create(K.HOSTGROUPS + group.name, group.to_json()):
        raise Conflict(f"a host group named {group.name!r} already exists")


async def delete_host_group(store: Store, name: str, revision: int | None = None) -> None:
    """Delete a host group no rule names (a must-run-on rule on a missing group would
    leave its VMs nowhere to run)."""
    e = await store.get(K.HOSTGROUPS + name)
    if e is None:
        raise NotFound(f"no host group named {name!r}")
    check_revision(e, revision, f"host group {name}")
    snap = await store.snapshot()
    users = sorted(r.name for r in rules(snap) if r.group == name)
    if users:
        raise Conflict(f"host group {name} is named by rule {', '.join(users)}; delete those first")
    if not await store.txn([store.unchanged(e.key, e.mod_revision)], [store.delete_op(e.key)]):
        raise Conflict(f"host group {name} changed meanwhile; read it again")
