"""One controller cycle as a pure function: cluster view in, actions out.

Like Patroni's HA cycle, each VM's branch ends in exactly one outcome, and the actions
are data: the controller writes them to etcd in guarded transactions, the simulator and
the scenario tests read them.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from vigil.model import RESTART_PRIORITIES, Assignment, HostState, Rule
from vigil.policy.hoststate import classify_host, vm_lost_on
from vigil.policy.placement import Load, host_load, place, rule_conflict
from vigil.policy.replicas import copies_unreachable, mark_stale
from vigil.policy.view import ClusterView, HostView, Retry, VMView


@dataclass(frozen=True)
class SetHostState:
    host: str
    state: HostState
    reason: str
    lease: int = 0  # a failed host's lease still alive in etcd: the controller revokes it


@dataclass(frozen=True)
class AssignVM:
    """Hand ``vm`` to ``host``; valid only if the assignment key is still at ``expect_rev``
    and the VM's owner is ``expect_owner`` (the controller's transaction checks both)."""

    vm: str
    host: str
    gen: int
    expect_rev: int
    kind: str  # place | restart | retry | ft-failover
    reason: str
    retry: Retry | None = None
    # The failed host that still holds the ownership key: it is taken from it in the same
    # transaction. None: nobody may own the VM.
    expect_owner: str | None = None
    # an FT VM's epoch: the new assignment voids its standbys (the ft key is reset to no
    # secondary, epoch + 1, in the same transaction)
    ft_epoch: int | None = None
    ft_rev: int = 0  # mod_revision of the ft key the reset expects
    ft_stat_rev: int = 0  # an FT failover: mod_revision of the primary's ftstat key it expects


@dataclass(frozen=True)
class SetSecondary:
    """Give an FT VM a (new) secondary host; the epoch makes every older standby void."""

    vm: str
    host: str
    epoch: int
    expect_rev: int
    reason: str


@dataclass(frozen=True)
class PowerOffForRestart:
    """VM component protection: the VM's host lost one of its datastores while others
    still reach it. Its host powers it off (the assignment names no host), then the VM
    is restarted where its disks are reachable."""

    vm: str
    host: str
    gen: int
    expect_rev: int
    reason: str


@dataclass(frozen=True)
class MarkStale:
    """A copy of a replicated disk of a VM that runs nowhere is on a datastore no running
    host reaches: it is declared stale (``state`` is the new diskstate value, written if
    the key is still at ``expect_rev``), so that the VM can start on its other copy."""

    vm: str
    disk: str
    datastore: str
    state: Mapping[str, Any]
    expect_rev: int
    reason: str


@dataclass(frozen=True)
class Waiting:
    """The VM should run but cannot be placed now; it is placed when capacity appears."""

    vm: str
    reason: str
    # an FT VM waiting for its secondary's host to come back: until when (then a restart)
    deadline: float | None = None


@dataclass(frozen=True)
class NotRestarted:
    vm: str
    reason: str


@dataclass(frozen=True)
class StartMigration:
    """Live-migrate a running VM (maintenance mode empties a host this way)."""

    vm: str
    src: str
    dst: str
    reason: str


Action = (SetHostState | AssignVM | Waiting | NotRestarted | StartMigration | SetSecondary | PowerOffForRestart
          | MarkStale)

# VM component protection moves a VM only to hosts that have reached its datastores this long.
VMCP_STABLE_S = 2.0
VMCP_REASON = "vmcp"  # the assignment's reason while a VM is powered off for component protection

# An FT primary's host whose datastore heartbeat has been silent this long and that answers
# no ping is handed over to the secondary at once, without waiting out its lease (see
# host_stopped).
FT_SUSPECT_S = 1.0

# How long an FT VM whose primary host failed waits for its secondary's host to answer
# again (its agent cut from etcd a moment, say) before it is restarted from disk instead.
FT_SECONDARY_WAIT_S = 15.0

# Live migrations a host in maintenance sends at once (vSphere allows 8 per host; TCG
# guests on small lab machines converge better a few at a time).
MAINTENANCE_PARALLEL = 2


def priority_rank(priority: str) -> int:
    return RESTART_PRIORITIES.index(priority)


def restart_order(vms: list[VMView]) -> list[VMView]:
    """Highest priority first; among equals, by name so the order is stable."""
    return sorted(vms, key=lambda v: (priority_rank(v.spec.restart_priority), v.spec.name))


def backoff(attempts: int, now: float, base: float, cap: float, host: str) -> Retry:
    return Retry(attempts=attempts, not_before=now + min(cap, base * (2 ** max(0, attempts - 1))), last_host=host)


def classify_all(view: ClusterView) -> dict[str, tuple[HostState, str]]:
    return {name: classify_host(h, view.timing) for name, h in view.hosts.items()}


def plan(view: ClusterView) -> list[Action]:
    classified = classify_all(view)
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
    infos = {h: v.info for h, v in view.hosts.items() if v.info is not None}
    load, where = commitments(view, states)
    moving = {t.vm for t in view.tasks}

    reach = [i.datastores for h, i in infos.items() if states.get(h) is HostState.RUNNING]
    for v in restart_order(list(view.vms.values())):
        spec, a = v.spec, v.assignment
        ft_fast = False  # an FT failover before the primary's host is declared failed
        if spec.power != "on":
            continue
        if v.owner is None and reach and (dead := copies_unreachable(spec, {}, reach)):
            disk, ds = dead[0]
            actions.append(MarkStale(spec.name, disk, ds, mark_stale(v.diskstate, disk, ds, view.now,
                                                                     f"no running host reaches {ds}"),
                                     v.diskstate_rev, f"no running host reaches datastore {ds}"))
            continue
        if a is None:
            kind, avoid, why_move = "place", frozenset(), "new VM"
        elif a.host == "" and a.reason == VMCP_REASON:
            kind, avoid, why_move = "restart", frozenset(), "VM component protection"
        elif a.host in view.hosts and vm_lost_on(states[a.host], view.hosts[a.host], spec.name):
            if spec.restart_priority == "disabled":
                actions.append(NotRestarted(spec.name, f"host {a.host} {states[a.host].value}; restart priority is disabled"))
                continue
            kind, avoid, why_move = "restart", frozenset({a.host}), f"host {a.host} {states[a.host].value}"
        elif (v.ft is not None and a.host in view.hosts and v.owner == a.host and host_stopped(view.hosts[a.host])
              and ft_failover_target(v, states, view.rules, where) is not None):
            kind, avoid = "restart", frozenset({a.host})
            why_move = f"host {a.host} silent for {view.hosts[a.host].hb_age:.1f}s and answers no ping"
            ft_fast = True
        elif (lost := datastores_lost(v, infos, states)) is not None:
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
        sec = ft_failover_target(v, states, view.rules, where)
        if kind == "restart" and sec is None and v.ft is not None and v.ft.can_fail_over and states.get(
                v.ft.secondary or "") in (HostState.UNKNOWN, HostState.AGENT_DOWN, HostState.PARTITIONED):
            deadline = view.ft_waits.get(spec.name, view.now + FT_SECONDARY_WAIT_S)
            if view.now < deadline:
                actions.append(Waiting(spec.name, f"{why_move}; waiting for the FT secondary on {v.ft.secondary} "
                                       f"({states[v.ft.secondary or ''].value}) to take over", deadline))
                continue
        if kind == "restart" and sec is not None:
            # its memory is counted on the secondary already
            where[spec.name] = sec
            actions.append(AssignVM(
                vm=spec.name, host=sec, gen=(a.gen + 1) if a else 1, expect_rev=v.assign_rev, kind="ft-failover",
                reason=f"{why_move}; the FT secondary on {sec} goes live from checkpoint {v.ft.ack_seq}",  # type: ignore[union-attr]
                expect_owner=v.owner, ft_epoch=v.ft.epoch if v.ft else None, ft_rev=v.ft.rev if v.ft else 0,
                ft_stat_rev=v.ft.stat_rev if v.ft else 0,
            ))
            continue
        host, why = place(spec, infos, states, load, avoid, view.rules, where)
        if host is None and kind == "retry":
            # The failing host may be the only one: try it again after the backoff.
            host, why = place(spec, infos, states, load, frozenset(), view.rules, where)
        if host is None:
            actions.append(Waiting(spec.name, f"no host can run it: {why}"))
            continue
        load[host] = load.get(host, Load()).plus(spec)
        where[spec.name] = host
        new_retry = None
        if kind == "retry":
            attempts = (retry.attempts if retry else 0) + 1
            new_retry = backoff(attempts, view.now, view.timing.retry_base, view.timing.retry_max, host)
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
    actions += evacuate(view, states, infos, load, where, moving | {a.vm for a in actions if isinstance(a, AssignVM)})
    actions += secondaries(view, states, infos, load, where, {a.vm for a in actions if isinstance(a, AssignVM)})
    return actions


def commitments(view: ClusterView, states: Mapping[str, HostState]) -> tuple[dict[str, Load], dict[str, str]]:
    """The load model every placement decision shares (this cycle's plan and the service's
    migration admission): what each host has given away, and where each VM is or is going.

    A VM counts on its assigned host until that host is known to have lost it; a VM
    powered off by request only until it stopped; an FT standby on its secondary; a VM
    being migrated on its destination already."""

    def still_there(v: VMView) -> bool:
        a = v.assignment
        if a is None or a.host not in view.hosts:
            return False
        return not vm_lost_on(states[a.host], view.hosts[a.host], v.spec.name)

    load: dict[str, Load] = host_load(
        # a powered-off VM's room is free for others once it has stopped (vSphere counts
        # only powered-on VMs too); until then it still holds its memory
        [(v.assignment.host, v.spec) for v in view.vms.values()
         if v.assignment and still_there(v) and (v.spec.power == "on" or holds_memory(v))]
        # admission control counts an FT secondary's memory on its host (where one runs)
        + [(v.ft.secondary, v.spec) for v in view.vms.values() if standby_counted(v, view)]
    )
    where = {n: v.assignment.host for n, v in view.vms.items() if v.assignment and still_there(v)}
    for t in view.tasks:  # a VM on its way counts on its destination already
        if t.kind == "migrate" and t.dst and t.vm in view.vms:
            load[t.dst] = load.get(t.dst, Load()).plus(view.vms[t.vm].spec)
            where[t.vm] = t.dst
    return load, where


def holds_memory(v: VMView) -> bool:
    """A VM powered off by request still holds its memory until its host reports it stopped."""
    return v.status is not None and v.status.state not in ("stopped", "failed")


def datastores_lost(v: VMView, infos: dict, states: dict[str, HostState]) -> list[str] | None:
    """The datastores of ``v`` that its running host no longer reaches, or None."""
    a = v.assignment
    if a is None or states.get(a.host) is not HostState.RUNNING or a.host not in infos:
        return None
    have = set(infos[a.host].datastores)
    # a disk is lost when none of its copies is reachable (one lost copy of a replicated
    # disk is the agent's to drop: the VM runs on, on the other)
    lost = sorted({ds for d in v.spec.disks if not have & set(d.copies) for ds in d.copies})
    return lost or None


def host_stopped(h: HostView) -> bool:
    """The host has stopped, as far as can be seen before its lease runs out: its
    datastore heartbeat is silent and it answers no ping. Its FT VMs go to their
    secondaries now, and no new secondary is placed there.
    Safe for FT VMs only: the takeover takes the primary's ownership away in the same
    transaction, so a primary that still runs can release no more output (its output is
    held until a checkpoint is acknowledged, and only the owner may write valid_from) and
    powers its copy off; the standby runs only once that QEMU let go of the disk locks."""
    return h.hb_age is not None and h.hb_age >= FT_SUSPECT_S and h.ping is False


def standby_counted(v: VMView, view: ClusterView) -> bool:
    """Whether the VM's FT standby takes memory on its secondary host: FT on, the VM
    powered on and the secondary a known host other than the VM's own."""
    ft = v.ft
    if ft is None or ft.secondary not in view.hosts or v.spec.power != "on":
        return False
    return v.assignment is None or v.assignment.host != ft.secondary


