"""The agent's side of migrations and disk moves (tasks in etcd).

A migration: the source agent admits the task (per-host limits) -> the destination agent
starts a QEMU waiting for the migration and says where it listens -> the source agent
migrates, reporting progress -> once the destination's copy runs, the destination agent
takes the VM's ownership and assignment in one transaction. The source's paused copy is
then powered off by the ordinary reconcile (assigned elsewhere). Any failure or cancel
before that leaves the VM running on the source and the destination's QEMU is ended.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

from vigil.agent import executor
from vigil.agent.context import MigrationHost
from vigil.hypervisor import mirror, migration
from vigil.hypervisor import qemu
from vigil.model import TASK_ACTIVE, Assignment, DiskSpec, Task, VMSpec
from vigil.env.base import Clock
from vigil.policy import tasks as TP
from vigil.store import keys as K
from vigil.store.etcd import Store, StoreError
from vigil.store.state import ClusterState, StateCache

log = logging.getLogger("vigil.tasks")

MAX_MIGRATIONS_PER_HOST = TP.MAX_MIGRATIONS_PER_HOST  # the limits are policy's; named here too
MAX_DISK_MOVES_PER_HOST = TP.MAX_DISK_MOVES_PER_HOST
PREPARE_TIMEOUT_S = TP.PREPARE_TIMEOUT_S
MIGRATION_PORT_BASE = 49152
STEP_S = 0.25
IDLE_S = 1.0


async def update_task(store: Store, vm: str, task_id: str,
                      change: Callable[[Task], Task | None] | None = None, *, clock: Clock | None = None,
                      **changes: Any) -> Task | None:
    """Read-modify-write of a task, so a concurrent cancel request is never lost.
    ``change`` (vigil.policy.tasks) maps the task as read to the new one, or to None to
    leave it as it is; otherwise the keyword changes are applied. ``clock`` stamps the
    update (the system clock when not given)."""
    for _ in range(10):
        e = await store.get(K.TASKS + vm)
        if e is None:
            return None
        t = Task.from_json(e.value)
        if t.id != task_id:
            return None
        new = change(t) if change is not None else replace(t, **changes)
        if new is None:
            return t
        new = replace(new, updated=clock.time() if clock is not None else time.time())
        if await store.txn([store.unchanged(e.key, e.mod_revision)], [store.put_op(e.key, asdict(new))]):
            return new
    return None


def moved_spec(spec: VMSpec, datastore: str, only_disk: str | None = None) -> VMSpec:
    """The spec with its disks (or one disk) on another datastore, same relative paths."""
    disks = tuple(replace(d, datastore=datastore) if only_disk in (None, d.name) else d for d in spec.disks)
    return replace(spec, disks=disks)


class TaskRunner:
    def __init__(self, host: MigrationHost) -> None:
        self.a = host
        self.clock = host.env.clock
        self.driving: dict[str, asyncio.Task] = {}  # vm -> migration/mirror driver (source side)
        self.cancels: dict[str, asyncio.Event] = {}
        self.incoming: dict[str, tuple[str, int]] = {}  # vm -> (task id, pid) on the destination
        self.finishing: dict[str, asyncio.Task] = {}  # vm -> marks a taken-over migration done
        self._port = MIGRATION_PORT_BASE
        self._states = StateCache()  # typed state, parsed once per snapshot revision

    @property
    def store(self) -> Store:
        return self.a.store

    async def _update(self, vm: str, task_id: str, change: Callable[[Task], Task | None] | None = None,
                      **changes: Any) -> Task | None:
        return await update_task(self.store, vm, task_id, change, clock=self.clock, **changes)

    def _next_port(self) -> int:
        self._port = MIGRATION_PORT_BASE + (self._port - MIGRATION_PORT_BASE + 1) % 4096
        return self._port

    async def loop(self) -> None:
        """A step every STEP_S while a task of this host is under way (some of its steps
        are due to time: a prepare timeout); otherwise when a task key changes (the etcd
        watch wakes it), IDLE_S at most, or STEP_S while no watch runs."""
        while not self.a.stopped.is_set():
            mark = self.a.mark()
            busy = True
            if self.a.lease_ok():
                try:
                    busy = await self.step()
                except StoreError as e:
                    log.warning("tasks: %s", e)
                except Exception:  # one bad task must not stop the others
                    log.exception("tasks step failed")
            if busy:
                await self.a.sleep(STEP_S)
            else:
                await self.a.wait_change(mark, (K.TASKS,), IDLE_S, STEP_S)

    async def step(self) -> bool:
        """One pass over the tasks; whether one of this host's is under way."""
        state = self._states.of(await self.store.snapshot(), getattr(self.store, "snapshot_revision", 0))
        tasks = [r.task for r in state.tasks.values()]
        me = self.a.me
        for t in tasks:
            if t.src == me:
                await self._as_source(t, tasks, state)
            if t.kind == "migrate" and t.dst == me:
                await self._as_destination(t, state)
        # destination QEMUs whose task is gone
        known = {t.vm: t for t in tasks}
        for vm, (tid, pid) in list(self.incoming.items()):
            t = known.get(vm)
            if t is None or t.id != tid:
                await self._drop_incoming(vm, "its task is gone")
        return bool(self.driving or self.incoming or self.finishing) or any(
            t.state in TASK_ACTIVE and me in (t.src, t.dst) for t in tasks)

    # -- source -------------------------------------------------------------------------
    async def _as_source(self, t: Task, tasks: list[Task], state: ClusterState) -> None:
        step, why = TP.source_step(t, tasks, self.a.me, self.clock.time(), t.vm in self.driving, t.vm in self.a.vms)
        if step == "cancel":
            await self._update(t.vm, t.id, state="cancelled", error=why)
            await self.a.event("task-cancelled", f"{t.vm}: {t.kind} cancelled", vm=t.vm)
        elif step == "signal-cancel":
            self.cancels[t.vm].set()
        elif step == "prepare-timeout":
            await self._update(t.vm, t.id, state="failed", error=why)
        elif step == "admit":
            await self._update(t.vm, t.id, state="preparing" if t.kind == "migrate" else "running")
            if t.kind == "move-disk":
                self._drive(t, self._move_disk(t))
        elif step == "drive":
            self._drive(t, self._migrate(t))
        elif step == "orphaned":
            await self._orphaned(t)

    async def _orphaned(self, t: Task) -> None:
        """We restarted while driving this task. A migration that completed (our copy is
        "postmigrate") is the destination's to take over; anything else is stopped here
        and the VM runs on."""
        vm = self.a.vms[t.vm]
        try:
            async with qemu.QMPConn(executor.paths(self.a.cfg, t.vm), pid=vm.pid, name=t.vm) as conn:
                if await conn.status() == "postmigrate":
                    await self._update(t.vm, t.id, state="switching")
                    return
                if t.kind == "migrate":
                    await conn.execute("migrate_cancel")
        except qemu.QemuError as e:
            log.warning("%s: orphaned task: %s", t.vm, e)
        await self._update(t.vm, t.id, state="failed", error=f"the agent on {self.a.me} restarted mid-task")

    def _drive(self, t: Task, coro: Any) -> None:
        self.cancels[t.vm] = asyncio.Event()

        async def run() -> None:
            try:
                await coro
            finally:
                self.driving.pop(t.vm, None)
                self.cancels.pop(t.vm, None)

        self.driving[t.vm] = asyncio.create_task(run())

    def _progress_writer(self, t: Task):  # type: ignore[no-untyped-def]
        last = [0.0]

        def write(p: dict[str, Any]) -> None:
            if self.clock.monotonic() - last[0] < 0.4:
                return
            last[0] = self.clock.monotonic()
            asyncio.create_task(self._update(t.vm, t.id, TP.with_progress(p)))

        return write

    async def _migrate(self, t: Task) -> None:
        vm = self.a.vms.get(t.vm)
        if vm is None:
            await self._update(t.vm, t.id, state="failed", error=f"{t.vm} does not run on {self.a.me}")
            return
        await self._update(t.vm, t.id, state="running")
        await self.a.event("migration-started", f"{t.vm}: live migration {t.src} -> {t.dst} started", vm=t.vm)
        write = self._progress_writer(t)
        policy = migration.MigrationPolicy(tls=bool(self.a.cfg.tls_dir))
        try:
            async with qemu.QMPConn(executor.paths(self.a.cfg, t.vm), pid=vm.pid, name=t.vm) as conn:
                mirrors = None
                if t.datastore:  # shared-nothing: disks first, ended in sync at the switchover
                    mirrors = await self._start_nbd_mirrors(conn, t, write, policy)
                try:
                    result = await migration.migrate(
                        conn, t.uri, policy, lambda p: write(migration_progress(p)), self.cancels[t.vm],
                        before_switchover=(lambda: mirror.finish_mirrors(mirrors)) if mirrors else None)
                except BaseException:
                    if mirrors is not None:
                        await mirror.abort_mirrors(mirrors)
                    raise
        except migration.MigrationCancelled as e:
            await self._update(t.vm, t.id, state="cancelled", error=str(e))
            await self.a.event("migration-cancelled", f"{t.vm}: migration cancelled; it runs on {self.a.me}", vm=t.vm)
            return
        except (migration.MigrationFailed, mirror.MirrorFailed, qemu.QemuError) as e:
            await self._update(t.vm, t.id, state="failed", error=str(e))
            if (await self._status(t.vm, vm.pid)).startswith("running"):
                await self.a.event("migration-failed", f"{t.vm}: migration failed ({e}); it runs on {self.a.me}",
                                   vm=t.vm)
            else:
                # Post-copy had begun: part of the memory was on the lost destination, so
                # this copy can never run again. Restart the VM from its disk, here.
                await self.a.event("migration-failed", f"{t.vm}: migration failed in post-copy ({e}); "
                                   f"restarting it from disk on {self.a.me}", vm=t.vm)
                await self.a.power_off(t.vm, "lost in post-copy")
            return
        # Our copy is paused now; the reconcile powers it off once the destination owns the VM.
        done = migration_progress(result)
        await self._update(t.vm, t.id, TP.switched_over(done))
        await self.a.event("migration-switchover",
                           f"{t.vm}: memory moved to {t.dst} (downtime {done.get('downtime_ms', 0):.0f} ms)", vm=t.vm)

    async def _start_nbd_mirrors(self, conn: "qemu.QMPConn", t: Task, write: Any,
                                 policy: "migration.MigrationPolicy") -> Any:
        host, _, port = t.uri.removeprefix("tcp:").rpartition(":")
        spec = self.a.vms[t.vm].spec
        names = [qemu.disk_node_name(i) for i in range(len(spec.disks))] if spec else []
        export = mirror.NbdExport(host=host, port=int(port) + 1, names=tuple(names), tls=policy.tls)
        pairs = {}
        for i, name in enumerate(names):
            pairs[await mirror.current_node(conn, i)] = name
        try:
            return await mirror.mirror_to_nbd(conn, export, pairs, progress=lambda p: write(mirror_progress(p)),
                                              cancel=self.cancels[t.vm])
        except mirror.MirrorCancelled as e:
            raise migration.MigrationCancelled(f"cancelled while copying disks: {e}") from None

    async def _move_disk(self, t: Task) -> None:
        vm = self.a.vms.get(t.vm)
        spec = vm.spec if vm else None
        if vm is None or spec is None:
            await self._update(t.vm, t.id, state="failed", error=f"{t.vm} does not run on {self.a.me}")
            return
        idx = spec.disk_index(t.disk)
        old: DiskSpec = spec.disks[idx]
        ds_paths = self.a.cfg.datastores
        new_path = Path(ds_paths[t.datastore]) / old.path
        old_path = Path(ds_paths[old.datastore]) / old.path
        write = self._progress_writer(t)
        await self.a.event("disk-move-started", f"{t.vm}: disk {t.disk} {old.datastore} -> {t.datastore}", vm=t.vm)
        try:
            async with qemu.QMPConn(executor.paths(self.a.cfg, t.vm), pid=vm.pid, name=t.vm) as conn:
                result = await mirror.move_disk(conn, idx, new_path, old.size_mb,
                                                progress=lambda p: write(mirror_progress(p)),
                                                cancel=self.cancels[t.vm], speed=int(t.bwlimit_mib_s * 2**20))
                # The guest now writes to the new image: record it before the old one goes.
                if not await self._commit_spec(t.vm, moved_spec(spec, t.datastore, t.disk)):
                    raise mirror.MirrorFailed("the VM's spec changed during the move")
                await mirror.release_node(conn, result.old_node)
        except mirror.MirrorCancelled as e:
            await self._update(t.vm, t.id, state="cancelled", error=str(e))
            await self.a.event("disk-move-cancelled", f"{t.vm}: disk move cancelled; the old image stays", vm=t.vm)
            return
        except (mirror.MirrorFailed, qemu.QemuError) as e:
            await self._update(t.vm, t.id, state="failed", error=str(e))
            await self.a.event("disk-move-failed", f"{t.vm}: disk move failed: {e}", vm=t.vm)
            return
        try:
            old_path.unlink()
        except OSError as e:
            log.warning("could not remove %s: %s", old_path, e)
        vm.spec = moved_spec(spec, t.datastore, t.disk)
        mb_s = result.bytes / 2**20 / max(result.time_to_ready_s, 1e-6)
        await self._update(t.vm, t.id, state="done",
                           progress={"offset": result.bytes, "total": result.bytes, "mb_s": mb_s,
                                     "pivot_ms": result.pivot_s * 1000})
        await self.a.event("disk-moved", f"{t.vm}: disk {t.disk} now on {t.datastore} ({mb_s:.0f} MiB/s)", vm=t.vm)

    async def _commit_spec(self, vm: str, spec: VMSpec) -> bool:
        e = await self.store.get(K.VMS + vm)
        if e is None:
            return False
        return await self.store.txn([self.store.unchanged(e.key, e.mod_revision)],
                                    [self.store.put_op(e.key, spec.to_json())])

    # -- destination --------------------------------------------------------------------
    async def _as_destination(self, t: Task, state: ClusterState) -> None:
        vm = t.vm
        a = state.assignments.get(vm)
        assignment = a.assignment if a is not None else None
        incoming = self.incoming[vm][0] if vm in self.incoming else None
        step, why = TP.destination_step(t, self.a.me, incoming, vm in self.a.vms, assignment)
        if step == "drop":
            await self._drop_incoming(vm, why)
        elif step == "prepare":
            await self._prepare(t, state)
        elif step == "finish":
            self._finish_soon(t)
        elif step == "follow":
            _, pid = self.incoming[vm]
            qemu_alive = self.a.hypervisor.alive(pid)
            status = await self._status(vm, pid) if qemu_alive else "gone"
            outcome, why = TP.incoming_outcome(t, qemu_alive, status, t.src in state.alive)
            if outcome == "failed":
                self.incoming.pop(vm, None)
                await self._update(vm, t.id, state="failed", error=why)
            elif outcome == "take-over":
                await self._take_over(t, pid, state)
            elif outcome == "source-lost":
                await self._drop_incoming(vm, f"source host {t.src} lost")
                await self._update(vm, t.id, state="failed", error=why)

    async def _status(self, vm: str, pid: int) -> str:
        """The incoming copy's run state, and once it runs, the migration's state: in
        post-copy the copy runs while its memory still streams in from the source, and it
        may take the VM over only once that is "completed"."""
        try:
            async with qemu.QMPConn(executor.paths(self.a.cfg, vm), pid=pid, name=vm) as conn:
                st = await conn.status()
                if st == "running":
                    mig = await conn.execute("query-migrate")
                    st += ":" + str(mig.get("status", "none"))
                return st
        except qemu.QemuError:
            return "unknown"

    async def _prepare(self, t: Task, state: ClusterState) -> None:
        r = state.vms.get(t.vm)
        if r is None:
            await self._update(t.vm, t.id, state="failed", error="the VM was deleted")
            return
        spec = r.spec
        if t.datastore:
            spec = moved_spec(spec, t.datastore)
        port = self._next_port()
        uri = f"tcp:{self.a.cfg.address}:{port}"
        try:
            pid = await qemu.start(spec, executor.paths(self.a.cfg, t.vm), self.a.accel, dict(self.a.cfg.datastores),
                                   incoming=True, tls_dir=self.a.cfg.tls_dir or None,
                                   stale=self.a.stale_disks(t.vm))
            self.incoming[t.vm] = (t.id, pid)
            self.a.plug_incoming(t.vm, pid, spec)
            async with qemu.QMPConn(executor.paths(self.a.cfg, t.vm), pid=pid, name=t.vm) as conn:
                if t.datastore:
                    await mirror.nbd_export(conn, self.a.cfg.address, port + 1,
                                            [qemu.disk_node_name(i) for i in range(len(spec.disks))],
                                            tls=bool(self.a.cfg.tls_dir))
                await migration.prepare_incoming(conn, uri, migration.MigrationPolicy(tls=bool(self.a.cfg.tls_dir)))
        except Exception as e:  # whatever went wrong, the task must not stay "preparing"
            await self._drop_incoming(t.vm, str(e))
            await self._update(t.vm, t.id, state="failed", error=f"destination {t.dst}: {e}")
            return
        await self._update(t.vm, t.id, state="ready", uri=uri)

    async def _take_over(self, t: Task, pid: int, state: ClusterState) -> None:
        """Our copy runs: own the VM now (only one side can win: compare-and-swap)."""
        st = self.store
        a = state.assignments.get(t.vm)
        spec_r = state.vms.get(t.vm)
        if a is None or spec_r is None:
            return
        gen = int(a.assignment.gen) + 1
        spec = spec_r.spec
        new_spec = moved_spec(spec, t.datastore) if t.datastore else spec
        own_key, assign_key, spec_key = K.OWN + t.vm, K.ASSIGN + t.vm, K.VMS + t.vm
        owner_ok = st.equals(own_key, t.src) if t.vm in state.owners else st.absent(own_key)
        ok = await st.txn(
            [owner_ok, st.unchanged(assign_key, a.rev), st.unchanged(spec_key, spec_r.rev)],
            [st.put_op(own_key, self.a.me, self.a.lease_id),
             st.put_op(assign_key, asdict(Assignment(host=self.a.me, gen=gen, reason="migrate"))),
             st.put_op(spec_key, new_spec.to_json())])
        if not ok:
            await self._drop_incoming(t.vm, "the VM changed hands during the switchover")
            await self._update(t.vm, t.id, state="failed", error="ownership changed during switchover")
            return
        self.incoming.pop(t.vm, None)
        self.a.adopt_migrated(t.vm, pid, new_spec, gen)
        await self.a.event("vm-migrated", f"{t.vm} now runs on {self.a.me} (migrated from {t.src})", vm=t.vm)
        self._finish_soon(t)

    def _finish_soon(self, t: Task) -> None:
        if t.vm not in self.finishing:
            self.finishing[t.vm] = asyncio.create_task(self._finish(t))

    async def _finish(self, t: Task) -> None:
        """Mark the task done once the source's figures are in (or will not come), so that
        a done migration carries its downtime."""
        t0 = self.clock.monotonic()
        try:
            while not self.a.stopped.is_set():
                try:
                    e = await self.store.get(K.TASKS + t.vm)
                    cur = Task.from_json(e.value) if e is not None else None
                    if cur is None or cur.id != t.id:
                        return
                    alive = await self.store.get(K.ALIVE + t.src) is not None
                    finish, why = TP.finish_after_take_over(cur, alive, self.clock.monotonic() - t0)
                    if cur.state == "done":
                        return
                    if finish:
                        log.info("%s: migration done: %s", t.vm, why)
                        await self._update(t.vm, t.id, state="done")
                        return
                except StoreError as e:  # etcd away: the tasks loop starts us again later
                    log.warning("%s: finishing the migration task: %s", t.vm, e)
                    return
                await self.clock.sleep(0.05)
        finally:
            self.finishing.pop(t.vm, None)

    async def _drop_incoming(self, vm: str, why: str) -> None:
        entry = self.incoming.pop(vm, None)
        if entry is None:
            return
        self.a.unplug_incoming(vm)
        await self.a.hypervisor.power_off(vm, entry[1])
        log.info("%s: destination QEMU ended: %s", vm, why)


def migration_progress(p: Any) -> dict[str, Any]:
    """A MigrationProgress or MigrationResult as the task's JSON progress."""
    d = asdict(p) if not isinstance(p, dict) else dict(p)
    out = {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}
    if "dirty_rate" in out:
        out["dirty_rate_mib_s"] = out["dirty_rate"] / 2**20
    if "ram_transferred" in out:  # the final result
        out["transferred"], out["total"] = out["ram_transferred"], out.get("ram_total", 0)
    return out


def mirror_progress(p: "mirror.MirrorProgress") -> dict[str, Any]:
    return {"offset": p.offset, "total": p.len, "ready": p.ready, "mb_s": p.mb_s}
