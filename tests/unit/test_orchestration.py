"""Restart orchestration and VM-host rules as pure decisions, and their properties over
random clusters and failures run through ``plan()`` round after round: a "must" VM-host
rule is never broken by a decision; every protected VM runs again once a host its rules
allow has room, whatever the dependencies, ready conditions and timeouts."""
from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType, SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.model import (HOST_RULE_KINDS, RESTART_PRIORITIES, Assignment, DiskSpec, HostGroup, HostInfo, HostState,
                         Rule, SpecError, VMSpec, VMStatus)
from vigil.policy import host_rules
from vigil.policy.orchestration import (Held, app_seen, dependency_problems, order, policy_for, ready_marks,
                                        validate_settings)
from vigil.policy.placement import Load, place
from vigil.policy.plan import AssignVM, StartMigration, plan
from vigil.policy.view import ClusterView, HostView, VMView


def spec(name: str, prio: str = "medium", mem: int = 128, **kw) -> VMSpec:
    return VMSpec(name=name, memory_mb=mem, restart_priority=prio,
                  disks=(DiskSpec(name="disk0", datastore="ds1", path=f"{name}/d.qcow2"),), **kw)


def info(name: str, mem: int = 4096) -> HostInfo:
    return HostInfo(name=name, address="10.0.0.1", memory_mb=mem, cpus=8, datastores=("ds1",))


def up(name: str, mem: int = 4096) -> HostView:
    return HostView(name=name, info=info(name, mem), alive=True, hb_age=0.2, prev_state=HostState.RUNNING)


def down(name: str, mem: int = 4096) -> HostView:
    return HostView(name=name, info=info(name, mem), alive=False, hb_age=100.0, ping=False,
                    prev_state=HostState.FAILED)


# -- settings, rules ----------------------------------------------------------------------
def test_settings_defaults_and_refusals() -> None:
    s = validate_settings({})
    assert (s.default.condition, s.default.delay_s, s.default.timeout_s) == ("allocated", 0.0, 60.0)
    s = validate_settings({"ready": "guest", "timeout_s": 10, "tiers": {"high": {"ready": "app"}}})
    assert s.tiers["high"].condition == "app" and s.tiers["high"].timeout_s == 10.0
    for bad in ({"ready": "soon"}, {"delay_s": -1}, {"timeout_s": "x"}, {"tiers": {"disabled": {}}},
                {"tiers": {"high": {"wait": 1}}}, {"other": 1}):
        with pytest.raises(SpecError):
            validate_settings(bad)


def test_policy_the_vm_over_its_tier_over_the_cluster() -> None:
    s = validate_settings({"ready": "powered-on", "delay_s": 2, "tiers": {"high": {"ready": "guest"}}})
    assert policy_for(spec("a"), s).condition == "powered-on"
    assert policy_for(spec("a", "high"), s).condition == "guest"
    assert policy_for(spec("a", "high"), s).delay_s == 2.0  # the tier inherits the cluster's delay
    p = policy_for(spec("a", "high", ready="app", ready_delay_s=0.0, ready_timeout_s=5.0), s)
    assert (p.condition, p.delay_s, p.timeout_s) == ("app", 0.0, 5.0)


def test_vm_ready_fields_validated_and_stored_only_when_set() -> None:
    assert "ready" not in spec("a").to_json()
    assert VMSpec.from_json(spec("a", ready="guest").to_json()).ready == "guest"
    with pytest.raises(SpecError):
        spec("a", ready="later").validate()
    with pytest.raises(SpecError):
        spec("a", ready_timeout_s=-1.0).validate()


