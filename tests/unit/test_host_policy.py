"""Host-side decisions (vigil.policy.host, .crashes, .isolation): plain values in, actions out."""
from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from vigil.model import Assignment, Task, VMSpec
from vigil.policy import ftroles as FR
from vigil.policy import host as HP
from vigil.policy import tasks as TP
from vigil.policy.crashes import LOCAL_RESTARTS, Crashes, after_exit, may_start, start_failed
from vigil.policy.leader import leader_failed, ping_needed
from vigil.policy.isolation import (RunningVM, isolation_actions, isolation_verdict, keepalive_confirms,
                                    tick_step, vm_isolation_action)

ME = "h1"
UP = HP.HostFacts(me=ME, lease_ok=True, isolated=False)


def spec(name: str = "a", power: str = "on", iso: str = "power-off") -> VMSpec:
    return VMSpec(name=name, power=power, isolation_response=iso)


def facts(host: str | None = ME, gen: int = 1, reason: str = "place", owner: str | None = None,
          power: str = "on") -> HP.VMFacts:
    return HP.VMFacts(spec=spec(power=power), assignment=Assignment(host=host, gen=gen, reason=reason), owner=owner)


# -- reconcile, one VM -------------------------------------------------------------------
def test_an_unowned_assignment_is_claimed_then_started():
    act = HP.vm_action(UP, "a", facts(), HP.HereFacts())
    assert isinstance(act, HP.Start) and act.claim and not act.from_standby and act.gen == 1
    assert "claim its ownership" in act.reason


def test_a_vm_this_host_owns_already_starts_without_a_claim():
    act = HP.vm_action(UP, "a", facts(owner=ME), HP.HereFacts())
    assert isinstance(act, HP.Start) and not act.claim


def test_a_vm_owned_elsewhere_waits_for_the_old_copy():
    act = HP.vm_action(UP, "a", facts(owner="h2"), HP.HereFacts())
    assert isinstance(act, HP.Wait) and "h2" in act.reason


def test_a_start_under_way_is_not_repeated():
    assert isinstance(HP.vm_action(UP, "a", facts(), HP.HereFacts(starting=True)), HP.Wait)


def test_a_running_copy_owned_elsewhere_is_powered_off_without_a_report():
    act = HP.vm_action(UP, "a", facts(owner="h2"), HP.HereFacts(running=True))
    assert act == HP.PowerOff("a", "owned by h2: this copy must not run", report=False, release=False)


def test_a_running_vm_nobody_owns_is_claimed_again():
    assert isinstance(HP.vm_action(UP, "a", facts(), HP.HereFacts(running=True)), HP.Claim)
    assert isinstance(HP.vm_action(UP, "a", facts(owner=ME), HP.HereFacts(running=True)), HP.ReportRunning)


def test_a_failover_starts_from_the_standby_taken_for_it():
    f = facts(reason="ft-failover")
    assert isinstance(HP.take_standby(ME, "a", f, HP.HereFacts()), HP.TakeStandby)
    assert HP.take_standby(ME, "a", f, HP.HereFacts(has_standby=True)) is None  # taken already
    assert HP.take_standby(ME, "a", f, HP.HereFacts(running=True)) is None
    assert HP.take_standby(ME, "a", facts(), HP.HereFacts()) is None  # not a failover
    act = HP.vm_action(UP, "a", f, HP.HereFacts(has_standby=True))
    assert isinstance(act, HP.Start) and act.from_standby and "standby" in act.reason


def test_migrated_away_copies_are_powered_off_and_released_with_the_reason_of_the_move():
    here = HP.HereFacts(running=True)
    cases = {
        "migrate": "migrated to h2",
        "vmcp": "its host lost a datastore of the VM: restarted where the disks are reachable",
        "ft-failover": "its FT secondary on h2 took over",
        "restart": "assigned to h2: this copy must not run",
    }
    for reason, why in cases.items():
        act = HP.vm_action(UP, "a", facts(host="h2", reason=reason), here)
        assert act == HP.PowerOff("a", why, report=False, release=True)


def test_a_migrated_copy_waits_for_its_migration_driver_then_is_powered_off():
    # the driver's last query-migrate reads the figures: the QEMU must outlive it
    driving = HP.HereFacts(running=True, driving=True)
    act = HP.vm_action(UP, "a", facts(host="h2", reason="migrate"), driving)
    assert isinstance(act, HP.Wait) and "last figures" in act.reason
    assert HP.vm_action(UP, "a", facts(host="h2", reason="migrate"), HP.HereFacts(running=True)) == HP.PowerOff(
        "a", "migrated to h2", report=False, release=True)
    # a copy handed elsewhere for any other reason may run guest code: it stops at once
    for reason in ("restart", "ft-failover", "vmcp"):
        assert isinstance(HP.vm_action(UP, "a", facts(host="h2", reason=reason), driving), HP.PowerOff)


