"""``vigil host fence HOST``: power a host off through its BMC on a person's request (the
controller fences on its own: vigil.controller.fence). The fence is asked of the BMC from
where the request is served; each attempt and its result are events ``fence``."""
from __future__ import annotations

from typing import Any

from vigil.env.real import BmcFencing
from vigil.service.common import Conflict, NotFound, known, under, user_event
from vigil.store import keys as K
from vigil.store.etcd import Store
from vigil.store.events import record


async def fence_host(store: Store, host: str, fencing: Any = None) -> tuple[bool, str]:
    """(confirmed, what happened). ``fencing``: the Env's fencing (default: the real BMCs).
    Raises NotFound for an unknown host and Conflict for one without a fence device."""
    snap = await store.snapshot()
    info = snap.get(K.HOSTS + host)
    if info is None:
        raise NotFound(f"unknown host {host!r} (known: {known(under(snap, K.HOSTS))})")
    dev = info.value.get("fencing") or {}
    if not dev.get("kind"):
        raise Conflict(f"host {host} has no fence device (its vigil.toml has no [fencing])")
    where = f"{dev['kind']} {dev.get('address', '?')}" + (f":{dev['port']}" if dev.get("port") else "")
    await record(store, user_event("fence", f"fencing {host} through its BMC ({where}) on request", host=host,
                                   result="attempt", driver=dev["kind"]))
    ok, detail = await (fencing or BmcFencing()).fence(host, dev)
    msg = f"{host} fenced: power off confirmed by its BMC ({detail})" if ok else f"fencing {host} failed: {detail}"
    await record(store, user_event("fence", msg, host=host, result="confirmed" if ok else "failed",
                                   driver=dev["kind"]))
    return ok, msg
