"""Fault Tolerance decisions without QEMU or etcd: the output gate, the controller's
reading of the FT keys, failover versus restart, secondary placement and maintenance."""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.controller import loop as controller_loop
from vigil.hypervisor.qemu import OutputGate
from vigil.model import HostState, Rule, VMStatus
from vigil.policy.hoststate import classify_host, vm_lost_on
from vigil.policy.plan import (AssignVM, SetHostState, SetSecondary, StartMigration, Waiting, host_stopped, plan)
from vigil.policy.view import ClusterView, FtView, HostView, VMView
from vigil.store import keys as K
from vigil.store.etcd import Entry
from vigil.store.state import cluster_state

from vigil.policy.plan import FT_SUSPECT_S
from test_policy import T, host, host_strategy, info, running, view, vm


# -- helpers ------------------------------------------------------------------------------
def failed(name: str, **kw) -> HostView:
    """A host that is silent and answers no ping: FAILED this cycle."""
    return host(name, alive=False, hb_age=4, ping=False, **kw)


def ft(v: VMView, secondary: str | None, epoch: int = 3, ack: int = -1, valid_from: int | None = None,
       rev: int = 42) -> VMView:
    return replace(v, ft=FtView(secondary=secondary, epoch=epoch, ack_seq=ack, valid_from=valid_from, rev=rev,
                                stat_rev=rev + 1))


def cluster(hosts: list[HostView], vms: list[VMView], rules: tuple[Rule, ...] = ()) -> ClusterView:
    return ClusterView(now=100.0, hosts={h.name: h for h in hosts}, vms={v.spec.name: v for v in vms}, timing=T,
                       rules=rules)


def of(kind: type, acts: list) -> list:
    return [a for a in acts if isinstance(a, kind)]


def entry(key: str, value: dict, rev: int = 1) -> Entry:
    return Entry(key=key, value=value, mod_revision=rev, version=1, lease=0)


# -- OutputGate ---------------------------------------------------------------------------
def written(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return text.split("\n")[:-1]


def test_open_gate_passes_lines_through(tmp_path):
    g = OutputGate(tmp_path / "guest.log")
    g.add("a")
    g.add("b")
    assert written(g.path) == ["a", "b"] and g.pending == 0 and g.released == g.received == 2


def test_held_gate_keeps_lines_and_a_cut_releases_exactly_up_to_it(tmp_path):
    g = OutputGate(tmp_path / "guest.log")
    g.add("before")
    g.hold()
    for x in ("1", "2", "3"):
        g.add(x)
    assert written(g.path) == ["before"] and g.pending == 3
    g.release(3)  # cut counts every line received: "before", "1", "2"
    assert written(g.path) == ["before", "1", "2"] and g.pending == 1
    g.release(2)  # an older cut releases nothing again
    assert written(g.path) == ["before", "1", "2"] and g.pending == 1
    g.add("4")  # still held
    assert written(g.path) == ["before", "1", "2"] and g.pending == 2


def test_cut_beyond_what_was_received_is_clamped(tmp_path):
    g = OutputGate(tmp_path / "guest.log")
    g.hold()
    g.add("x")
    g.release(10)
    assert written(g.path) == ["x"] and g.released == 1 and g.pending == 0
    g.add("y")  # the oversized cut gives no credit to lines received later
    assert written(g.path) == ["x"] and g.pending == 1


def test_open_flushes_everything_and_lets_lines_through_again(tmp_path):
    g = OutputGate(tmp_path / "guest.log")
    g.hold()
    g.add("1")
    g.add("2")
    g.open()
    assert written(g.path) == ["1", "2"] and g.pending == 0 and not g.held
    g.add("3")
    assert written(g.path) == ["1", "2", "3"]


gate_ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.text(alphabet="abcxyz 0123456789", max_size=6)),
    st.tuples(st.just("hold"), st.none()),
    st.tuples(st.just("open"), st.none()),
    st.tuples(st.just("release"), st.integers(-2, 40)),
), max_size=40)


