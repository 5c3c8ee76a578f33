"""Disks on two datastores: spec, command line, QEMU's block graph and the decisions of
agent and controller (pure logic, no etcd, no QEMU)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.cli import parse_disk
from vigil.hypervisor.qemu import VMPaths, build_argv
from vigil.model import Assignment, DiskSpec, SpecError, VMSpec
from vigil.policy import replicas as P
from vigil.policy.plan import AssignVM, MarkStale, PowerOffForRestart, plan
from vigil.policy.view import VMView

from test_policy import host, view

DS = {"ds1": "/srv/ds1", "ds2": "/srv/ds2", "ds3": "/srv/ds3"}


def rspec(name: str = "r1", replica: str = "ds2") -> VMSpec:
    return VMSpec(name=name, disks=(DiskSpec("disk0", "ds1", f"{name}/d.qcow2", 64, replica),
                                    DiskSpec("disk1", "ds3", f"{name}/e.qcow2", 64)))


def rvm(on: str | None, owner: str | None = None, stale: dict | None = None, rev: int = 0) -> VMView:
    spec = rspec()
    state = {"stale": {d: {"datastore": ds} for d, ds in (stale or {}).items()}} if stale else {}
    return VMView(spec=spec.without_stale(P.stale_map(state)), assignment=Assignment(host=on, gen=1) if on else None,
                  assign_rev=5 if on else 0, owner=owner, status=None, diskstate=state, diskstate_rev=rev)


# -- spec and command line ---------------------------------------------------------------
def test_a_replica_is_another_datastore_with_a_valid_name():
    rspec().validate()
    assert rspec().datastores == {"ds1", "ds2", "ds3"}
    for bad in ("ds1", "DS 2"):
        with pytest.raises(SpecError):
            rspec(replica=bad).validate()


def test_without_stale_keeps_only_the_good_copy():
    s = rspec()
    assert s.without_stale({}) is s
    assert s.without_stale({"disk0": "ds1"}).disks[0] == DiskSpec("disk0", "ds2", "r1/d.qcow2", 64)
    assert s.without_stale({"disk0": "ds2"}).datastores == {"ds1", "ds3"}
    assert s.without_stale({"disk1": "ds3"}) == s  # a single-copy disk has nothing to drop


def test_disk_option_takes_a_replica():
    assert parse_disk("v", 0, "ds1+ds2:64") == DiskSpec("disk0", "ds1", "v/disk0.qcow2", 64, "ds2")
    assert parse_disk("v", 1, "ds1:8:x/y.qcow2") == DiskSpec("disk1", "ds1", "x/y.qcow2", 8)
    for bad in ("ds1+ds2+ds3:64", "ds1+ds2", "ds1+ds2:big"):
        with pytest.raises(SpecError):
            parse_disk("v", 0, bad)


# -- QEMU's block graph ------------------------------------------------------------------
def _blockdevs(argv: list[str]) -> list[dict]:
    return [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-blockdev"]


def test_a_replicated_disk_is_qcow2_over_a_quorum_of_files():
    quorum, single = _blockdevs(build_argv(rspec(), VMPaths.for_vm(Path("/r"), "r1"), "tcg", DS))
    assert quorum["driver"] == "qcow2" and quorum["node-name"] == "disk0"
    q = quorum["file"]
    assert (q["driver"], q["vote-threshold"], q["read-pattern"]) == ("quorum", 1, "fifo")
    assert [(c["driver"], c["filename"]) for c in q["children"]] == [
        ("file", "/srv/ds1/r1/d.qcow2"), ("file", "/srv/ds2/r1/d.qcow2")]
    assert single["file"] == {"driver": "file", "filename": "/srv/ds3/r1/e.qcow2", "node-name": "disk1-file"}


def test_a_stale_copy_is_left_out_of_the_quorum():
    argv = build_argv(rspec(), VMPaths.for_vm(Path("/r"), "r1"), "tcg", DS, stale={"disk0": "ds1"})
    children = _blockdevs(argv)[0]["file"]["children"]
    assert [(c["node-name"], c["filename"]) for c in children] == [("disk0-c1", "/srv/ds2/r1/d.qcow2")]


# -- the agent's decisions ---------------------------------------------------------------
def test_a_lost_copy_is_dropped_only_while_the_other_is_reachable():
    s = rspec()
    up = {"ds1": True, "ds2": True, "ds3": True}
    assert P.copies_to_drop(s, {}, up) == []
    assert P.copies_to_drop(s, {}, up | {"ds1": False}) == [("disk0", "ds1")]
    assert P.copies_to_drop(s, {}, up | {"ds1": False, "ds2": False}) == []  # nothing good left to keep
    assert P.copies_to_drop(s, {"disk0": "ds1"}, up | {"ds1": False}) == []  # dropped already
    assert P.copies_to_drop(s, {}, up | {"ds3": False}) == []  # a single copy is VMCP's


def test_a_stale_copy_is_resynced_once_both_datastores_are_reachable():
    s = rspec()
    up = {"ds1": True, "ds2": True, "ds3": True}
    assert P.copies_to_resync(s, {}, up) == []
    assert P.copies_to_resync(s, {"disk0": "ds1"}, up) == ["disk0"]
    assert P.copies_to_resync(s, {"disk0": "ds1"}, up | {"ds1": False}) == []


@given(st.dictionaries(st.sampled_from(["ds1", "ds2", "ds3"]), st.booleans()),
       st.sampled_from([{}, {"disk0": "ds1"}, {"disk0": "ds2"}]))
def test_never_every_good_copy_is_dropped(reachable: dict, stale: dict):
    s = rspec()
    drops = P.copies_to_drop(s, stale, reachable)
    for disk, good in P.in_sync(s, stale).items():
        assert len([1 for d, ds in drops if d == disk]) < len(good)
        assert all(ds in good for d, ds in drops if d == disk)


def test_diskstate_values():
    st0 = P.mark_stale(None, "disk0", "ds1", 5.0, "lost")
    assert P.stale_map(st0) == {"disk0": "ds1"}
    assert P.mark_stale(st0, "disk0", "ds2", 6.0, "again") == st0  # the first stale copy stays the stale one
    done = P.mark_in_sync({**st0, "resync": {"done": 1}, "last_error": "x"}, ["disk0"])
    assert P.stale_map(done) == {} and "resync" not in done and "last_error" not in done


# -- the controller's decisions ----------------------------------------------------------
def test_one_lost_copy_is_no_reason_to_move_the_vm():
    hosts = [host("h1", ds=("ds1", "ds3")), host("h2", ds=("ds1", "ds2", "ds3"))]
    acts = plan(view(hosts, [rvm("h1", owner="h1")]))
    assert not [a for a in acts if isinstance(a, (PowerOffForRestart, AssignVM, MarkStale))]


def test_both_copies_lost_on_its_host_is_component_protection():
    hosts = [host("h1", ds=("ds3",)), host("h2", ds=("ds1", "ds2", "ds3"))]
    acts = plan(view(hosts, [rvm("h1", owner="h1")]))
    assert [a.host for a in acts if isinstance(a, PowerOffForRestart)] == ["h1"]


def test_a_copy_no_host_reaches_is_declared_stale_before_a_restart():
    hosts = [host("h1", ds=("ds1", "ds3")), host("h2", ds=("ds1", "ds3"))]
    acts = plan(view(hosts, [rvm(None, rev=7)]))
    marks = [a for a in acts if isinstance(a, MarkStale)]
    assert [(m.disk, m.datastore, m.expect_rev) for m in marks] == [("disk0", "ds2", 7)]
    assert P.stale_map(marks[0].state) == {"disk0": "ds2"}
    assert not [a for a in acts if isinstance(a, AssignVM)]
    # next cycle: the VM is placed on a host that reaches its good copy
    acts = plan(view(hosts, [rvm(None, stale={"disk0": "ds2"}, rev=8)]))
    assert [a.host for a in acts if isinstance(a, AssignVM)] in (["h1"], ["h2"])


def test_a_running_vm_copies_are_left_to_its_agent():
    hosts = [host("h1", ds=("ds1", "ds3"))]
    acts = plan(view(hosts, [rvm("h1", owner="h1")]))
    assert not [a for a in acts if isinstance(a, MarkStale)]


def test_no_stale_mark_while_no_host_runs():
    hosts = [host("h1", alive=False, hb_age=30.0, ping=False, ds=("ds1",))]
    acts = plan(view(hosts, [replace(rvm(None), owner=None)]))
    assert not [a for a in acts if isinstance(a, MarkStale)]
