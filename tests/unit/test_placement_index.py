"""place() with a LoadIndex picks exactly what the scan of every host picks, step after
step of a plan (load changes between placements), rules and exclusions included; and
StateCache's incremental parse gives what cluster_state gives."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from vigil.model import DiskSpec, HostInfo, HostState, Rule, VMSpec
from vigil.policy.placement import Load, LoadIndex, place
from vigil.store import keys as K
from vigil.store.etcd import Entry
from vigil.store.state import StateCache, cluster_state

STATES = (HostState.RUNNING, HostState.RUNNING, HostState.RUNNING, HostState.FAILED, HostState.MAINTENANCE)


@st.composite
def clusters(draw: st.DrawFn) -> tuple:
    n = draw(st.integers(1, 12))
    infos = {f"h{i}": HostInfo(name=f"h{i}", address=f"10.0.0.{i}", memory_mb=draw(st.sampled_from((512, 1024, 2048))),
                               cpus=draw(st.integers(1, 2)),
                               datastores=tuple(draw(st.sets(st.sampled_from(("ds1", "ds2")), min_size=1))))
             for i in range(n)}
    states = {h: draw(st.sampled_from(STATES)) for h in infos}
    load = {h: Load(draw(st.sampled_from((0, 256, 512, 1024))), draw(st.integers(0, 16)))
            for h in infos if draw(st.booleans())}
    vms = [VMSpec(name=f"v{j}", memory_mb=draw(st.sampled_from((128, 256, 512))), vcpus=draw(st.integers(1, 4)),
                  disks=(DiskSpec(name="d0", datastore=draw(st.sampled_from(("ds1", "ds2"))), path=f"v{j}/d0"),))
           for j in range(draw(st.integers(1, 25)))]
    rules = tuple(Rule(name=f"r{k}", kind=draw(st.sampled_from(("affinity", "anti-affinity"))),
                       vms=tuple(draw(st.sets(st.sampled_from([v.name for v in vms]), min_size=2, max_size=4))
                                 if len(vms) >= 2 else ()))
                  for k in range(draw(st.integers(0, 3))) if len(vms) >= 2)
    avoids = [frozenset(draw(st.sets(st.sampled_from(sorted(infos)), max_size=2))) for _ in vms]
    return infos, states, load, vms, rules, avoids


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_indexed_place_is_the_scan(c: tuple) -> None:
    infos, states, load0, vms, rules, avoids = c
    plain, indexed = dict(load0), LoadIndex(load0)
    where_p: dict[str, str] = {}
    where_i: dict[str, str] = {}
    for spec, avoid in zip(vms, avoids):
        got_p = place(spec, infos, states, plain, avoid, rules, where_p)
        got_i = place(spec, infos, states, indexed, avoid, rules, where_i)
        assert got_i == got_p
        host = got_p[0]
        if host is not None:
            plain[host] = plain.get(host, Load()).plus(spec)
            indexed[host] = indexed.get(host, Load()).plus(spec)
            where_p[spec.name] = where_i[spec.name] = host
    assert dict(indexed) == plain


def _entry(key: str, value: object, rev: int, lease: int = 0) -> Entry:
    return Entry(key, value, rev, 1, lease)


def test_state_cache_reparses_only_what_changed_and_matches() -> None:
    spec = VMSpec(name="a", memory_mb=256, vcpus=1, disks=(DiskSpec(name="d0", datastore="ds1", path="a/d0"),))
    snap1 = {K.VMS + "a": _entry(K.VMS + "a", spec.to_json(), 2),
             K.OWN + "a": _entry(K.OWN + "a", "h1", 3, lease=7),
             K.LEADER: _entry(K.LEADER, "h1", 4, lease=7),
             K.VMS + "bad": _entry(K.VMS + "bad", "not an object", 5)}
    cache = StateCache()
    s1 = cache.of(snap1, 5)
    assert s1 == cluster_state(snap1)
    snap2 = dict(snap1)
    snap2[K.OWN + "a"] = _entry(K.OWN + "a", "h2", 6, lease=8)
    del snap2[K.LEADER]
    s2 = cache.of(snap2, 6)
    assert s2 == cluster_state(snap2)
    assert s2.vms["a"] is s1.vms["a"]  # unchanged key: its record kept
    assert s2.owners["a"].host == "h2" and s2.leader is None and "bad" not in s2.vms