@settings(max_examples=80, deadline=None)
@given(gate_ops)
def test_gate_writes_a_prefix_in_order_never_twice_and_never_past_the_cut_while_held(ops):
    with tempfile.TemporaryDirectory() as d:
        g = OutputGate(Path(d) / "guest.log")
        added: list[str] = []
        allowed = 0  # lines the outside may have seen: open flow, released cuts, open()
        for op, arg in ops:
            if op == "add":
                added.append(arg)
                g.add(arg)
                if not g.held:
                    allowed = len(added)
            elif op == "hold":
                g.hold()
            elif op == "open":
                g.open()
                allowed = len(added)
            else:
                g.release(arg)
                allowed = max(allowed, min(arg, len(added)))
            out = written(g.path)
            assert out == added[:len(out)]  # a prefix, in order, no line twice
            assert len(out) == allowed  # never beyond the largest cut while held; nothing lost either
            assert g.pending == len(added) - len(out) and g.received == len(added)


# -- ft_view: the controller's reading of ft/, ftack/, ftstat/ ----------------------------------
def ft_view(ft: Entry, ack: Entry | None, stat: Entry | None) -> FtView:
    """The controller's ft_view over these entries as the store reads them (cluster_state)."""
    snap = {K.PREFIX + e.key: replace(e, key=K.PREFIX + e.key) for e in (ft, ack, stat) if e is not None}
    s = cluster_state(snap)
    return controller_loop.ft_view(s.ft["a"], s.ft_acks.get("a"), s.ft_stats.get("a"))


FT_KEY = entry("ft/a", {"secondary": "h2", "epoch": 3}, rev=42)


def ack(host: str = "h2", epoch: int = 3, seq: int = 10) -> Entry:
    return entry("ftack/a", {"host": host, "epoch": epoch, "seq": seq, "time": 1.0})


def stat(secondary: str | None = "h2", vf: list | None = None) -> Entry:
    return entry("ftstat/a", {"host": "h1", "secondary": secondary, "epoch": 3, "state": "protected",
                              "valid_from": vf if vf is not None else [3, 7]})


def test_ft_view_reads_the_current_secondary_and_epoch():
    f = ft_view(FT_KEY, ack(), stat())
    assert f == FtView(secondary="h2", epoch=3, ack_seq=10, valid_from=7, rev=42, stat_rev=1)
    assert f.can_fail_over


@pytest.mark.parametrize("a", [ack(host="h3"), ack(epoch=2), ack(epoch=4), None], ids=["other-host", "old-epoch",
                                                                                      "new-epoch", "absent"])
def test_ft_view_ignores_an_ack_from_another_host_or_epoch(a):
    f = ft_view(FT_KEY, a, stat())
    assert f.ack_seq == -1 and f.valid_from == 7 and not f.can_fail_over


@pytest.mark.parametrize("s", [stat(vf=[2, 7]), stat(vf=[4, 7]), stat(secondary="h3"), stat(secondary=None),
                               entry("ftstat/a", {"secondary": "h2", "valid_from": None}), None],
                         ids=["old-epoch", "new-epoch", "other-secondary", "no-secondary", "no-valid-from", "absent"])
def test_ft_view_ignores_valid_from_of_another_epoch_or_secondary(s):
    f = ft_view(FT_KEY, ack(), s)
    assert f.valid_from is None and f.ack_seq == 10 and not f.can_fail_over


@pytest.mark.parametrize("seq,ok", [(6, False), (7, True), (8, True)])
def test_can_fail_over_only_when_the_ack_reaches_valid_from(seq, ok):
    assert ft_view(FT_KEY, ack(seq=seq), stat(vf=[3, 7])).can_fail_over is ok


def test_no_secondary_never_fails_over():
    assert not FtView(secondary=None, epoch=3, ack_seq=10, valid_from=7).can_fail_over
    f = ft_view(entry("ft/a", {"secondary": None, "epoch": 4}), ack(host="h2", epoch=4), stat(secondary=None, vf=[4, 1]))
    assert f.secondary is None and not f.can_fail_over


@settings(max_examples=80, deadline=None)
@given(sec=st.sampled_from(["h2", "h3", None]), epoch=st.integers(0, 3),
       a=st.none() | st.tuples(st.sampled_from(["h2", "h3"]), st.integers(0, 3), st.integers(-1, 20)),
       s=st.none() | st.tuples(st.sampled_from(["h2", "h3", None]),
                               st.none() | st.tuples(st.integers(0, 3), st.integers(0, 20))))
