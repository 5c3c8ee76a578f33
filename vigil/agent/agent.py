"""``vigil agent``: the one daemon on each host.

It keeps the host's lease, writes the datastore heartbeats, pets the watchdog, runs the
QEMUs it is assigned (only while it holds their ownership keys), watches their guests,
applies isolation responses, and campaigns for the leader key to run the controller.
QEMU is daemonized, so stopping or restarting the agent never stops a VM.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Callable

from vigil.agent import executor
from vigil.agent.context import LocalVM
from vigil.agent.disks import DiskKeeper
from vigil.agent.ft import FtRunner, Standby
from vigil.agent.nics import NicPort
from vigil.agent.tasks import TaskRunner
from vigil.agent.watchdog import FileWatchdog
from vigil.env.base import Env
from vigil.policy.heartbeats import HbTracker
from vigil.policy import host as HP
from vigil.policy.crashes import Crashes, after_exit, start_failed
from vigil.policy.leader import leader_failed, ping_needed
from vigil.policy.isolation import RunningVM, isolation_actions, isolation_verdict, tick_step
from vigil.config import AgentConfig
from vigil.hypervisor.qemu import OutputGate
from vigil.model import Assignment, HbRecord, HostInfo, VMSpec, VMStatus
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store, StoreError
from vigil.store.events import make_event, record

log = logging.getLogger("vigil.agent")


class Agent:
    def __init__(self, cfg: AgentConfig, env: Env | None = None, store: Store | None = None) -> None:
        """``env`` and ``store``: the world this agent acts on; by default the real one
        (a real host's clock, mounts and ping; etcd, the host's own member first)."""
        self.cfg = cfg
        self.me = cfg.host
        if env is None:
            from vigil.env.real import RealEnv

            env = RealEnv()
        self.env: Env = env
        self.store = store if store is not None else self._default_store(cfg)
        self.run_dir = Path(cfg.run_dir)
        self.lease_id = 0
        self.lease_ok_until = 0.0
        self.isolated = False
        self.boot = os.urandom(4).hex()
        self.vms: dict[str, LocalVM] = {}
        self.failed: dict[str, Crashes] = {}  # vm -> its crashes here (vigil.policy.crashes)
        self.starting: set[str] = set()
        self.ds_ok: dict[str, bool] = {}
        self.accel = "tcg"
        self.leader_task: asyncio.Task | None = None
        self.leader_hb = HbTracker(env.clock.monotonic())
        self.published: dict[str, tuple] = {}
        self.ft = FtRunner(self)
        self.disks = DiskKeeper(self)
        self.promoting: dict[str, Standby] = {}  # FT failovers whose standby is taken
        self.plugged: dict[str, tuple[OutputGate, asyncio.Task]] = {}  # incoming migrations' NICs
        self.watchdog = FileWatchdog(cfg.watchdog_file)
        self.connected = False  # etcd answered once: the tick may report to it
        self.stopped = asyncio.Event()
        self._lease_file = self.run_dir / "agent-lease.json"

    @staticmethod
    def _default_store(cfg: AgentConfig) -> Store:
        local = [e for e in cfg.etcd_endpoints if e.rpartition(":")[0] == cfg.address]
        others = [e for e in cfg.etcd_endpoints if e not in local]
        return Store(local + others, timeout=min(2.0, cfg.lease_ttl / 2), prefer_first=True)

    # -- small helpers -----------------------------------------------------------------
    def lease_ok(self) -> bool:
        return self.lease_id != 0 and self.env.clock.monotonic() < self.lease_ok_until

    def stale_disks(self, vm: str) -> dict[str, str]:
        """The VM's disk copies known stale (left out when it starts here)."""
        return self.disks.stale(vm)

    async def event(self, kind: str, message: str, vm: str = "", **data: object) -> None:
        log.info("%s: %s", kind, message)
        await record(self.store, make_event(kind, message, host=self.me, vm=vm, source=self.me, **data))

    def host_info(self) -> HostInfo:
        return HostInfo(
            name=self.me, address=self.cfg.address, memory_mb=self.cfg.memory_mb, cpus=self.cfg.cpus,
            datastores=tuple(sorted(n for n, ok in self.ds_ok.items() if ok)), accel=self.accel,
            networks=tuple(sorted(self.cfg.networks)),
        )

    # -- lease -------------------------------------------------------------------------
    async def _obtain_lease(self) -> None:
        """Reuse the lease of a previous agent run if it is still alive, else grant a new one."""
        old = 0
        try:
            old = int(json.loads(self._lease_file.read_text())["lease"])
        except (OSError, ValueError, KeyError):
            pass
        t0 = self.env.clock.monotonic()
        if old and await self.store.lease_ttl(old) > 0 and await self.store.keepalive(old) > 0:
            self.lease_id = old
        else:
            self.lease_id = await self.store.grant(self.cfg.lease_ttl)
            self._lease_file.write_text(json.dumps({"lease": self.lease_id}))
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
        await self.store.put(K.ALIVE + self.me, {"pid": os.getpid(), "boot": self.boot, "time": self.env.clock.time()},
                             lease=self.lease_id)

    async def lease_loop(self) -> None:
        while not self.stopped.is_set():
            t0 = self.env.clock.monotonic()
            try:
                if self.lease_id == 0:
                    await self._obtain_lease()
                    await self.event("host-joined", f"{self.me} has a lease (accel {self.accel})")
                else:
                    ttl = await self.store.keepalive(self.lease_id)
                    if ttl > 0:
                        was_lost = not self.lease_ok()
                        self.lease_ok_until = t0 + self.cfg.lease_ttl
                        if was_lost:
                            await self._publish_host()
                    else:
                        log.warning("lease %x expired; asking for a new one", self.lease_id)
                        self.lease_id = 0
                        continue
            except StoreError as e:
                log.warning("lease: %s", e)
            await self.sleep(self.cfg.lease_ttl / 6)

    async def sleep(self, s: float) -> None:
        """Sleep ``s`` on the environment's clock, or until the agent is told to stop."""
        if self.stopped.is_set():
            return
        nap = asyncio.ensure_future(self.env.clock.sleep(s))
        stop = asyncio.ensure_future(self.stopped.wait())
        try:
            await asyncio.wait((nap, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            stop.cancel()

    # -- tick: watchdog, datastore heartbeat, process and isolation checks ---------------
    async def tick_loop(self) -> None:
        """Runs from the agent's first moments: the datastore heartbeats and the watchdog
        go together (a silent heartbeat must mean an unfed watchdog). Process and isolation
        checks wait for etcd (``self.connected``): they report there."""
        checking = None
        while not self.stopped.is_set():
            self.watchdog.tick(holds_lease=self.lease_ok(), runs_vms=bool(self.vms))
            await self._check_datastores()
            if not self.connected:
                self._write_heartbeats()
                await self.sleep(self.cfg.tick_s)
                continue
            await self._check_processes()
            step = tick_step(self.lease_ok_until > 0, self.lease_ok(), self.isolated,
                             checking is not None and not checking.done())
            if step == "check":
                checking = asyncio.create_task(self._check_isolation())
            elif step == "end":
                self.isolated = False
                await self.event("isolation-ended", f"{self.me} reaches the cluster again")
            self._write_heartbeats()
            await self.sleep(self.cfg.tick_s)

    def _write_heartbeats(self) -> None:
        rec = HbRecord(
            host=self.me, counter=int(self.env.clock.time() * 1000), boot=self.boot, isolated=self.isolated,
            vms=tuple(sorted(self.vms)),
        )
        for name, path in self.cfg.datastores.items():
            if self.ds_ok.get(name):
                self.env.datastores.write_heartbeat(path, rec)

    async def _check_datastores(self) -> None:
        now = {n: self.env.datastores.reachable(n, p) for n, p in self.cfg.datastores.items()}
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
                    await self._publish_host()
                except StoreError:
                    pass

    async def _check_processes(self) -> None:
        """Each VM in turn: a guest gone silent is reported; a QEMU that exited is counted
        and reported, and handed back once its restarts here are used up (policy.crashes)."""
        for name, vm in list(self.vms.items()):
            if vm.stopping or executor.alive(vm.pid):
                if HP.guest_went_silent(vm.guest, vm.last_hb, self.env.clock.time(), self.cfg.guest_hb_timeout_s):
                    vm.guest = "lost"
                    await self.event("guest-heartbeat-lost",
                                     f"{name}: no guest heartbeat for {self.cfg.guest_hb_timeout_s:.0f}s on {self.me}",
                                     vm=name)
                    await self._status(name, "running", message="guest heartbeat lost")
                continue
            self._forget(name)
            out = after_exit(vm.gen, self.failed.get(name))
            self.failed[name] = out.crashes
            log.info("%s: %s", name, out.reason)
            await self.event("vm-exited", f"{name}: QEMU (pid {vm.pid}) exited on {self.me}", vm=name)
            await self._status(name, out.state, message=out.message)
            if out.release:
                await self._release(name)

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
                await self.power_off(act.vm, act.reason, report=act.report)
            elif isinstance(act, HP.Shutdown):
                asyncio.create_task(self._shutdown(act.vm, act.reason))
        self._write_heartbeats()

    # -- VM execution ------------------------------------------------------------------
    def _forget(self, name: str) -> None:
        vm = self.vms.pop(name, None)
        if vm and vm.monitor:
            vm.monitor.cancel()
        if vm and vm.nics:
            vm.nics.cancel()

    def _adopt(self, name: str, pid: int, spec: VMSpec | None, gen: int, held: bool = False) -> LocalVM:
        """``held``: keep the guest's output back until the FT roles are known (a QEMU
        found running at start may be an FT primary)."""
        early = self.plugged.pop(name, None)  # NICs connected before a migration's switchover
        gate = early[0] if early else OutputGate(executor.paths(self.cfg, name).guest_log)
        vm = LocalVM(name=name, pid=pid, gen=gen, spec=spec, gate=gate, started=self.env.clock.time())
        if held:
            vm.gate.hold()
        vm.monitor = asyncio.create_task(self._watch_guest(vm))
        vm.nics = early[1] if early else asyncio.create_task(
            self._carry_nics(name, gate, lambda: vm.spec, lambda: vm.pid, announce=True))
        self.vms[name] = vm
        return vm

    def plug_incoming(self, name: str, pid: int, spec: VMSpec) -> None:
        """Connect the NICs of a migration's destination QEMU before the switchover: its
        frames flow, and QEMU's own announcements after the switchover go out, the moment
        it runs here. No announcement of ours: the VM still runs on the source."""
        gate = OutputGate(executor.paths(self.cfg, name).guest_log)
        task = asyncio.create_task(self._carry_nics(name, gate, lambda: spec, lambda: pid, announce=False))
        self.plugged[name] = (gate, task)

    def unplug_incoming(self, name: str) -> None:
        early = self.plugged.pop(name, None)
        if early is not None:
            early[1].cancel()

    async def _carry_nics(self, name: str, gate: OutputGate, spec: Callable[[], VMSpec | None],
                          pid: Callable[[], int], announce: bool) -> None:
        """Plug the VM's NICs into this host's bridges, once its spec is known."""
        while (s := spec()) is None:
            await self.env.clock.sleep(0.5)
        paths = executor.paths(self.cfg, name)
        ports = []
        for i, network in enumerate(s.networks):
            bridge = self.cfg.networks.get(network)
            if bridge is None:
                await self.event("nic-unplugged", f"{name}: {self.me} has no network {network}", vm=name)
                continue
            ports.append(NicPort(name, i, paths.net_sock(i), bridge, gate, paths, pid, announce=announce))
        if ports:
            try:
                await asyncio.gather(*(p.run() for p in ports))
            except OSError as e:
                await self.event("nic-failed", f"{name}: its NICs are not connected on {self.me}: {e}", vm=name)

    async def _watch_guest(self, vm: LocalVM) -> None:
        """Follow the guest's heartbeat port; reconnect while the QEMU lives."""
        while vm.name in self.vms:
            try:
                async for hb in executor.guest_heartbeats(self.cfg, vm.name, vm.gate):
                    first = vm.guest != "ok"
                    vm.guest, vm.last_hb = "ok", self.env.clock.time()
                    vm.guest_seq, vm.acked = hb.seq, hb.acked
                    if first:
                        await self.event("guest-heartbeat", f"{vm.name}: guest heartbeat on {self.me}",
                                         vm=vm.name, seq=hb.seq)
                        await self._status(vm.name, "running")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the socket goes away with QEMU; try again shortly
                log.debug("guest channel %s: %s", vm.name, e)
            await self.env.clock.sleep(0.5)

    async def _status(self, name: str, state: str, message: str = "") -> None:
        vm = self.vms.get(name)
        st = VMStatus(
            host=self.me, state=state, pid=vm.pid if vm else 0, since=vm.started if vm else self.env.clock.time(),
            guest=vm.guest if vm else "unknown", guest_seq=vm.guest_seq if vm else -1,
            acked=vm.acked if vm else -1, message=message,
        )
        key = (st.state, st.pid, st.guest, st.message, st.acked // 20)
        if self.published.get(name) == key:
            return
        try:
            await self.store.put(K.VMSTATUS + name, st.__dict__)
            self.published[name] = key
        except StoreError:
            pass

    async def power_off(self, name: str, why: str, report: bool = True) -> None:
        """``report``: write the VM's status; not when another host runs it now (the status
        is that host's to write)."""
        vm = self.vms.get(name)
        if not vm:
            return
        vm.stopping = True
        await executor.power_off(self.cfg, name, vm.pid)
        self._forget(name)
        await self.event("vm-powered-off", f"{name} powered off on {self.me}: {why}", vm=name)
        if report:
            await self._status(name, "stopped", message=why)

    async def _shutdown(self, name: str, why: str) -> None:
        vm = self.vms.get(name)
        if not vm or vm.stopping:
            return
        vm.stopping = True
        timeout = vm.spec.shutdown_timeout_s if vm.spec else 20.0
        clean = await executor.shutdown(self.cfg, name, vm.pid, timeout)
        self._forget(name)
        how = "shut down" if clean else f"powered off after {timeout:.0f}s shutdown timeout"
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
            pid = await executor.start(self.cfg, spec, self.accel, stale=self.stale_disks(name))
        except executor.StartError as e:
            self.failed[name] = start_failed(a.gen, str(e))
            await self.event("vm-start-failed", f"{name} failed to start on {self.me}: {e}", vm=name)
            await self._release(name)
            await self._status(name, "failed", message=str(e))
            return
        finally:
            self.starting.discard(name)
        self._adopt(name, pid, spec, a.gen)
        await self.event("vm-started", f"{name} started on {self.me} (pid {pid})", vm=name, pid=pid)
        await self._status(name, "running")

    async def _promote(self, spec: VMSpec, a: Assignment, sb: Standby) -> None:
        """FT failover: run the committed standby (we hold the ownership key)."""
        name = spec.name
        self.starting.add(name)
        try:
            pid = await self.ft.promote(name, sb, spec)
        except Exception as e:
            executor.qemu.kill_pid(sb.pid)
            self.starting.discard(name)
            await self.event("ft-failover-failed", f"{name}: the standby on {self.me} could not go live ({e}); "
                             "starting it from disk", vm=name)
            await self._start(spec, a)
            return
        finally:
            self.starting.discard(name)
        self._adopt(name, pid, spec, a.gen)
        await self.event("ft-failover", f"{name}: live on {self.me} from checkpoint {sb.seq}, without a restart",
                         vm=name, pid=pid, seq=sb.seq)
        await self._status(name, "running")

    def adopt_migrated(self, name: str, pid: int, spec: VMSpec, gen: int) -> None:
        """A VM that arrived by live migration: it runs already, watch it like ours."""
        vm = self._adopt(name, pid, spec, gen)
        vm.guest = "unknown"
        asyncio.create_task(self._status(name, "running"))

    # -- reconcile ---------------------------------------------------------------------
    async def reconcile_loop(self) -> None:
        while not self.stopped.is_set():
            if self.lease_ok():
                try:
                    await self.reconcile(await self.store.snapshot())
                except StoreError as e:
                    log.warning("reconcile: %s", e)
            await self.sleep(self.cfg.tick_s / 2)

    async def reconcile(self, snap: dict[str, Entry]) -> None:
        """Gather what etcd says and what this host knows, one VM at a time, ask
        vigil.policy.host, and carry out its answer (each VM decided right before it is
        acted on: the actions await, and the host's state moves meanwhile)."""
        specs = {K.name_of(k, K.VMS): VMSpec.from_json(e.value) for k, e in snap.items() if k.startswith(K.VMS)}
        assign = {K.name_of(k, K.ASSIGN): e for k, e in snap.items() if k.startswith(K.ASSIGN)}
        own = {K.name_of(k, K.OWN): e for k, e in snap.items() if k.startswith(K.OWN)}
        facts = {
            name: HP.VMFacts(spec=specs.get(name), assignment=_assignment(assign[name].value) if name in assign else None,
                             owner=own[name].value if name in own else None)
            for name in set(specs) | set(assign) | set(own)
        }
        nothing = HP.VMFacts()
        mine = [name for name in assign if HP.is_mine(self.me, facts[name])]  # in etcd's order
        for name in mine:  # FT failovers: keep the standby before sync drops the role
            if HP.take_standby(self.me, name, facts[name], self._here(name)) is not None:
                sb = self.ft.take_committed(name)
                if sb is not None:
                    self.promoting[name] = sb
        self.ft.sync(snap, specs)
        self.disks.update(snap)
        self.disks.sync()
        # VMs running here that should not: stopped, deleted, or handed to another host.
        for name, vm in list(self.vms.items()):
            f = facts.get(name, nothing)
            if name in mine:
                continue
            act = HP.stray_action(self._host_facts(), name, f, HP.HereFacts(running=True, stopping=vm.stopping))
            await self._carry_out(act, facts, assign)
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
                            starting=name in self.starting, has_standby=name in self.promoting,
                            crashes=self.failed.get(name))

    async def _carry_out(self, act: HP.HostAction, facts: dict[str, HP.VMFacts], assign: dict[str, Entry]) -> None:
        """One reconcile action (vigil.policy.host), with the ownership claim it needs."""
        name = act.vm
        if isinstance(act, HP.PowerOff):
            await self.power_off(name, act.reason, report=act.report)
            if act.release:
                await self._release(name)
        elif isinstance(act, HP.Shutdown):
            asyncio.create_task(self._shutdown(name, act.reason))
        elif isinstance(act, HP.Claim):
            await self._claim(name, assign[name])
        elif isinstance(act, HP.ReportRunning):
            await self._status(name, "running")
        elif isinstance(act, HP.Start):
            if act.claim and not await self._claim(name, assign[name]):
                return
            spec, a = facts[name].spec, facts[name].assignment
            assert spec is not None and a is not None
            sb = self.promoting.pop(name, None)
            if sb is not None:
                asyncio.create_task(self._promote(spec, a, sb))
            else:
                asyncio.create_task(self._start(spec, a))
        elif isinstance(act, HP.Wait):
            log.debug("%s: %s", name, act.reason)

    async def _claim(self, name: str, assign_entry: Entry) -> bool:
        """Take the VM's ownership key, bound to our lease, if the assignment is unchanged."""
        return await self.store.txn(
            [self.store.absent(K.OWN + name), self.store.unchanged(K.ASSIGN + name, assign_entry.mod_revision)],
            [self.store.put_op(K.OWN + name, self.me, self.lease_id)],
        )

    # -- leadership --------------------------------------------------------------------
    async def leader_loop(self) -> None:
        from vigil.controller.loop import Controller

        controller: Controller | None = None
        while not self.stopped.is_set():
            leading = False
            if self.lease_ok():
                try:
                    e = await self.store.get(K.LEADER)
                    if e is None:
                        leading = await self.store.create(K.LEADER, self.me, lease=self.lease_id)
                        if leading:
                            await self.event("leader-elected", f"{self.me} is the leader; its controller is active")
                    else:
                        leading = e.value == self.me and e.lease == self.lease_id
                        if not leading and e.value != self.me and await self._leader_dead(e.value):
                            await self.store.revoke(e.lease)
                            await self.event("leader-fenced", f"{self.me}: leader {e.value} is silent on every "
                                             "datastore and answers no ping; its lease is revoked")
                except StoreError:
                    leading = self.leader_task is not None and self.lease_ok()
            if leading and self.leader_task is None:
                controller = Controller(self.store, self.me, self.cfg, is_leader=self.lease_ok)
                self.leader_task = asyncio.create_task(controller.run())
            elif not leading and self.leader_task is not None:
                self.leader_task.cancel()
                self.leader_task = None
                log.warning("no longer the leader")
            await self.sleep(0.5)

    async def _leader_dead(self, leader: str) -> bool:
        """The controller's own classification (vigil.policy.leader over hoststate): silent
        datastore heartbeat and no ping, so a dead leader's lease is not waited out before
        another one takes over. It is pinged only once its heartbeat is silent."""
        now = self.env.clock.monotonic()
        records = [r for n, p in self.cfg.datastores.items() if self.ds_ok.get(n)
                   for r in self.env.datastores.read_heartbeats(p).values()]
        age = None  # no record readable here: the leader's silence means nothing
        if records:
            self.leader_hb.observe(now, records)
            age = self.leader_hb.age(leader, now, self.env.clock.time())
        if not ping_needed(leader, age, self.cfg.hb_grace_s):
            return False
        address = self.cfg.peers.get(leader)
        answered = None if address is None else await self.env.network.any_answers([address], 0.5)
        return leader_failed(leader, age, answered, self.cfg.hb_grace_s)[0]

    # -- main --------------------------------------------------------------------------
    async def run(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopped.set)
        await self._check_datastores()
        self.ft.clean_leftovers()
        for name, pid in executor.find_running(self.cfg).items():
            self._adopt(name, pid, None, 0, held=True)
            log.info("adopted running VM %s (pid %d)", name, pid)
        # From here on the tick keeps the heartbeats and the watchdog going (armed now only
        # if VMs run here or an earlier run armed it), so the slow start-up work below,
        # the accelerator probe above all, never lets a watchdog expire.
        tasks = [asyncio.create_task(self.tick_loop())]
        self.accel = await executor.probe_accel(self.cfg)
        while not self.stopped.is_set():
            try:
                await self.store.connect()
                break
            except StoreError as e:
                log.warning("etcd: %s", e)
                await self.sleep(1)
        self.connected = True
        self.tasks = TaskRunner(self)
        tasks += [asyncio.create_task(c) for c in
                  (self.lease_loop(), self.reconcile_loop(), self.leader_loop(), self.tasks.loop())]
        if self.vms:
            asyncio.create_task(self.event("vms-adopted", f"{self.me} adopted running VMs: {', '.join(sorted(self.vms))}"))
        await self.stopped.wait()
        for t in tasks + ([self.leader_task] if self.leader_task else []):
            t.cancel()
        for vm in self.vms.values():
            if vm.monitor:
                vm.monitor.cancel()
        await self.ft.stop_all()
        await self.store.close()


def _assignment(value: dict) -> Assignment:
    """An ``assign/`` value (the controller writes whole Assignments; a VM component
    protection power-off names no host)."""
    try:
        return Assignment(**value)
    except TypeError:
        return Assignment(host=value.get("host"), gen=int(value.get("gen", 0)), reason=str(value.get("reason", "")))


def main(config_path: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(Agent(AgentConfig.load(config_path)).run())
