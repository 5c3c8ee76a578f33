"""A simulated host's agent: the protocol of ``vigil agent``, over a ``SimEnv``.

Its protocol steps mirror vigil.agent.agent (lease loop, heartbeat and check loops,
reconcile, claim, start, power off, shut down, the isolation check; leadership in
vigil.sim.leader, FT in vigil.sim.ft, replicated disks in vigil.sim.disks) one for one,
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
from typing import Any, Coroutine, Mapping

from vigil.agent.agent import LOCAL_RESTARTS
from vigil.agent.loadreport import LoadReport, load_loop
from vigil.agent.vm_monitor import VmMonitor
from vigil.agent.lease import fence_device
from vigil.model import Assignment, HbRecord, HostInfo, VMSpec, VMStatus
from vigil.policy.heartbeats import HbTracker
from vigil.policy.crashes import Crashes, after_exit
from vigil.policy import host as HP
from vigil.policy.host import PowerOff, Shutdown
from vigil.policy.isolation import RunningVM, is_isolated, isolation_actions
from vigil.policy.watchdog import watchdog_step
from vigil.sim.context import LocalVM
from vigil.sim.env import SimEnv, agent_config
from vigil.sim.disks import SimDisks
from vigil.sim.ft import SimFt
from vigil.sim.blockio import SimBlockStats
from vigil.sim.guests import SimResets, watched
from vigil.sim.leader import leader_loop
from vigil.sim.migrate import SimTasks
from vigil.sim.reads import EtcdWord, etcd_word
from vigil.sim.store import HostStore
from vigil.sim.world import StartFailed, World
from vigil.store import keys as K
from vigil.store.etcd import Entry, StoreError
from vigil.store.events import event_put_op, make_event

START_S = 0.5  # QEMU's start-up until it runs
GUEST_SHUTDOWN_S = 1.0  # a guest's clean ACPI shutdown


class SimAgent:
    def __init__(self, world: World, host: str) -> None:
        self.w, self.h, self.me = world, world.hosts[host], host
        self.env = SimEnv(world, host)
        self.clock = self.env.clock
        self.cfg = agent_config(world, host)
        self.store = HostStore(world.store, lambda: world.reaches_etcd(host), self.clock.sleep,
                               timeout=min(2.0, self.cfg.lease_ttl / 2))
        self.lease_id = 0
        self.lease_ok_until = 0.0
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
        while True:
            t0 = self.clock.monotonic()
            try:
                if self.lease_id == 0:
                    await self._obtain_lease()
                    await self.event("host-joined", f"{self.me} has a lease (accel kvm)")
                else:
                    ttl = await self.store.keepalive(self.lease_id)
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
            await self.clock.sleep(self.cfg.lease_ttl / 6)

    # -- tick ----------------------------------------------------------------------------------
    async def heartbeat_loop(self) -> None:
        """Mirrors Agent.heartbeat_loop: watchdog and datastore heartbeats, never waiting on etcd."""
        while True:
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
        peer_ok, iso_ok = await asyncio.gather(self.env.network.any_answers(peers),
                                               self.env.network.any_answers(self.cfg.isolation_addresses))
        if self.lease_ok() or self.isolated or not is_isolated(True, peer_ok, iso_ok):
            return
        self.isolated = True
        running = {name: RunningVM(vm.spec, ft=name in self.ft.enabled) for name, vm in self.vms.items()}
        for act in isolation_actions(running):  # the real agent's decision
            if isinstance(act, PowerOff):
                await self._power_off(act.vm, act.reason)
            elif isinstance(act, Shutdown):
                self.spawn(self._shutdown(act.vm, act.reason))
        self._write_heartbeats()

    # -- VM execution --------------------------------------------------------------------------
    async def _status(self, name: str, state: str, message: str = "") -> None:
        q = self.h.qemus.get(name)
        pid = q.pid if q and name in self.vms else 0
        guest = "ok" if state == "running" and q is not None and self.guest_ok.get(name) == q.pid else "unknown"
        key = (state, pid, message, guest)
        if self.published.get(name) == key:
            return
        st = VMStatus(host=self.me, state=state, pid=pid, message=message, guest=guest)
        try:
            await self.store.put(K.VMSTATUS + name, st.__dict__)
            self.published[name] = key
        except StoreError:
            pass

    async def _power_off(self, name: str, why: str, report: bool = True) -> None:
        vm = self.vms.get(name)
        if not vm:
            return
        vm.stopping = True
        self.w.stop_qemu(self.me, name)
        self.vms.pop(name, None)
        await self.event("vm-powered-off", f"{name} powered off on {self.me}: {why}", vm=name)
        if report:
            await self._status(name, "stopped", message=why)

    async def _shutdown(self, name: str, why: str) -> None:
        vm = self.vms.get(name)
        if not vm or vm.stopping:
            return
        vm.stopping = True
        timeout = vm.spec.shutdown_timeout_s if vm.spec else 20.0
        guest = self.w.guest_shutdown_s.get(name, GUEST_SHUTDOWN_S)
        await self.clock.sleep(min(guest, timeout))
        self.w.stop_qemu(self.me, name)
        self.vms.pop(name, None)
        how = "shut down" if guest <= timeout else f"powered off after {timeout:.0f}s shutdown timeout"
        await self.event("vm-stopped", f"{name} {how} on {self.me}: {why}", vm=name)
        await self._status(name, "stopped", message=why)
        await self._release(name)

    async def _release(self, name: str) -> None:
        try:
            await self.store.txn([self.store.equals(K.OWN + name, self.me)], [self.store.delete_op(K.OWN + name)])
        except StoreError:
            pass

    async def _start(self, spec: VMSpec, a: Assignment) -> None:
        name = spec.name
        self.starting.add(name)
        try:
            await self._status(name, "starting")
            await self.event("vm-starting", f"{name} starting on {self.me} (gen {a.gen}, {a.reason})", vm=name)
            await self.clock.sleep(START_S)
            q = self.w.start_qemu(self.me, spec.without_stale(self.disks.stale(name)))
        except StartFailed as e:
            self.failed[name] = (a.gen, LOCAL_RESTARTS, str(e))
            await self.event("vm-start-failed", f"{name} failed to start on {self.me}: {e}", vm=name)
            await self._release(name)
            await self._status(name, "failed", message=str(e))
            return
        finally:
            self.starting.discard(name)
        self.vms[name] = LocalVM(name, spec, a.gen)
        self._pids[name] = q.pid
        await self.event("vm-started", f"{name} started on {self.me} (pid {q.pid})", vm=name)
        await self._status(name, "running")
        if (up := self.w.guest_up_s.get(name)) is not None:
            self.spawn(self._guest_up(name, q.pid, up))

    async def _guest_up(self, name: str, pid: int, after: float) -> None:
        """The guest's first heartbeat, ``after`` seconds into its run (the real agent's
        guest channel, reduced to the moment the status says "ok")."""
        await self.clock.sleep(after)
        vm, q = self.vms.get(name), self.h.qemus.get(name)
        if vm is not None and q is not None and q.pid == pid:
            self.guest_ok[name] = pid
            await self._status(name, "running")

    # -- reconcile -----------------------------------------------------------------------------
    async def reconcile_loop(self) -> None:
        while True:
            if self.lease_ok():
                try:
                    await self.reconcile(await etcd_word(self.store))
                    await self.monitoring.read_settings()  # the real agent: from its snapshot
                except StoreError:
                    pass
            await self.clock.sleep(self.cfg.tick_s / 2)

    async def reconcile(self, word: EtcdWord) -> None:
        """vigil.agent.agent.Agent.reconcile over the simulated host: the same
        vigil.policy.host decisions, asked one VM at a time right before each is carried
        out, in the same order (FT standbys taken, FT and disk sync, VMs that must stop
        here, VMs assigned here). ``word``: the keys reconcile looks at (the real agent
        takes a whole snapshot), read at one revision (vigil.sim.reads)."""
        specs, facts, assign = word.specs, word.facts, word.assign
        mine = word.mine.get(self.me, ())
        for name in mine:  # FT failovers: keep the standby before sync drops the role
            if HP.take_standby(self.me, name, facts[name], self._here(name)) is not None:
                seq = self.ft.take(name)
                if seq is not None:
                    self.promoting[name] = seq
        if word.ft or self.ft.standby:
            await self.ft.sync(word)
        self.disks.update(word.diskstate)
        self.disks.sync()
        nothing = HP.VMFacts()
        for name, vm in list(self.vms.items()):  # running here, not assigned here to run
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
        """As the real agent's: an incoming migration's copy counts as a start under way
        (the real agent's takeover and adoption of it happen with no wait between)."""
        vm = self.vms.get(name)
        crashes = None
        if name in self.failed:
            gen, count, msg = self.failed[name]
            crashes = Crashes(gen, count, msg)
        return HP.HereFacts(running=vm is not None, stopping=vm is not None and vm.stopping,
                            starting=name in self.starting or name in self.migrations.incoming,
                            has_standby=name in self.promoting, crashes=crashes)

    async def _carry_out(self, act: HP.HostAction, facts: Mapping[str, HP.VMFacts],
                         assign: Mapping[str, Entry]) -> None:
        """One reconcile action, as vigil.agent.agent.Agent._carry_out does it."""
        name = act.vm
        if isinstance(act, HP.PowerOff):
            await self._power_off(name, act.reason, report=act.report)
            if act.release:
                await self._release(name)
        elif isinstance(act, HP.Shutdown):
            self.spawn(self._shutdown(name, act.reason))
        elif isinstance(act, HP.Claim):
            await self._claim(name, assign[name])
        elif isinstance(act, HP.ReportRunning):
            await self._status(name, "running")
        elif isinstance(act, HP.Start):
            if act.claim and not await self._claim(name, assign[name]):
                return
            spec, a = facts[name].spec, facts[name].assignment
            assert spec is not None and a is not None
            seq = self.promoting.pop(name, None)
            if seq is not None:
                self.spawn(self.ft.promote(spec, a.gen, seq))
            else:
                self.spawn(self._start(spec, a))

    async def _claim(self, name: str, assign_entry: Entry) -> bool:
        return await self.store.txn(
            [self.store.absent(K.OWN + name), self.store.unchanged(K.ASSIGN + name, assign_entry.mod_revision)],
            [self.store.put_op(K.OWN + name, self.me, self.lease_id)])
