"""One controller cycle as a pure function: cluster view in, actions out.

Like Patroni's HA cycle, each VM's branch ends in exactly one outcome, and the actions
are data: the controller writes them to etcd in guarded transactions, the simulator and
the scenario tests read them.

The parts: the actions (vigil.policy.plan_actions), the load model
(vigil.policy.commitments), FT secondaries (vigil.policy.ft_secondaries) and maintenance
mode (vigil.policy.maintenance); this module plans the restarts and names them all.
"""
from __future__ import annotations

import math

from vigil.model import HostState
from vigil.policy.admission_control import failover_hosts
from vigil.policy.fencing import decide as fence_decide
from vigil.policy.commitments import commitments, holds_memory, standby_counted
from vigil.policy.drs_place import drs_preference
from vigil.policy.ft_secondaries import FT_SUSPECT_S, ft_failover_target, host_stopped, secondaries
from vigil.policy.hoststate import LOSES_VMS, classify_host, vm_lost_on
from vigil.policy.maintenance import MAINTENANCE_PARALLEL, evacuate
from vigil.policy.orchestration import Gate, order
from vigil.policy.placement import Load, place, place_failover_first
from vigil.policy.plan_actions import (Action, AssignVM, MarkStale, NotRestarted, PowerOffForRestart, SetHostState,
                                       SetSecondary, StartMigration, Waiting, next_assignment)
from vigil.policy.replicas import copies_unreachable, mark_stale
from vigil.policy.retry_schedule import retry_schedule
from vigil.policy.restart_order import priority_rank, restart_order
from vigil.policy.view import ClusterView, Retry, VMView

__all__ = [
    "Action", "AssignVM", "MarkStale", "NotRestarted", "PowerOffForRestart", "SetHostState", "SetSecondary",
    "StartMigration", "Waiting", "next_assignment", "commitments", "holds_memory", "standby_counted",
    "FT_SUSPECT_S", "FT_SECONDARY_WAIT_S", "ft_failover_target", "host_stopped", "secondaries",
    "MAINTENANCE_PARALLEL", "evacuate", "priority_rank", "restart_order", "VMCP_STABLE_S", "VMCP_REASON",
    "backoff", "classify_all", "plan", "datastores_lost",
]

# VM component protection moves a VM only to hosts that have reached its datastores this long.
VMCP_STABLE_S = 2.0
VMCP_REASON = "vmcp"  # the assignment's reason while a VM is powered off for component protection

# How long an FT VM whose primary host failed waits for its secondary's host to answer
# again (its agent cut from etcd a moment, say) before it is restarted from disk instead.
FT_SECONDARY_WAIT_S = 15.0


def backoff(attempts: int, now: float, base: float, cap: float, host: str) -> Retry:
    return Retry(attempts=attempts, not_before=now + min(cap, base * (2 ** max(0, attempts - 1))), last_host=host)


def classify_all(view: ClusterView) -> dict[str, tuple[HostState, str]]:
    return {name: classify_host(h, view.timing) for name, h in view.hosts.items()}