def test_a_cut_off_host_leaves_copies_assigned_elsewhere_to_its_isolation_response():
    here = HP.HereFacts(running=True)
    for host in (HP.HostFacts(ME, lease_ok=False, isolated=False), HP.HostFacts(ME, lease_ok=True, isolated=True)):
        assert isinstance(HP.vm_action(host, "a", facts(host="h2"), here), HP.Wait)


def test_deleted_or_powered_off_vms_shut_down():
    here = HP.HereFacts(running=True)
    assert HP.vm_action(UP, "a", HP.VMFacts(), here) == HP.Shutdown("a", "VM deleted")
    assert HP.vm_action(UP, "a", facts(power="off"), here) == HP.Shutdown("a", "powered off by request")
    assert HP.vm_action(UP, "a", HP.VMFacts(spec=spec()), here) == HP.Shutdown("a", "powered off by request")
    assert isinstance(HP.vm_action(UP, "a", HP.VMFacts(), HP.HereFacts(running=True, stopping=True)), HP.Wait)


def test_a_vm_neither_assigned_nor_running_here_is_none_of_our_business():
    assert HP.vm_action(UP, "a", facts(host="h2"), HP.HereFacts()) is None


def test_a_vm_component_protection_power_off_names_no_host():
    act = HP.vm_action(UP, "a", facts(host=None, reason="vmcp"), HP.HereFacts(running=True))
    assert isinstance(act, HP.PowerOff) and act.release and "datastore" in act.reason


# -- crashes --------------------------------------------------------------------------------
def test_crashes_are_counted_per_generation_and_hand_the_vm_back_at_the_limit():
    prev = None
    for n in range(1, LOCAL_RESTARTS):
        out = after_exit(7, prev)
        assert (out.crashes.count, out.state, out.message, out.release) == (n, "stopped", "QEMU exited", False)
        prev = out.crashes
    out = after_exit(7, prev)
    assert (out.state, out.message, out.release) == ("failed", f"QEMU exited {LOCAL_RESTARTS} times", True)
    assert not may_start(7, out.crashes) and may_start(8, out.crashes)
    assert after_exit(8, out.crashes).crashes.count == 1  # a new generation starts counting again


def test_a_failed_start_uses_up_the_restarts_of_its_generation():
    c = start_failed(3, "no such file")
    assert c == Crashes(3, LOCAL_RESTARTS, "no such file") and not may_start(3, c)
    act = HP.vm_action(UP, "a", facts(gen=3), HP.HereFacts(crashes=c))
    assert isinstance(act, HP.Wait) and "new generation" in act.reason
    assert isinstance(HP.vm_action(UP, "a", facts(gen=4), HP.HereFacts(crashes=c)), HP.Start)


def test_guest_silence_counts_only_for_a_guest_that_was_heartbeating():
    assert HP.guest_went_silent("ok", last_hb=100.0, now=106.0, timeout_s=5.0)
    assert not HP.guest_went_silent("ok", last_hb=100.0, now=104.0, timeout_s=5.0)
    assert not HP.guest_went_silent("unknown", last_hb=0.0, now=106.0, timeout_s=5.0)
    assert not HP.guest_went_silent("lost", last_hb=100.0, now=106.0, timeout_s=5.0)  # reported once


# -- isolation ------------------------------------------------------------------------------
def test_the_isolation_response_follows_the_spec_and_ft_primaries_power_off():
    assert vm_isolation_action("a", RunningVM(spec(iso="power-off"))) == HP.PowerOff(
        "a", "isolation response: power off", report=True)
    assert vm_isolation_action("a", RunningVM(spec(iso="shutdown"))) == HP.Shutdown(
        "a", "isolation response: shut down")
    assert isinstance(vm_isolation_action("a", RunningVM(spec(iso="leave-powered-on"))), HP.Wait)
    assert isinstance(vm_isolation_action("a", RunningVM(None)), HP.Wait)  # adopted, spec unknown
    assert isinstance(vm_isolation_action("a", RunningVM(spec(iso="leave-powered-on"), ft=True)), HP.PowerOff)


