"""Pure decision logic: host classification, placement, restart order (no etcd, no QEMU)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.model import Assignment, DiskSpec, HostInfo, HostState, VMSpec, VMStatus
from vigil.policy.hoststate import classify_host, vm_lost_on
from vigil.policy.placement import Load, place
from vigil.policy.plan import AssignVM, NotRestarted, SetHostState, Waiting, plan, restart_order
from vigil.policy.view import ClusterView, HostView, Retry, Timing, VMView  # noqa: F401

T = Timing()


def info(name: str, mem: int = 1024, ds: tuple[str, ...] = ("ds1",)) -> HostInfo:
    return HostInfo(name=name, address=f"10.0.0.{name[-1]}", memory_mb=mem, cpus=2, datastores=ds)


def host(name: str, alive: bool = True, hb_age: float = 0.2, ping: bool | None = None, isolated: bool = False,
         vms: frozenset[str] = frozenset(), prev: HostState = HostState.RUNNING, mem: int = 1024,
         ds: tuple[str, ...] = ("ds1",)) -> HostView:
    return HostView(name=name, info=info(name, mem, ds), alive=alive, hb_age=hb_age, hb_isolated=isolated,
                    hb_vms=vms, ping=ping, prev_state=prev)


def vm(name: str, on: str | None, mem: int = 128, prio: str = "medium", owner: str | None = None,
       status: VMStatus | None = None, ds: str = "ds1") -> VMView:
    spec = VMSpec(name=name, memory_mb=mem, restart_priority=prio,
                  disks=(DiskSpec(name="disk0", datastore=ds, path=f"{name}/d.qcow2"),))
    a = Assignment(host=on, gen=1) if on else None
    return VMView(spec=spec, assignment=a, assign_rev=5 if on else 0, owner=owner, status=status)


def view(hosts: list[HostView], vms: list[VMView], now: float = 100.0, retries=None) -> ClusterView:
    return ClusterView(now=now, hosts={h.name: h for h in hosts}, vms={v.spec.name: v for v in vms},
                       timing=T, retries=retries or {})


# -- host classification ------------------------------------------------------------------
def test_lease_alive_is_running():
    assert classify_host(host("h1"), T)[0] is HostState.RUNNING


def test_silent_host_without_ping_is_failed():
    assert classify_host(host("h1", alive=False, hb_age=3.0, ping=False), T)[0] is HostState.FAILED


def test_silent_host_answering_ping_is_agent_down_until_the_watchdog_window_passes():
    assert classify_host(host("h1", alive=False, hb_age=3.0, ping=True), T)[0] is HostState.AGENT_DOWN
    assert classify_host(host("h1", alive=False, hb_age=T.fenced_after, ping=True), T)[0] is HostState.FAILED


def test_advancing_heartbeat_without_lease_is_partitioned_or_isolated():
    assert classify_host(host("h1", alive=False, hb_age=0.5), T)[0] is HostState.PARTITIONED
    assert classify_host(host("h1", alive=False, hb_age=0.5, isolated=True), T)[0] is HostState.ISOLATED


def test_silent_host_not_yet_pinged_is_unknown():
    assert classify_host(host("h1", alive=False, hb_age=3.0, ping=None), T)[0] is HostState.UNKNOWN


def test_vm_lost_only_when_failed_or_isolated_and_powered_off():
    h = host("h1", alive=False, isolated=True, vms=frozenset({"a"}))
    assert not vm_lost_on(HostState.ISOLATED, h, "a")
    assert vm_lost_on(HostState.ISOLATED, h, "b")
    assert vm_lost_on(HostState.FAILED, h, "a")
    for s in (HostState.PARTITIONED, HostState.AGENT_DOWN, HostState.UNKNOWN, HostState.RUNNING):
        assert not vm_lost_on(s, h, "b")


# -- placement ----------------------------------------------------------------------------
def test_place_prefers_most_free_memory_and_needs_the_datastore():
    spec = vm("a", None).spec
    infos = {"h1": info("h1", 1024), "h2": info("h2", 2048), "h3": info("h3", 4096, ds=("ds2",))}
    states = {h: HostState.RUNNING for h in infos}
    assert place(spec, infos, states, {})[0] == "h2"
    assert place(spec, infos, states, {"h2": Load(1900, 1)})[0] == "h1"
    h, why = place(spec, infos, {"h1": HostState.FAILED, "h2": HostState.FAILED, "h3": HostState.RUNNING}, {})
    assert h is None and "ds1" in why


# -- plan ---------------------------------------------------------------------------------
def assigns(actions) -> dict[str, str]:
    return {a.vm: a.host for a in actions if isinstance(a, AssignVM)}


def test_failed_host_vms_restart_on_survivors_in_priority_order():
    hosts = [host("h1", alive=False, hb_age=4, ping=False), host("h2"), host("h3")]
    vms = [vm("low", "h1", prio="low"), vm("top", "h1", prio="highest"), vm("mid", "h1"), vm("stay", "h2")]
    acts = plan(view(hosts, vms))
    assert SetHostState("h1", HostState.FAILED, classify_host(hosts[0], T)[1]) in acts
    got = [a for a in acts if isinstance(a, AssignVM)]
    assert [a.vm for a in got] == ["top", "mid", "low"]
    assert all(a.host in ("h2", "h3") and a.kind == "restart" and a.gen == 2 for a in got)


def test_disabled_priority_is_not_restarted():
    hosts = [host("h1", alive=False, hb_age=4, ping=False), host("h2")]
    acts = plan(view(hosts, [vm("a", "h1", prio="disabled")]))
    assert not assigns(acts) and any(isinstance(a, NotRestarted) for a in acts)


def test_no_restart_while_host_may_still_run_the_vm():
    for h1 in (host("h1", alive=False, hb_age=0.5),                       # partitioned
               host("h1", alive=False, hb_age=3, ping=True),              # agent down
               host("h1", alive=False, hb_age=0.5, isolated=True, vms=frozenset({"a"}))):  # isolated, left on
        assert not assigns(plan(view([h1, host("h2")], [vm("a", "h1")])))


def test_isolated_host_vm_powered_off_is_restarted():
    h1 = host("h1", alive=False, hb_age=0.5, isolated=True, vms=frozenset())
    assert assigns(plan(view([h1, host("h2")], [vm("a", "h1")]))) == {"a": "h2"}


def test_vm_owned_by_another_host_is_not_reassigned():
    hosts = [host("h1", alive=False, hb_age=4, ping=False), host("h2"), host("h3")]
    acts = plan(view(hosts, [vm("a", "h1", owner="h3")]))
    assert not assigns(acts) and any(isinstance(a, Waiting) for a in acts)


def test_silent_unreachable_host_fails_before_its_lease_expires_and_loses_its_keys():
    h1 = HostView(name="h1", info=info("h1"), alive=True, lease=77, hb_age=T.hb_grace, ping=False,
                  prev_state=HostState.RUNNING)
    acts = plan(view([h1, host("h2")], [vm("a", "h1", owner="h1")]))
    st = [a for a in acts if isinstance(a, SetHostState)][0]
    assert st.state is HostState.FAILED and st.lease == 77
    a = [x for x in acts if isinstance(x, AssignVM)][0]
    assert (a.host, a.expect_owner) == ("h2", "h1")
    # the same host answering ping is only slow: nothing moves
    slow = HostView(name="h1", info=info("h1"), alive=True, lease=77, hb_age=T.hb_grace, ping=True)
    assert classify_host(slow, T)[0] is HostState.RUNNING


def test_vm_waits_without_capacity_and_is_placed_when_capacity_appears():
    hosts = [host("h1", alive=False, hb_age=4, ping=False), host("h2", mem=256)]
    vms = [vm("big", "h1", mem=512)]
    acts = plan(view(hosts, vms))
    assert not assigns(acts) and any(isinstance(a, Waiting) for a in acts)
    hosts.append(host("h3", mem=1024))
    assert assigns(plan(view(hosts, vms))) == {"big": "h3"}


def test_new_vm_is_placed():
    assert assigns(plan(view([host("h1"), host("h2", mem=2048)], [vm("a", None)]))) == {"a": "h2"}


def test_failed_start_is_retried_elsewhere_with_backoff():
    st = VMStatus(host="h1", state="failed", message="lock")
    hosts = [host("h1"), host("h2")]
    acts = plan(view(hosts, [vm("a", "h1", status=st)]))
    a = [x for x in acts if isinstance(x, AssignVM)][0]
    assert a.host == "h2" and a.kind == "retry" and a.retry.attempts == 1
    later = view(hosts, [vm("a", "h1", status=st)], now=100.5, retries={"a": Retry(1, 102.0, "h2")})
    assert not assigns(plan(later))


def test_restart_order_is_priority_then_name():
    vs = [vm("b", None, prio="low"), vm("a", None, prio="low"), vm("z", None, prio="highest")]
    assert [v.spec.name for v in restart_order(vs)] == ["z", "a", "b"]


# -- properties ---------------------------------------------------------------------------
host_strategy = st.builds(
    lambda i, alive, age, ping, iso, mem: host(f"h{i}", alive=alive, hb_age=age, ping=ping, isolated=iso, mem=mem),
    st.integers(1, 4), st.booleans(), st.floats(0, 20), st.sampled_from([None, True, False]), st.booleans(),
    st.sampled_from([256, 512, 1024]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(host_strategy, min_size=1, max_size=4, unique_by=lambda h: h.name),
       st.lists(st.tuples(st.sampled_from(["h1", "h2", "h3", "h4", None]), st.sampled_from([64, 128, 256]),
                          st.sampled_from(["highest", "medium", "lowest", "disabled"]), st.booleans()),
                max_size=8))
def test_plan_never_moves_a_vm_that_may_still_run_and_never_overfills(hosts, vmdefs):
    names = {h.name for h in hosts}
    vms = [vm(f"v{i}", on if on in names else None, mem=mem, prio=prio, owner=on if owned and on in names else None)
           for i, (on, mem, prio, owned) in enumerate(vmdefs)]
    v = view(hosts, vms)
    states = {h.name: classify_host(h, T)[0] for h in hosts}
    acts = plan(v)
    load: dict[str, int] = {}
    moved = assigns(acts)
    for x in vms:
        a = x.assignment
        if a and x.spec.name not in moved and not vm_lost_on(states[a.host], v.hosts[a.host], x.spec.name):
            load[a.host] = load.get(a.host, 0) + x.spec.memory_mb
    for name, target in moved.items():
        x = v.vms[name]
        act = next(a for a in acts if isinstance(a, AssignVM) and a.vm == name)
        assert act.expect_owner == x.owner
        if x.owner is not None:  # only a failed host's key may be taken from it
            assert x.assignment is not None and x.owner == x.assignment.host
            assert states[x.owner] is HostState.FAILED
        assert states[target] is HostState.RUNNING
        if x.assignment is not None:
            assert vm_lost_on(states[x.assignment.host], v.hosts[x.assignment.host], name)
            assert x.spec.restart_priority != "disabled"
        load[target] = load.get(target, 0) + x.spec.memory_mb
    for h, used in load.items():
        if h in moved.values():
            assert used <= v.hosts[h].info.memory_mb


# -- rules and maintenance ----------------------------------------------------------------
from vigil.model import Rule, Task  # noqa: E402
from vigil.policy.plan import StartMigration  # noqa: E402


def running(name: str, on: str, **kw) -> VMView:
    v = vm(name, on, owner=on, status=VMStatus(host=on, state="running"), **kw)
    return v


def test_restart_keeps_anti_affinity():
    hosts = [host("h1", alive=False, hb_age=4, ping=False), host("h2", mem=4096), host("h3")]
    rule = Rule("apart", "anti-affinity", ("web1", "web2"))
    v = ClusterView(now=100, hosts={h.name: h for h in hosts},
                    vms={"web1": vm("web1", "h1"), "web2": running("web2", "h2")}, rules=(rule,))
    assert assigns(plan(v)) == {"web1": "h3"}  # h2 has more room but runs web2


def test_maintenance_migrates_vms_away_a_few_at_a_time_respecting_rules():
    h1 = HostView(name="h1", info=info("h1", 4096), alive=True, hb_age=0.1, maintenance=True)
    hosts = [h1, host("h2", mem=4096), host("h3", mem=2048)]
    rule = Rule("apart", "anti-affinity", ("a", "b"))
    vms = {n: running(n, "h1") for n in ("a", "b", "c", "d")}
    v = ClusterView(now=100, hosts={h.name: h for h in hosts}, vms=vms, rules=(rule,))
    acts = plan(v)
    st = {a.host: a.state for a in acts if isinstance(a, SetHostState)}
    assert st["h1"] is HostState.ENTERING_MAINTENANCE
    migs = [a for a in acts if isinstance(a, StartMigration)]
    assert len(migs) == 2 and all(m.src == "h1" and m.dst in ("h2", "h3") for m in migs)
    assert {m.vm for m in migs} == {"a", "b"} and migs[0].dst != migs[1].dst
    # two already under way: nothing more starts
    tasks = tuple(Task(id=m.vm, kind="migrate", vm=m.vm, src="h1", dst=m.dst) for m in migs)
    v2 = ClusterView(now=100, hosts=v.hosts, vms=vms, rules=(rule,), tasks=tasks)
    assert not [a for a in plan(v2) if isinstance(a, StartMigration)]


def test_maintenance_host_that_cannot_be_emptied_says_why_and_empty_one_is_in_maintenance():
    h1 = HostView(name="h1", info=info("h1"), alive=True, hb_age=0.1, maintenance=True)
    acts = plan(ClusterView(now=100, hosts={"h1": h1}, vms={"a": running("a", "h1")}))
    assert any(isinstance(a, Waiting) and "cannot leave h1" in a.reason for a in acts)
    empty = plan(ClusterView(now=100, hosts={"h1": h1, "h2": host("h2")}, vms={}))
    assert SetHostState("h1", HostState.MAINTENANCE, "in maintenance mode") in empty
    assert not assigns(plan(ClusterView(now=100, hosts={"h1": h1}, vms={"n": vm("n", None)})))


# -- VM component protection ---------------------------------------------------------------
def test_host_that_lost_the_vms_datastore_powers_it_off_when_another_host_reaches_it():
    from dataclasses import replace

    from vigil.policy.plan import PowerOffForRestart

    hosts = [host("h1", ds=()), host("h2"), host("h3", ds=("ds2",))]
    acts = plan(view(hosts, [vm("a", "h1", owner="h1")]))
    off = [x for x in acts if isinstance(x, PowerOffForRestart)]
    assert off == [PowerOffForRestart("a", "h1", 1, 5, "h1 lost datastore ds1; h2 still reach it")]
    assert not [x for x in acts if isinstance(x, AssignVM)]
    # once its host let go (assignment names no host), it is restarted where ds1 is reachable
    a = replace(vm("a", "h1"), assignment=Assignment(host="", gen=1, reason="vmcp"), owner=None)
    assigned = [x for x in plan(view(hosts, [a])) if isinstance(x, AssignVM)]
    assert [(x.vm, x.host, x.kind, x.gen) for x in assigned] == [("a", "h2", "restart", 2)]
    # still owned by its old host: wait
    assert any(isinstance(x, Waiting) for x in plan(view(hosts, [replace(a, owner="h1")])))


def test_datastore_lost_everywhere_leaves_the_vm_running():
    from vigil.policy.plan import PowerOffForRestart

    hosts = [host("h1", ds=()), host("h2", ds=("ds2",))]
    acts = plan(view(hosts, [vm("a", "h1", owner="h1")]))
    assert not [x for x in acts if isinstance(x, (PowerOffForRestart, AssignVM))]
    assert any(isinstance(x, Waiting) and "left running" in x.reason for x in acts)


def test_disabled_priority_means_ha_never_acts_on_the_vm_on_any_path():
    """Host failure: not restarted; datastore lost on its host: not powered off (VM
    component protection would only stop it); isolation: left powered on."""
    from vigil.policy.isolation import isolation_action
    from vigil.policy.plan import PowerOffForRestart

    failed = [host("h1", alive=False, hb_age=4, ping=False), host("h2")]
    assert not assigns(plan(view(failed, [vm("a", "h1", prio="disabled")])))
    lost = [host("h1", ds=()), host("h2")]
    acts = plan(view(lost, [vm("a", "h1", owner="h1", prio="disabled")]))
    assert not [x for x in acts if isinstance(x, (PowerOffForRestart, AssignVM))]
    assert any(isinstance(x, NotRestarted) and "left running" in x.reason for x in acts)
    for resp in ("power-off", "shutdown", "leave-powered-on"):
        spec = VMSpec(name="a", isolation_response=resp, restart_priority="disabled")
        assert isolation_action(spec) == "leave-powered-on"


def test_vm_component_protection_waits_for_a_host_that_reaches_the_datastore_only_just_again():
    """An array coming back is seen by one host a tick before another: no VM is powered
    off to move it to a host that reaches its datastore only since a moment."""
    from dataclasses import replace as _replace
    from types import MappingProxyType

    from vigil.policy.plan import VMCP_STABLE_S, PowerOffForRestart

    hosts = [host("h1", ds=()), host("h2")]
    v = view(hosts, [vm("a", "h1", owner="h1")])
    fresh = _replace(v, reach_since=MappingProxyType({("h2", "ds1"): v.now - 0.5}))
    acts = plan(fresh)
    assert not [x for x in acts if isinstance(x, PowerOffForRestart)]
    assert any(isinstance(x, Waiting) and "reach it again" in x.reason for x in acts)
    stable = _replace(v, reach_since=MappingProxyType({("h2", "ds1"): v.now - VMCP_STABLE_S}))
    assert [x for x in plan(stable) if isinstance(x, PowerOffForRestart)]


def test_a_vm_powered_off_by_request_frees_its_room_once_stopped():
    from dataclasses import replace as _replace

    hosts = [host("h1", alive=False, hb_age=4, ping=False), host("h2", mem=512)]
    big = vm("big", "h1", mem=384)
    filler = vm("filler", "h2", mem=256, owner="h2")
    off = _replace(filler, spec=_replace(filler.spec, power="off"))
    stopping = _replace(off, status=VMStatus(host="h2", state="running"))
    assert not assigns(plan(view(hosts, [big, stopping])))  # still running: its memory is taken
    stopped = _replace(off, status=VMStatus(host="h2", state="stopped"))
    assert assigns(plan(view(hosts, [big, stopped]))) == {"big": "h2"}
