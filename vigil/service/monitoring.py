"""VM and application monitoring as an operator sets and reads it: the cluster's
``settings/monitoring``, a VM's own settings (its spec's ``monitoring``), and the
resets monitoring made of a VM (``monitoring/<vm>``, written by the agent that owns it).
"""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Mapping

from vigil.model import MonitoringSpec, SpecError
from vigil.policy import vm_monitoring as VM
from vigil.service.common import Conflict, Invalid, check_revision, user_event
from vigil.service.settings import get_setting, put_setting
from vigil.service.vms import get_vm
from vigil.store import keys as K
from vigil.store.etcd import Store
from vigil.store.events import event_put_op

NAME = "monitoring"


def settings_out(s: VM.MonitoringSettings, revision: int = 0) -> dict[str, Any]:
    return asdict(s) | {"enabled": s.enabled, "summary": s.summary(), "revision": revision}


async def get_monitoring(store: Store) -> dict[str, Any]:
    """The cluster's settings, every value resolved (the default: off)."""
    raw, rev = await get_setting(store, NAME)
    return settings_out(VM.cluster_settings(raw), rev)


async def set_monitoring(store: Store, raw: Mapping[str, Any], revision: int | None = None) -> dict[str, Any]:
    """Replace the cluster's settings: a preset (off, high, medium, low, custom) and the
    values that override it; those not given take the preset's."""
    values = {k: v for k, v in raw.items() if v is not None}
    try:
        stored = VM.normalized(values)
    except (SpecError, TypeError) as e:
        raise Invalid(str(e)) from None
    rev = await put_setting(store, NAME, stored, revision)
    return settings_out(VM.cluster_settings(stored), rev)


async def set_vm_monitoring(store: Store, name: str, own: MonitoringSpec | None,
                            revision: int | None = None) -> dict[str, Any]:
    """Give a VM its own settings (None: the cluster's again); a running VM takes them at
    its agent's next reconcile, without a restart."""
    spec, e = await get_vm(store, name)
    check_revision(e, revision, f"VM {name}")
    new = replace(spec, monitoring=own)
    try:
        new.validate()
    except SpecError as err:
        raise Invalid(str(err)) from None
    said = "the cluster's" if own is None else " ".join(
        f"{k}={v}" for k, v in asdict(own).items() if v is not None) or "the cluster's"
    ev = user_event("vm-monitoring-set", f"{name}: monitoring {said}", vm=name)
    if not await store.txn([store.unchanged(K.VMS + name, e.mod_revision)],
                           [store.put_op(K.VMS + name, new.to_json()), event_put_op(store, ev)]):
        raise Conflict(f"{name} changed meanwhile; try again")
    return await vm_monitoring(store, name)


async def vm_monitoring(store: Store, name: str, now: float | None = None) -> dict[str, Any]:
    """A VM's monitoring: the settings in force (the cluster's under its own), its own,
    and the resets made of it (each time, the last one's cause and reason)."""
    import time

    spec, _ = await get_vm(store, name)
    raw, rev = await get_setting(store, NAME)
    eff = VM.effective(VM.cluster_settings(raw), spec.monitoring)
    rec = await store.get(K.MONITORING + name)
    value = dict(rec.value) if rec is not None and isinstance(rec.value, dict) else {}
    resets = [float(t) for t in value.get("resets", [])]
    t = time.time() if now is None else now
    return {"vm": name, "settings": settings_out(eff, rev),
            "own": asdict(spec.monitoring) if spec.monitoring is not None else None,
            "resets": resets, "resets_in_window": VM.resets_in_window(resets, t, eff.window_s),
            "last_reset": value.get("last")}
