"""A simulated host's agent: the protocol of ``vigil agent``, over a ``SimEnv``.

Its protocol steps mirror vigil.agent.agent (lease loop, heartbeat and check loops,
reconcile in vigil.sim.reconcile, claim, start, power off and shut down in
vigil.sim.vm_exec, the isolation check; leadership in vigil.sim.leader, FT in
vigil.sim.ft, replicated disks in vigil.sim.disks) one for one,
in the same order, with the same keys, values and transactions, so that the REAL
controller it runs when leading sees what it sees on the lab. It calls the real pure
decisions where the real agent does: reconcile (policy.host, one VM at a time, as the
real agent asks it), crash counting (policy.crashes), isolation (policy.isolation),
watchdog arming (policy.watchdog), heartbeat silence (HbTracker); the controller is the
real ``vigil.controller.loop.Controller``. Guests, their heartbeats and I/O only as VM
monitoring sees them (vigil.sim.guests; the real agent's vigil.agent.vm_monitor runs
here unchanged). Not simulated: NICs, the accelerator probe; FT at the protocol level
only (vigil.sim.ft).
"""
from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, Coroutine

from vigil.agent.loadreport import LoadReport, load_loop
from vigil.agent.vm_monitor import VmMonitor
from vigil.agent.lease import fence_device
from vigil.model import HbRecord, HostInfo
from vigil.policy.heartbeats import HbTracker
from vigil.policy.crashes import Crashes, after_exit
from vigil.policy.host import PowerOff, Shutdown
from vigil.env.base import until
from vigil.policy.isolation import (RunningVM, StallWatch, isolation_actions, isolation_verdict, keepalive_confirms,
                                    read_confirms)
from vigil.policy.watchdog import watchdog_step
from vigil.policy.keepalive import keepalive_delay
from vigil.sim.context import LocalVM
from vigil.sim.env import SimEnv, agent_config
from vigil.sim.disks import SimDisks
from vigil.sim.ft import SimFt
from vigil.sim.blockio import SimBlockStats
from vigil.sim.guests import SimResets, watched
from vigil.sim.leader import leader_loop
from vigil.sim.migrate import SimTasks
from vigil.sim.reconcile import Reconciler
from vigil.sim.stale_member import MemberStore
from vigil.sim.world import World
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.store.events import event_put_op, make_event



