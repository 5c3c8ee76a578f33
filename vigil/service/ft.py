"""Fault Tolerance: turn it on or off, what ``vm show`` says of it, what it cannot protect."""
from __future__ import annotations

from typing import Any

from vigil.model import HostInfo, VMSpec
from vigil.policy.admission_control import Change
import vigil.service.admission as admission
from vigil.service.common import Conflict, check_revision, Invalid, ft_delete_ops, under, user_event
from vigil.service.vms import get_vm
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store
from vigil.store.events import event_put_op


def ft_state(snap: dict[str, Entry], name: str) -> dict[str, Any]:
    """What ``vm show`` says of a VM's FT: disabled | needs-secondary | starting |
    protected | unprotected, the secondary, and the primary's figures."""
    ft = snap.get(K.FT + name)
    if ft is None:
        return {"state": "disabled"}
    sec, epoch = ft.value.get("secondary"), ft.value.get("epoch")
    stat = snap.get(K.FTSTAT + name)
    st = stat.value if stat is not None and stat.value.get("epoch") == epoch and stat.value.get("secondary") == sec else {}
    if sec is None:
        state = "needs-secondary"
    elif not st:
        state = "starting"
    else:
        state = str(st.get("state", "starting"))
    out: dict[str, Any] = {"state": state, "secondary": sec, "epoch": epoch}
    for k in ("checkpoints", "failures", "interval_ms", "pause_ms", "bytes", "lag_ms", "last_error"):
        if k in st:
            out[k] = st[k]
    return out


def ft_limits(spec: VMSpec) -> str | None:
    """Why FT cannot protect this VM, or None."""
    from vigil.hypervisor.ft import MAX_FT_MEMORY_MB

    if spec.memory_mb > MAX_FT_MEMORY_MB:
        return (f"FT supports VMs of up to {MAX_FT_MEMORY_MB} MiB (each checkpoint copies the whole RAM); "
                f"{spec.name} has {spec.memory_mb} MiB")
    if spec.replicated:
        return f"FT does not support disks on two datastores yet ({spec.name} has some)"
    return None


async def ft_enable(store: Store, name: str, revision: int | None = None) -> bool:
    """Turn FT on; the controller places the secondary. False when it was on already."""
    spec, e = await get_vm(store, name)
    check_revision(e, revision, f"VM {name}")
    why = ft_limits(spec)
    if why:
        raise Invalid(why)
    snap = await store.snapshot()
    if (K.FT + name) in snap:
        return False
    hosts = [HostInfo.from_json(x.value) for x in under(snap, K.HOSTS).values()]
    reach = [h.name for h in hosts if spec.datastores <= set(h.datastores)]
    if len(reach) < 2:
        raise Conflict(f"FT needs two hosts that reach {', '.join(sorted(spec.datastores))}; "
                       f"only {', '.join(reach) or 'none'} do")
    more, also = ([], []) if spec.power != "on" else admission.guarded(store, snap, Change(
        what=f"turning FT on for {name} (its secondary reserves {spec.memory_mb} MiB, {spec.vcpus} "
             f"vCPU{'s' if spec.vcpus != 1 else ''} more)",
        standby=(spec,)))
    ev = user_event("ft-enabled", f"{name}: Fault Tolerance on", vm=name)
    return await store.txn([store.unchanged(K.VMS + name, e.mod_revision), store.absent(K.FT + name), *more],
                           [store.put_op(K.FT + name, {"secondary": None, "epoch": 1}), event_put_op(store, ev), *also])


async def ft_disable(store: Store, name: str, revision: int | None = None) -> bool:
    """Turn FT off: every FT key goes. False when it was off already."""
    _, e = await get_vm(store, name)
    check_revision(e, revision, f"VM {name}")
    if await store.get(K.FT + name) is None:
        return False
    ev = user_event("ft-disabled", f"{name}: Fault Tolerance off", vm=name)
    return await store.txn([store.unchanged(K.VMS + name, e.mod_revision)],
                           [*ft_delete_ops(store, name), event_put_op(store, ev)])
