"""Fault tolerance in the cycle: when a stopped primary's host hands over to the FT
secondary, and where every running FT VM keeps its secondary."""
from __future__ import annotations

from typing import Mapping, Sequence

from vigil.model import HostState, Rule
from vigil.policy.commitments import standby_counted
from vigil.policy.placement import Load, place, rule_conflict
from vigil.policy.plan_actions import Action, SetSecondary, Waiting
from vigil.policy.restart_order import restart_order
from vigil.policy.view import ClusterView, HostView, VMView

# An FT primary's host whose datastore heartbeat has been silent this long and that answers
# no ping is handed over to the secondary at once, without waiting out its lease (see
# host_stopped).
FT_SUSPECT_S = 1.0


def host_stopped(h: HostView) -> bool:
    """The host has stopped, as far as can be seen before its lease runs out: its
    datastore heartbeat is silent and it answers no ping. Its FT VMs go to their
    secondaries now, and no new secondary is placed there.
    Safe for FT VMs only: the takeover takes the primary's ownership away in the same
    transaction, so a primary that still runs can release no more output (its output is
    held until a checkpoint is acknowledged, and only the owner may write valid_from) and
    powers its copy off; the standby runs only once that QEMU let go of the disk locks."""
    return h.hb_age is not None and h.hb_age >= FT_SUSPECT_S and h.ping is False


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
