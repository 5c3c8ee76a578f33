"""The controller: runs inside the leading agent, never talks to QEMU.

Each cycle (every CYCLE_S, sooner on an etcd change: see Controller.run): read every key
at one revision (from memory while the etcd watch reports no change), read the datastore heartbeats, ping hosts that
went silent, build a ``ClusterView``, call the pure ``plan``, and write the decisions in
transactions guarded by the leader key (a deposed leader's writes fail).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any, Callable

from vigil.policy import hastats as stats
from vigil.controller.fence import Fences
from vigil.policy.fencing import FenceHost
from vigil.env.base import Env, read_all_heartbeats
from vigil.env.pings import Pings
from vigil.env.real import RealEnv
from vigil.config import AgentConfig
from vigil.controller.drs import DrsRunner
from vigil.model import TASK_ACTIVE, Assignment, HostInfo, HostState, Task
from vigil.policy.plan import (VMCP_REASON, AssignVM, MarkStale, NotRestarted, PowerOffForRestart, SetHostState, SetSecondary,
                               StartMigration, Waiting, next_assignment, plan)
from vigil.policy.heartbeats import PING_AFTER_S, HbTracker
from vigil.policy.host_rules import resolve
from vigil.policy.orchestration import Held, ready_marks
from vigil.policy.replicas import stale_map
from vigil.policy.view import ClusterView, FtView, HostView, Retry, Timing, VMView
from vigil.store import keys as K
from vigil.store.etcd import Store, StoreError
from vigil.store.changes import Changes
from vigil.store.state import ClusterState, FtRecord, FtReport, FtStat, StateCache
from vigil.store.events import event_put_op, make_event, trim

log = logging.getLogger("vigil.controller")

CYCLE_S = 0.25
MIN_GAP_S = 0.05  # between two cycles begun by etcd changes
# The keys whose change starts a cycle at once (acknowledgements and FT figures are read
# every cycle, but checkpoints come many a second: they wait for the period).
PLAN_KEYS = (K.HOSTS, K.ALIVE, K.VMS, K.ASSIGN, K.OWN, K.VMSTATUS, K.HOSTSTATE, K.LEADER, K.RULES, K.TASKS,
             K.MAINTENANCE, K.FT, K.DISKSTATE, K.DATASTORES, K.HOSTGROUPS, K.SETTINGS)


_HOST_STATES = {s.value: s for s in HostState}


def _host_state(value: object) -> HostState:
    """``HostState(value)``, without the enum's slow call for the states it knows."""
    known = _HOST_STATES.get(value) if isinstance(value, str) else None
    return known if known is not None else HostState(value)


@dataclass(frozen=True)
class _FromState:
    """The parts of a cycle's view that follow from its typed state alone (shared by the
    views of one state: no one changes a view)."""

    state: ClusterState
    infos: dict[str, HostInfo]
    prev: dict[str, Any]
    vms: dict[str, VMView]
    tasks: tuple[Task, ...]
    rules: Any
    reach: frozenset[tuple[str, str]]