def test_ft_view_fails_over_only_to_a_checkpoint_of_this_secondary_and_epoch(sec, epoch, a, s):
    fe = entry("ft/a", {"secondary": sec, "epoch": epoch}, rev=9)
    ae = entry("ftack/a", {"host": a[0], "epoch": a[1], "seq": a[2]}) if a else None
    se = entry("ftstat/a", {"secondary": s[0], "valid_from": list(s[1]) if s[1] else None}) if s else None
    f = ft_view(fe, ae, se)
    ack_ok = a is not None and a[0] == sec and a[1] == epoch
    vf_ok = s is not None and s[1] is not None and s[0] == sec and s[1][0] == epoch
    assert f.ack_seq == (a[2] if ack_ok else -1)  # type: ignore[index]
    assert f.valid_from == (s[1][1] if vf_ok else None)  # type: ignore[index]
    assert f.can_fail_over == (sec is not None and ack_ok and vf_ok and a[2] >= s[1][1])  # type: ignore[index]
    assert (f.secondary, f.epoch, f.rev) == (sec, epoch, 9)


# -- plan(): failover or restart ----------------------------------------------------------------
def test_primary_failed_and_valid_checkpoint_fails_over_to_the_secondary():
    # h3 has the most free memory: placement alone would choose it
    hosts = [failed("h1"), host("h2"), host("h3", mem=8192)]
    a = ft(vm("a", "h1", owner="h1"), "h2", epoch=3, ack=10, valid_from=7)
    acts = plan(cluster(hosts, [a]))
    got = of(AssignVM, acts)
    assert len(got) == 1
    x = got[0]
    assert (x.vm, x.host, x.kind, x.ft_epoch) == ("a", "h2", "ft-failover", 3)
    assert (x.gen, x.expect_rev, x.expect_owner) == (2, 5, "h1")  # takes the key from the failed host
    assert x.ft_stat_rev == 43  # and expects no newer valid_from from the primary
    assert "checkpoint 10" in x.reason
    assert not of(SetSecondary, acts)  # re-protection waits for the next cycle (the ft key is reset)


def test_a_stopped_primary_host_hands_over_before_its_lease_runs_out():
    """Heartbeat silent >= FT_SUSPECT_S and no ping: the FT VM goes to its secondary while
    the host's lease still lives (the takeover takes the ownership key from it); a plain VM
    on the same host waits for the failure verdict."""
    gone = host("h1", hb_age=FT_SUSPECT_S + 0.1, ping=False)
    plain = vm("p", "h1", owner="h1")
    a = ft(replace(vm("a", "h1", owner="h1")), "h2", ack=10, valid_from=7)
    acts = plan(cluster([gone, host("h2"), host("h3")], [a, plain]))
    got = of(AssignVM, acts)
    assert [(x.vm, x.host, x.kind, x.expect_owner, x.ft_stat_rev) for x in got] == [("a", "h2", "ft-failover", "h1", 43)]
    # next cycle, a new secondary: never on the stopped host, though its lease still lives
    moved = ft(vm("a", "h2", owner="h2"), None, ack=-1)
    placed = of(SetSecondary, plan(cluster([host("h1", hb_age=FT_SUSPECT_S + 0.1, ping=False, mem=8192), host("h2"),
                                            host("h3")], [moved])))
    assert [x.host for x in placed] == ["h3"]
    for quiet in (host("h1", hb_age=FT_SUSPECT_S + 0.1, ping=True), host("h1", hb_age=0.5, ping=False),
                  host("h1", hb_age=FT_SUSPECT_S + 0.1, ping=None)):
        assert not of(AssignVM, plan(cluster([quiet, host("h2"), host("h3")], [a, plain])))
    # no valid checkpoint: no early hand-over (a restart needs the failure verdict)
    assert not of(AssignVM, plan(cluster([gone, host("h2")], [ft(vm("a", "h1", owner="h1"), "h2", ack=5,
                                                                    valid_from=7)])))