def test_rule_shapes() -> None:
    Rule("d", "depends-on", ("app",), on=("db",)).validate()
    Rule("h", "must-run-on", ("db",), group="g").validate()
    for bad in (Rule("d", "depends-on", ("app",)), Rule("d", "depends-on", ("a",), on=("a",)),
                Rule("h", "must-run-on", ("db",)), Rule("a", "affinity", ("a", "b"), group="g"),
                Rule("a", "anti-affinity", ("a", "b"), on=("c",))):
        with pytest.raises(SpecError):
            bad.validate()
    r = Rule("h", "should-not-run-on", ("db",), group="g")
    assert Rule.from_json(r.to_json()) == r
    assert Rule("r", "affinity", ("a", "b")).to_json() == {"name": "r", "kind": "affinity", "vms": ["a", "b"]}


def test_dependency_cycles_and_priority_inversions_are_named() -> None:
    specs = {n: spec(n, p) for n, p in (("a", "high"), ("b", "medium"), ("c", "medium"))}
    assert dependency_problems([Rule("r", "depends-on", ("b",), on=("a",))], specs) == []
    assert dependency_problems([Rule("r", "depends-on", ("a",), on=("b",))], specs) == \
        ["a (high) cannot depend on b of lower restart priority (medium)"]
    cyc = dependency_problems([Rule("r1", "depends-on", ("b",), on=("c",)),
                               Rule("r2", "depends-on", ("c",), on=("b",))], specs)
    assert cyc == ["dependency cycle: b -> c -> b"]


def test_order_puts_what_is_depended_on_first_within_a_tier() -> None:
    vms = [VMView(spec=spec(n, p), assignment=None, assign_rev=0, owner=None, status=None)
           for n, p in (("a", "medium"), ("b", "medium"), ("z", "high"))]
    rules = (Rule("r", "depends-on", ("a",), on=("b",)),)
    assert [v.spec.name for v in order(vms, rules)] == ["z", "b", "a"]
    assert [v.spec.name for v in order(vms, ())] == ["z", "a", "b"]


def test_app_heartbeat_is_an_optional_status_field() -> None:
    assert not app_seen(VMStatus(host="h", state="running"))
    assert app_seen(SimpleNamespace(app="ok")) and not app_seen(SimpleNamespace(app="lost"))


# -- VM-host rules ------------------------------------------------------------------------
GROUPS = {"g1": HostGroup("g1", ("h1",)), "g23": HostGroup("g23", ("h2", "h3"))}


def test_must_rules_are_no_candidates_and_should_rules_rank_last() -> None:
    infos = {h: info(h, 4096 if h != "h1" else 8192) for h in ("h1", "h2", "h3")}
    states = dict.fromkeys(infos, HostState.RUNNING)
    rules = host_rules.resolve([Rule("m", "must-not-run-on", ("a",), group="g1")], GROUPS)
    assert place(spec("a"), infos, states, {}, rules=rules)[0] == "h2"
    rules = host_rules.resolve([Rule("s", "should-run-on", ("a",), group="g23")], GROUPS)
    assert place(spec("a"), infos, states, {}, rules=rules) == ("h2", "most free memory")
    host, why = place(spec("a"), infos, dict(states, h2=HostState.FAILED, h3=HostState.FAILED), {}, rules=rules)
    assert host == "h1" and "breaks should rule s" in why
    rules = host_rules.resolve([Rule("m", "must-run-on", ("a",), group="g1")], GROUPS)
    host, why = place(spec("a"), infos, dict(states, h1=HostState.FAILED), {}, rules=rules)
    assert host is None and "h2: must-run-on rule m (group g1: h1)" in why
    # a rule on a group that does not exist lets the VM run nowhere
    rules = host_rules.resolve([Rule("m", "must-run-on", ("a",), group="nope")], GROUPS)
    assert place(spec("a"), infos, states, {"h1": Load()}, rules=rules)[0] is None


