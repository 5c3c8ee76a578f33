"""Initial placement on the DRS load model: with DRS on, a VM powered on, created or
restarted by HA goes to the host with room that is least loaded once it runs there (as
measured), not merely the one with the most free memory, so that the next DRS round has
no reason to move it."""
from __future__ import annotations

from typing import Mapping

from vigil.policy.drs_load import Demand, Preference, demand, measured
from vigil.policy.drs_settings import safe_drs_settings
from vigil.policy.view import ClusterView


def drs_preference(view: ClusterView, where: Mapping[str, str]) -> Preference | None:
    """The ranking ``placement.place`` uses, or None while DRS is off (placement by most
    free memory, as without DRS). ``where``: each VM's host in the shared load model."""
    if safe_drs_settings(view.drs).mode == "off":
        return None
    seen = measured(view.loads)
    infos = {n: h.info for n, h in view.hosts.items() if h.info is not None}
    per_host: dict[str, Demand] = {}
    for name, h in where.items():
        v = view.vms.get(name)
        if v is not None and v.spec.power == "on" and h in infos:
            per_host[h] = per_host.get(h, Demand()).plus(demand(v.spec, seen))
    return Preference(infos, per_host, seen)
