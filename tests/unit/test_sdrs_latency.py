"""Storage DRS's I/O rule (vigil.policy.sdrs_latency) and datastore clusters
(vigil.policy.datastore_clusters), as sdrs_round runs them."""
from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.model import SpecError
from vigil.policy.datastore_clusters import datastore_clusters, peers
from vigil.policy.drs_settings import DrsSettings, drs_settings
from vigil.policy.sdrs import sdrs_round
from vigil.policy.sdrs_latency import latency
from vigil.sim.drs_cluster import cluster, host_view, vm_view

AUTO = DrsSettings(mode="automatic")
DS = ("ds1", "ds2", "ds3")


def view_of(disks: dict[str, tuple[str, float, float]], clusters: dict | None = None, t: float = 100.0,
            space: dict | None = None, ft: tuple[str, ...] = ()):
    """``disks``: VM -> (its disk's datastore, op/s, ms), every VM on h0."""
    vms = []
    for name, (ds, _, _) in sorted(disks.items()):
        v = vm_view(name, "h0", ft=name in ft)
        vms.append(replace(v, spec=replace(v.spec, disks=(replace(v.spec.disks[0], datastore=ds, size_mb=1024),))))
    rec = {"time": t, "vms": {n: {"cpu": 0.1, "memory_mb": 100,
                                  "disks": {"0": {"iops": i, "latency_ms": ms}}} for n, (_, i, ms) in disks.items()},
           "datastores": {d: {"size_mb": 10240, "used_mb": u} for d, u in (space or {}).items()}}
    v = cluster([host_view("h0", datastores=DS), host_view("h1", datastores=DS)], vms, {})
    sets = {"datastore-clusters": {"clusters": clusters}} if clusters else {}
    return replace(v, loads=MappingProxyType({"h0": rec}), settings=MappingProxyType(sets))


def test_setting_defaults_to_vspheres_15_ms_and_refuses_nonsense():
    assert DrsSettings().latency_threshold_ms == 15.0
    assert drs_settings({"latency_threshold_ms": 30}).latency_threshold_ms == 30.0
    with pytest.raises(SpecError):
        drs_settings({"latency_threshold_ms": 0.1})


def test_datastore_latency_is_weighted_by_operations():
    lat = latency(view_of({"a": ("ds1", 300, 20.0), "b": ("ds1", 100, 4.0), "c": ("ds2", 50, 1.0)}))
    assert lat["ds1"].latency_ms == pytest.approx(16.0) and lat["ds1"].iops == 400
    assert [d.vm for d in lat["ds1"].disks] == ["a", "b"]  # busiest first


def test_a_slow_datastore_gets_its_busiest_disk_moved_to_the_fastest():
    v = view_of({"a": ("ds1", 300, 20.0), "b": ("ds1", 100, 20.0), "c": ("ds2", 50, 8.0), "d": ("ds3", 50, 2.0)})
    moves, why = sdrs_round(v, AUTO)
    assert [(m.vm, m.src, m.dst) for m in moves] == [("a", "ds1", "ds3")]
    assert "for latency" in why and "20.0 ms" in moves[0].reason


def test_under_the_threshold_or_without_io_nothing_moves():
    assert sdrs_round(view_of({"a": ("ds1", 300, 14.0), "b": ("ds2", 10, 1.0)}), AUTO)[0] == []
    assert sdrs_round(view_of({"a": ("ds1", 0.5, 80.0)}), AUTO)[0] == []  # half an op a second: noise


def test_records_just_after_a_disk_move_are_not_trusted():
    v = view_of({"a": ("ds1", 300, 20.0), "d": ("ds3", 50, 2.0)}, t=100.0)
    assert sdrs_round(v, AUTO, since=50.0)[0] == []  # written 50 s after the move: still settling
    assert sdrs_round(v, AUTO, since=30.0)[0] != []


def test_no_destination_under_the_threshold_by_the_margin_no_move():
    v = view_of({"a": ("ds1", 300, 20.0), "c": ("ds2", 50, 14.0), "d": ("ds3", 50, 13.6)})  # aim: 13.5 ms
    moves, why = sdrs_round(v, AUTO)
    assert moves == [] and "no disk on it can move" in why


