"""DRS for the CLI and the API: its settings (``settings/drs``, validated by
vigil.policy.drs_settings), the controller's last recommendations, and carrying them out
as ordinary live migrations (admission, rules and busy checks as any user's)."""
from __future__ import annotations

from typing import Any, Iterable

from vigil.model import SpecError
from vigil.policy.drs import TASK_REASON
from vigil.policy.drs_settings import drs_settings
from vigil.service.common import Conflict, Invalid, NotFound
from vigil.service.settings import get_setting, put_setting
from vigil.service.tasks import migrate_vm, move_disk
from vigil.store import keys as K
from vigil.store.etcd import Store


async def get_drs(store: Store) -> tuple[dict[str, Any], int]:
    """Every DRS setting (defaults filled in) and the object's revision (0: never set)."""
    raw, rev = await get_setting(store, "drs")
    try:
        return drs_settings(raw).to_json(), rev
    except SpecError:
        return raw, rev


async def set_drs(store: Store, changes: dict[str, Any], revision: int | None = None,
                  replace: bool = False) -> dict[str, Any]:
    """Change some DRS settings (the others keep their value; ``replace``: take their
    defaults); refused whole when one is bad."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes and not replace:
        raise Invalid("nothing to set: give --mode, --threshold or another setting")
    raw, rev = await get_setting(store, "drs")
    new = dict(changes) if replace else {**raw, **changes}
    try:
        s = drs_settings(new)
    except SpecError as e:
        raise Invalid(str(e)) from None
    await put_setting(store, "drs", new, revision if revision is not None else (rev or None))
    return s.to_json()


async def recommendations(store: Store) -> dict[str, Any]:
    """The controller's last DRS round: imbalance, reason, moves (empty while DRS is off)."""
    e = await store.get(K.DRS)
    if e is None or not isinstance(e.value, dict):
        return {"mode": (await get_drs(store))[0].get("mode", "off"), "moves": [], "disk_moves": [],
                "reason": "no DRS round yet", "disk_reason": "",
                "imbalance": None, "imbalance_after": None, "tolerated": None, "time": None}
    return dict(e.value)


async def apply_recommendations(store: Store, ids: Iterable[str] = (), every: bool = False) -> list[dict[str, Any]]:
    """Start the migrations of the recommendations named (or all): one result each, the
    task's id or why it was refused (the cluster may have changed since the round)."""
    rec = await recommendations(store)
    moves = {m["id"]: m for m in rec.get("moves", []) + rec.get("disk_moves", [])}
    wanted = list(moves) if every else list(ids)
    if not wanted:
        raise Invalid("name the recommendations to apply (their ids) or --all")
    unknown = [i for i in wanted if i not in moves]
    if unknown:
        raise NotFound(f"no current recommendation {', '.join(unknown)} (see 'vigil drs recommendations')")
    out: list[dict[str, Any]] = []
    for i in wanted:
        m = moves[i]
        try:
            if "disk" in m:  # Storage DRS
                t = await move_disk(store, m["vm"], m["disk"], m["dst"])
            else:
                t = await migrate_vm(store, m["vm"], m["dst"], reason=TASK_REASON)
            out.append({"id": i, "vm": m["vm"], "dst": m["dst"], "task": t.id, "error": ""})
        except (Conflict, Invalid, NotFound) as e:
            out.append({"id": i, "vm": m["vm"], "dst": m["dst"], "task": "", "error": str(e)})
    return out