class Controller:
    def __init__(self, store: Store, me: str, cfg: AgentConfig, is_leader: Callable[[], bool],
                 env: Env | None = None, hb: HbTracker | None = None,
                 pings: dict[str, tuple[float, bool]] | None = None) -> None:
        """``env``: the clock, datastores and network it sees (the simulator passes its own).
        ``hb`` and ``pings``: what the agent already observed while it watched the old
        leader (HbTracker.handed_over), so that a leader's death is acted on at once."""
        self.env: Env = env if env is not None else RealEnv()
        self.store = store
        self.me = me
        self.cfg = cfg
        self.is_leader = is_leader
        self.timing = Timing(
            lease_ttl=cfg.lease_ttl, hb_grace=cfg.hb_grace_s, watchdog=cfg.watchdog_s,
        )
        self.hb = hb if hb is not None else HbTracker(self.env.clock.monotonic())
        self.pings = Pings(self.env, pings)
        self.retries: dict[str, Retry] = {}
        self.ft_waits: dict[str, float] = {}
        self.notes: dict[str, str] = {}  # last Waiting/NotRestarted message per VM, to log once
        self.holds: dict[str, float] = {}  # see ClusterView.holds
        self.ready_since: dict[str, tuple[int, float]] = {}  # see ClusterView.ready_since
        self.cycles = 0
        self.reach_since: dict[tuple[str, str], float] = {}  # see ClusterView.reach_since
        self._failed_leases: list[tuple[str, int]] = []  # revoked at the end of the cycle
        self.failed_at: dict[str, float] = {}  # wall time each host was last found failed or isolated
        self._came_from: dict[str, str] = {}  # this cycle: each VM's host before its actions
        self.stats = stats.empty()  # read from etcd each cycle: a new leader carries on
        self.states = StateCache()
        self._vm_views: dict[str, tuple[tuple, VMView]] = {}  # see _derived
        self._from_state: _FromState | None = None  # see _derived
        self.drs = DrsRunner()
        self.fences = Fences(self.env, store, me)  # fences through hosts' BMCs (vigil.policy.fencing)

    async def run(self) -> None:
        """A cycle every CYCLE_S, and one sooner when the etcd watch reports a change of a
        key the plan reads (not before MIN_GAP_S after the last one began).

        The period is kept: a dead host is found by time alone (its datastore heartbeat
        silent, its lease run out), with no etcd change to announce it, so the plan runs
        every CYCLE_S whatever happens in etcd. What changed is the cost of a cycle when
        nothing did: the snapshot comes from memory while the watch reports no change
        (vigil.store.etcd.Store.snapshot: as fresh as a read), and its typed state is
        parsed once per revision. Every write is still a transaction guarded by the
        leader key and the revisions the plan read, so no decision rests on the read
        being newer than it is."""
        log.info("controller active on %s", self.me)
        clock = self.env.clock
        changes: Changes | None = getattr(self.store, "changes", None)  # the simulator's store has none
        while True:
            began = clock.monotonic()
            mark = changes.mark() if changes is not None else 0
            try:
                if self.is_leader():
                    await self.cycle()
            except StoreError as e:
                log.warning("controller: %s", e)
            except Exception:  # a bug must not kill the leader's agent; log and go on
                log.exception("controller cycle failed")
            if changes is None or not changes.watching:
                await clock.sleep(CYCLE_S)
                continue
            woke = asyncio.ensure_future(changes.wait(mark, PLAN_KEYS))
            nap = asyncio.ensure_future(clock.sleep(CYCLE_S))
            try:
                await asyncio.wait((woke, nap), return_when=asyncio.FIRST_COMPLETED)
            finally:
                woke.cancel()
                nap.cancel()
            gap = MIN_GAP_S - (clock.monotonic() - began)
            if gap > 0:
                await clock.sleep(gap)

    def _read_heartbeats(self, now: float) -> bool:
        """Read every reachable datastore's heartbeat files; False when we reach none
        (then silence means nothing: our own storage is gone, not the other hosts)."""
        reached, records = read_all_heartbeats(self.env, self.cfg.datastores)
        self.hb.observe(now, records)
        return reached

    def _derived(self, state: ClusterState) -> "_FromState":
        """What the view takes from the typed state alone: made again only for a new
        state (StateCache gives the same ClusterState while the revision stands, about
        every other cycle, and a ClusterState never changes)."""
        last = self._from_state
        if last is not None and last.state is state:
            return last
        vms: dict[str, VMView] = {}
        # a VM's view is made of its records alone: kept from the last cycle while they are
        # the same (the typed state keeps a record while its key is unchanged)
        old, views = self._vm_views, {}
        for name, r in state.vms.items():
            a = state.assignments.get(name)
            ds = state.disk_states.get(name)
            own = state.owners.get(name)
            ft = state.ft.get(name)
            status = state.statuses.get(name)
            ack, stat = (state.ft_acks.get(name), state.ft_stats.get(name)) if ft else (None, None)
            records = (r, a, ds, own, status, ft, ack, stat)
            hit = old.get(name)
            if hit is not None and hit[0] == records:
                vms[name] = hit[1]
                views[name] = hit
                continue
            vms[name] = VMView(
                spec=r.spec.without_stale(stale_map(ds.value)) if ds else r.spec,
                diskstate=dict(ds.value) if ds else {},
                diskstate_rev=ds.rev if ds else 0,
                assignment=a.assignment if a else None,
                assign_rev=a.rev if a else 0,
                owner=own.host if own else None,
                status=status,
                ft=ft_view(ft, ack, stat) if ft else None,
            )
            views[name] = (records, vms[name])
        self._vm_views = views
        infos = {h: r.info for h, r in state.hosts.items()}
        alive = state.alive
        self._from_state = _FromState(
            state=state, infos=infos, prev={h: r.state for h, r in state.host_states.items()}, vms=vms,
            tasks=tuple(r.task for r in state.tasks.values() if r.task.state in TASK_ACTIVE),
            rules=resolve(state.rules.values(), state.host_groups),
            reach=frozenset((h, d) for h, i in infos.items() if h in alive for d in i.datastores))
        return self._from_state

    def build_view(self, state: ClusterState, now: float, hb_readable: bool = True) -> ClusterView:
        """The policy's input: the store's typed state plus what this controller observed
        (datastore heartbeats, ping, retries, waits)."""
        wall = self.env.clock.time()
        derived = self._derived(state)
        infos, prev, vms, tasks, rules, reach = (derived.infos, derived.prev, derived.vms, derived.tasks,
                                                 derived.rules, derived.reach)
        alive = state.alive
        maintenance = state.maintenance
        hosts: dict[str, HostView] = {}
        for h, info in infos.items():
            age = self.hb.age(h, now, wall) if hb_readable else None
            rec = self.hb.latest.get(h)
            if age is not None and age >= PING_AFTER_S:
                self.pings.probe(h, info.address)
            ping_ok = self.pings.fresh(h, now)
            hv = hosts[h] = HostView(
                name=h, info=info, alive=h in alive, lease=alive.get(h, 0), hb_age=age,
                hb_isolated=bool(rec and rec.isolated), hb_vms=frozenset(rec.vms) if rec else frozenset(),
                ping=ping_ok, prev_state=_host_state(prev.get(h, "unknown")), maintenance=h in maintenance,
                restarting=h in state.restarting,
            )
            fence = self.fences.of(hv, self.timing)
            if fence is not None:  # (most hosts have none: no copy of their view then)
                hosts[h] = replace(hv, fence=fence)
        for key in list(self.reach_since):
            if key not in reach:
                del self.reach_since[key]
        for key in reach:  # first seen by this controller: since its start at the latest
            self.reach_since.setdefault(key, now if self.cycles else float("-inf"))
        return ClusterView(now=now, hosts=hosts, vms=vms, timing=self.timing,
                           retries=MappingProxyType(dict(self.retries)), rules=rules, tasks=tasks,
                           ft_waits=MappingProxyType(dict(self.ft_waits)),
                           reach_since=MappingProxyType(dict(self.reach_since)),
                           loads=state.loads, drs=state.settings.get("drs", MappingProxyType({})),
                           settings=state.settings,
                           holds=MappingProxyType(dict(self.holds)))

    async def cycle(self) -> None:
        snap = await self.store.snapshot()
        now = self.env.clock.monotonic()
        state = self.states.of(snap, getattr(self.store, "snapshot_revision", 0))
        view = self.build_view(state, now, self._read_heartbeats(now))
        for name, v in view.vms.items():  # a VM that runs again starts its backoff afresh
            if v.status is not None and v.status.state == "running":
                self.retries.pop(name, None)
                self.ft_waits.pop(name, None)
            elif v.spec.power != "on" and (name in self.retries or (v.assignment is not None and v.assignment.retries)):
                # a power cycle by the user starts the count again (the assignment's count too)
                self.retries[name] = Retry(attempts=0, not_before=float("-inf"))
        self._came_from = {n: v.assignment.host for n, v in view.vms.items() if v.assignment}
        stored = snap.get(K.STATS_HA)
        self.stats = stats.loaded(stored.value if stored else None)
        before = self.stats
        self.ready_since = ready_marks(view, self.ready_since)
        planned = view  # no marks: the view's own empty ready_since is the same input, without a copy
        if self.ready_since or view.ready_since:
            planned = replace(view, ready_since=MappingProxyType(dict(self.ready_since)))
        actions = plan(planned)
        self.holds = {a.vm: a.since for a in actions if isinstance(a, Held)}
        for action in actions:
            await self.apply(action)
        await self.drs.cycle(self, view, state, snap.get(K.DRS))
        running = {n: (v.assignment.gen, v.status.since) for n, v in view.vms.items()
                   if v.assignment and v.status and v.status.state == "running" and v.status.host == v.assignment.host}
        self.stats = stats.fold_tasks(stats.fold_running(self.stats, running), (r.task for r in state.tasks.values()))
        if self.stats != before:
            await self._guarded([], [self.store.put_op(K.STATS_HA, self.stats)])
        await self._revoke_failed()
        self.cycles += 1
        if self.cycles % 400 == 0:
            await trim(self.store)

    async def _revoke_failed(self) -> None:
        """A failed host's lease would expire by itself; revoking it frees its keys at once.
        Done after the cycle's restarts: those take its VMs' ownership keys in their own
        transactions (expecting the failed host there), which a revoke first would make
        fail until the next cycle."""
        while self._failed_leases:
            host, lease = self._failed_leases.pop(0)
            try:
                await self.store.revoke(lease)
            except StoreError as e:
                log.warning("revoking the lease of %s: %s", host, e)

    async def _guarded(self, compare: list, ops: list) -> bool:
        """Write only while we still hold the leader key."""
        return await self.store.txn([self.store.equals(K.LEADER, self.me)] + compare, ops)

    async def apply(self, action: object) -> None:
        st = self.store
        wall = self.env.clock.time()
        if isinstance(action, SetHostState):
            ev = make_event("host-" + action.state.value, f"host {action.host} is {action.state.value}: {action.reason}",
                            host=action.host, source="controller", at=wall)
            await self._guarded([], [
                st.put_op(K.HOSTSTATE + action.host,
                          {"state": action.state.value, "since": wall, "reason": action.reason}),
                event_put_op(st, ev),
            ])
            log.info("host %s -> %s (%s)", action.host, action.state.value, action.reason)
            if action.state in (HostState.FAILED, HostState.ISOLATED):
                self.failed_at[action.host] = wall
            if action.state is HostState.FAILED and action.lease:
                self._failed_leases.append((action.host, action.lease))
        elif isinstance(action, AssignVM):
            a = next_assignment(action)
            ev = make_event(f"vm-{action.kind}", f"{action.vm}: {action.kind} on {action.host} ({action.reason})",
                            vm=action.vm, host=action.host, source="controller", at=wall, gen=action.gen)
            own_key = K.OWN + action.vm
            if action.expect_owner is None:
                owner_check, release = [st.absent(own_key)], []
            else:  # a failed host's key: taken away in the same transaction
                owner_check, release = [st.equals(own_key, action.expect_owner)], [st.delete_op(own_key)]
            if action.ft_epoch is not None:  # (FT turned off meanwhile: the check fails, next cycle redoes it)
                owner_check.append(st.unchanged(K.FT + action.vm, action.ft_rev))
            if action.kind == "ft-failover":  # no newer valid_from written by the primary since we looked
                owner_check.append(st.unchanged(K.FTSTAT + action.vm, action.ft_stat_rev))
                release.append(st.put_op(K.FT + action.vm, {"secondary": None, "epoch": action.ft_epoch + 1}))
            ok = await self._guarded(
                [st.unchanged(K.ASSIGN + action.vm, action.expect_rev)] + owner_check,
                release + [st.put_op(K.ASSIGN + action.vm, a.__dict__), event_put_op(st, ev)],
            )
            if ok and action.kind in ("restart", "ft-failover"):
                old = self._came_from.get(action.vm, "")
                self.stats = stats.fold_restart(self.stats, action.vm, a.gen, self.failed_at.get(old, wall))
            if ok:
                self.notes.pop(action.vm, None)
                if action.retry is not None:
                    self.retries[action.vm] = action.retry
                log.info("%s -> %s (%s)", action.vm, action.host, action.reason)
        elif isinstance(action, StartMigration):
            task = Task(id=f"{action.vm}-{int(wall * 1000)}", kind="migrate", vm=action.vm, src=action.src,
                        dst=action.dst, reason=action.task_reason, created=wall, updated=wall)
            ev = make_event("task-migrate", f"{action.vm}: migration {action.src} -> {action.dst} ({action.reason})",
                            vm=action.vm, host=action.src, source="controller", at=wall, task=task.id)
            prev = await st.get(K.TASKS + action.vm)
            if prev is not None and Task.from_json(prev.value).state in TASK_ACTIVE:
                return
            await self._guarded(
                [st.unchanged(K.TASKS + action.vm, prev.mod_revision if prev else 0),
                 st.equals(K.OWN + action.vm, action.src)],
                [st.put_op(K.TASKS + action.vm, asdict(task)), event_put_op(st, ev)])
        elif isinstance(action, PowerOffForRestart):
            ev = make_event("vm-component-protection", f"{action.vm}: powered off on {action.host} to restart it "
                            f"elsewhere ({action.reason})", vm=action.vm, host=action.host, source="controller",
                            at=wall)
            await self._guarded(
                [st.unchanged(K.ASSIGN + action.vm, action.expect_rev), st.equals(K.OWN + action.vm, action.host)],
                [st.put_op(K.ASSIGN + action.vm, Assignment(host="", gen=action.gen, reason=VMCP_REASON).__dict__),
                 event_put_op(st, ev)])
        elif isinstance(action, MarkStale):
            ev = make_event("disk-degraded", f"{action.vm}: disk {action.disk}'s copy on {action.datastore} marked "
                            f"stale ({action.reason}); the VM starts on its other copy", vm=action.vm,
                            disk=action.disk, datastore=action.datastore, source="controller", at=wall)
            await self._guarded([st.unchanged(K.DISKSTATE + action.vm, action.expect_rev)],
                                [st.put_op(K.DISKSTATE + action.vm, dict(action.state)), event_put_op(st, ev)])
        elif isinstance(action, SetSecondary):
            ev = make_event("ft-secondary-placed", f"{action.vm}: FT secondary on {action.host} ({action.reason})",
                            vm=action.vm, host=action.host, source="controller", at=wall, epoch=action.epoch)
            await self._guarded([st.unchanged(K.FT + action.vm, action.expect_rev)], [
                st.put_op(K.FT + action.vm, {"secondary": action.host, "epoch": action.epoch}), event_put_op(st, ev)])
        elif isinstance(action, FenceHost):
            await self.fences.begin(action)
        elif isinstance(action, (Waiting, NotRestarted)):
            if isinstance(action, Waiting) and action.deadline is not None:
                self.ft_waits.setdefault(action.vm, action.deadline)
            if self.notes.get(action.vm) != action.reason:
                self.notes[action.vm] = action.reason
                kind = "vm-waiting" if isinstance(action, Waiting) else "vm-not-restarted"
                ev = make_event(kind, f"{action.vm}: {action.reason}", vm=action.vm, source="controller", at=wall)
                await self._guarded([], [event_put_op(st, ev)])


def ft_view(ft: FtRecord, ack: FtReport | None, stat: FtStat | None) -> FtView:
    """The controller's reading of one VM's FT records: only what the current secondary
    acknowledged in the current epoch counts, and only what the primary allows."""
    sec, epoch = ft.secondary, ft.epoch
    ack_seq = -1
    if ack is not None and ack.host == sec and ack.epoch == epoch:
        ack_seq = ack.seq
    valid_from = None
    vf = stat.valid_from if stat is not None else None
    if vf and vf[0] == epoch and stat is not None and stat.secondary == sec:
        valid_from = vf[1]
    return FtView(secondary=sec, epoch=epoch, ack_seq=ack_seq, valid_from=valid_from, rev=ft.rev,
                  stat_rev=stat.rev if stat is not None else 0)