def test_failover_that_would_break_an_anti_affinity_rule_is_a_restart_elsewhere():
    hosts = [failed("h1"), host("h2"), host("h3")]
    a = ft(vm("a", "h1", owner="h1"), "h2", epoch=3, ack=10, valid_from=7)
    b = running("b", "h2")
    acts = plan(cluster(hosts, [a, b], rules=(Rule("apart", "anti-affinity", ("a", "b")),)))
    assert [(x.vm, x.host, x.kind) for x in of(AssignVM, acts)] == [("a", "h3", "restart")]


def test_failover_with_ack_exactly_at_valid_from():
    hosts = [failed("h1"), host("h2"), host("h3", mem=8192)]
    acts = plan(cluster(hosts, [ft(vm("a", "h1"), "h2", ack=7, valid_from=7)]))
    assert [(x.host, x.kind) for x in of(AssignVM, acts)] == [("h2", "ft-failover")]


@pytest.mark.parametrize("ack_seq,valid_from", [(6, 7), (-1, 7), (10, None), (-1, None)])
def test_invalid_checkpoint_restarts_elsewhere(ack_seq, valid_from):
    hosts = [failed("h1"), host("h2"), host("h3", mem=8192)]
    a = ft(vm("a", "h1", owner="h1"), "h2", epoch=3, ack=ack_seq, valid_from=valid_from)
    got = of(AssignVM, plan(cluster(hosts, [a])))
    assert len(got) == 1
    x = got[0]
    assert (x.kind, x.host, x.ft_epoch, x.gen, x.expect_owner) == ("restart", "h3", 3, 2, "h1")


def test_invalid_checkpoint_on_the_only_survivor_is_an_ordinary_restart_there():
    # placement may choose the standby's host; the VM then boots afresh, never from the standby
    hosts = [failed("h1"), host("h2")]
    got = of(AssignVM, plan(cluster(hosts, [ft(vm("a", "h1"), "h2", ack=3, valid_from=7)])))
    assert [(x.host, x.kind, x.ft_epoch) for x in got] == [("h2", "restart", 3)]


@pytest.mark.parametrize("h2", [failed("h2"),
                                host("h2", alive=False, hb_age=0.5),  # partitioned
                                host("h2", alive=False, hb_age=3, ping=True)],  # agent down
                         ids=["failed", "partitioned", "agent-down"])
def test_secondary_host_not_running_means_restart_not_failover(h2):
    """A failed secondary host: restart at once. One that may come back (its agent cut from
    etcd a moment): wait for it up to FT_SECONDARY_WAIT_S, then restart."""
    from vigil.policy.plan import FT_SECONDARY_WAIT_S

    hosts = [failed("h1"), h2, host("h3")]
    a = ft(vm("a", "h1"), "h2", ack=10, valid_from=7)
    acts = plan(cluster(hosts, [a]))
    if h2.alive is False and h2.hb_age is not None and h2.hb_age < 3:  # partitioned
        waiting = [w for w in of(Waiting, acts) if w.deadline is not None]
        assert not of(AssignVM, acts) and waiting[0].deadline == 100.0 + FT_SECONDARY_WAIT_S
    elif h2.ping:  # agent down
        assert not of(AssignVM, acts) and of(Waiting, acts)[0].deadline is not None
    else:
        assert [(x.host, x.kind) for x in of(AssignVM, acts)] == [("h3", "restart")]
        return
    late = replace(cluster(hosts, [a]), now=200.0, ft_waits={"a": 115.0})
    got = of(AssignVM, plan(late))
    assert [(x.host, x.kind, x.ft_epoch) for x in got] == [("h3", "restart", 3)]


def test_failover_waits_while_another_live_host_owns_the_vm():
    hosts = [failed("h1"), host("h2"), host("h3")]
    acts = plan(cluster(hosts, [ft(vm("a", "h1", owner="h3"), "h2", ack=10, valid_from=7)]))
    assert not of(AssignVM, acts) and any(isinstance(w, Waiting) and "owned by h3" in w.reason for w in acts)


def test_ft_vm_whose_primary_runs_is_left_alone():
    hosts = [host("h1"), host("h2")]
    acts = plan(cluster(hosts, [ft(running("a", "h1"), "h2", ack=10, valid_from=7)]))
    assert not of(AssignVM, acts) and not of(SetSecondary, acts) and not of(Waiting, acts)


