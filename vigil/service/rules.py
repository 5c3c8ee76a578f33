"""VM-VM rules (affinity, anti-affinity): list, create, delete."""
from __future__ import annotations

from dataclasses import asdict

from vigil.model import Rule
from vigil.service.common import Conflict, Invalid, NotFound, check_revision, under, validated
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store


def rules(snap: dict[str, Entry]) -> list[Rule]:
    """The rules in a snapshot."""
    return [Rule.from_json(e.value) for e in under(snap, K.RULES).values()]


async def create_rule(store: Store, rule: Rule) -> None:
    """Write a new rule once it is valid and names only VMs that exist."""
    validated(rule)
    snap = await store.snapshot()
    missing = [v for v in rule.vms if K.VMS + v not in snap]
    if missing:
        raise Invalid(f"rule {rule.name}: no VM named {', '.join(missing)}")
    if not await store.create(K.RULES + rule.name, asdict(rule)):
        raise Conflict(f"a rule named {rule.name!r} already exists")


async def delete_rule(store: Store, name: str, revision: int | None = None) -> None:
    e = await store.get(K.RULES + name)
    if e is None:
        raise NotFound(f"no rule named {name!r}")
    check_revision(e, revision, f"rule {name}")
    if not await store.txn([store.unchanged(e.key, e.mod_revision)], [store.delete_op(e.key)]):
        raise Conflict(f"rule {name} changed meanwhile; read it again")
