"""vigil.store.state: the one reading of a snapshot into typed records.

Well-formed values written the way the controller and the agents write them come back as
the records they were made from, with their revisions and leases; anything else under a
known prefix is left out and never raises. The readings the controller and the agents did
by hand before (kept here as ``legacy_*``) agree with the typed state on well-formed keys.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.model import Assignment, DatastoreSpec, HostInfo, Rule, Task, VMSpec, VMStatus
from vigil.store import keys as K
from vigil.store.etcd import Entry
from vigil.store.state import (AssignRecord, ClusterState, DiskStateRecord, FtRecord, FtReport, FtStat, HostRecord,
                               Leader, OwnerRecord, TaskRecord, VMRecord, cluster_state, read_assignment, read_leader)

names = st.text("abcxyz0123-", min_size=1, max_size=6)
hosts = st.sampled_from(["h1", "h2", "h3"])
revs = st.integers(1, 10_000)
leases = st.integers(0, 2**40)
json_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4) | st.floats(allow_nan=False)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                             max_size=4), max_leaves=8)


def entry(key: str, value: Any, rev: int = 1, lease: int = 0) -> Entry:
    return Entry(key=key, value=value, mod_revision=rev, version=1, lease=lease)


# -- well-formed records, and the values their writers put in etcd -------------------------------
host_infos = st.builds(HostInfo, name=hosts, address=st.just("10.0.0.1"), memory_mb=st.integers(1, 4096),
                       cpus=st.integers(1, 8), datastores=st.lists(names, max_size=2).map(tuple),
                       maintenance=st.booleans(), networks=st.lists(names, max_size=2).map(tuple))
assignments = st.builds(Assignment, host=hosts | st.just(""), gen=st.integers(0, 50), reason=st.text(max_size=6))
statuses = st.builds(VMStatus, host=hosts, state=st.sampled_from(["starting", "running", "stopped", "failed"]),
                     pid=st.integers(0, 9999), guest=st.sampled_from(["ok", "lost", "unknown"]))
tasks = st.builds(Task, id=names, kind=st.sampled_from(["migrate", "move-disk"]), vm=names, src=hosts, dst=hosts,
                  state=st.sampled_from(["queued", "running", "done", "failed"]))
rules = st.builds(Rule, name=names, kind=st.sampled_from(["affinity", "anti-affinity"]),
                  vms=st.lists(names, min_size=1, max_size=3).map(tuple))
valid_froms = st.none() | st.tuples(st.integers(0, 5), st.integers(0, 50))


@st.composite
def well_formed(draw: Any) -> tuple[dict[str, Entry], dict[str, dict[str, Any]]]:
    """A snapshot of well-formed keys, and the records cluster_state must read from it."""
    snap: dict[str, Entry] = {}
    want: dict[str, dict[str, Any]] = {a: {} for a in ("hosts", "alive", "host_states", "vms", "assignments",
                                                      "owners", "statuses", "tasks", "rules", "datastores", "ft",
                                                      "ft_acks", "ft_stats", "disk_states")}
    want_maint: set[str] = set()
    for name in draw(st.lists(names, max_size=4, unique=True)):
        rev, lease = draw(revs), draw(leases)
        kind = draw(st.sampled_from(sorted(want) + ["maintenance"]))
        if kind == "hosts":
            info = draw(host_infos)
            value, rec = asdict(info), HostRecord(info=info, rev=rev)
            value["datastores"], value["networks"] = list(info.datastores), list(info.networks)
        elif kind == "alive":
            value, rec = name, lease
        elif kind == "host_states":
            s = draw(st.sampled_from(["running", "failed", "isolated"]))
            value, rec = {"state": s, "since": 1.0, "reason": "r"}, s
        elif kind == "vms":
            spec = VMSpec(name=name, memory_mb=draw(st.integers(64, 512)))
            value, rec = spec.to_json(), VMRecord(spec=spec, rev=rev)
        elif kind == "assignments":
            a = draw(assignments)
            value, rec = a.__dict__, AssignRecord(assignment=a, rev=rev)
        elif kind == "owners":
            h = draw(hosts)
            value, rec = h, OwnerRecord(host=h, lease=lease, rev=rev)
        elif kind == "statuses":
            s = draw(statuses)
            value, rec = s.__dict__, s
        elif kind == "tasks":
            t = draw(tasks)
            value, rec = asdict(t), TaskRecord(task=t, rev=rev)
        elif kind == "rules":
            r = draw(rules)
            value, rec = {"name": r.name, "kind": r.kind, "vms": list(r.vms)}, r
        elif kind == "datastores":
            value, rec = {"name": name, "path": "/ds/" + name}, DatastoreSpec(name=name, path="/ds/" + name)
        elif kind == "ft":
            sec, epoch = draw(st.none() | hosts), draw(st.integers(0, 9))
            value, rec = {"secondary": sec, "epoch": epoch}, FtRecord(secondary=sec, epoch=epoch, rev=rev)
        elif kind == "ft_acks":
            h, epoch, seq = draw(hosts), draw(st.integers(0, 9)), draw(st.integers(-1, 99))
            value = {"host": h, "epoch": epoch, "seq": seq, "time": 1.0}
            rec = FtReport(host=h, epoch=epoch, seq=seq, lease=lease, rev=rev)
        elif kind == "ft_stats":
            sec, vf = draw(st.none() | hosts), draw(valid_froms)
            value = {"host": "h1", "secondary": sec, "epoch": 1, "state": "protected",
                     "valid_from": list(vf) if vf else None, "abandoned": 0}
            rec = FtStat(secondary=sec, valid_from=vf, rev=rev)
        elif kind == "disk_states":
            value = {"stale": {"d0": {"datastore": "ds1", "since": 1.0, "why": "lost"}}}
            rec = DiskStateRecord(value=value, rev=rev)
        else:
            value, rec = {}, None
        prefix = _PREFIX[kind]
        snap[prefix + name] = entry(prefix + name, value, rev, lease)
        if kind == "maintenance":
            want_maint.add(name)
        else:
            want[kind][name] = rec
    want["maintenance"] = want_maint  # type: ignore[assignment]
    return snap, want


_PREFIX = {"hosts": K.HOSTS, "alive": K.ALIVE, "host_states": K.HOSTSTATE, "maintenance": K.MAINTENANCE,
           "vms": K.VMS, "assignments": K.ASSIGN, "owners": K.OWN, "statuses": K.VMSTATUS, "tasks": K.TASKS,
           "rules": K.RULES, "datastores": K.DATASTORES, "ft": K.FT, "ft_acks": K.FTACK, "ft_rx": K.FTRX,
           "ft_stats": K.FTSTAT, "disk_states": K.DISKSTATE}


@settings(max_examples=150, deadline=None)
@given(well_formed())
def test_well_formed_snapshots_round_trip(case):
    snap, want = case
    s = cluster_state(snap)
    for attr, records in want.items():
        got = getattr(s, attr)
        if attr == "host_states":
            assert {n: r.state for n, r in got.items()} == records
        elif attr == "maintenance":
            assert got == frozenset(records)
        else:
            assert dict(got) == records, attr
    assert s.revision == max((e.mod_revision for e in snap.values()), default=0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(_PREFIX.values()) + [K.EVENTS, K.PREFIX, "/other/"]), names,
                          json_values, revs, leases), max_size=8))
def test_malformed_values_are_skipped_never_raise(items):
    snap = {p + n: entry(p + n, v, r, l) for p, n, v, r, l in items}
    s = cluster_state(snap)
    for attr, prefix in _PREFIX.items():
        got = getattr(s, attr)
        assert set(got) <= {k[len(prefix):] for k in snap if k.startswith(prefix)}
    # whatever survives is typed
    assert all(isinstance(r.host, str) for r in s.owners.values())
    assert all(isinstance(r.value, Mapping) for r in s.disk_states.values())
    assert all(isinstance(r.spec, VMSpec) for r in s.vms.values())
    assert all(isinstance(r.epoch, int) for r in s.ft.values())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(names, hosts, revs), min_size=1, max_size=8, unique_by=lambda t: t[0]))
def test_names_keep_the_snapshots_order(items):
    """Reconcile acts on its VMs in etcd's key order."""
    snap = {K.ASSIGN + n: entry(K.ASSIGN + n, {"host": h, "gen": 1, "reason": ""}, r) for n, h, r in items}
    assert list(cluster_state(snap).assignments) == [n for n, _, _ in items]