def plan(view: ClusterView) -> list[Action]:
    fences, classified = fence_decide(view, classify_all(view))  # hosts with a BMC (vigil.policy.fencing)
    for h, (s, why) in list(classified.items()):
        if s is HostState.MAINTENANCE and any(
                v.assignment and v.assignment.host == h and v.spec.power == "on" for v in view.vms.values()):
            classified[h] = (HostState.ENTERING_MAINTENANCE, "maintenance mode: moving its VMs away")
    states = {h: s for h, (s, _) in classified.items()}
    actions: list[Action] = [
        SetHostState(h, s, why, view.hosts[h].lease if s is HostState.FAILED else 0)
        for h, (s, why) in sorted(classified.items())
        if s is not view.hosts[h].prev_state
    ]
    actions += fences
    infos = {h: v.info for h, v in view.hosts.items() if v.info is not None}
    reserved = failover_hosts(view)  # admission control's failover hosts: HA restarts only
    normal = {h: i for h, i in infos.items() if h not in reserved} if reserved else infos
    schedule = retry_schedule(view.settings)
    load, where = commitments(view, states)
    moving = {t.vm for t in view.tasks}
    prefer = drs_preference(view, where)  # None while DRS is off

    reach = [i.datastores for h, i in infos.items() if states.get(h) is HostState.RUNNING]
    gate = Gate(view, states)  # restart orchestration: tiers and depends-on rules
    reach_all = [set().union(*map(set, reach))]  # the same to copies_unreachable, united once, not per VM
    reached = {h: set(i.datastores) for h, i in infos.items()}  # for datastores_lost, made once
    for v in order(list(view.vms.values()), view.rules):
        spec, a = v.spec, v.assignment
        ft_fast = False  # an FT failover before the primary's host is declared failed
        if spec.power != "on":
            continue
        if v.owner is None and reach and (dead := copies_unreachable(spec, {}, reach_all)):
            disk, ds = dead[0]
            actions.append(MarkStale(spec.name, disk, ds, mark_stale(v.diskstate, disk, ds, view.now,
                                                                     f"no running host reaches {ds}"),
                                     v.diskstate_rev, f"no running host reaches datastore {ds}"))
            continue
        if a is None:
            kind, avoid, why_move = "place", frozenset(), "new VM"
        elif a.host == "" and a.reason == VMCP_REASON:
            kind, avoid, why_move = "restart", frozenset(), "VM component protection"
        elif a.host in view.hosts and states[a.host] in LOSES_VMS and vm_lost_on(states[a.host], view.hosts[a.host],
                                                                                  spec.name):
            if spec.restart_priority == "disabled":
                actions.append(NotRestarted(spec.name, f"host {a.host} {states[a.host].value}; restart priority is disabled"))
                continue
            kind, avoid, why_move = "restart", frozenset({a.host}), f"host {a.host} {states[a.host].value}"
        elif (v.ft is not None and a.host in view.hosts and v.owner == a.host and host_stopped(view.hosts[a.host])
              and ft_failover_target(v, states, view.rules, where) is not None):
            kind, avoid = "restart", frozenset({a.host})
            why_move = f"host {a.host} silent for {view.hosts[a.host].hb_age:.1f}s and answers no ping"
            ft_fast = True
        elif (lost := datastores_lost(v, infos, states, reached)) is not None:
            reaching = [h for h, i in infos.items()
                        if h != a.host and states.get(h) is HostState.RUNNING and spec.datastores <= set(i.datastores)]
            # A host that reaches the datastores again only just now says little: when an
            # array comes back, the VM's own host is likely a tick behind.
            others = [h for h in reaching
                      if all(view.now - view.reach_since.get((h, d), -math.inf) >= VMCP_STABLE_S for d in spec.datastores)]
            if v.owner != a.host:
                continue
            if reaching and not others:
                actions.append(Waiting(spec.name, f"{a.host} lost datastore {', '.join(lost)}; "
                                       f"{', '.join(sorted(reaching))} reach it again only since less than "
                                       f"{VMCP_STABLE_S:.0f}s"))
                continue
            if spec.restart_priority == "disabled":  # HA never acts on it: no power-off to restart it
                actions.append(NotRestarted(spec.name, f"{a.host} lost datastore {', '.join(lost)}; restart "
                                            "priority is disabled: left running"))
                continue
            if not others:
                actions.append(Waiting(spec.name, f"{a.host} lost datastore {', '.join(lost)} and no other host "
                                       "reaches it: left running"))
                continue
            actions.append(PowerOffForRestart(spec.name, a.host, a.gen, v.assign_rev,
                                              f"{a.host} lost datastore {', '.join(lost)}; "
                                              f"{', '.join(sorted(others))} still reach it"))
            continue
        elif (
            v.status is not None
            and v.status.state == "failed"
            and v.status.host == a.host
            and states.get(a.host) is HostState.RUNNING
        ):
            kind, avoid, why_move = "retry", frozenset({a.host}), f"start failed on {a.host}: {v.status.message}"
        else:
            continue
        fenced_owner = a is not None and v.owner == a.host and (states.get(a.host) is HostState.FAILED or ft_fast)
        if v.owner is not None and not fenced_owner:
            actions.append(Waiting(spec.name, f"still owned by {v.owner}"))
            continue
        retry = view.retries.get(spec.name)
        if kind == "retry" and retry is not None and view.now < retry.not_before:
            continue
        # a new leader knows no backoff, only the count its predecessor wrote
        tried = retry.attempts if retry else (a.retries if a is not None and kind == "retry" else 0)
        if kind == "retry" and schedule.exhausted(tried):
            actions.append(NotRestarted(spec.name, f"{why_move}; gave up after {tried} restart "
                                        f"attempt{'s' if tried != 1 else ''} (the retry schedule's maximum)"))
            continue
        sec = ft_failover_target(v, states, view.rules, where)
        if kind == "restart" and sec is None and v.ft is not None and v.ft.can_fail_over and states.get(
                v.ft.secondary or "") in (HostState.UNKNOWN, HostState.AGENT_DOWN, HostState.PARTITIONED):
            deadline = view.ft_waits.get(spec.name, view.now + FT_SECONDARY_WAIT_S)
            if view.now < deadline:
                actions.append(Waiting(spec.name, f"{why_move}; waiting for the FT secondary on {v.ft.secondary} "
                                       f"({states[v.ft.secondary or ''].value}) to take over", deadline))
                continue
        # restart orchestration holds restarts from disk, not an FT failover (its guest runs on)
        held, note = gate.hold(v) if kind == "restart" and sec is None else (None, "")
        if held is not None:
            actions.append(held)
            continue
        why_move = f"{why_move}; {note}" if note else why_move
        if kind == "restart" and sec is not None:
            # its memory is counted on the secondary already
            where[spec.name] = sec
            gate.placed(spec.name)
            actions.append(AssignVM(
                vm=spec.name, host=sec, gen=(a.gen + 1) if a else 1, expect_rev=v.assign_rev, kind="ft-failover",
                reason=f"{why_move}; the FT secondary on {sec} goes live from checkpoint {v.ft.ack_seq}",  # type: ignore[union-attr]
                expect_owner=v.owner, ft_epoch=v.ft.epoch if v.ft else None, ft_rev=v.ft.rev if v.ft else 0,
                ft_stat_rev=v.ft.stat_rev if v.ft else 0,
            ))
            continue
        pick = place if kind == "place" else place_failover_first(reserved)
        host, why = pick(spec, normal if kind == "place" else infos, states, load, avoid, view.rules, where, prefer)
        if host is None and kind == "retry":
            # The failing host may be the only one: try it again after the backoff.
            host, why = pick(spec, infos, states, load, frozenset(), view.rules, where, prefer)
        if host is None:
            actions.append(Waiting(spec.name, f"no host can run it: {why}"))
            gate.no_room(spec.name)
            continue
        load[host] = load.get(host, Load()).plus(spec)
        where[spec.name] = host
        if prefer is not None:
            prefer.add(host, spec)
        gate.placed(spec.name)
        new_retry = None
        if kind == "retry":
            new_retry = schedule.after(tried + 1, view.now, host)
        actions.append(
            AssignVM(
                vm=spec.name,
                host=host,
                gen=(a.gen + 1) if a else 1,
                expect_rev=v.assign_rev,
                kind=kind,
                reason=f"{why_move}; {host}: {why}",
                retry=new_retry,
                expect_owner=v.owner,
                ft_epoch=v.ft.epoch if v.ft else None,
                ft_rev=v.ft.rev if v.ft else 0,
            )
        )
    # a VM this plan already moved (an FT hand-over off a stopped host) is not evacuated too
    actions += evacuate(view, states, normal, load, where, moving | {a.vm for a in actions if isinstance(a, AssignVM)},
                        prefer)
    actions += secondaries(view, states, normal, load, where, {a.vm for a in actions if isinstance(a, AssignVM)})
    return actions


def datastores_lost(v: VMView, infos: dict, states: dict[str, HostState],
                    reached: dict[str, set[str]] | None = None) -> list[str] | None:
    """The datastores of ``v`` that its running host no longer reaches, or None.
    ``reached``: each host's datastores as a set (made once per plan, not per VM)."""
    a = v.assignment
    if a is None or states.get(a.host) is not HostState.RUNNING or a.host not in infos:
        return None
    have = reached[a.host] if reached is not None else set(infos[a.host].datastores)
    # a disk is lost when none of its copies is reachable (one lost copy of a replicated
    # disk is the agent's to drop: the VM runs on, on the other)
    lost: set[str] = set()
    for d in v.spec.disks:
        copies = d.copies
        if have.isdisjoint(copies):
            lost.update(copies)
    return sorted(lost) if lost else None