class SimAgent(Reconciler):
    """One host's agent: its process, lease and check loops; reconcile and the VM
    actions are its bases (vigil.sim.reconcile, vigil.sim.vm_exec)."""

    def __init__(self, world: World, host: str) -> None:
        self.w, self.h, self.me = world, world.hosts[host], host
        self.env = SimEnv(world, host)
        self.clock = self.env.clock
        self.cfg = agent_config(world, host)
        self.store = MemberStore(world.store, partial(world.reaches_etcd, host), self.clock.sleep,  # (asked per call)
                               timeout=min(2.0, self.cfg.lease_ttl / 2),
                               stale=lambda lease: world.stale_keepalive(host, lease))
        self.lease_id = 0
        self.lease_ok_until = 0.0
        self.stalls = StallWatch(self.cfg.hb_grace_s)  # as the real agent: its heartbeat tick's gaps
        self.isolated = False
        self.boot = f"{host}-boot{self.h.boots}"
        self.vms: dict[str, LocalVM] = {}
        self.failed: dict[str, tuple[int, int, str]] = {}
        self.starting: set[str] = set()
        self.ds_ok: dict[str, bool] = {}
        self.published: dict[str, Any] = {}
        self.guest_ok: dict[str, int] = {}  # VM -> the QEMU pid whose guest heartbeat was seen
        self.leader_hb = HbTracker(self.clock.monotonic())
        self.tasks: list[asyncio.Task] = []
        self.migrations = SimTasks(self)
        self.ft = SimFt(self)
        self.disks = SimDisks(self)
        self.promoting: dict[str, int] = {}  # FT failovers whose standby is taken: its checkpoint
        self.ds_reach: dict[str, bool] = {}  # reached now (the heartbeat loop), ds_ok: as published
        self._pids: dict[str, int] = {}  # pid of each QEMU this agent started (vm-exited names it)
        self.monitoring = VmMonitor(self, self.clock, SimResets(world, host, self.clock), lambda now: watched(self, now),
                                    lambda: [vm.spec for vm in self.vms.values()])

    # -- process life --------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        t.add_done_callback(self.w.task_done)
        self.tasks.append(t)
        return t

    def start(self) -> None:
        self.spawn(self.run())

    def kill(self) -> None:
        for t in self.tasks:
            t.cancel()

    async def run(self) -> None:
        self._check_datastores_now()
        for name, q in sorted(self.h.qemus.items()):  # QEMU is daemonized: adopt what runs
            if q.state == "running":
                self.vms[name] = LocalVM(name, None)
                self._pids[name] = q.pid
        self.ds_reach = dict(self.ds_ok)
        self.spawn(self.heartbeat_loop())
        while True:  # the first etcd connection
            try:
                await self.store.get(K.LEADER)
                break
            except StoreError:
                await self.clock.sleep(1.0)
        load = LoadReport(self.me, self.cfg.cpus, self.cfg.memory_mb)
        for loop in (self.check_loop(), self.lease_loop(), self.reconcile_loop(), leader_loop(self),
                     self.migrations.loop()) + ((load_loop(self.env, self.store, load, lambda: {
                         n: q.pid for n, q in self.h.qemus.items() if n in self.vms}, self.cfg.datastores,
                         SimBlockStats(self.w, self.me, self.clock)),)
                                              if self.w.report_load else ()):
            self.spawn(loop)
        if self.vms:
            await self.event("vms-adopted", f"{self.me} adopted running VMs: {', '.join(sorted(self.vms))}")

    # -- helpers -------------------------------------------------------------------------------
    def lease_ok(self) -> bool:
        return self.lease_id != 0 and self.clock.monotonic() < self.lease_ok_until

    async def event(self, kind: str, message: str, vm: str = "") -> None:
        ev = make_event(kind, message, host=self.me, vm=vm, source=self.me, at=self.clock.time())
        try:
            await self.store.txn([], [event_put_op(self.store, ev)])
        except StoreError:  # the real agent logs it locally; so does the simulator, marked
            self.w.log(self.w.clock.virtual(ev.time), kind, vm or self.me, message + " [agent log only: etcd unreachable]")

    def host_info(self) -> HostInfo:
        return HostInfo(name=self.me, address=self.cfg.address, memory_mb=self.cfg.memory_mb, cpus=self.cfg.cpus,
                        datastores=tuple(sorted(n for n, ok in self.ds_ok.items() if ok)), accel="kvm",
                        networks=tuple(sorted(self.cfg.networks)), fencing=fence_device(self.cfg))

    # -- lease ---------------------------------------------------------------------------------
    async def _obtain_lease(self) -> None:
        old = self.h.lease_file
        t0 = self.clock.monotonic()
        if old and await self.store.lease_ttl(old) > 0 and await self.store.keepalive(old) > 0:
            self.lease_id = old
        else:
            self.lease_id = await self.store.grant(self.cfg.lease_ttl)
            self.h.lease_file = self.lease_id
        self.lease_ok_until = t0 + self.cfg.lease_ttl
        await self._publish_host()

    async def _publish_host(self) -> None:
        for name, path in self.cfg.datastores.items():
            if self.ds_ok.get(name) and (K.DATASTORES + name) not in self.published:
                await self.store.create(K.DATASTORES + name, {"name": name, "path": path})
                self.published[K.DATASTORES + name] = ()
        info = self.host_info()
        await self.store.put(K.HOSTS + self.me, info.__dict__ | {"datastores": list(info.datastores),
                                                                 "networks": list(info.networks)})
        await self.store.put(K.ALIVE + self.me, {"pid": 1, "boot": self.boot, "time": self.clock.time()},
                             lease=self.lease_id)

    async def lease_loop(self) -> None:
        timing = self.cfg.timing()
        while True:
            t0 = self.clock.monotonic()
            try:
                if self.lease_id == 0:
                    await self._obtain_lease()
                    await self.event("host-joined", f"{self.me} has a lease (accel kvm)")
                else:
                    ttl = await self.store.keepalive(self.lease_id)
                    stalled = self.stalls.since(self.lease_ok_until - self.cfg.lease_ttl, self.clock.monotonic())
                    if ttl > 0 and not keepalive_confirms(stalled, self.cfg.hb_grace_s):
                        # as HostLease._read_back: after a stall, a read shows the cluster still counts it
                        e = await self.store.get(K.ALIVE + self.me)
                        ttl = self.cfg.lease_ttl if read_confirms(e.lease if e is not None else None,
                                                                  self.lease_id) else 0
                    if ttl > 0:
                        was_lost = not self.lease_ok()
                        self.lease_ok_until = t0 + self.cfg.lease_ttl
                        if was_lost:
                            await self._publish_host()
                    else:
                        self.lease_id = 0
                        continue
            except StoreError:
                pass
            await self.clock.sleep(keepalive_delay(timing))

    # -- tick ----------------------------------------------------------------------------------
    async def heartbeat_loop(self) -> None:
        """Mirrors Agent.heartbeat_loop: watchdog and datastore heartbeats, never waiting on etcd."""
        while True:
            self.stalls.tick(self.clock.monotonic())
            action, _ = watchdog_step(self.h.watchdog_fed is not None, self.lease_ok(), bool(self.vms))
            if action != "wait":
                self.w.feed_watchdog(self.me)
            self.ds_reach = {n: self.env.datastores.reachable(n, p) for n, p in self.cfg.datastores.items()}
            self._write_heartbeats()
            await self.clock.sleep(self.cfg.tick_s)

    async def check_loop(self) -> None:
        """Mirrors Agent.check_loop: what the tick reports to etcd, once connected."""
        checking: asyncio.Task | None = None
        while True:
            await self._check_datastores()
            await self._check_processes()
            await self.monitoring.round()  # the real agent's own loop; here no timer of its own (same runs)
            lost = self.lease_ok_until > 0 and not self.lease_ok()
            if lost and not self.isolated and (checking is None or checking.done()):
                checking = self.spawn(self._check_isolation())
            elif self.lease_ok() and self.isolated:
                self.isolated = False
                await self.event("isolation-ended", f"{self.me} reaches the cluster again")
            await self.clock.sleep(self.cfg.tick_s)

    def _write_heartbeats(self) -> None:
        rec = HbRecord(host=self.me, counter=int(self.clock.time() * 1000), boot=self.boot, isolated=self.isolated,
                       vms=tuple(sorted(self.vms)))
        for name, path in self.cfg.datastores.items():
            if self.ds_reach.get(name):
                self.env.datastores.write_heartbeat(path, rec)

    def _check_datastores_now(self) -> list[str]:
        now = {n: self.env.datastores.reachable(n, p) for n, p in self.cfg.datastores.items()}
        changed = [n for n in now if self.ds_ok and now[n] != self.ds_ok.get(n)]
        self.ds_ok = now
        return changed

    async def _check_datastores(self) -> None:
        changed = self._check_datastores_now()
        if self.lease_ok():  # a lost copy is marked stale before the controller hears of the loss
            await self.disks.degrade()
        for n in changed:
            ok = self.ds_ok[n]
            await self.event("datastore-" + ("back" if ok else "lost"),
                             f"datastore {n} {'reachable again' if ok else 'lost'} on {self.me}")
        if changed and self.lease_ok():
            try:
                await self._publish_host()
            except StoreError:
                pass

    async def _check_processes(self) -> None:
        for name, vm in list(self.vms.items()):
            if vm.stopping or name in self.h.qemus:
                continue
            self.vms.pop(name, None)
            pid = self._pids.pop(name, 0)
            gen, count, msg = self.failed.get(name, (vm.gen, 0, ""))
            out = after_exit(vm.gen, Crashes(gen, count, msg) if name in self.failed else None)  # the real rule
            self.failed[name] = (out.crashes.gen, out.crashes.count, out.crashes.message)
            await self.event("vm-exited", f"{name}: QEMU (pid {pid}) exited on {self.me}", vm=name)
            await self._status(name, out.state, message=out.message)
            if out.release:
                await self._release(name)

    async def _check_isolation(self) -> None:
        peers = list(self.cfg.peers.values())
        stalled = self.stalls.since(self.lease_ok_until - self.cfg.lease_ttl)
        peer_ok, iso_ok, _ = await asyncio.gather(self.env.network.any_answers(peers),
                                                  self.env.network.any_answers(self.cfg.isolation_addresses),
                                                  until(self.clock, self.lease_ok, self.cfg.lease_ttl / 2 if stalled else 0.0))
        verdict, _ = isolation_verdict(self.lease_ok(), self.isolated, peer_ok, iso_ok, stalled, self.cfg.hb_grace_s)
        if verdict != "isolated":
            return
        self.isolated = True
        running = {name: RunningVM(vm.spec, ft=name in self.ft.enabled) for name, vm in self.vms.items()}
        for act in isolation_actions(running):  # the real agent's decision
            if isinstance(act, PowerOff):
                await self._power_off(act.vm, act.reason)
            elif isinstance(act, Shutdown):
                self.spawn(self._shutdown(act.vm, act.reason))
        self._write_heartbeats()