def test_conflicts_are_named() -> None:
    infos = {h: info(h) for h in ("h1", "h2", "h3")}
    specs = {n: spec(n) for n in ("a", "b")}
    rules = host_rules.resolve([Rule("m1", "must-run-on", ("a",), group="g1"),
                                Rule("m2", "must-run-on", ("a",), group="g23")], GROUPS)
    assert host_rules.conflicts(rules, specs, infos) == ["a: rules m1, m2 leave it no host"]
    rules = host_rules.resolve([Rule("m1", "must-run-on", ("a",), group="g1"),
                                Rule("m2", "must-run-on", ("b",), group="g1"),
                                Rule("apart", "anti-affinity", ("a", "b")),
                                Rule("s", "should-run-on", ("a",), group="g23")], GROUPS)
    out = host_rules.conflicts(rules, specs, infos)
    assert "anti-affinity rule apart: a, b must run on h1, fewer hosts than VMs" in out
    assert any(line.startswith("a: should rule s can never be kept") for line in out)
    rules = host_rules.resolve([Rule("m1", "must-run-on", ("a",), group="g1"),
                                Rule("m2", "must-run-on", ("b",), group="g23"),
                                Rule("together", "affinity", ("a", "b"))], GROUPS)
    assert host_rules.conflicts(rules, specs, infos) == ["affinity rule together: the must rules of a, b share no host"]


# -- properties ---------------------------------------------------------------------------
HOSTS = ("h1", "h2", "h3", "h4")


@st.composite
def clusters(draw):
    """A cluster of 2-4 hosts, one or two failed, VMs on them, host groups, VM-host rules,
    depends-on rules (acyclic, never on a lower priority) and ready settings."""
    n = draw(st.integers(2, 4))
    hosts = HOSTS[:n]
    failed = set(draw(st.lists(st.sampled_from(hosts), min_size=1, max_size=n - 1, unique=True)))
    mem = {h: draw(st.sampled_from([1024, 2048, 4096])) for h in hosts}
    nvm = draw(st.integers(1, 7))
    prios = sorted((draw(st.sampled_from(RESTART_PRIORITIES[:-1])) for _ in range(nvm)), key=RESTART_PRIORITIES.index)
    cond = st.sampled_from(["", "allocated", "powered-on", "guest", "app"])
    vms = [spec(f"v{i}", prios[i], draw(st.sampled_from([128, 256, 512])), ready=draw(cond),
                ready_timeout_s=draw(st.sampled_from([None, 2.0, 5.0])))
           for i in range(nvm)]
    on = {v.name: draw(st.sampled_from(hosts)) for v in vms}
    groups = {f"g{i}": HostGroup(f"g{i}", tuple(draw(st.lists(st.sampled_from(hosts), min_size=1, unique=True))))
              for i in range(draw(st.integers(1, 3)))}
    rules = []
    for i in range(draw(st.integers(0, 4))):
        rules.append(Rule(f"h{i}", draw(st.sampled_from(HOST_RULE_KINDS)),
                          tuple(draw(st.lists(st.sampled_from([v.name for v in vms]), min_size=1, unique=True))),
                          group=draw(st.sampled_from(sorted(groups)))))
    for i in range(draw(st.integers(0, 3))):
        if nvm < 2:
            break
        a = draw(st.integers(1, nvm - 1))
        b = draw(st.integers(0, a - 1))
        rules.append(Rule(f"d{i}", "depends-on", (f"v{a}",), on=(f"v{b}",)))
    orch = {"ready": draw(st.sampled_from(["allocated", "powered-on", "guest", "app"])),
            "delay_s": draw(st.sampled_from([0.0, 1.0])), "timeout_s": draw(st.sampled_from([3.0, 10.0]))}
    return hosts, failed, mem, vms, on, groups, tuple(rules), orch