def test_cooldown_ft_and_a_full_destination_are_kept():
    v = view_of({"a": ("ds1", 300, 20.0), "b": ("ds1", 100, 20.0), "d": ("ds3", 50, 2.0)}, ft=("a",))
    assert [m.vm for m in sdrs_round(v, AUTO)[0]] == ["b"]
    assert sdrs_round(v, AUTO, recent={"b": 10.0})[0] == []
    full = view_of({"a": ("ds1", 300, 20.0), "d": ("ds3", 50, 2.0)}, space={"ds1": 100, "ds2": 9000, "ds3": 7000})
    assert sdrs_round(full, AUTO)[0] == []  # ds3 past the space aim (72 %) with a's GiB


def test_datastore_clusters_parse_and_refuse():
    assert datastore_clusters({"clusters": {"gold": ["ds2", "ds1"]}}) == {"gold": ("ds1", "ds2")}
    for bad in ({"clusters": {"gold": []}}, {"clusters": {"a": ["ds1"], "b": ["ds1"]}}, {"clusters": {"A B": ["x"]}}):
        with pytest.raises(SpecError):
            datastore_clusters(bad)
    c = {"gold": ("ds1", "ds2"), "silver": ("ds3",)}
    assert peers(c, "ds1", DS) == ("ds2",) and peers(c, "ds3", DS) == () and peers(c, "ds9", DS) == ()
    assert peers({}, "ds1", DS) == ("ds2", "ds3")


def test_moves_stay_within_the_datastore_cluster():
    disks = {"a": ("ds1", 300, 20.0), "c": ("ds2", 50, 14.0), "d": ("ds3", 50, 2.0)}
    assert [m.dst for m in sdrs_round(view_of(disks), AUTO)[0]] == ["ds3"]
    clustered = view_of(disks, clusters={"gold": ["ds1", "ds2"], "silver": ["ds3"]})
    assert sdrs_round(clustered, AUTO)[0] == []  # ds2 is over the aim, ds3 in another cluster
    alone = view_of({"d": ("ds3", 300, 40.0), "a": ("ds1", 10, 1.0)}, clusters={"gold": ["ds1", "ds2"], "s": ["ds3"]})
    moves, why = sdrs_round(alone, AUTO)
    assert moves == [] and "no other datastore in its cluster" in why
    space = {"ds1": 9000, "ds2": 5000, "ds3": 0}
    full = view_of({"a": ("ds1", 1, 1.0)}, clusters={"gold": ["ds1", "ds2"], "silver": ["ds3"]}, space=space)
    assert [m.dst for m in sdrs_round(full, AUTO)[0]] == ["ds2"]  # the space rule too, though ds3 is emptier


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.tuples(st.sampled_from(DS), st.floats(0, 500),
                                                                st.floats(0, 60)), min_size=1),
       st.sampled_from([None, {"gold": ["ds1", "ds2"]}, {"gold": ["ds1", "ds3"], "silver": ["ds2"]}]),
       st.integers(1, 5))
def test_a_round_moves_at_most_one_disk_per_slow_datastore_within_its_cluster(disks, clusters, threshold):
    s = replace(AUTO, threshold=threshold)
    v = view_of(disks, clusters=clusters)
    moves, _ = sdrs_round(v, s)
    lat = latency(v)
    srcs = [m.src for m in moves]
    assert len(srcs) == len(set(srcs)) and len(moves) <= s.max_moves
    assert len({m.vm for m in moves}) == len(moves)
    for m in moves:
        assert lat[m.src].latency_ms > s.latency_threshold_ms
        assert m.dst in peers(datastore_clusters({"clusters": clusters} if clusters else None), m.src, DS)
        after = lat[m.dst].latency_ms if m.dst in lat and lat[m.dst].iops >= 1.0 else 0.0
        assert after <= s.latency_threshold_ms * (1 - s.margin)
    again = sdrs_round(v, s, recent={m.vm: 0.0 for m in moves})[0]
    assert not {m.vm for m in again} & {m.vm for m in moves}  # no VM moved twice within its cool-down
