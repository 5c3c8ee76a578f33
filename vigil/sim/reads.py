"""What every simulated agent's reconcile reads from etcd, read once per change of those keys.

The real agent reads its snapshot and parses it on its own host; in the simulator all
hosts read the same in-memory store many times per virtual second, mostly unchanged,
and would each parse the same keys into the same values. ``etcd_word`` does it once per
change of the keys it reads (``MemoryStore.memo``) and every host shares the frozen result: the
specs, assignments and owners as ``policy.host.VMFacts``, the FT and disk-state keys,
and per host the VMs assigned there to run, in etcd's order. Specs and assignments are
parsed again only when their key changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from vigil.model import Assignment, VMSpec
from vigil.policy import host as HP
from vigil.sim.store import HostStore, MemoryStore
from vigil.store import keys as K
from vigil.store.etcd import Entry
from vigil.store.state import read_assignment


@dataclass(frozen=True)
class EtcdWord:
    """One revision's reconcile inputs (shared by every host: never changed)."""

    specs: Mapping[str, VMSpec]
    assign: Mapping[str, Entry]  # vm -> its assign/ entry, in etcd's order
    assign_values: Mapping[str, Any]
    owners: Mapping[str, Any]  # vm -> own/ value
    ft: Mapping[str, Any]  # vm -> ft/ value, in etcd's order
    diskstate: Mapping[str, Entry]  # the diskstate/ keys as read
    facts: Mapping[str, HP.VMFacts]
    mine: Mapping[str, tuple[str, ...]]  # host -> VMs assigned there to run (is_mine), in etcd's order
    # parse caches carried to the next revision: key -> (mod_revision, parsed)
    spec_cache: Mapping[str, tuple[int, VMSpec]]
    assign_cache: Mapping[str, tuple[int, Assignment]]


def _names(found: Mapping[str, Entry], prefix: str) -> dict[str, Entry]:
    n = len(prefix)
    return {k[n:]: e for k, e in found.items()}


def _parsed(entries: Mapping[str, Entry], old: Mapping[str, tuple[int, Any]], parse: Any) -> dict[str, tuple[int, Any]]:
    out: dict[str, tuple[int, Any]] = {}
    for name, e in entries.items():
        hit = old.get(name)
        out[name] = hit if hit is not None and hit[0] == e.mod_revision else (e.mod_revision, parse(e.value))
    return out


def _build(mem: MemoryStore, prev: EtcdWord | None) -> EtcdWord:
    vms, assign = _names(mem._range(K.VMS), K.VMS), _names(mem._range(K.ASSIGN), K.ASSIGN)
    own = {name: e.value for name, e in _names(mem._range(K.OWN), K.OWN).items()}
    spec_cache = _parsed(vms, prev.spec_cache if prev else {}, VMSpec.from_json)
    assign_cache = _parsed(assign, prev.assign_cache if prev else {}, read_assignment)
    specs = {name: hit[1] for name, hit in spec_cache.items()}
    facts = {name: HP.VMFacts(spec=specs.get(name),
                              assignment=assign_cache[name][1] if name in assign else None, owner=own.get(name))
             for name in set(specs) | set(assign) | set(own)}
    mine: dict[str, list[str]] = {}
    for name in assign:
        f = facts[name]
        if f.assignment is not None and HP.is_mine(f.assignment.host, f):
            mine.setdefault(f.assignment.host, []).append(name)
    return EtcdWord(specs=specs, assign=assign, assign_values={n: e.value for n, e in assign.items()}, owners=own,
                    ft={name: e.value for name, e in _names(mem._range(K.FT), K.FT).items()},
                    diskstate=dict(mem._range(K.DISKSTATE)), facts=facts,
                    mine={h: tuple(names) for h, names in mine.items()},
                    spec_cache=spec_cache, assign_cache=assign_cache)


_READS = (K.VMS, K.ASSIGN, K.OWN, K.FT, K.DISKSTATE)  # every prefix _build reads


async def etcd_word(store: HostStore) -> EtcdWord:
    """The reconcile inputs as ``store``'s host reads them now (StoreError when it is cut off)."""
    return await store.memo("reconcile", _build, _READS)  # type: ignore[no-any-return]