# -- plan(): secondaries -------------------------------------------------------------------------
def test_ft_vm_without_secondary_gets_one_on_another_running_host():
    hosts = [host("h1", mem=8192), host("h2"), failed("h3", mem=16384)]
    acts = plan(cluster(hosts, [ft(running("a", "h1"), None, epoch=4, rev=77)]))
    sec = of(SetSecondary, acts)
    assert len(sec) == 1
    s = sec[0]
    assert (s.vm, s.host, s.epoch, s.expect_rev) == ("a", "h2", 5, 77)  # never its primary, never a failed host
    assert "no secondary" in s.reason


def test_secondary_on_a_failed_host_is_replaced():
    hosts = [host("h1"), failed("h2"), host("h3")]
    acts = plan(cluster(hosts, [ft(running("a", "h1"), "h2", epoch=6, ack=10, valid_from=7, rev=88)]))
    assert [(s.vm, s.host, s.epoch, s.expect_rev) for s in of(SetSecondary, acts)] == [("a", "h3", 7, 88)]
    assert "secondary h2 failed" in of(SetSecondary, acts)[0].reason
    assert not of(AssignVM, acts)  # the primary still runs


def test_secondary_on_the_primary_host_is_replaced():
    hosts = [host("h1", mem=8192), host("h2")]
    acts = plan(cluster(hosts, [ft(running("a", "h1"), "h1", epoch=2)]))
    assert [(s.host, s.epoch) for s in of(SetSecondary, acts)] == [("h2", 3)]


def test_secondary_avoids_an_anti_affinity_partner_host():
    hosts = [host("h1"), host("h2", mem=8192), host("h3")]
    rule = Rule("apart", "anti-affinity", ("a", "b"))
    vms = [ft(running("a", "h1"), None), running("b", "h2")]
    acts = plan(cluster(hosts, vms, rules=(rule,)))
    assert [(s.vm, s.host) for s in of(SetSecondary, acts)] == [("a", "h3")]  # h2 has more room but runs b


def test_no_room_for_a_secondary_waits():
    hosts = [host("h1", mem=1024), host("h2", mem=256), failed("h3", mem=8192)]
    acts = plan(cluster(hosts, [ft(running("a", "h1", mem=512), None)]))
    assert not of(SetSecondary, acts)
    w = [x for x in acts if isinstance(x, Waiting) and x.vm == "a"]
    assert len(w) == 1 and w[0].reason.startswith("FT needs a secondary")
    # alone in the cluster: nowhere but its own host
    acts = plan(cluster([host("h1")], [ft(running("a", "h1"), None)]))
    assert any(isinstance(x, Waiting) and "FT needs a secondary" in x.reason for x in acts)


def test_a_secondary_memory_counts_on_its_host():
    # h2 (512 MiB) looks the emptiest by primaries alone, but a's secondary fills 384 of it
    hosts = [host("h1", mem=512), host("h2", mem=512), host("h3", mem=256)]
    a = ft(running("a", "h1", mem=384), "h2", ack=10, valid_from=7)
    assert {x.vm: x.host for x in of(AssignVM, plan(cluster(hosts, [a, vm("n", None, mem=256)])))} == {"n": "h3"}
    # without h3 the new VM has nowhere to go
    acts = plan(cluster(hosts[:2], [a, vm("n", None, mem=256)]))
    assert not of(AssignVM, acts) and any(isinstance(x, Waiting) and x.vm == "n" for x in acts)


def test_a_secondary_memory_counts_when_placing_another_secondary():
    hosts = [host("h1", mem=512), host("h2", mem=512), host("h3", mem=512)]
    a = ft(running("a", "h1", mem=384), "h2", ack=10, valid_from=7)
    b = ft(running("b", "h3", mem=384), None)
    acts = plan(cluster(hosts, [a, b]))
    # h1 is full of a, h2 full of a's secondary: b has no room for a secondary
    assert not of(SetSecondary, acts)
    assert any(isinstance(x, Waiting) and x.vm == "b" and "FT needs a secondary" in x.reason for x in acts)


