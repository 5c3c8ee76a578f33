"""Maintenance mode in the cycle: the VMs of a host entering maintenance leave it by live
migration (or, FT VMs, by handing over to their secondary), a few at a time."""
from __future__ import annotations

from vigil.model import HostState
from vigil.policy.drs_load import Preference
from vigil.policy.ft_secondaries import ft_failover_target
from vigil.policy.placement import Load, place
from vigil.policy.plan_actions import Action, AssignVM, StartMigration, Waiting
from vigil.policy.restart_order import restart_order
from vigil.policy.view import ClusterView

# Live migrations a host in maintenance sends at once (vSphere allows 8 per host; TCG
# guests on small lab machines converge better a few at a time).
MAINTENANCE_PARALLEL = 2


def evacuate(view: ClusterView, states: dict[str, HostState], infos: dict, load: dict[str, Load],
             where: dict[str, str], moving: set[str], prefer: Preference | None = None) -> list[Action]:
    """Maintenance mode: live-migrate the VMs of hosts entering maintenance, a few at a time.
    ``prefer``: with DRS on, each goes where the DRS load model finds it least loaded (as
    power-on and HA restart do), so that the next DRS round does not move it again."""
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
            dst, why = place(v.spec, infos, states, load, frozenset({h}), view.rules, others, prefer)
            if dst is None:
                out.append(Waiting(v.spec.name, f"cannot leave {h} (entering maintenance): {why}"))
                continue
            load[dst] = load.get(dst, Load()).plus(v.spec)
            where[v.spec.name] = dst
            if prefer is not None:
                prefer.add(dst, v.spec)
            busy += 1
            out.append(StartMigration(v.spec.name, h, dst, f"{h} entering maintenance; {dst}: {why}"))
    return out