def run_rounds(hosts, failed, mem, vms, on, groups, rules, orch, rounds: int = 40):
    """plan() round after round, one second apart, each decision carried out at once (the
    VM's QEMU runs and its guest heartbeats the next round); returns every decision."""
    resolved = host_rules.resolve(rules, groups)
    assign = {v.name: Assignment(on[v.name], 1, "place") for v in vms}
    hv = {h: (down(h, mem[h]) if h in failed else up(h, mem[h])) for h in hosts}
    holds: dict[str, float] = {}
    ready: dict[str, tuple[int, float]] = {}
    decisions = []
    for t in range(rounds):
        views = {}
        for v in vms:
            a = assign[v.name]
            alive = a.host not in failed
            views[v.name] = VMView(spec=v, assignment=a, assign_rev=a.gen, owner=a.host if alive else None,
                                   status=VMStatus(host=a.host, state="running", guest="ok") if alive else None)
        view = ClusterView(now=100.0 + t, hosts=hv, vms=views, rules=resolved,
                           settings=MappingProxyType({"orchestration": orch}), holds=MappingProxyType(dict(holds)))
        ready = ready_marks(view, ready)
        actions = plan(replace(view, ready_since=MappingProxyType(dict(ready))))
        holds = {a.vm: a.since for a in actions if isinstance(a, Held)}
        for a in actions:
            if isinstance(a, AssignVM):
                decisions.append((a.vm, a.host))
                assign[a.vm] = Assignment(a.host, a.gen, a.kind)
            elif isinstance(a, StartMigration):
                decisions.append((a.vm, a.dst))
    return decisions, assign


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_a_must_rule_is_never_broken(c) -> None:
    hosts, failed, mem, vms, on, groups, rules, orch = c
    resolved = host_rules.resolve(rules, groups)
    decisions, _ = run_rounds(*c)
    for vm, host in decisions:
        assert host_rules.must_break(vm, host, resolved) is None, (vm, host)
        assert host not in failed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_every_protected_vm_runs_again_once_an_allowed_host_has_room(c) -> None:
    hosts, failed, mem, vms, on, groups, rules, orch = c
    # room that the rules allow: every running host could take all the VMs at once, and
    # each VM's must rules allow at least one running host
    mem = dict.fromkeys(hosts, 64 * 1024)
    resolved = host_rules.resolve(rules, groups)
    running = [h for h in hosts if h not in failed]
    for v in vms:
        if not host_rules.allowed_hosts(v.name, running, resolved):
            rules = tuple(r for r in rules if not (r.kind in HOST_RULE_KINDS and r.must and v.name in r.vms))
    resolved = host_rules.resolve(rules, groups)
    _, assign = run_rounds(hosts, failed, mem, vms, on, groups, rules, orch)
    for v in vms:
        assert assign[v.name].host not in failed, (v.name, assign[v.name])
        assert host_rules.must_break(v.name, assign[v.name].host, resolved) is None or assign[v.name].gen == 1


def test_a_dependency_holds_a_restart_from_disk_but_not_an_ft_failover() -> None:
    from vigil.policy.view import FtView

    hosts = {"h1": down("h1"), "h2": up("h2"), "h3": up("h3")}
    db = VMView(spec=spec("db"), assignment=Assignment("h1", 1), assign_rev=1, owner=None, status=None)
    ft = FtView(secondary="h3", epoch=1, ack_seq=5, valid_from=3)
    app = VMView(spec=spec("app"), assignment=Assignment("h1", 1), assign_rev=1, owner=None, status=None, ft=ft)
    rules = (Rule("d", "depends-on", ("app",), on=("db",)),)
    orch = MappingProxyType({"orchestration": {"ready": "powered-on"}})
    acts = plan(ClusterView(now=100.0, hosts=hosts, vms={"db": db, "app": app}, rules=rules, settings=orch))
    got = {a.vm: a for a in acts if isinstance(a, (AssignVM, Held))}
    assert got["app"].kind == "ft-failover" and got["db"].kind == "restart"  # type: ignore[union-attr]
    acts = plan(ClusterView(now=100.0, hosts=hosts, vms={"db": db, "app": replace(app, ft=None)}, rules=rules,
                            settings=orch))
    held = [a for a in acts if isinstance(a, Held)]
    assert [a.vm for a in held] == ["app"] and "restart waits for db (depends on; ready: powered on" in held[0].reason