def test_isolation_verdict_after_the_pings():
    assert isolation_verdict(False, False, False, False)[0] == "isolated"
    v, why = isolation_verdict(False, False, True, False)
    assert v == "partitioned" and why == "lease lost but a peer answers: partitioned, VMs keep running"
    assert isolation_verdict(False, False, False, True)[1].startswith("lease lost but an isolation address")
    assert isolation_verdict(True, False, False, False)[0] == "none"  # the lease came back meanwhile
    assert isolation_verdict(False, True, False, False)[0] == "none"  # another check was first


def test_a_host_that_stood_still_past_hb_grace_gives_its_vms_up_even_if_it_reaches_the_network():
    # it may have been declared failed meanwhile and its VMs restarted elsewhere
    v, why = isolation_verdict(False, False, True, True, stalled_s=3.4, hb_grace=3.0)
    assert v == "isolated" and "stood still 3.4s" in why
    # a shorter stall, or one the lease has since been confirmed after, changes nothing
    assert isolation_verdict(False, False, True, True, stalled_s=2.0, hb_grace=3.0)[0] == "partitioned"
    assert isolation_verdict(True, False, True, True, stalled_s=9.0, hb_grace=3.0)[0] == "none"


def test_tick_starts_one_isolation_check_and_ends_isolation_with_the_lease():
    assert tick_step(had_lease=True, lease_ok=False, isolated=False, checking=False) == "check"
    assert tick_step(had_lease=True, lease_ok=False, isolated=False, checking=True) == "none"
    assert tick_step(had_lease=False, lease_ok=False, isolated=False, checking=False) == "none"  # never had one
    assert tick_step(had_lease=True, lease_ok=True, isolated=True, checking=False) == "end"
    assert tick_step(had_lease=True, lease_ok=False, isolated=True, checking=False) == "none"


# -- properties over a whole host ---------------------------------------------------------------
HOSTS = st.sampled_from([ME, "h2", "h3", None])
names = st.sampled_from(["a", "b", "c", "d"])
vm_facts = st.builds(
    HP.VMFacts,
    spec=st.one_of(st.none(), st.builds(spec, power=st.sampled_from(["on", "off"]),
                                        iso=st.sampled_from(["power-off", "shutdown", "leave-powered-on"]))),
    assignment=st.one_of(st.none(), st.builds(Assignment, host=HOSTS, gen=st.integers(0, 3),
                                              reason=st.sampled_from(["place", "restart", "migrate", "vmcp",
                                                                      "ft-failover"]))),
    owner=st.one_of(st.none(), st.sampled_from([ME, "h2", "h3"])),
)
here_facts = st.builds(
    HP.HereFacts, running=st.booleans(), stopping=st.booleans(), starting=st.booleans(), has_standby=st.booleans(),
    driving=st.booleans(),
    crashes=st.one_of(st.none(), st.builds(Crashes, gen=st.integers(0, 3), count=st.integers(1, LOCAL_RESTARTS))),
)
observations = st.builds(
    HP.HostObservation,
    host=st.builds(HP.HostFacts, me=st.just(ME), lease_ok=st.booleans(), isolated=st.booleans()),
    vms=st.dictionaries(names, vm_facts).map(MappingProxyType),
    here=st.dictionaries(names, here_facts).map(MappingProxyType),
)


@given(observations)
def test_never_start_a_vm_this_host_is_not_assigned_or_that_another_host_owns(obs):
    for act in HP.reconcile(obs):
        if isinstance(act, HP.Start):
            f = obs.vms[act.vm]
            assert f.assignment is not None and f.assignment.host == ME and f.spec is not None
            assert f.spec.power == "on"
            assert f.owner in (None, ME)
            assert act.claim == (f.owner is None)  # unowned: only through the guarded claim
            assert act.gen == f.assignment.gen


@given(observations)
def test_never_start_a_vm_that_runs_or_starts_here_or_used_up_its_restarts(obs):
    for act in HP.reconcile(obs):
        if isinstance(act, HP.Start):
            h = obs.here.get(act.vm, HP.HereFacts())
            assert not h.running and not h.starting
            assert h.crashes is None or h.crashes.gen != act.gen or h.crashes.count < LOCAL_RESTARTS


@given(observations)
def test_one_outcome_per_vm_and_a_start_at_most_once_per_gen(obs):
    acts = HP.reconcile(obs)
    outcomes = [a.vm for a in acts if not isinstance(a, HP.TakeStandby)]
    assert len(outcomes) == len(set(outcomes))
    starts = [(a.vm, a.gen) for a in acts if isinstance(a, HP.Start)]
    assert len(starts) == len(set(starts))


