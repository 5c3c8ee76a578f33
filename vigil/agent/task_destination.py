"""The destination agent's side of a migration: the incoming QEMU, the take-over of the
VM once its copy runs, and marking the task done."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict

from vigil.env import executor
from vigil.agent.task_records import moved_spec
from vigil.agent.task_runner_base import TaskRunnerBase
from vigil.hypervisor import mirror, migration
from vigil.hypervisor import qemu
from vigil.model import Assignment, Task
from vigil.policy import tasks as TP
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.store.state import ClusterState

log = logging.getLogger("vigil.tasks")

TAKE_OVER_TRIES = 3  # swaps lost to writes that changed nothing of who runs the VM


class DestinationTasks(TaskRunnerBase):
    """The migrations whose destination is this host."""

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
                                   stale=self.a.stale_disks(t.vm), ft=self.a.ft_on(t.vm))
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
        """Our copy runs: own the VM now (only one side can win: compare-and-swap).

        The swap is against the revisions of the state read last; when it loses only to a
        write that left the VM's owner and assignment as they were (an operator's edit of
        the VM's settings, say), it is tried again on a fresh read. Losing it drops our copy,
        which holds the only running guest once the source's is paused after the switchover."""
        st = self.store
        if t.vm not in state.assignments or t.vm not in state.vms:
            return
        hands = _hands(state, t.vm)
        own_key, assign_key, spec_key = K.OWN + t.vm, K.ASSIGN + t.vm, K.VMS + t.vm
        for attempt in range(TAKE_OVER_TRIES):
            if attempt:
                state = await self._read_state()
                again, why = TP.take_over_again(hands, _hands(state, t.vm))
                log.info("%s: take-over swap lost: %s", t.vm, why)
                if not again:
                    break
            a, spec_r = state.assignments.get(t.vm), state.vms.get(t.vm)
            if a is None or spec_r is None:
                break  # deleted meanwhile
            gen = int(a.assignment.gen) + 1
            new_spec = moved_spec(spec_r.spec, t.datastore) if t.datastore else spec_r.spec
            owner_ok = st.equals(own_key, t.src) if t.vm in state.owners else st.absent(own_key)
            guards = [owner_ok, st.unchanged(assign_key, a.rev)]
            ops = [st.put_op(own_key, self.a.me, self.a.lease_id),
                   st.put_op(assign_key, asdict(Assignment(host=self.a.me, gen=gen, reason="migrate")))]
            if t.datastore:  # the disks' new datastore goes into the spec it was read from
                guards.append(st.unchanged(spec_key, spec_r.rev))
                ops.append(st.put_op(spec_key, new_spec.to_json()))
            if await st.txn(guards, ops):
                self.incoming.pop(t.vm, None)
                self.a.adopt_migrated(t.vm, pid, new_spec, gen)
                await self.a.event("vm-migrated", f"{t.vm} now runs on {self.a.me} (migrated from {t.src})",
                                   vm=t.vm)
                self._finish_soon(t)
                return
        await self._drop_incoming(t.vm, "the VM changed hands during the switchover")
        await self._update(t.vm, t.id, state="failed", error="ownership changed during switchover")

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


def _hands(state: ClusterState, vm: str) -> TP.Hands:
    """Who runs ``vm`` in ``state``: its owner, its assigned host and the assignment's gen."""
    o, a = state.owners.get(vm), state.assignments.get(vm)
    return (o.host if o else None, a.assignment.host if a else None, int(a.assignment.gen) if a else -1)
