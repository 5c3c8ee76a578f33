"""The scenario's operator commands that admission control judges, and the settings an
operator sets: what the service writes for them (vigil.service.vms, ft, settings), with
the service's own admission check on the same snapshot, on the simulator's clock."""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from vigil.model import DiskSpec, VMSpec
from vigil.policy.admission_control import SETTING as ADMISSION, AdmissionSetting, Change
from vigil.policy.retry_schedule import SETTING as RETRIES, RetrySchedule
from vigil.service.admission import check
from vigil.policy.whatif import what_if
from vigil.service.common import Conflict
from vigil.service.view import cluster_view
from vigil.sim.world import World
from vigil.store import keys as K
from vigil.store.events import event_put_op, make_event

ADMISSION_FIELDS = tuple(AdmissionSetting.__dataclass_fields__)


async def refused(w: World, subject: str, change: Change) -> bool:
    """True (and a ``refused`` line with admission control's figures) when the service
    would refuse ``change`` now."""
    try:
        check(await w.store.snapshot(), change, w.clock.time())
    except Conflict as e:
        w.log(w.clock.now, "refused", subject, str(e))
        return True
    return False


def _size(spec: VMSpec) -> str:
    return f"{spec.memory_mb} MiB, {spec.vcpus} vCPU{'s' if spec.vcpus != 1 else ''}"


async def operator(w: World, a: dict[str, Any]) -> None:
    st, f = w.store, a["fault"]
    ev_at = w.clock.time
    if f == "vm-create":  # vigil vm create (powered on)
        spec = VMSpec(name=a["vm"], memory_mb=int(a.get("memory", 256)), vcpus=int(a.get("vcpus", 1)),
                      restart_priority=a.get("priority", "medium"), power=a.get("power", "on"),
                      disks=(DiskSpec(name="disk0", datastore="ds1", path=f"{a['vm']}/disk0.qcow2"),))
        spec.validate()
        if spec.power == "on" and await refused(w, spec.name, Change(
                what=f"creating {spec.name} powered on ({_size(spec)})", power_on=(spec,))):
            return
        ev = make_event("vm-created", f"{spec.name} created", vm=spec.name, source="cli", at=ev_at())
        await st.txn([st.absent(K.VMS + spec.name)], [st.put_op(K.VMS + spec.name, spec.to_json()), event_put_op(st, ev)])
    elif f == "ft-enable":  # vigil vm ft enable
        e = await st.get(K.VMS + a["vm"])
        if e is None or await st.get(K.FT + a["vm"]) is not None:
            return
        spec = VMSpec.from_json(e.value)
        if spec.power == "on" and await refused(w, spec.name, Change(
                what=f"turning FT on for {spec.name} (its secondary reserves {spec.memory_mb} MiB, {spec.vcpus} "
                     f"vCPU{'s' if spec.vcpus != 1 else ''} more)", standby=(replace(spec),))):
            return
        ev = make_event("ft-enabled", f"{spec.name}: Fault Tolerance on", vm=spec.name, source="cli", at=ev_at())
        await st.txn([st.absent(K.FT + spec.name)],
                     [st.put_op(K.FT + spec.name, {"secondary": None, "epoch": 1}), event_put_op(st, ev)])
    elif f == "vm-resize":  # vigil vm resize
        e = await st.get(K.VMS + a["vm"])
        if e is None:
            return
        old = VMSpec.from_json(e.value)
        new = replace(old, memory_mb=int(a.get("memory", old.memory_mb)), vcpus=int(a.get("vcpus", old.vcpus)))
        new.validate()
        if old.power == "on" and await refused(w, old.name, Change(
                what=f"resizing {old.name} to {_size(new)} (from {_size(old)})", power_on=(new,))):
            return
        ev = make_event("vm-resized", f"{old.name}: resized to {_size(new)} (from {_size(old)}; QEMU takes it at its "
                        "next start)", vm=old.name, source="cli", at=ev_at())
        await st.txn([st.unchanged(e.key, e.mod_revision)], [st.put_op(e.key, new.to_json()), event_put_op(st, ev)])
    elif f == "what-if":  # vigil cluster what-if --fail H ...: the answer as log lines
        ans = what_if(cluster_view(await st.snapshot(), w.clock.time()), a["hosts"])
        for r in ans.restarts:
            w.log(w.clock.now, "what-if", r.vm, f"{r.order}. {r.kind} on {r.host} ({r.reason})")
        for x in ans.left:
            w.log(w.clock.now, "what-if", x.vm, f"not restarted: {x.reason}")
        if not ans.affected:
            w.log(w.clock.now, "what-if", "-", "no powered-on VM on " + ", ".join(ans.failed))
    elif f in ("set-admission", "set-retries"):  # vigil cluster set admission|retries
        name = ADMISSION if f == "set-admission" else RETRIES
        value = settings_value(name, a)
        ev = make_event("settings", f"{name}: {json.dumps(value, sort_keys=True)}", source="cli", at=ev_at())
        await st.txn([], [st.put_op(K.SETTINGS + name, value), event_put_op(st, ev)])


def settings_value(name: str, d: dict[str, Any]) -> dict[str, Any]:
    """A scenario's ``[admission]`` or ``[retries]`` table (or action) as the stored object,
    validated as the service validates it."""
    if name == ADMISSION:
        s = AdmissionSetting.from_json({k: v for k, v in d.items() if k in ADMISSION_FIELDS})
        s.validate()
        return s.to_json()
    r = RetrySchedule.from_json({k: v for k, v in d.items() if k in ("delays", "max_attempts")})
    r.validate()
    return r.to_json()