@given(observations)
def test_only_copies_of_vms_not_ours_to_run_are_stopped_and_released(obs):
    for act in HP.reconcile(obs):
        if isinstance(act, HP.PowerOff) and act.release or isinstance(act, HP.Shutdown):
            assert obs.here[act.vm].running and not obs.here[act.vm].stopping
            assert not HP.is_mine(ME, obs.vms.get(act.vm, HP.VMFacts()))
        if isinstance(act, HP.PowerOff) and act.release:
            assert obs.host.lease_ok and not obs.host.isolated  # a cut-off host leaves them to isolation


@given(observations)
def test_every_action_has_a_reason(obs):
    assert all(a.reason for a in HP.reconcile(obs))


@given(st.dictionaries(names, st.builds(RunningVM, spec=st.one_of(st.none(), st.builds(
    spec, iso=st.sampled_from(["power-off", "shutdown", "leave-powered-on"]))), ft=st.booleans())))
def test_an_isolated_hosts_ft_primaries_are_always_powered_off(vms):
    acts = isolation_actions(vms)
    assert [a.vm for a in acts] == list(vms)
    for act in acts:
        if vms[act.vm].ft:
            assert isinstance(act, HP.PowerOff) and act.report


# -- the leader's death, by the controller's classification ---------------------------------
@given(st.one_of(st.none(), st.floats(0, 20)), st.booleans(), st.booleans(), st.floats(0.5, 5))
def test_leader_death_is_the_rule_the_agent_applied_before(age, has_address, answers, grace):
    """Dead: heartbeat records readable, silent for the grace time, an address, no ping answer."""
    before = age is not None and age >= grace and has_address and not answers
    pinged = has_address and ping_needed("h2", age, grace)
    ping = answers if pinged else None
    assert leader_failed("h2", age, ping, grace)[0] == before
    if before:
        assert ping_needed("h2", age, grace)  # its silence alone asks for the ping


def test_a_leader_answering_ping_or_heartbeating_is_not_dead():
    assert not ping_needed("h2", 1.0, 2.5)
    assert not ping_needed("h2", None, 2.5)  # no datastore readable here
    assert not leader_failed("h2", 3.0, True, 2.5)[0]
    dead, why = leader_failed("h2", 3.0, False, 2.5)
    assert dead and "no ping" in why


# -- FT roles ---------------------------------------------------------------------------------
def test_the_owner_of_a_running_ft_vm_is_its_primary_and_the_named_host_its_secondary():
    ft = {"a": FR.FtKey("h2", 4)}
    assert FR.primary_roles(ME, {"a": False}, ft, {"a": ME}) == {"a": ("h2", 4)}
    assert FR.primary_roles(ME, {"a": True}, ft, {"a": ME}) == {}  # being stopped
    assert FR.primary_roles(ME, {"a": False}, ft, {"a": "h2"}) == {}  # not ours
    specs = {"a": spec()}
    assert FR.secondary_roles("h2", ft, specs, {"a": ME}) == {"a": 4}
    assert FR.secondary_roles("h2", ft, specs, {"a": "h2"}) == {}  # handed to us: no standby of itself
    assert FR.secondary_roles("h2", ft, specs, {"a": None}) == {}
    assert FR.secondary_roles("h2", ft, {"a": spec(power="off")}, {"a": ME}) == {}


def test_output_flows_for_our_vms_with_no_secondary_and_stays_held_for_a_copy_not_ours():
    ft = {"a": FR.FtKey(None, 1)}
    assert FR.gates_to_open(ME, {"a": False, "b": False}, ft, {"a": ME, "b": ME}, {"a": ME, "b": ME},
                            frozenset()) == ["a", "b"]
    assert FR.gates_to_open(ME, {"a": False}, ft, {"a": ME}, {"a": "h2"}, frozenset()) == []  # handed over
    assert FR.gates_to_open(ME, {"a": False}, ft, {"a": ME}, {"a": ME}, frozenset({"a"})) == []  # its loop ends first
    assert FR.gates_to_open(ME, {"a": False}, {"a": FR.FtKey("h2", 1)}, {"a": ME}, {"a": ME}, frozenset()) == []


def test_ft_keys_read_like_the_controller_reads_them():
    assert FR.FtKey.from_json({"secondary": "h2", "epoch": 3}) == FR.FtKey("h2", 3)
    assert FR.FtKey.from_json({"secondary": None}) == FR.FtKey(None, 0)