def ft_failover_target(v: VMView, states: dict[str, HostState], rules: Sequence[Rule] = (),
                       where: Mapping[str, str] | None = None) -> str | None:
    """The FT secondary that may take over ``v`` now, if any (running, holding a valid
    checkpoint, and not breaking a VM-VM rule with what runs there now)."""
    ft = v.ft
    if ft is None or not ft.can_fail_over or states.get(ft.secondary or "") is not HostState.RUNNING:
        return None
    if v.assignment is not None and ft.secondary == v.assignment.host:
        return None  # a secondary on the VM's own host (a hand-over not yet re-protected) is no failover

    others = {n: h for n, h in (where or {}).items() if n != v.spec.name}
    if rule_conflict(v.spec.name, ft.secondary or "", rules, others):
        return None
    return ft.secondary


def secondaries(view: ClusterView, states: dict[str, HostState], infos: dict, load: dict[str, Load],
                where: dict[str, str], reassigned: set[str]) -> list[Action]:
    """Every running FT VM has a secondary on another running host (rules and room kept)."""
    out: list[Action] = []
    for v in restart_order(list(view.vms.values())):
        ft, name = v.ft, v.spec.name
        if ft is None or v.spec.power != "on" or name in reassigned or name not in where:
            continue
        primary = where[name]
        if ft.secondary is not None and ft.secondary != primary and states.get(ft.secondary) is HostState.RUNNING:
            continue
        if standby_counted(v, view) and ft.secondary in load:
            load[ft.secondary] = Load(load[ft.secondary].memory_mb - v.spec.memory_mb,
                                      load[ft.secondary].vcpus - v.spec.vcpus)
        others = {n: h for n, h in where.items() if n != name}
        avoid = frozenset({primary} | {h for h, hv in view.hosts.items() if host_stopped(hv)})
        host, why = place(v.spec, infos, states, load, avoid, view.rules, others)
        if host is None:
            out.append(Waiting(name, f"FT needs a secondary: no host for it: {why}"))
            continue
        load[host] = load.get(host, Load()).plus(v.spec)
        old = f"secondary {ft.secondary} {states.get(ft.secondary, HostState.UNKNOWN).value}" if ft.secondary else "no secondary"
        out.append(SetSecondary(name, host, ft.epoch + 1, ft.rev, f"{old}; {host}: {why}"))
    return out


