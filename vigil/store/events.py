"""The cluster's event log in etcd: every decision and every observed change, in order."""
from __future__ import annotations

import time
from dataclasses import asdict, fields
from typing import Any

from vigil.model import Event
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store, StoreError

KEEP_EVENTS = 2000
EVENT_FIELDS = tuple(f.name for f in fields(Event))


def make_event(kind: str, message: str, *, host: str = "", vm: str = "", source: str = "", at: float | None = None,
               user: str = "", **data: Any) -> Event:
    """``at``: the event's wall-clock time, from the caller's clock (the simulator's is
    virtual); by default the system's. ``user``: who asked, when a person did."""
    return Event(time=time.time() if at is None else at, kind=kind, message=message, host=host, vm=vm,
                 source=source, data=data, user=user)


_PLAIN = (str, int, float, bool, type(None))


def event_value(event: Event) -> dict[str, Any]:
    """``asdict(event)``, without its generic deep copy when the event's data holds plain
    values only (as nearly all do: a restart wave writes hundreds of events in one round)."""
    if all(type(v) in _PLAIN for v in event.data.values()):
        out = {f: getattr(event, f) for f in EVENT_FIELDS}
        out["data"] = dict(event.data)
        return out
    return asdict(event)


async def record(store: Store, event: Event) -> None:
    """Append an event; losing one because etcd is away is not worth failing the caller."""
    try:
        await store.put(K.event_key(int(event.time * 1e9), event.source or "cli"), event_value(event))
    except StoreError:
        pass


def event_put_op(store: Store, event: Event):  # type: ignore[no-untyped-def]
    return store.put_op(K.event_key(int(event.time * 1e9), event.source or "cli"), event_value(event))


def event_of(value: dict[str, Any]) -> Event:
    """A stored event (fields it does not know, from a newer writer, are left out)."""
    return Event(**{k: value[k] for k in EVENT_FIELDS if k in value})


def parse_events(entries: dict[str, Entry]) -> list[Event]:
    return [event_of(entries[key].value) for key in sorted(entries)
            if key.startswith(K.EVENTS) and isinstance(entries[key].value, dict)]


async def trim(store: Store, keep: int = KEEP_EVENTS) -> None:
    entries = await store.get_prefix(K.EVENTS)
    for key in sorted(entries)[:-keep]:
        await store.delete(key)