# -- the readings the controller and the agents did by hand agree ---------------------------------
def legacy_under(snap: dict[str, Entry], prefix: str) -> dict[str, Entry]:
    return {K.name_of(k, prefix): e for k, e in snap.items() if k.startswith(prefix)}


@settings(max_examples=150, deadline=None)
@given(well_formed())
def test_the_former_readings_agree_on_well_formed_keys(case):
    snap, _ = case
    s = cluster_state(snap)
    assert {h: HostInfo.from_json(e.value) for h, e in legacy_under(snap, K.HOSTS).items()} == \
        {h: r.info for h, r in s.hosts.items()}
    assert {h: e.lease for h, e in legacy_under(snap, K.ALIVE).items()} == dict(s.alive)
    assert {h: e.value.get("state") for h, e in legacy_under(snap, K.HOSTSTATE).items()} == \
        {h: r.state for h, r in s.host_states.items()}
    assert {n: Assignment(**e.value) for n, e in legacy_under(snap, K.ASSIGN).items()} == \
        {n: r.assignment for n, r in s.assignments.items()}
    assert {n: (e.value, e.mod_revision) for n, e in legacy_under(snap, K.OWN).items()} == \
        {n: (r.host, r.rev) for n, r in s.owners.items()}
    assert [Task.from_json(e.value) for e in legacy_under(snap, K.TASKS).values()] == \
        [r.task for r in s.tasks.values()]
    assert [Rule.from_json(e.value) for e in legacy_under(snap, K.RULES).values()] == list(s.rules.values())
    assert {n: (e.value.get("secondary"), int(e.value.get("epoch", 0)), e.mod_revision)
            for n, e in legacy_under(snap, K.FT).items()} == \
        {n: (r.secondary, r.epoch, r.rev) for n, r in s.ft.items()}
    assert {n: dict(e.value) for n, e in legacy_under(snap, K.DISKSTATE).items()} == \
        {n: dict(r.value) for n, r in s.disk_states.items()}


