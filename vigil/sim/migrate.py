"""Live migrations (maintenance mode) between simulated hosts.

The task protocol of vigil.agent.tasks (TaskRunner): the source moves a queued task to
"preparing" (at most MAX_MIGRATIONS_PER_HOST at once), the destination starts a paused
incoming QEMU and says "ready", the source migrates (``MIGRATE_S`` of virtual time) and
switches over ("switching", its copy paused), the destination takes the ownership key,
assignment and spec in one transaction that expects the source still owning the VM, then
marks the task done; the source's reconcile powers its paused copy off. The figures the
real runner collects and its cancel and prepare-timeout paths are not simulated.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from vigil.agent.tasks import MAX_MIGRATIONS_PER_HOST
from vigil.model import TASK_ACTIVE, Assignment, Task, VMSpec
from vigil.policy import tasks as TP
from vigil.sim.world import StartFailed
from vigil.store import keys as K
from vigil.store.etcd import Entry, StoreError
from vigil.agent.tasks import update_task
from vigil.agent.task_records import moved_spec
from vigil.sim.context import LocalVM, AgentContext


MIGRATE_S = 1.0
MOVE_DISK_S = 2.0


class SimTasks:
    def __init__(self, agent: "AgentContext") -> None:
        self.a = agent
        self.incoming: dict[str, str] = {}  # vm -> task id of its incoming copy here
        self.driving: set[str] = set()

    async def loop(self) -> None:
        """The agent's task loop (vigil.agent.tasks.TaskRunner.loop)."""
        mem = self.a.store.mem
        while True:
            if self.a.lease_ok():
                try:
                    if self.incoming or not self.a.store.reachable():
                        await self.step()
                    else:  # step's first read, without its copy: mostly no task at all
                        mem._expire()
                        if mem._range(K.TASKS):
                            await self.step()
                except StoreError:
                    pass
            await self.a.clock.sleep(0.25)

    async def update(self, vm: str, task_id: str, change: Any = None, **changes: Any) -> Task | None:
        """vigil.agent.tasks.update_task itself, on the simulated clock."""
        return await update_task(self.a.store, vm, task_id, change, clock=self.a.clock, **changes)

    async def step(self) -> None:
        found = await self.a.store.get_prefix(K.TASKS)
        if not found and not self.incoming:
            return
        snap = await self.a.store.snapshot()
        tasks = [Task.from_json(e.value) for e in found.values()]
        alive = {K.name_of(k, K.ALIVE) for k in snap if k.startswith(K.ALIVE)}
        for t in tasks:
            if t.src == self.a.me:
                await self._as_source(t, tasks)
            if t.kind == "migrate" and t.dst == self.a.me:
                await self._as_destination(t, snap, alive)
        known = {t.vm: t.id for t in tasks}
        for vm, tid in list(self.incoming.items()):
            if known.get(vm) != tid:
                self._drop(vm)

    async def _as_source(self, t: Task, tasks: list[Task]) -> None:
        if t.kind == "move-disk" and t.state == "queued" and t.vm not in self.driving:
            self.driving.add(t.vm)
            self.a.spawn(self._move_disk(t))
            return
        if t.state not in TASK_ACTIVE or t.kind != "migrate" or t.vm in self.driving:
            return
        if t.state == "queued":
            running = [x for x in tasks if x.src == self.a.me and x.kind == t.kind and x.state in TASK_ACTIVE
                       and x.state != "queued"]
            if len(running) < MAX_MIGRATIONS_PER_HOST:
                await self.update(t.vm, t.id, state="preparing")
        elif t.state == "ready":
            self.driving.add(t.vm)
            self.a.spawn(self._migrate(t))

    async def _migrate(self, t: Task) -> None:
        try:
            if t.vm not in self.a.vms:
                await self.update(t.vm, t.id, state="failed", error=f"{t.vm} does not run on {self.a.me}")
                return
            await self.update(t.vm, t.id, state="running")
            await self.a.event("migration-started", f"{t.vm}: live migration {t.src} -> {t.dst} started", vm=t.vm)
            await self.a.clock.sleep(MIGRATE_S)
            self.a.w.switch_over(t.src, t.dst, t.vm)
            await self.update(t.vm, t.id, TP.switched_over({}))
            await self.a.event("migration-switchover", f"{t.vm}: memory moved to {t.dst} (downtime 0 ms)", vm=t.vm)
        finally:
            self.driving.discard(t.vm)

    async def _move_disk(self, t: Task) -> None:
        """A Storage vMotion (vigil.agent.task_source._move_disk): the copy takes MOVE_DISK_S,
        then the spec names the new datastore, written while this host still owns the VM."""
        st = self.a.store
        try:
            if t.vm not in self.a.vms:
                await self.update(t.vm, t.id, state="failed", error=f"{t.vm} does not run on {self.a.me}")
                return
            await self.update(t.vm, t.id, state="running")
            await self.a.clock.sleep(MOVE_DISK_S)
            e = await st.get(K.VMS + t.vm)
            if e is None:
                await self.update(t.vm, t.id, state="failed", error="the VM was deleted")
                return
            new = moved_spec(VMSpec.from_json(e.value), t.datastore, only_disk=t.disk)
            ok = await st.txn([st.unchanged(e.key, e.mod_revision), st.equals(K.OWN + t.vm, self.a.me)],
                              [st.put_op(e.key, new.to_json())])
            if not ok:
                await self.update(t.vm, t.id, state="failed", error="the VM changed during the copy")
                return
            if t.vm in self.a.vms:
                self.a.vms[t.vm].spec = new
            await self.a.event("disk-moved", f"{t.vm}: disk {t.disk} now on {t.datastore}", vm=t.vm)
            await self.update(t.vm, t.id, state="done")
        finally:
            self.driving.discard(t.vm)

    async def _as_destination(self, t: Task, snap: dict[str, Entry], alive: set[str]) -> None:
        vm = t.vm
        if t.state in ("failed", "cancelled", "done"):
            if vm in self.incoming and t.state != "done":
                self._drop(vm)
            return
        if t.state == "preparing" and vm not in self.incoming:
            e = snap.get(K.VMS + vm)
            try:
                if e is None:
                    raise StartFailed("the VM was deleted")
                self.a.w.start_qemu(self.a.me, VMSpec.from_json(e.value), incoming=True)
            except StartFailed as err:
                await self.update(vm, t.id, state="failed", error=f"destination {t.dst}: {err}")
                return
            self.incoming[vm] = t.id
            await self.update(vm, t.id, state="ready", uri=f"tcp:{self.a.cfg.address}:0")
            return
        q = self.a.h.qemus.get(vm)
        if vm not in self.incoming or q is None:
            return
        if q.state == "running":
            await self._take_over(t, snap)
        elif t.src not in alive:
            self._drop(vm)
            await self.update(vm, t.id, state="failed", error=f"source host {t.src} was lost")

    async def _take_over(self, t: Task, snap: dict[str, Entry]) -> None:
        st, a, spec_e = self.a.store, snap.get(K.ASSIGN + t.vm), snap.get(K.VMS + t.vm)
        if a is None or spec_e is None:
            return
        gen = int(a.value.get("gen", 0)) + 1
        own_key = K.OWN + t.vm
        owner_ok = st.equals(own_key, t.src) if own_key in snap else st.absent(own_key)
        ok = await st.txn(
            [owner_ok, st.unchanged(a.key, a.mod_revision), st.unchanged(spec_e.key, spec_e.mod_revision)],
            [st.put_op(own_key, self.a.me, self.a.lease_id),
             st.put_op(a.key, asdict(Assignment(host=self.a.me, gen=gen, reason="migrate"))),
             st.put_op(spec_e.key, spec_e.value)])
        if not ok:
            self._drop(t.vm)
            await self.update(t.vm, t.id, state="failed", error="ownership changed during switchover")
            return
        self.incoming.pop(t.vm, None)

        self.a.vms[t.vm] = LocalVM(t.vm, VMSpec.from_json(spec_e.value), gen)
        await self.a.event("vm-migrated", f"{t.vm} now runs on {self.a.me} (migrated from {t.src})", vm=t.vm)
        await self.a._status(t.vm, "running")
        await self.update(t.vm, t.id, state="done")

    def _drop(self, vm: str) -> None:
        self.incoming.pop(vm, None)
        q = self.a.h.qemus.get(vm)
        if q is not None and q.state == "incoming":
            self.a.w.stop_qemu(self.a.me, vm)