def test_secondary_on_a_host_in_maintenance_is_replaced():
    # h2 holds only a's secondary: it is in maintenance at once, and the secondary moves
    h2 = HostView(name="h2", info=info("h2", 512), alive=True, hb_age=0.1, maintenance=True)
    hosts = [host("h1", mem=512), h2, host("h3", mem=512)]
    a = ft(running("a", "h1", mem=384), "h2", ack=10, valid_from=7)
    acts = plan(cluster(hosts, [a]))
    assert SetHostState("h2", HostState.MAINTENANCE, "in maintenance mode") in acts  # it runs no primary
    assert [(s.vm, s.host) for s in of(SetSecondary, acts)] == [("a", "h3")]


def test_replacing_a_secondary_frees_its_memory_on_the_old_host():
    # a's secondary sits on its own primary host, filling h1; once it moves to h2, b's fits on h1
    hosts = [host("h1", mem=512), host("h2", mem=512)]
    a = ft(running("a", "h1", mem=256), "h1")
    b = ft(running("b", "h2", mem=256), None)
    acts = plan(cluster(hosts, [a, b]))
    assert [(s.vm, s.host) for s in of(SetSecondary, acts)] == [("a", "h2"), ("b", "h1")]


# -- plan(): maintenance ----------------------------------------------------------------------
def test_entering_maintenance_hands_ft_vms_to_their_secondaries_and_migrates_the_others():
    h1 = HostView(name="h1", info=info("h1", 4096), alive=True, hb_age=0.1, maintenance=True)
    hosts = [h1, host("h2", mem=4096), host("h3", mem=4096)]
    # "a" and "b" come first by name: FT VMs must not use up the parallel-migration budget
    vms = [ft(running("a", "h1"), "h2", ack=10, valid_from=7), ft(running("b", "h1"), "h3", ack=4, valid_from=2),
           running("c", "h1"), running("d", "h1")]
    acts = plan(cluster(hosts, vms))
    assert {a.host: a.state for a in of(SetHostState, acts)}["h1"] is HostState.ENTERING_MAINTENANCE
    migs = of(StartMigration, acts)
    assert sorted(m.vm for m in migs) == ["c", "d"]
    handed = {a.vm: (a.host, a.kind, a.expect_owner, a.ft_stat_rev) for a in of(AssignVM, acts)}
    assert handed == {"a": ("h2", "ft-failover", "h1", 43), "b": ("h3", "ft-failover", "h1", 43)}
    assert not of(SetSecondary, acts)


def test_entering_maintenance_ft_vm_without_a_valid_checkpoint_waits():
    h1 = HostView(name="h1", info=info("h1"), alive=True, hb_age=0.1, maintenance=True)
    acts = plan(cluster([h1, host("h2")], [ft(running("a", "h1"), "h2", ack=5, valid_from=7)]))
    assert not of(StartMigration, acts) and not of(AssignVM, acts)
    assert [x.vm for x in of(Waiting, acts)] == ["a"]


# -- plan(): properties with FT VMs ----------------------------------------------------------------
HOSTS = ["h1", "h2", "h3", "h4"]
ft_strategy = st.none() | st.tuples(st.sampled_from(HOSTS + [None]), st.integers(0, 5), st.integers(-1, 10),
                                    st.none() | st.integers(0, 10), st.integers(0, 99))


@settings(max_examples=120, deadline=None)
@given(st.lists(host_strategy, min_size=1, max_size=4, unique_by=lambda h: h.name),
       st.lists(st.tuples(st.sampled_from(HOSTS + [None]), st.sampled_from([64, 128, 256]),
                          st.sampled_from(["highest", "medium", "disabled"]), st.booleans(), ft_strategy),
                max_size=6),
       st.sets(st.sampled_from(HOSTS), max_size=2))
