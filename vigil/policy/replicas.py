"""Which copies of replicated disks to drop, to resync, or to declare stale (pure logic).

A disk with a replica has two copies (:attr:`vigil.model.DiskSpec.copies`). A copy that
missed writes is *stale*: the key ``diskstate/<vm>`` names it (disk -> datastore), and
nothing opens it again before a resync. Whoever marks a copy stale does so before the
copy stops getting writes, so a copy not marked stale never lacks an acknowledged write.

- The VM's own agent drops a copy whose datastore its host lost while the other copy is
  still reachable (:func:`copies_to_drop`), and resyncs stale copies once their datastore
  is back (:func:`copies_to_resync`).
- The controller declares stale a copy of a VM that runs nowhere when no running host
  reaches that copy's datastore any more but some host reaches the other copy
  (:func:`copies_unreachable`): nothing can write the dead copy, and without this the VM
  could not be placed at all.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vigil.model import VMSpec


def stale_map(state: Mapping[str, Any] | None) -> dict[str, str]:
    """disk name -> datastore of its stale copy, from a ``diskstate/<vm>`` value."""
    return {disk: str(s["datastore"]) for disk, s in ((state or {}).get("stale") or {}).items()}


def in_sync(spec: VMSpec, stale: Mapping[str, str]) -> dict[str, list[str]]:
    """disk name -> the datastores of its copies in sync (replicated disks only)."""
    return {d.name: [ds for ds in d.copies if stale.get(d.name) != ds] for d in spec.disks if d.replica}


def copies_to_drop(spec: VMSpec, stale: Mapping[str, str], reachable: Mapping[str, bool]) -> list[tuple[str, str]]:
    """(disk, datastore) of in-sync copies this host lost while the disk's other in-sync
    copy is still reachable here: the VM runs on without them. When both are lost,
    nothing is dropped (there is no good copy to keep; VM component protection acts)."""
    out = []
    for disk, copies in in_sync(spec, stale).items():
        lost = [ds for ds in copies if not reachable.get(ds, False)]
        if lost and len(lost) < len(copies):
            out += [(disk, ds) for ds in lost]
    return out


def copies_to_resync(spec: VMSpec, stale: Mapping[str, str], reachable: Mapping[str, bool]) -> list[str]:
    """Disks with a stale copy whose datastore, and the good copy's, this host reaches."""
    return [d.name for d in spec.disks
            if d.replica and stale.get(d.name) in d.copies and all(reachable.get(ds, False) for ds in d.copies)]


def copies_unreachable(spec: VMSpec, stale: Mapping[str, str],
                       reach: Iterable[Iterable[str]]) -> list[tuple[str, str]]:
    """(disk, datastore) of in-sync copies no host in ``reach`` (the datastores of each
    running host) reaches, while some host reaches the disk's other in-sync copy."""
    reached = set().union(*map(set, reach))
    out = []
    for disk, copies in in_sync(spec, stale).items():
        lost = [ds for ds in copies if ds not in reached]
        if lost and len(lost) < len(copies):
            out += [(disk, ds) for ds in lost]
    return out


def mark_stale(state: Mapping[str, Any] | None, disk: str, datastore: str, now: float, why: str) -> dict[str, Any]:
    """The ``diskstate`` value with ``disk``'s copy on ``datastore`` marked stale."""
    new = dict(state or {})
    stale = dict(new.get("stale") or {})
    if disk not in stale:
        stale[disk] = {"datastore": datastore, "since": now, "why": why}
    new["stale"] = stale
    return new


def mark_in_sync(state: Mapping[str, Any] | None, disks: Iterable[str]) -> dict[str, Any]:
    """The ``diskstate`` value with ``disks`` whole again (and no resync under way)."""
    new = dict(state or {})
    new["stale"] = {d: s for d, s in (new.get("stale") or {}).items() if d not in set(disks)}
    new.pop("resync", None)
    new.pop("last_error", None)
    return new


__all__ = ["stale_map", "in_sync", "copies_to_drop", "copies_to_resync", "copies_unreachable", "mark_stale",
           "mark_in_sync"]
