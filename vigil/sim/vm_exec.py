"""How a simulated agent carries out what reconcile and the isolation check decide: start
a VM's QEMU, power it off, shut it down, claim and release its ownership, report its
status, as vigil.agent.agent does (same keys, values and transactions, same order).

A mixin of vigil.sim.agent.SimAgent: it uses the agent's state (vigil.sim.context
lists it) and the world's simulated QEMUs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vigil.agent.agent import LOCAL_RESTARTS
from vigil.model import Assignment, VMSpec, VMStatus
from vigil.sim.context import LocalVM
from vigil.sim.world import StartFailed
from vigil.store import keys as K
from vigil.store.etcd import Entry, StoreError

START_S = 0.5  # QEMU's start-up until it runs
GUEST_SHUTDOWN_S = 1.0  # a guest's clean ACPI shutdown


class VmExecution:
    """The simulated agent's VM actions (mixed into SimAgent)."""

    w: Any
    h: Any
    me: str
    store: Any
    clock: Any
    disks: Any
    vms: dict[str, LocalVM]
    starting: set[str]
    failed: dict[str, tuple[int, int, str]]
    published: dict[str, Any]
    guest_ok: dict[str, int]
    lease_id: int
    _pids: dict[str, int]

    if TYPE_CHECKING:  # SimAgent's
        def spawn(self, coro: Any) -> Any: ...

        async def event(self, kind: str, message: str, vm: str = "") -> None: ...

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

    async def _claim(self, name: str, assign_entry: Entry) -> bool:
        return await self.store.txn(
            [self.store.absent(K.OWN + name), self.store.unchanged(K.ASSIGN + name, assign_entry.mod_revision)],
            [self.store.put_op(K.OWN + name, self.me, self.lease_id)])
