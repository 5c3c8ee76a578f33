"""The agent's side of migrations and disk moves (tasks in etcd).

A migration: the source agent admits the task (per-host limits) -> the destination agent
starts a QEMU waiting for the migration and says where it listens -> the source agent
migrates, reporting progress -> once the destination's copy runs, the destination agent
takes the VM's ownership and assignment in one transaction. The source's paused copy is
then powered off by the ordinary reconcile (assigned elsewhere), once the source's driver
has read the migration's last figures (its QEMU must outlive that query). Any failure or cancel
before that leaves the VM running on the source and the destination's QEMU is ended.

The runner's parts: vigil.agent.task_runner_base (what both sides share),
vigil.agent.task_source, vigil.agent.task_destination and vigil.agent.task_records
(update_task, progress); this module runs them and names them all.
"""
from __future__ import annotations

import logging

from vigil.agent.task_destination import DestinationTasks
from vigil.agent.task_records import migration_progress, mirror_progress, moved_spec, update_task
from vigil.agent.task_runner_base import MIGRATION_PORT_BASE
from vigil.agent.task_source import SourceTasks
from vigil.policy import tasks as TP
from vigil.model import TASK_ACTIVE
from vigil.store import keys as K
from vigil.store.etcd import StoreError

__all__ = ["TaskRunner", "update_task", "moved_spec", "migration_progress", "mirror_progress",
           "MAX_MIGRATIONS_PER_HOST", "MAX_DISK_MOVES_PER_HOST", "PREPARE_TIMEOUT_S", "MIGRATION_PORT_BASE"]

log = logging.getLogger("vigil.tasks")

MAX_MIGRATIONS_PER_HOST = TP.MAX_MIGRATIONS_PER_HOST  # the limits are policy's; named here too
MAX_DISK_MOVES_PER_HOST = TP.MAX_DISK_MOVES_PER_HOST
PREPARE_TIMEOUT_S = TP.PREPARE_TIMEOUT_S
STEP_S = 0.25
IDLE_S = 1.0


class TaskRunner(SourceTasks, DestinationTasks):
    """The agent's task loop: each cycle, every task this host is the source or the
    destination of takes its next step (vigil.policy.tasks decides which)."""

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
        state = await self._read_state()
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
