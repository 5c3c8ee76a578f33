"""What every service module shares: the error classes and the snapshot helpers.

The errors derive from ``SpecError`` so that the CLI, which shows any ``SpecError`` as one
line, keeps working unchanged; their class tells the REST API which status to answer
(404, 409, 422) without reading the message.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from vigil.model import TASK_ACTIVE, Event, HostInfo, SpecError, Task
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store
from vigil.store.events import make_event

# Who is asking, for the events a request writes: ("cli", "") from the local command line,
# ("api", user name) in the REST API, which sets it per request. A context variable so that
# every operation does not have to carry it (and none can forget to).
REQUESTER: ContextVar[tuple[str, str]] = ContextVar("vigil_requester", default=("cli", ""))


class NotFound(SpecError):
    """The thing the request is about (a VM, its disk, a host, a rule, a task, the
    datastore to evacuate) does not exist: 404."""


class Conflict(SpecError):
    """The request is well formed but the cluster's present state refuses it: it already
    exists, someone changed it meanwhile, it is busy, or it is not (or no longer) in a
    state that allows it (running, powered on, in maintenance, no room): 409. Trying again
    later, once that state changed, may succeed."""


class Invalid(SpecError):
    """The request itself is wrong: bad values, a name given as a parameter that names
    nothing known, a combination vigil does not support: 422. Asking again unchanged fails
    again."""


def user_event(kind: str, message: str, **kw: Any) -> Event:
    """An event caused by a request: its source and user are the requester's."""
    source, user = REQUESTER.get()
    return make_event(kind, message, source=source, user=user, **kw)


def check_revision(entry: Entry | None, revision: int | None, what: str) -> None:
    """A write that names the revision it was read at is refused when the object changed
    since (optimistic concurrency: never applied over someone else's change)."""
    if revision is None:
        return
    now = entry.mod_revision if entry is not None else 0
    if now != revision:
        raise Conflict(f"{what} changed since revision {revision} (now {now}); read it again")


def validated(obj: Any) -> None:
    """Run a model object's ``validate()``; its refusal is bad input, so it becomes Invalid."""
    try:
        obj.validate()
    except SpecError as e:
        if isinstance(e, (NotFound, Conflict, Invalid)):
            raise
        raise Invalid(str(e)) from e


def under(snap: dict[str, Entry], prefix: str) -> dict[str, Entry]:
    """The entries of a snapshot below ``prefix``, by the name after it."""
    return {K.name_of(k, prefix): e for k, e in snap.items() if k.startswith(prefix)}


def known(names: Any) -> str:
    """``a, b`` or ``none``: the tail of an "unknown X" message."""
    return ", ".join(sorted(names)) or "none"


def running_owner(snap: dict[str, Entry], name: str) -> str:
    """The host a VM runs on now (owner and status agree), or Conflict."""
    own = snap.get(K.OWN + name)
    st = snap.get(K.VMSTATUS + name)
    if own is None or st is None or st.value.get("state") != "running" or st.value.get("host") != own.value:
        raise Conflict(f"VM {name} is not running")
    return str(own.value)


def active_task(snap: dict[str, Entry], name: str) -> Task | None:
    """The VM's task still under way, if any."""
    e = snap.get(K.TASKS + name)
    if e is None:
        return None
    t = Task.from_json(e.value)
    return t if t.state in TASK_ACTIVE else None


def host_for_vm(snap: dict[str, Entry], host: str) -> HostInfo:
    """A host a VM may be sent to now: known, running, not in maintenance."""
    hosts = under(snap, K.HOSTS)
    if host not in hosts:
        raise Invalid(f"unknown host {host!r} (known: {known(hosts)})")
    if host not in under(snap, K.ALIVE):
        raise Conflict(f"host {host} is not running")
    if K.MAINTENANCE + host in snap:
        raise Conflict(f"host {host} is in maintenance mode")
    return HostInfo.from_json(hosts[host].value)


def diskstate(snap: dict[str, Entry], name: str) -> dict[str, Any]:
    """The VM's ``diskstate/`` value (stale copies, resync under way), {} when none."""
    e = snap.get(K.DISKSTATE + name)
    return dict(e.value) if e is not None and isinstance(e.value, dict) else {}


def ft_delete_ops(store: Store, name: str) -> list:
    """The deletes that remove every FT key of a VM (``vm delete`` and ``ft disable``)."""
    return [store.delete_op(k + name) for k in (K.FT, K.FTRX, K.FTACK, K.FTSTAT)]
