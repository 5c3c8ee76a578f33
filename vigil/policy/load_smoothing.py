"""How an agent turns its raw load samples into what it reports: an exponentially weighted
moving average over a window (one spike moves nothing), written only when it changed
noticeably and not more often than every few seconds (an idle cluster writes nothing).

What DRS and Storage DRS read (each VM's figures, the datastores' space) is written as
soon as it moved (MIN_WRITE_S apart); the host's own totals, which only the listings
and /metrics show, wait HOST_WRITE_S: a host whose other work comes and goes (the
lab's hosts share one machine) would otherwise write every few seconds, and every write
wakes each agent's and API server's watch and refreshes their snapshots."""
from __future__ import annotations

import math
from typing import Any, Mapping

WINDOW_S = 30.0  # the EWMA's time constant
CPU_STEP = 0.10  # cores: a change smaller than this is not worth a write
MEMORY_STEP = 0.05  # relative
MIN_WRITE_S = 5.0  # between two writes at most this often
HOST_WRITE_S = 60.0  # a change of the host's totals alone is written this long after the last write
MAX_WRITE_S = 300.0  # written at least this often, changed or not (its time says how fresh it is)


def ewma(prev: float | None, x: float, dt: float, window_s: float = WINDOW_S) -> float:
    """The average after a sample ``x`` taken ``dt`` seconds after the last one."""
    if prev is None:
        return x
    a = 1.0 - math.exp(-max(dt, 0.0) / window_s)
    return prev + a * (x - prev)


def _moved(o: Mapping[str, Any], n: Mapping[str, Any]) -> bool:
    if abs(float(o.get("cpu", 0.0)) - float(n.get("cpu", 0.0))) >= CPU_STEP:
        return True
    om = float(o.get("memory_mb", o.get("memory_used_mb", 0.0)))
    nm = float(n.get("memory_mb", n.get("memory_used_mb", 0.0)))
    return abs(om - nm) > MEMORY_STEP * max(om, nm, 1.0)


def changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """A load record differs enough from the one last written to be written again."""
    return vms_changed(old, new) or (old is not None and _moved(old, new))


def vms_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """What DRS and Storage DRS read differs enough: a VM's figures, the set of VMs, a
    datastore's space (the host's own totals aside)."""
    if old is None:
        return True
    if set(old.get("vms", {})) != set(new.get("vms", {})):
        return True
    old_ds, new_ds = old.get("datastores", {}), new.get("datastores", {})
    if set(old_ds) != set(new_ds) or any(
            abs(old_ds[d]["used_mb"] - v["used_mb"]) > 0.01 * max(v["size_mb"], 1) for d, v in new_ds.items()):
        return True
    return any(_moved(old["vms"][vm], v) for vm, v in new.get("vms", {}).items())


def due(old: Mapping[str, Any] | None, new: Mapping[str, Any], since_write: float) -> bool:
    """Whether to write ``new`` now, ``since_write`` seconds after the last write."""
    if since_write < MIN_WRITE_S:
        return False
    if since_write >= MAX_WRITE_S or vms_changed(old, new):
        return True
    return since_write >= HOST_WRITE_S and changed(old, new)
