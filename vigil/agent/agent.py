"""``vigil agent``: the one daemon on each host.

It keeps the host's lease, writes the datastore heartbeats, pets the watchdog (and systemd's),
runs the QEMUs it is assigned (only while it holds their ownership keys), watches their guests,
applies isolation responses, campaigns for the leader key to run the controller. QEMU is
daemonized, so stopping or restarting the agent never stops a VM.

This module holds the loops (tick, reconcile) and the start-up; what each does is
decided in vigil.policy (host, crashes, isolation, leader, watchdog), and carried out by
the parts beside it: lease.py (the lease and the host's keys), leader.py (leadership and
the controller), guests.py (the QEMUs: start, adopt, watch, stop, status), ft.py,
disks.py and tasks.py (FT roles, disk copies, migrations), vm_monitor.py (VM and
application monitoring's resets), all through one Env.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Awaitable, Mapping

from vigil.agent import metrics as host_metrics
from vigil.agent.context import LocalVM
from vigil.agent.disks import DiskKeeper
from vigil.agent.ft import FtRunner, Standby
from vigil.agent.guests import Guests
from vigil.agent.leader import Leadership
from vigil.agent.lease import HostLease
from vigil.agent.loadreport import LoadReport, report_load
from vigil.agent.tasks import TaskRunner
from vigil.agent.vm_monitor import VmMonitor, watched_here
from vigil.agent.sdnotify import Notifier
from vigil.agent.watchdog import make_watchdog
from vigil.config import AgentConfig
from vigil.env.base import Env
from vigil.env.hypervisor import Hypervisor, QemuHypervisor
from vigil.logs import setup_logging
from vigil.model import HbRecord, VMSpec
from vigil.policy import host as HP
from vigil.policy.crashes import LOCAL_RESTARTS, after_exit
from vigil.policy.isolation import RunningVM, isolation_actions, isolation_verdict, tick_step
from vigil.store import keys as K
from vigil.store.changes import Changes
from vigil.store.etcd import Store, StoreError
from vigil.config.etcd_client import etcd_tls
from vigil.store.state import AssignRecord, ClusterState, StateCache
from vigil.store.events import make_event, record

log = logging.getLogger("vigil.agent")

# What wakes reconcile: the keys it decides from, and those its own steps write.
RECONCILE_KEYS = (K.VMS, K.ASSIGN, K.OWN, K.FT, K.DISKSTATE, K.VMSTATUS, K.ALIVE)
RECONCILE_IDLE_S = 1.0

__all__ = ["Agent", "LocalVM", "LOCAL_RESTARTS", "main"]  # LOCAL_RESTARTS: its home is policy.crashes


class Agent:
    """One host's agent; to its helpers it is a vigil.agent.context.MigrationHost."""

    def __init__(self, cfg: AgentConfig, env: Env | None = None, store: Store | None = None,
                 hypervisor: Hypervisor | None = None) -> None:
        """``env``, ``store`` and ``hypervisor``: the world this agent acts on; by default
        the real one (a real host's clock, mounts and ping; etcd, the host's own member
        first; QEMU through vigil.env.executor)."""
        self.cfg = cfg
        self.me = cfg.host
        if env is None:
            from vigil.env.real import RealEnv

            env = RealEnv()
        self.env: Env = env
        self.store = store if store is not None else self._default_store(cfg)
        self.hypervisor: Hypervisor = hypervisor if hypervisor is not None else QemuHypervisor(cfg)
        self.run_dir = Path(cfg.run_dir)
        self.isolated = False
        self.boot = os.urandom(4).hex()
        self.vms: dict[str, LocalVM] = {}
        self.ds_ok: dict[str, bool] = {}  # datastores reached, as published (see _check_datastores)
        self.ds_reach: dict[str, bool] = {}  # datastores reached now (the heartbeat loop's)
        self.accel = "tcg"
        self.ft = FtRunner(self)
        self.disks = DiskKeeper(self)
        self.guests = Guests(self, self.ft)
        self.promoting: dict[str, Standby] = {}  # FT failovers whose standby is taken
        self.watchdog, self.notify = make_watchdog(cfg), Notifier()  # the host's, and systemd's
        self.stopped = asyncio.Event()
        self._ticked = asyncio.Event()  # set by each heartbeat tick, for the check loop
        self.lease = HostLease(self, self.boot)
        self.leadership = Leadership(self)
        self.states = StateCache()  # the snapshots' typed state, parsed once per revision
        self.monitoring = VmMonitor(self, self.env.clock, self.hypervisor, lambda now: watched_here(self.vms),
                                    lambda: [vm.spec for vm in self.vms.values()])

    @staticmethod
    def _default_store(cfg: AgentConfig) -> Store:
        local = [e for e in cfg.etcd_endpoints if e.rpartition(":")[0] == cfg.address]
        others = [e for e in cfg.etcd_endpoints if e not in local]
        return Store(local + others, timeout=min(2.0, cfg.lease_ttl / 2), prefer_first=True, tls=etcd_tls(cfg))

    # -- small helpers -----------------------------------------------------------------
    @property
    def lease_id(self) -> int:
        return self.lease.id

    def lease_ok(self) -> bool:
        return self.lease.ok()

    def stale_disks(self, vm: str) -> dict[str, str]:
        """The VM's disk copies known stale (left out when it starts here)."""
        return self.disks.stale(vm)

    async def event(self, kind: str, message: str, vm: str = "", **data: object) -> None:
        """Log and record an event, stamped by the environment's clock."""
        log.info("%s: %s", kind, message)
        ev = make_event(kind, message, host=self.me, vm=vm, source=self.me, **data)
        await record(self.store, replace(ev, time=self.env.clock.time()))

    async def sleep(self, s: float, *until: Awaitable[object]) -> None:
        """Sleep ``s`` on the environment's clock, or until the agent is told to stop (or
        one of ``until`` is done)."""
        if self.stopped.is_set():
            return
        waits = [asyncio.ensure_future(self.env.clock.sleep(s)), asyncio.ensure_future(self.stopped.wait()),
                 *map(asyncio.ensure_future, until)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def mark(self) -> int:
        """Where the store's changes stand: taken before a loop reads (see wait_change)."""
        changes = getattr(self.store, "changes", None)
        return changes.mark() if changes is not None else 0

    async def wait_change(self, mark: int, prefixes: tuple[str, ...], idle_s: float, poll_s: float) -> None:
        """Sleep until a key under ``prefixes`` changed after ``mark`` (the etcd watch
        says so), ``idle_s`` at most; while no watch runs, ``poll_s`` (the loop's old
        period: a lost watch costs reads, never a late decision)."""
        changes: Changes | None = getattr(self.store, "changes", None)
        if changes is None or not changes.watching:
            await self.sleep(poll_s)
        else:
            await self.sleep(idle_s, changes.wait(mark, prefixes))

    # -- tick: watchdog, datastore heartbeat, process and isolation checks ---------------
    async def heartbeat_loop(self) -> None:
        """The watchdog and the datastore heartbeats, from the agent's first moment, and
        never waiting on etcd: a host cut off from etcd keeps its heartbeat advancing, so
        the controller sees it partitioned, not silent (each etcd call waits out its
        timeout there, and a tick that waited on them let the heartbeat stop for seconds).
        A silent heartbeat must mean an unfed watchdog: both live here, nowhere else."""
        while not self.stopped.is_set():
            self.watchdog.tick(holds_lease=self.lease_ok(), runs_vms=bool(self.vms))
            self.ds_reach = self._reachable()
            self._write_heartbeats()
            self._ticked.set()
            self.notify.tick()
            await self.sleep(self.cfg.tick_s)

    async def check_loop(self) -> None:
        """What the tick reports to etcd, once connected: datastore changes, QEMU exits,
        guests gone silent, the start and end of an isolation. It runs right after each
        tick of the heartbeat loop and takes the datastores that tick reached (one read
        of them a tick); two ticks at most if that loop were ever late."""
        checking = None
        while not self.stopped.is_set():
            self._ticked.clear()
            await self._check_datastores()
            await self._check_processes()
            step = tick_step(self.lease.ok_until > 0, self.lease_ok(), self.isolated,
                             checking is not None and not checking.done())
            if step == "check":
                checking = asyncio.create_task(self._check_isolation())
            elif step == "end":
                self.isolated = False
                await self.event("isolation-ended", f"{self.me} reaches the cluster again")
            await self.sleep(2 * self.cfg.tick_s, self._ticked.wait())

    def _reachable(self) -> dict[str, bool]:
        return {n: self.env.datastores.reachable(n, p) for n, p in self.cfg.datastores.items()}

    def _write_heartbeats(self) -> None:
        rec = HbRecord(host=self.me, counter=int(self.env.clock.time() * 1000), boot=self.boot,
                       isolated=self.isolated, vms=tuple(sorted(self.vms)))
        for name, path in self.cfg.datastores.items():
            if self.ds_reach.get(name):
                self.env.datastores.write_heartbeat(path, rec)

    async def _check_datastores(self) -> None:
        """``ds_ok`` is the datastore list as published (host info, disk decisions); it
        follows what this host reaches (``ds_reach``, the heartbeat loop's reading) only
        after lost copies are dropped."""
        now = dict(self.ds_reach)
        changed = [n for n in now if now[n] != self.ds_ok.get(n)]
        first = not self.ds_ok
        self.ds_ok = now
        # Replicated disks drop a lost copy (every tick, until it is recorded) before the
        # controller learns of the loss, so that it sees a VM running on the copy it still
        # has, not a VM to move. (Without a lease etcd is away: no stale mark, no drop.)
        if self.lease_ok():
            await self.disks.degrade()
        if changed and not first:
            for n in changed:
                await self.event("datastore-" + ("back" if now[n] else "lost"),
                                 f"datastore {n} {'reachable again' if now[n] else 'lost'} on {self.me}")
            if self.lease_ok():
                try:
                    await self.lease.publish()
                except StoreError:
                    pass

    async def _check_processes(self) -> None:
        """Each VM in turn: a guest gone silent is reported; a QEMU that exited is counted
        and reported, and handed back once its restarts here are used up (policy.crashes)."""
        for name, vm in list(self.vms.items()):
            if vm.stopping or self.hypervisor.alive(vm.pid):
                if HP.guest_went_silent(vm.guest, vm.last_hb, self.env.clock.time(), self.cfg.guest_hb_timeout_s):
                    vm.guest = "lost"
                    await self.event("guest-heartbeat-lost",
                                     f"{name}: no guest heartbeat for {self.cfg.guest_hb_timeout_s:.0f}s on {self.me}",
                                     vm=name)
                    await self.guests.status(name, "running", message="guest heartbeat lost")
                continue
            self.guests.forget(name)
            out = after_exit(vm.gen, self.guests.failed.get(name))
            self.guests.failed[name] = out.crashes
            log.info("%s: %s", name, out.reason)
            await self.event("vm-exited", f"{name}: QEMU (pid {vm.pid}) exited on {self.me}", vm=name)
            await self.guests.status(name, out.state, message=out.message)
            if out.release:
                await self.guests.release(name)

    async def _check_isolation(self) -> None:
        peers = list(self.cfg.peers.values())
        net = self.env.network
        peer_ok, iso_ok = await asyncio.gather(
            net.any_answers(peers), net.any_answers(list(self.cfg.isolation_addresses)))
        verdict, why = isolation_verdict(self.lease_ok(), self.isolated, peer_ok, iso_ok)
        if verdict == "partitioned":
            log.warning(why)
        if verdict != "isolated":
            return
        self.isolated = True
        log.warning("%s is isolated: applying isolation responses", self.me)
        running = {n: RunningVM(vm.spec, n in self.ft.enabled) for n, vm in list(self.vms.items())}
        for act in isolation_actions(running):
            if isinstance(act, HP.PowerOff):
                await self.guests.power_off(act.vm, act.reason, report=act.report)
            elif isinstance(act, HP.Shutdown):
                asyncio.create_task(self.guests.shutdown(act.vm, act.reason))
        self._write_heartbeats()

    # -- VM execution (vigil.agent.guests) ----------------------------------------------
    async def power_off(self, name: str, why: str, report: bool = True) -> None:
        await self.guests.power_off(name, why, report)

    def plug_incoming(self, name: str, pid: int, spec: VMSpec) -> None:
        self.guests.plug_incoming(name, pid, spec)

    def unplug_incoming(self, name: str) -> None:
        self.guests.unplug_incoming(name)

    def adopt_migrated(self, name: str, pid: int, spec: VMSpec, gen: int) -> None:
        self.guests.adopt_migrated(name, pid, spec, gen)

    # -- reconcile ---------------------------------------------------------------------
    async def reconcile_loop(self) -> None:
        """Reconcile when the etcd watch reports a change of the keys it decides from or
        of those this host's own steps write (a QEMU exited, a start ended, a lease
        regained), RECONCILE_IDLE_S at most; tick_s / 2 while no watch runs, as before.
        None of its decisions is due to time alone, and safety does not rest on how
        soon it runs: a host runs a VM only while it holds the VM's ownership key (a
        guarded transaction); the lease, the datastore heartbeats and the watchdog have
        their own loops, timed as before. Its snapshot is as fresh as a read
        (vigil.store.etcd.Store.snapshot)."""
        while not self.stopped.is_set():
            mark = self.mark()
            if self.lease_ok():
                try:
                    await self.reconcile(self.states.of(await self.store.snapshot(),
                                                        getattr(self.store, "snapshot_revision", 0)))
                except StoreError as e:
                    log.warning("reconcile: %s", e)
            await self.wait_change(mark, RECONCILE_KEYS, RECONCILE_IDLE_S, self.cfg.tick_s / 2)

    async def reconcile(self, state: ClusterState) -> None:
        """Gather what etcd says and what this host knows, one VM at a time, ask
        vigil.policy.host, and carry out its answer (each VM decided right before it is
        acted on: the actions await, and the host's state moves meanwhile)."""
        specs = {name: r.spec for name, r in state.vms.items()}
        assign = state.assignments
        self.monitoring.use_settings(state.settings.get("monitoring"))
        facts = {
            name: HP.VMFacts(spec=specs.get(name),
                             assignment=assign[name].assignment if name in assign else None,
                             owner=state.owners[name].host if name in state.owners else None)
            for name in set(specs) | set(assign) | set(state.owners)
        }
        nothing = HP.VMFacts()
        mine = [name for name in assign if HP.is_mine(self.me, facts[name])]  # in etcd's order
        for name in mine:  # FT failovers: keep the standby before sync drops the role
            if HP.take_standby(self.me, name, facts[name], self._here(name)) is not None:
                sb = self.ft.take_committed(name)
                if sb is not None:
                    self.promoting[name] = sb
        self.ft.sync(state, specs)
        self.disks.update(state)
        self.disks.sync()
        # VMs running here that should not: stopped, deleted, or handed to another host.
        for name, vm in list(self.vms.items()):
            if name in mine:
                continue
            here = HP.HereFacts(running=True, stopping=vm.stopping)
            await self._carry_out(HP.stray_action(self._host_facts(), name, facts.get(name, nothing), here),
                                  facts, assign)
        for name in mine:
            a = facts[name].assignment
            assert a is not None
            vm = self.vms.get(name)
            if vm is not None:  # the spec and generation the assignment gives it
                vm.spec, vm.gen = specs[name], a.gen
            await self._carry_out(HP.assigned_action(self._host_facts(), name, facts[name], self._here(name)),
                                  facts, assign)

    def _host_facts(self) -> HP.HostFacts:
        return HP.HostFacts(me=self.me, lease_ok=self.lease_ok(), isolated=self.isolated)

    def _here(self, name: str) -> HP.HereFacts:
        vm = self.vms.get(name)
        return HP.HereFacts(running=vm is not None, stopping=vm is not None and vm.stopping,
                            starting=name in self.guests.starting, has_standby=name in self.promoting,
                            crashes=self.guests.failed.get(name))

    async def _carry_out(self, act: HP.HostAction, facts: dict[str, HP.VMFacts],
                         assign: Mapping[str, AssignRecord]) -> None:
        """One reconcile action (vigil.policy.host), with the ownership claim it needs."""
        name = act.vm
        if isinstance(act, HP.PowerOff):
            await self.guests.power_off(name, act.reason, report=act.report)
            if act.release:
                await self.guests.release(name)
        elif isinstance(act, HP.Shutdown):
            asyncio.create_task(self.guests.shutdown(name, act.reason))
        elif isinstance(act, HP.Claim):
            await self._claim(name, assign[name])
        elif isinstance(act, HP.ReportRunning):
            await self.guests.status(name, "running")
        elif isinstance(act, HP.Start):
            if act.claim and not await self._claim(name, assign[name]):
                return
            spec, a = facts[name].spec, facts[name].assignment
            assert spec is not None and a is not None
            sb = self.promoting.pop(name, None)
            if sb is not None:
                asyncio.create_task(self.guests.promote(spec, a, sb))
            else:
                asyncio.create_task(self.guests.start(spec, a))
        elif isinstance(act, HP.Wait):
            log.debug("%s: %s", name, act.reason)

    async def _claim(self, name: str, assigned: AssignRecord) -> bool:
        """Take the VM's ownership key, bound to our lease, if the assignment is unchanged."""
        return await self.store.txn(
            [self.store.absent(K.OWN + name), self.store.unchanged(K.ASSIGN + name, assigned.rev)],
            [self.store.put_op(K.OWN + name, self.me, self.lease_id)],
        )

    # -- main --------------------------------------------------------------------------
    async def run(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopped.set)
        self.ds_reach = self._reachable()
        await self._check_datastores()
        self.ft.clean_leftovers()
        for name, pid in self.hypervisor.find_running().items():
            self.guests.adopt(name, pid, None, 0, held=True)
            log.info("adopted running VM %s (pid %d)", name, pid)
        # From here on the heartbeats and the watchdog go on (armed now only if VMs run here or an
        # earlier run armed it): the slow start-up work below (the probe) never lets it expire.
        tasks = [asyncio.create_task(self.heartbeat_loop())]
        self.load = LoadReport(self.me, self.cfg.cpus, self.cfg.memory_mb)  # what report_load smooths
        if self.cfg.metrics_listen:
            host_metrics.start(self.cfg.metrics_listen, self.me, self.vms, self.cfg.datastores, self.load.record)
        self.accel = await self.hypervisor.probe_accel()
        while not self.stopped.is_set():
            try:
                await self.store.connect()
                self.store.watch()
                break
            except StoreError as e:
                log.warning("etcd: %s", e)
                await self.sleep(1)
        self.tasks = TaskRunner(self)
        tasks += [asyncio.create_task(c) for c in (self.check_loop(), self.lease.loop(), self.reconcile_loop(),
                                                   self.leadership.loop(), self.tasks.loop(),
                                                   report_load(self.env, self.store, self.load, self.vms, self.cfg.datastores,
                                                               getattr(self.hypervisor, "qemu_stats", None)),
                                                   self.monitoring.loop())]
        if self.vms:
            adopted = ", ".join(sorted(self.vms))
            asyncio.create_task(self.event("vms-adopted", f"{self.me} adopted running VMs: {adopted}"))
        await self.stopped.wait()
        self.notify.stopping()
        for t in tasks + ([self.leadership.task] if self.leadership.task else []):
            t.cancel()
        for vm in self.vms.values():
            if vm.monitor:
                vm.monitor.cancel()
        await self.ft.stop_all()
        await self.store.close()
        self.watchdog.close_clean(runs_vms=bool(self.vms))  # a clean stop only: a crash leaves it armed


def main(config_path: str) -> None:
    setup_logging()
    asyncio.run(Agent(AgentConfig.load(config_path)).run())
