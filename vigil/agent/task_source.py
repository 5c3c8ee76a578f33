"""The source agent's side of a task: admitting it, driving the migration, the disk move
or the offline disk repair with progress and cancel, and a task found orphaned after a
restart."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vigil.env import executor
from vigil.agent.task_records import migration_progress, mirror_progress, moved_spec
from vigil.agent.task_repair import repair_disks
from vigil.agent.task_runner_base import TaskRunnerBase
from vigil.hypervisor import mirror, migration
from vigil.hypervisor import qemu
from vigil.model import DiskSpec, Task
from vigil.policy import tasks as TP
from vigil.store.state import ClusterState

log = logging.getLogger("vigil.tasks")


class SourceTasks(TaskRunnerBase):
    """The tasks whose source is this host."""

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
            elif t.kind == "repair-disk":
                self._drive(t, self._repair(t))
        elif step == "drive":
            self._drive(t, self._migrate(t))
        elif step == "orphaned":
            await self._orphaned(t)

    async def _orphaned(self, t: Task) -> None:
        """We restarted while driving this task. A migration that completed (our copy is
        "postmigrate") is the destination's to take over; anything else is stopped here
        and the VM runs on. A repair's copy died with the agent: the copy stays stale."""
        if t.kind == "repair-disk":
            await self._update(t.vm, t.id, state="failed", error=f"the agent on {self.a.me} restarted mid-task")
            return
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
            status = await self._status(t.vm, vm.pid)
            outcome, why = TP.after_failed_migration(getattr(e, "postcopy", False), status)
            if outcome == "restart-from-disk":
                await self.a.event("migration-failed", f"{t.vm}: migration failed ({e}); {why}: "
                                   f"restarting it from disk on {self.a.me}", vm=t.vm)
                await self.a.power_off(t.vm, why)
            else:
                await self.a.event("migration-failed", f"{t.vm}: migration failed ({e}); it runs on {self.a.me} "
                                   f"({why})", vm=t.vm)
            return
        # Our copy is paused now; the reconcile powers it off once the destination owns the VM
        # and this driver has ended (HereFacts.driving: it waits for the figures read above).
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

    async def _repair(self, t: Task) -> None:
        await repair_disks(self.a, t, self._update, self._progress_writer(t), self.cancels[t.vm])

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
