"""Forgetting a host (``vigil cluster remove-host``): its records leave etcd, but only
when nothing of it is still in use. A host whose agent is alive, or that runs, owns or is
assigned a VM, or is the source or target of a task, is refused: removing it then would
lose track of a running guest."""
from __future__ import annotations

from vigil.model import TASK_ACTIVE
from vigil.service.common import Conflict, user_event
from vigil.store.events import event_put_op
from vigil.store import keys as K
from vigil.store.etcd import Store
from vigil.store.state import cluster_state


def _in_use(snap: dict, host: str) -> list[str]:
    st = cluster_state(snap)
    why = []
    if host in st.alive:
        why.append(f"its agent is running (stop vigil-agent on {host} first)")
    vms = sorted({v for v, o in st.owners.items() if o.host == host}
                 | {v for v, a in st.assignments.items() if a.assignment.host == host}
                 | {v for v, s in st.statuses.items() if s.host == host and s.state in ("starting", "running")})
    if vms:
        why.append(f"it runs or is assigned VMs ({', '.join(vms)}): migrate them away first")
    tasks = sorted(t for t, r in st.tasks.items() if r.task.state in TASK_ACTIVE
                   and host in (r.task.src, r.task.dst))
    if tasks:
        why.append(f"tasks still use it ({', '.join(tasks)})")
    if st.leader is not None and st.leader.host == host:
        why.append("it holds the controller's leadership")
    return why


async def remove_host_records(store: Store, host: str) -> list[str]:
    """Delete ``host``'s records (hosts/, hoststate/, maintenance/) in one guarded
    transaction; returns the keys deleted (none: etcd never knew the host). Conflict when
    the host is still in use."""
    snap = await store.snapshot()
    why = _in_use(snap, host)
    if why:
        raise Conflict(f"host {host} is still in use: " + "; ".join(why))
    keys = [k for k in (K.HOSTS + host, K.HOSTSTATE + host, K.MAINTENANCE + host) if k in snap]
    if not keys:
        return []
    ev = user_event("host-removed", f"{host} removed from the cluster", host=host)
    ok = await store.txn([store.unchanged(k, snap[k].mod_revision) for k in keys] + [store.absent(K.ALIVE + host)],
                         [*(store.delete_op(k) for k in keys), event_put_op(store, ev)])
    if not ok:
        raise Conflict(f"host {host} changed while it was being removed; try again")
    return keys
