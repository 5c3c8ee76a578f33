"""What the source and destination halves of the agent's task runner share: the agent,
the cancel events and drivers, task updates, progress writes, QEMU run states."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from vigil.env import executor
from vigil.agent.context import MigrationHost
from vigil.agent.task_records import update_task
from vigil.hypervisor import qemu
from vigil.model import Task, VMSpec
from vigil.policy import tasks as TP
from vigil.store import keys as K
from vigil.store.state import ClusterState, StateCache
from vigil.store.etcd import Store

MIGRATION_PORT_BASE = 49152


class TaskRunnerBase:
    """The runner's state and helpers; TaskRunner (vigil.agent.tasks) adds the two sides."""

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

    async def _read_state(self) -> ClusterState:
        """The cluster's typed state, from a snapshot read now."""
        return self._states.of(await self.store.snapshot(), getattr(self.store, "snapshot_revision", 0))

    async def _update(self, vm: str, task_id: str, change: Callable[[Task], Task | None] | None = None,
                      **changes: Any) -> Task | None:
        return await update_task(self.store, vm, task_id, change, clock=self.clock, **changes)

    def _next_port(self) -> int:
        self._port = MIGRATION_PORT_BASE + (self._port - MIGRATION_PORT_BASE + 1) % 4096
        return self._port

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

    async def _commit_spec(self, vm: str, spec: VMSpec) -> bool:
        e = await self.store.get(K.VMS + vm)
        if e is None:
            return False
        return await self.store.txn([self.store.unchanged(e.key, e.mod_revision)],
                                    [self.store.put_op(e.key, spec.to_json())])