def evacuate(view: ClusterView, states: dict[str, HostState], infos: dict, load: dict[str, Load],
             where: dict[str, str], moving: set[str]) -> list[Action]:
    """Maintenance mode: live-migrate the VMs of hosts entering maintenance, a few at a time."""
    out: list[Action] = []
    for h in sorted(x for x, s in states.items() if s is HostState.ENTERING_MAINTENANCE):
        busy = sum(1 for t in view.tasks if t.kind == "migrate" and t.src == h)
        vms = [v for v in view.vms.values()
               if v.assignment and v.assignment.host == h and v.spec.power == "on" and v.spec.name not in moving]
        for v in restart_order(vms):
            if busy >= MAINTENANCE_PARALLEL:
                break
            if v.ft is not None:
                # hand it to its secondary (the guest resumes from the last checkpoint; its held
                # output was never seen): no migration stream next to the checkpoints
                sec = ft_failover_target(v, states, view.rules, where)
                if v.owner == h and sec is not None:
                    where[v.spec.name] = sec
                    out.append(AssignVM(
                        vm=v.spec.name, host=sec, gen=v.assignment.gen + 1, expect_rev=v.assign_rev,  # type: ignore[union-attr]
                        kind="ft-failover", reason=f"{h} entering maintenance; its FT secondary on {sec} takes over",
                        expect_owner=h, ft_epoch=v.ft.epoch, ft_rev=v.ft.rev, ft_stat_rev=v.ft.stat_rev))
                else:
                    out.append(Waiting(v.spec.name, f"host {h} entering maintenance: an FT VM leaves by handing over "
                                       "to its secondary, which holds no valid checkpoint yet"))
                continue
            if v.owner != h or v.status is None or v.status.state != "running":
                out.append(Waiting(v.spec.name, f"host {h} entering maintenance: waits until it runs"))
                continue
            others = {n: x for n, x in where.items() if n != v.spec.name}
            dst, why = place(v.spec, infos, states, load, frozenset({h}), view.rules, others)
            if dst is None:
                out.append(Waiting(v.spec.name, f"cannot leave {h} (entering maintenance): {why}"))
                continue
            load[dst] = load.get(dst, Load()).plus(v.spec)
            where[v.spec.name] = dst
            busy += 1
            out.append(StartMigration(v.spec.name, h, dst, f"{h} entering maintenance; {dst}: {why}"))
    return out


def next_assignment(action: AssignVM) -> Assignment:
    return Assignment(host=action.host, gen=action.gen, reason=action.kind)
