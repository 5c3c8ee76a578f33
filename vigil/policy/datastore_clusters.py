"""Datastore clusters (``settings/datastore-clusters``): named groups of datastores, the
unit Storage DRS balances in (vSphere's datastore clusters). A disk moved by Storage DRS
stays in its datastore's cluster.

While no datastore cluster is defined, every datastore is in one implicit cluster (so
Storage DRS works on a cluster nobody grouped, as it did before clusters existed); once
one is, a datastore in no cluster is left alone by Storage DRS, as in vSphere.
"""
from __future__ import annotations

from typing import Any, Mapping

from vigil.model import SpecError, check_name

SETTING = "datastore-clusters"  # settings/<this>: {"clusters": {name: [datastore, ...]}}


def datastore_clusters(raw: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """The stored object as name -> datastores. Raises SpecError on a bad one (the service
    calls it before writing): a bad name, an empty cluster, a datastore in two."""
    clusters = (raw or {}).get("clusters", {})
    if not isinstance(clusters, Mapping):
        raise SpecError("datastore clusters: 'clusters' must map names to lists of datastores")
    out: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for name, members in sorted(clusters.items()):
        check_name("datastore cluster", name)
        if not isinstance(members, (list, tuple)) or not members:
            raise SpecError(f"datastore cluster {name}: give it one datastore at least")
        for ds in members:
            check_name("datastore", ds)
            if ds in seen:
                raise SpecError(f"datastore {ds} is in two datastore clusters ({seen[ds]}, {name})")
            seen[ds] = name
        out[name] = tuple(sorted(set(members)))
    return out


def safe_datastore_clusters(raw: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """As ``datastore_clusters``, but a bad stored object counts as none (the controller goes on)."""
    try:
        return datastore_clusters(raw)
    except SpecError:
        return {}


def cluster_of(clusters: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """Datastore -> the cluster it is in."""
    return {ds: name for name, members in clusters.items() for ds in members}


def peers(clusters: Mapping[str, tuple[str, ...]], ds: str, known: Any) -> tuple[str, ...]:
    """The datastores a disk on ``ds`` may move to: the others of its cluster; every other
    one of ``known`` while no cluster is defined; none when ``ds`` is in no cluster."""
    if not clusters:
        return tuple(sorted(d for d in known if d != ds))
    name = cluster_of(clusters).get(ds)
    return tuple(d for d in clusters.get(name, ()) if d != ds) if name else ()
