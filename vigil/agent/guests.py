"""The QEMUs this host runs: start them (or an FT standby), adopt them, watch their
guests and carry their NICs, power them off or shut them down, report their status.

The agent decides (vigil.policy.host, .crashes, .isolation); this is where its decisions
touch QEMU (through vigil.env.executor) and ``vmstatus/`` and ``own/`` in etcd.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from vigil.env import executor
from vigil.agent.context import HostContext, LocalVM
from vigil.agent.ft import FtRunner, Standby
from vigil.env.nics import NicPort
from vigil.agent.panics import OnPanic, watch_panics
from vigil.env.hypervisor import StartError
from vigil.hypervisor.qemu import OutputGate
from vigil.model import Assignment, VMSpec, VMStatus
from vigil.policy.crashes import Crashes, start_failed
from vigil.store import keys as K
from vigil.store.etcd import StoreError

log = logging.getLogger("vigil.agent")


class Guests:
    """The host's running VMs (``host.vms``, the same dict) and what is done to them."""

    def __init__(self, host: HostContext, ft: FtRunner) -> None:
        self.host = host
        self.cfg = host.cfg
        self.me = host.me
        self.store = host.store
        self.clock = host.env.clock
        self.ft = ft
        self.vms = host.vms
        self.failed: dict[str, Crashes] = {}  # vm -> its crashes here (vigil.policy.crashes)
        self.starting: set[str] = set()
        self.published: dict[str, tuple] = {}  # vm -> the status last written
        self.plugged: dict[str, tuple[OutputGate, asyncio.Task]] = {}  # incoming migrations' NICs
        self.on_panic: OnPanic | None = None  # who is told of a guest panic (VM monitoring)

    def forget(self, name: str) -> None:
        """Stop tracking the VM (its QEMU is gone or going): its watchers end."""
        vm = self.vms.pop(name, None)
        if vm and vm.monitor:
            vm.monitor.cancel()
        if vm and vm.nics:
            vm.nics.cancel()
        if vm and vm.panics:
            vm.panics.cancel()

    def adopt(self, name: str, pid: int, spec: VMSpec | None, gen: int, held: bool = False) -> LocalVM:
        """``held``: keep the guest's output back until the FT roles are known (a QEMU
        found running at start may be an FT primary)."""
        early = self.plugged.pop(name, None)  # NICs connected before a migration's switchover
        gate = early[0] if early else OutputGate(executor.paths(self.cfg, name).guest_log)
        vm = LocalVM(name=name, pid=pid, gen=gen, spec=spec, gate=gate, started=self.clock.time())
        if held:
            vm.gate.hold()
        vm.monitor = asyncio.create_task(self._watch_guest(vm))
        vm.panics = asyncio.create_task(watch_panics(vm, executor.paths(self.cfg, name), lambda: self.on_panic,
                                                     lambda: self.vms.get(name) is vm))
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
        """Plug the VM's NICs (its QEMU's taps) into this host's bridges, once its spec is
        known; the frames then flow without us."""
        while (s := spec()) is None:
            await self.clock.sleep(0.5)
        paths = executor.paths(self.cfg, name)
        ports = []
        for i, network in enumerate(s.networks):
            bridge = self.cfg.networks.get(network)
            if bridge is None:
                await self.host.event("nic-unplugged", f"{name}: {self.me} has no network {network}", vm=name)
                continue
            ports.append(NicPort(name, i, bridge, paths, pid, announce=announce))
        if ports:
            try:
                await asyncio.gather(*(p.run() for p in ports))
            except OSError as e:
                await self.host.event("nic-failed", f"{name}: its NICs are not connected on {self.me}: {e}", vm=name)

    async def _watch_guest(self, vm: LocalVM) -> None:
        """Follow the guest's heartbeat port; reconnect while the QEMU lives."""
        while vm.name in self.vms:
            try:
                async for hb in executor.guest_heartbeats(self.cfg, vm.name, vm.gate):
                    first = vm.guest != "ok"
                    vm.guest, vm.last_hb = "ok", self.clock.time()
                    vm.guest_seq, vm.acked = hb.seq, hb.acked
                    if hb.app != vm.app_seq:  # application monitoring: it moved, started or stopped
                        vm.app_seq, vm.app_moved = hb.app, vm.last_hb
                    if first:
                        await self.host.event("guest-heartbeat", f"{vm.name}: guest heartbeat on {self.me}",
                                              vm=vm.name, seq=hb.seq)
                        await self.status(vm.name, "running")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the socket goes away with QEMU; try again shortly
                log.debug("guest channel %s: %s", vm.name, e)
            await self.clock.sleep(0.5)

    async def status(self, name: str, state: str, message: str = "") -> None:
        """Write ``vmstatus/<vm>`` when it says something new (progress in steps of 20)."""
        vm = self.vms.get(name)
        st = VMStatus(
            host=self.me, state=state, pid=vm.pid if vm else 0, since=vm.started if vm else self.clock.time(),
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
        await self.host.hypervisor.power_off(name, vm.pid)
        self.forget(name)
        await self.host.event("vm-powered-off", f"{name} powered off on {self.me}: {why}", vm=name)
        if report:
            await self.status(name, "stopped", message=why)

    async def shutdown(self, name: str, why: str) -> None:
        vm = self.vms.get(name)
        if not vm or vm.stopping:
            return
        vm.stopping = True
        timeout = vm.spec.shutdown_timeout_s if vm.spec else 20.0
        clean = await self.host.hypervisor.shutdown(name, vm.pid, timeout)
        self.forget(name)
        how = "shut down" if clean else f"powered off after {timeout:.0f}s shutdown timeout"
        await self.host.event("vm-stopped", f"{name} {how} on {self.me}: {why}", vm=name)
        await self.status(name, "stopped", message=why)
        await self.release(name)

    async def release(self, name: str) -> None:
        """Give up the VM's ownership key, if it is still ours."""
        try:
            await self.store.txn([self.store.equals(K.OWN + name, self.me)], [self.store.delete_op(K.OWN + name)])
        except StoreError:
            pass

    async def start(self, spec: VMSpec, a: Assignment, claim: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Start the VM's QEMU, once ``claim`` took its ownership key (None: we hold it).
        Each start is a task of its own, claim included, so the VMs given to this host
        start side by side, none waiting for the claims of the others. Its "starting"
        status and event are written while QEMU starts, not before: two etcd writes less
        on the way from the assignment to a running QEMU. ``spawn_s`` in the
        ``vm-started`` event: how long QEMU took to start (disks checked, QEMU up)."""
        name = spec.name
        self.starting.add(name)
        if claim is not None and not await self._claimed(name, claim):
            return
        said = asyncio.create_task(self._say_starting(name, a))
        began = self.clock.monotonic()
        try:
            pid = await self.host.hypervisor.start(spec, self.host.accel, stale=self.host.stale_disks(name),
                                                   ft=name in self.ft.enabled)
        except StartError as e:
            await said
            self.failed[name] = start_failed(a.gen, str(e))
            await self.host.event("vm-start-failed", f"{name} failed to start on {self.me}: {e}", vm=name)
            await self.release(name)
            await self.status(name, "failed", message=str(e))
            return
        finally:
            self.starting.discard(name)
        spawn_s = round(self.clock.monotonic() - began, 3)
        self.adopt(name, pid, spec, a.gen)
        await said  # "starting" (status and event) comes before "started" and "running"
        await self.host.event("vm-started", f"{name} started on {self.me} (pid {pid})", vm=name, pid=pid,
                              spawn_s=spawn_s)
        await self.status(name, "running")

    async def _claimed(self, name: str, claim: Callable[[], Awaitable[bool]]) -> bool:
        try:
            if await claim():
                return True
        except StoreError as e:
            log.warning("%s: claim: %s", name, e)
        self.starting.discard(name)
        return False

    async def _say_starting(self, name: str, a: Assignment) -> None:
        await self.status(name, "starting")
        await self.host.event("vm-starting", f"{name} starting on {self.me} (gen {a.gen}, {a.reason})", vm=name)

    async def promote(self, spec: VMSpec, a: Assignment, sb: Standby) -> None:
        """FT failover: run the committed standby (we hold the ownership key)."""
        name = spec.name
        self.starting.add(name)
        try:
            pid = await self.ft.promote(name, sb, spec)
        except Exception as e:
            executor.qemu.kill_pid(sb.pid)
            self.starting.discard(name)
            await self.host.event("ft-failover-failed", f"{name}: the standby on {self.me} could not go live ({e}); "
                                  "starting it from disk", vm=name)
            await self.start(spec, a)
            return
        finally:
            self.starting.discard(name)
        self.adopt(name, pid, spec, a.gen)
        await self.host.event("ft-failover", f"{name}: live on {self.me} from checkpoint {sb.seq}, without a restart",
                              vm=name, pid=pid, seq=sb.seq)
        await self.status(name, "running")

    def adopt_migrated(self, name: str, pid: int, spec: VMSpec, gen: int) -> None:
        """A VM that arrived by live migration: it runs already, watch it like ours."""
        vm = self.adopt(name, pid, spec, gen)
        vm.guest = "unknown"
        asyncio.create_task(self.status(name, "running"))
