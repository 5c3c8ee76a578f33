"""Cluster policies an operator sets (admission control, DRS, VM monitoring, ...): one
object each under ``settings/<name>``, read by the controller from the typed cluster state.

Each policy validates its own object (its module in ``policy/`` knows the fields and the
defaults); this module only reads and writes them, guarded by revision, with an event that
names who changed what.
"""
from __future__ import annotations

import json
from typing import Any

from vigil.service.common import Conflict, check_revision, user_event
from vigil.store import keys as K
from vigil.store.etcd import Store
from vigil.store.events import event_put_op


async def get_setting(store: Store, name: str) -> tuple[dict[str, Any], int]:
    """The stored object (empty: never set, so every default holds) and its revision (0)."""
    e = await store.get(K.SETTINGS + name)
    if e is None or not isinstance(e.value, dict):
        return {}, 0
    return dict(e.value), e.mod_revision


async def put_setting(store: Store, name: str, value: dict[str, Any], revision: int | None = None) -> int:
    """Replace the object once the caller validated it; ``revision`` (If-Match) refuses a
    write over someone else's change. Returns the new revision."""
    key = K.SETTINGS + name
    e = await store.get(key)
    check_revision(e, revision, f"setting {name}")
    guard = store.unchanged(key, e.mod_revision) if e is not None else store.absent(key)
    ev = user_event("settings", f"{name}: {json.dumps(value, sort_keys=True)}")
    if not await store.txn([guard], [store.put_op(key, value), event_put_op(store, ev)]):
        raise Conflict(f"setting {name} changed meanwhile; read it again")
    got = await store.get(key)
    return got.mod_revision if got is not None else 0