def test_plan_with_ft_vms_keeps_its_promises(hosts, vmdefs, maintenance):
    hosts = [replace(h, maintenance=h.name in maintenance) for h in hosts]
    names = {h.name for h in hosts}
    vms = []
    for i, (on, mem, prio, owned, f) in enumerate(vmdefs):
        on = on if on in names else None
        x = vm(f"v{i}", on, mem=mem, prio=prio, owner=on if owned else None)
        if f is not None:
            x = ft(x, f[0], epoch=f[1], ack=f[2], valid_from=f[3], rev=f[4])
        if owned and on is not None:
            x = replace(x, status=VMStatus(host=on, state="running"))
        vms.append(x)
    v = view(hosts, vms)
    states = {h.name: classify_host(h, T)[0] for h in hosts}
    for h in hosts:  # as plan() does: a host in maintenance that still has VMs is entering it
        if states[h.name] is HostState.MAINTENANCE and any(x.assignment and x.assignment.host == h.name for x in vms):
            states[h.name] = HostState.ENTERING_MAINTENANCE
    acts = plan(v)
    migs = of(StartMigration, acts)
    assert all(v.vms[m.vm].ft is None for m in migs)  # FT VMs are never live-migrated
    assigned = of(AssignVM, acts)
    secs = of(SetSecondary, acts)
    by_vm = {a.vm: a for a in assigned}
    assert len(by_vm) == len(assigned)
    assert len({s.vm for s in secs}) == len(secs)
    assert not ({s.vm for s in secs} & set(by_vm))  # a reassigned VM gets its secondary next cycle

    def lost(x: VMView) -> bool:
        a = x.assignment
        return a is not None and a.host in names and vm_lost_on(states[a.host], v.hosts[a.host], x.spec.name)

    for x in vms:
        f, a = x.ft, by_vm.get(x.spec.name)
        can = f is not None and f.can_fail_over and states.get(f.secondary) is HostState.RUNNING
        if a is not None:
            assert a.ft_epoch == (f.epoch if f else None)
            assert states[a.host] is HostState.RUNNING
            if a.kind == "ft-failover":  # a lost or stopped primary, or a handover off a host entering maintenance
                assert can and a.host == f.secondary and a.host != x.assignment.host
                stopped = x.owner == x.assignment.host and host_stopped(v.hosts[x.assignment.host])
                assert lost(x) or stopped or states.get(x.assignment.host) is HostState.ENTERING_MAINTENANCE
            elif lost(x):
                assert a.kind == "restart" and not can
        elif lost(x) and can and x.spec.restart_priority != "disabled" and (
                x.owner is None or (x.owner == x.assignment.host and states[x.owner] is HostState.FAILED)):
            raise AssertionError(f"{x.spec.name} could fail over to {f.secondary} but did not: {acts}")

    where = {x.spec.name: x.assignment.host for x in vms if x.assignment and not lost(x)}
    for s in secs:
        x = v.vms[s.vm]
        assert x.ft is not None and s.vm in where
        assert states[s.host] is HostState.RUNNING and s.host != where[s.vm]
        assert (s.epoch, s.expect_rev) == (x.ft.epoch + 1, x.ft.rev)
        old = x.ft.secondary
        assert old is None or old == where[s.vm] or states.get(old) is not HostState.RUNNING
    # every running FT VM without a usable secondary gets one or says why not
    for name, h in where.items():
        x = v.vms[name]
        if x.ft is None or name in by_vm:
            continue
        sec = x.ft.secondary
        if sec is None or sec == h or states.get(sec) is not HostState.RUNNING:
            assert name in {s.vm for s in secs} or any(
                isinstance(w, Waiting) and w.vm == name and "FT needs a secondary" in w.reason for w in acts)

    # admission control: hosts given new work are not overfilled, secondaries included (an
    # agent runs no standby of a VM it is the primary of: a VM counts once on a host)
    new_sec = {s.vm: s.host for s in secs}
    load: dict[str, int] = {}
    for x in vms:
        name = x.spec.name
        primary = by_vm[name].host if name in by_vm else where.get(name)
        secondary = new_sec.get(name) or (x.ft.secondary if x.ft and x.ft.secondary in names else None)
        for h in {primary, secondary} - {None}:
            load[h] = load.get(h, 0) + x.spec.memory_mb
    for m in migs:  # a VM on its way counts on both hosts
        load[m.dst] = load.get(m.dst, 0) + v.vms[m.vm].spec.memory_mb
    targets = {a.host for a in assigned if a.kind != "ft-failover"} | set(new_sec.values()) | {m.dst for m in migs}
    for h in targets:
        assert load[h] <= v.hosts[h].info.memory_mb, (h, load, acts)