ft_keys = st.dictionaries(names, st.builds(FR.FtKey, secondary=HOSTS, epoch=st.integers(0, 3)))
host_names = st.dictionaries(names, HOSTS)


@given(ft_keys, st.dictionaries(names, st.booleans()), host_names, host_names,
       st.dictionaries(names, st.builds(spec, power=st.sampled_from(["on", "off"]))))
def test_a_host_is_never_primary_and_secondary_of_one_vm(ft, stopping, owners, assigned, specs):
    primary = FR.primary_roles(ME, stopping, ft, owners)
    secondary = FR.secondary_roles(ME, ft, specs, assigned)
    assert not set(primary) & set(secondary)
    for name, (sec, epoch) in primary.items():
        assert owners[name] == ME and not stopping[name] and sec != ME
        assert (sec, epoch) == (ft[name].secondary, ft[name].epoch)
    for name in secondary:
        assert specs[name].power == "on" and assigned.get(name) not in (None, ME)
    opened = FR.gates_to_open(ME, stopping, ft, owners, assigned, frozenset())
    assert not set(opened) & set(primary)  # a primary's output waits for its checkpoints


# -- the two ends of a task -------------------------------------------------------------------
def mig(**kw) -> Task:
    return Task(**({"id": "t1", "kind": "migrate", "vm": "a", "src": ME, "dst": "h2"} | kw))


def test_a_queued_task_is_admitted_within_the_per_host_limit():
    t = mig(state="queued")
    assert TP.source_step(t, [t], ME, 0.0, driving=False, runs_here=True)[0] == "admit"
    busy = [mig(id=f"x{i}", vm=f"x{i}", state="running") for i in range(TP.MAX_MIGRATIONS_PER_HOST)]
    step, why = TP.source_step(t, [t, *busy], ME, 0.0, driving=False, runs_here=True)
    assert step == "none" and "queued" in why
    disk = mig(kind="move-disk", state="queued")  # disk moves have their own, smaller limit
    assert TP.source_step(disk, [disk, *busy], ME, 0.0, driving=False, runs_here=True)[0] == "admit"


def test_cancels_timeouts_and_orphans_at_the_source():
    assert TP.source_step(mig(state="ready", cancel=True), [], ME, 0.0, False, True) == (
        "cancel", "cancelled before it started")
    assert TP.source_step(mig(state="running", cancel=True), [], ME, 0.0, True, True)[0] == "signal-cancel"
    assert TP.source_step(mig(state="running"), [], ME, 0.0, True, True)[0] == "none"
    late = mig(state="preparing", updated=0.0)
    assert TP.source_step(late, [], ME, TP.PREPARE_TIMEOUT_S + 1, False, True)[0] == "prepare-timeout"
    assert TP.source_step(late, [], ME, TP.PREPARE_TIMEOUT_S - 1, False, True)[0] == "none"
    assert TP.source_step(mig(state="ready"), [], ME, 0.0, False, True)[0] == "drive"
    assert TP.source_step(mig(state="running"), [], ME, 0.0, False, True)[0] == "orphaned"
    assert TP.source_step(mig(state="running"), [], ME, 0.0, False, False)[0] == "none"
    assert TP.source_step(mig(state="done"), [], ME, 0.0, False, True)[0] == "none"


def test_the_destination_prepares_follows_finishes_and_drops():
    t = mig(src="h2", dst=ME)
    took = Assignment(host=ME, gen=2, reason="migrate")
    assert TP.destination_step(replace(t, state="preparing"), ME, None, False, None)[0] == "prepare"
    assert TP.destination_step(replace(t, state="running"), ME, "t1", False, None)[0] == "follow"
    assert TP.destination_step(replace(t, state="failed"), ME, "t1", False, None) == ("drop", "migration failed")
    assert TP.destination_step(replace(t, state="done"), ME, "t1", True, took)[0] == "none"
    assert TP.destination_step(replace(t, state="failed"), ME, "t0", False, None)[0] == "none"  # another task's
    assert TP.destination_step(replace(t, state="switching"), ME, None, True, took)[0] == "finish"
    restarted = replace(took, reason="restart")
    assert TP.destination_step(replace(t, state="switching"), ME, None, True, restarted)[0] == "none"


