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


async def test_datastore_clusters_are_set_refused_listed_and_deleted() -> None:
    from dataclasses import asdict

    from vigil.model import DatastoreSpec
    from vigil.service import datastore_clusters as dsc

    s = await mk()
    await s.put(K.DATASTORES + "ds2", asdict(DatastoreSpec(name="ds2", path="/srv/ds2")))
    assert await dsc.set_cluster(s, "gold", ["ds2", "ds1"]) == {"name": "gold", "datastores": ["ds1", "ds2"]}
    await refused(s, NotFound, lambda: dsc.set_cluster(s, "x", ["ds9"]))
    await refused(s, Invalid, lambda: dsc.set_cluster(s, "silver", ["ds1"]))  # in gold already
    await running(s, "a", "h1")
    await s.put(K.LOAD + "h1", {"time": 1e12, "vms": {"a": {"cpu": 0.1, "memory_mb": 64, "disks": {
        "0": {"iops": 40.0, "latency_ms": 12.5}}}}, "datastores": {"ds1": {"size_mb": 1000, "used_mb": 250}}})
    figs = await dsc.datastore_figures(s)
    assert figs["ds1"] == {"cluster": "gold", "size_mb": 1000, "used_mb": 250, "iops": 40.0, "latency_ms": 12.5}
    assert figs["ds2"]["cluster"] == "gold" and figs["ds2"]["latency_ms"] is None
    got = await dsc.list_clusters(s)
    assert got[0]["name"] == "gold" and got[0]["latency_ms"] == 12.5 and got[0]["used_mb"] == 250
    await dsc.delete_cluster(s, "gold")
    assert await dsc.list_clusters(s) == []
    await refused(s, NotFound, lambda: dsc.delete_cluster(s, "gold"))


async def test_what_if_drs_names_the_disk_moves_storage_drs_would_make() -> None:
    from dataclasses import asdict

    from vigil.model import DatastoreSpec, HostInfo
    from vigil.service.admission import drs_what_if

    s = await mk()
    await s.put(K.DATASTORES + "ds2", asdict(DatastoreSpec(name="ds2", path="/srv/ds2")))
    for h in ("h1", "h2"):
        await s.put(K.HOSTS + h, asdict(HostInfo(name=h, address="10.0.0.1", memory_mb=1024, cpus=2,
                                                 datastores=("ds1", "ds2"), networks=("lan",))))
    await running(s, "a", "h1")
    await s.put(K.LOAD + "h1", {"time": 1e12, "vms": {"a": {"cpu": 0.1, "memory_mb": 64}},
                                "datastores": {"ds1": {"size_mb": 1000, "used_mb": 900},
                                               "ds2": {"size_mb": 1000, "used_mb": 100}}})
    d = await drs_what_if(s)
    assert [(m["vm"], m["src"], m["dst"]) for m in d["disk_moves"]] == [("a", "ds1", "ds2")]
    assert "90% full" in d["disk_moves"][0]["reason"]