# -- single readings ------------------------------------------------------------------------------
def test_an_assignment_missing_fields_is_read_as_the_agent_read_it():
    assert read_assignment({"host": "h1"}) == Assignment(host="h1", gen=0, reason="")
    assert read_assignment({"gen": "3", "extra": 1}) == Assignment(host=None, gen=3, reason="")  # type: ignore[arg-type]
    assert read_assignment({"host": "", "gen": 4, "reason": "vm-component-protection"}).host == ""
    with pytest.raises(TypeError):
        read_assignment(None)


def test_a_spec_that_does_not_parse_is_skipped():
    snap = {K.VMS + "a": entry(K.VMS + "a", {"name": "a", "bogus": 1}),
            K.VMS + "b": entry(K.VMS + "b", VMSpec(name="b").to_json(), rev=7)}
    assert dict(cluster_state(snap).vms) == {"b": VMRecord(spec=VMSpec(name="b"), rev=7)}


def test_leader_and_keys_outside_the_layout():
    snap = {K.LEADER: entry(K.LEADER, "h2", rev=9, lease=77), K.EVENTS + "x": entry(K.EVENTS + "x", {}),
            "/elsewhere/vms/a": entry("/elsewhere/vms/a", VMSpec(name="a").to_json())}
    s = cluster_state(snap)
    assert s.leader == Leader(host="h2", lease=77, rev=9) and not s.vms
    assert read_leader(None) is None and read_leader(entry(K.LEADER, {"not": "a host"})) is None


def test_names_may_hold_slashes_as_before():
    snap = {K.VMSTATUS + "a/b": entry(K.VMSTATUS + "a/b", {"host": "h1", "state": "running"})}
    assert list(cluster_state(snap).statuses) == ["a/b"]


def test_ft_reports_and_stats():
    snap = {K.FTACK + "v": entry(K.FTACK + "v", {"host": "h2", "epoch": 3, "seq": 8}, rev=4, lease=5),
            K.FTRX + "v": entry(K.FTRX + "v", {"host": "h2", "epoch": 3, "seq": 9, "uri": "tcp:x:1"}, lease=5),
            K.FTSTAT + "v": entry(K.FTSTAT + "v", {"secondary": "h2", "valid_from": [3, "x"], "abandoned": 2}),
            K.FTSTAT + "w": entry(K.FTSTAT + "w", {"secondary": "h2", "valid_from": ["3", "7"]})}
    s = cluster_state(snap)
    assert s.ft_acks["v"] == FtReport(host="h2", epoch=3, seq=8, lease=5, rev=4)
    assert s.ft_rx["v"].uri == "tcp:x:1" and s.ft_rx["v"].seq == 9
    assert s.ft_stats["v"].valid_from is None and s.ft_stats["v"].abandoned == 2  # its rev still guards a failover
    assert s.ft_stats["w"].valid_from == (3, 7)


def test_a_disk_state_that_is_not_an_object_is_skipped_and_the_state_is_immutable():
    snap = {K.DISKSTATE + "v": entry(K.DISKSTATE + "v", ["x"]), K.DISKSTATE + "w": entry(K.DISKSTATE + "w", {"a": 1})}
    s = cluster_state(snap)
    assert list(s.disk_states) == ["w"]
    with pytest.raises(TypeError):
        s.disk_states["x"] = s.disk_states["w"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        s.revision = 3  # type: ignore[misc]
    assert isinstance(ClusterState().vms, type(s.vms))