def test_the_incoming_copy_takes_over_only_with_all_its_memory():
    t = mig(src="h2", dst=ME, state="running")
    assert TP.incoming_outcome(t, False, "gone", True) == ("failed", f"the destination QEMU on {ME} exited")
    assert TP.incoming_outcome(t, True, "running:completed", False)[0] == "take-over"
    assert TP.incoming_outcome(t, True, "running:postcopy-active", False) == ("source-lost", "source host h2 was lost")
    assert TP.incoming_outcome(t, True, "running:postcopy-active", True)[0] == "wait"


def test_a_take_over_is_tried_again_only_while_nobody_else_was_given_the_vm():
    assert TP.take_over_again(("h1", "h1", 3), ("h1", "h1", 3))[0]
    assert not TP.take_over_again(("h1", "h1", 3), (None, "h3", 4))[0]  # HA restarted it elsewhere
    assert not TP.take_over_again(("h1", "h1", 3), (None, "h1", 3))[0]  # its source's lease went


def test_a_failed_migration_reboots_the_guest_only_if_post_copy_may_have_begun():
    """A QEMU slow to answer, or seen a moment before QEMU resumed it, holds the whole guest:
    ending it would reboot a guest that had lost nothing."""
    assert TP.after_failed_migration(False, "running:failed")[0] == "runs-on"
    assert TP.after_failed_migration(False, "unknown")[0] == "left"
    assert TP.after_failed_migration(True, "unknown")[0] == "restart-from-disk"
    assert TP.after_failed_migration(True, "postmigrate")[0] == "restart-from-disk"
    assert TP.after_failed_migration(False, "postmigrate") == (
        "restart-from-disk", "pre-copy failed and the source's copy stays postmigrate")


@given(st.sampled_from(["queued", "preparing", "ready", "running", "switching", "done", "failed", "cancelled"]),
       st.booleans(), st.booleans(), st.booleans(), st.floats(0, 100))
def test_a_source_never_starts_a_second_driver_nor_admits_a_cancelled_task(state, cancel, driving, here, now):
    t = mig(state=state, cancel=cancel, updated=0.0)
    step, why = TP.source_step(t, [t], ME, now, driving, here)
    if driving:
        assert step in ("none", "signal-cancel")
    if cancel:
        assert step not in ("admit", "drive")
    assert why


def test_stall_watch_counts_a_gap_past_grace_until_the_lease_is_confirmed_after_it():
    from vigil.policy.isolation import StallWatch

    w = StallWatch(2.5)
    for t in (0.0, 0.5, 1.0, 3.0):  # gaps of 0.5 and 2.0 s: no stall
        w.tick(t)
    assert w.since(0.0) == 0.0
    w.tick(6.5)  # 3.5 s without a tick
    assert w.since(confirmed=1.0) == 3.5  # the lease was last confirmed before it
    assert w.since(confirmed=6.6) == 0.0  # and a keepalive sent after it was answered


def test_stall_watch_counts_a_stall_no_tick_has_ended_yet_when_asked_with_the_time():
    from vigil.policy.isolation import StallWatch

    w = StallWatch(2.5)
    w.tick(1.0)
    # out of a hang, the lease loop may run before the heartbeat tick does
    assert w.since(confirmed=0.9) == 0.0
    assert w.since(confirmed=0.9, now=4.0) == 3.0
    assert w.since(confirmed=0.9, now=3.0) == 0.0  # 2 s: within grace
    w.tick(4.0)
    assert w.since(confirmed=4.5, now=4.6) == 0.0  # confirmed after it


def test_a_keepalive_answer_alone_confirms_the_lease_only_without_a_stall_past_grace():
    # after one, the answer may come from the host's own etcd member still taking itself
    # for the raft leader: a read (which needs the quorum) has to back it
    assert keepalive_confirms(0.0, hb_grace=2.5)
    assert keepalive_confirms(2.5, hb_grace=2.5)
    assert not keepalive_confirms(2.7, hb_grace=2.5)


def test_an_incoming_qemu_that_ends_after_a_cancel_leaves_the_outcome_to_the_source():
    """A cancelled incoming migration ends its QEMU; the source that cancelled records
    "cancelled" (seen on the lab: the destination's "failed" got there first)."""
    t = mig(src="h2", dst=ME, state="running", cancel=True)
    assert TP.incoming_outcome(t, False, "gone", True)[0] == "wait"
    assert TP.incoming_outcome(t, False, "gone", False)[0] == "failed"  # no source left to say
    assert TP.destination_step(replace(t, state="cancelled"), ME, "t1", False, None)[0] == "drop"
