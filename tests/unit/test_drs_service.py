"""DRS settings, recommendations and apply through the service layer (in-memory etcd)."""
from __future__ import annotations

from vigil.service import Invalid, NotFound
from vigil.service import drs
from vigil.store import keys as K
from test_service import mk, refused, running


async def test_set_drs_merges_validates_and_keeps_the_rest() -> None:
    s = await mk()
    got, rev = await drs.get_drs(s)
    assert got["mode"] == "off" and got["threshold"] == 3 and rev == 0
    await drs.set_drs(s, {"mode": "manual", "threshold": None})
    await drs.set_drs(s, {"threshold": 5})
    got, rev = await drs.get_drs(s)
    assert got["mode"] == "manual" and got["threshold"] == 5 and rev > 0
    await refused(s, Invalid, lambda: drs.set_drs(s, {"threshold": 9}))
    await refused(s, Invalid, lambda: drs.set_drs(s, {"mode": "sometimes"}))
    await refused(s, Invalid, lambda: drs.set_drs(s, {}))


async def test_apply_starts_the_recommended_migration_and_reports_a_stale_one() -> None:
    s = await mk({"h1": 2048, "h2": 2048})
    await running(s, "a", "h1")
    await running(s, "b", "h1")
    moves = [{"id": "a:h1:h2", "vm": "a", "src": "h1", "dst": "h2", "mandatory": False, "reason": "x",
              "imbalance_after": 0.0, "memory_mb": 128},
             {"id": "b:h1:h1", "vm": "b", "src": "h1", "dst": "h1", "mandatory": False, "reason": "x",
              "imbalance_after": 0.0, "memory_mb": 128}]
    await s.put(K.DRS, {"mode": "manual", "moves": moves, "reason": "r", "imbalance": 1.0})
    assert (await drs.recommendations(s))["moves"][0]["id"] == "a:h1:h2"
    await refused(s, NotFound, lambda: drs.apply_recommendations(s, ["nope"]))
    await refused(s, Invalid, lambda: drs.apply_recommendations(s, []))
    out = await drs.apply_recommendations(s, every=True)
    assert out[0]["task"] and not out[0]["error"]
    assert "already runs on h1" in out[1]["error"]
    t = (await s.get(K.TASKS + "a")).value
    assert t["dst"] == "h2" and t["reason"] == "drs"
