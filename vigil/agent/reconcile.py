"""The agent's reconcile: what etcd assigns this host against what runs here, one VM at a
time, decided by vigil.policy.host and carried out with the ownership claim it needs."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Mapping

from vigil.agent.agent_base import AgentBase
from vigil.policy import host as HP
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.store.state import AssignRecord, ClusterState

log = logging.getLogger("vigil.agent")

# What wakes reconcile: the keys it decides from, and those its own steps write.
RECONCILE_KEYS = (K.VMS, K.ASSIGN, K.OWN, K.FT, K.DISKSTATE, K.VMSTATUS, K.ALIVE)
RECONCILE_IDLE_S = 1.0


class Reconciler(AgentBase):
    """The reconcile loop and the steps it takes."""

    async def reconcile_loop(self) -> None:
        """Reconcile when the etcd watch reports a change of the keys it decides from or
        of those this host's own steps write (a QEMU exited, a start ended, a lease
        regained), RECONCILE_IDLE_S at most; tick_s / 2 while no watch runs, as before.
        None of its decisions is due to time alone, and safety does not rest on how
        soon it runs: a host runs a VM only while it holds the VM's ownership key (a
        guarded transaction); the lease, the datastore heartbeats and the watchdog have
        their own loops, timed as before. Its snapshot is as fresh as a read
        (vigil.store.etcd.Store.snapshot)."""
        while not self.stopped.is_set():
            mark = self.mark()
            if self.lease_ok():
                try:
                    await self.reconcile(self.states.of(await self.store.snapshot(),
                                                        getattr(self.store, "snapshot_revision", 0)))
                except StoreError as e:
                    log.warning("reconcile: %s", e)
            await self.wait_change(mark, RECONCILE_KEYS, RECONCILE_IDLE_S, self.cfg.tick_s / 2)

    async def reconcile(self, state: ClusterState) -> None:
        """Gather what etcd says and what this host knows, one VM at a time, ask
        vigil.policy.host, and carry out its answer (each VM decided right before it is
        acted on: the actions await, and the host's state moves meanwhile)."""
        specs = {name: r.spec for name, r in state.vms.items()}
        assign = state.assignments
        forget_deleted(specs, self.vms, self.guests.failed, self.guests.published)
        self.monitoring.use_settings(state.settings.get("monitoring"))
        facts = {
            name: HP.VMFacts(spec=specs.get(name),
                             assignment=assign[name].assignment if name in assign else None,
                             owner=state.owners[name].host if name in state.owners else None)
            for name in set(specs) | set(assign) | set(state.owners)
        }
        mine = [name for name in assign if HP.is_mine(self.me, facts[name])]  # in etcd's order
        for name in mine:  # FT failovers: keep the standby before sync drops the role
            if HP.take_standby(self.me, name, facts[name], self._here(name)) is not None:
                sb = self.ft.take_committed(name)
                if sb is not None:
                    self.promoting[name] = sb
        self.ft.sync(state, specs)
        self.disks.update(state)
        self.disks.sync()
        await carry_out_in_order(self, mine, facts, specs, assign)

    def _host_facts(self) -> HP.HostFacts:
        return HP.HostFacts(me=self.me, lease_ok=self.lease_ok(), isolated=self.isolated)

    def _here(self, name: str) -> HP.HereFacts:
        vm = self.vms.get(name)
        return HP.HereFacts(running=vm is not None, stopping=vm is not None and vm.stopping,
                            starting=name in self.guests.starting, has_standby=name in self.promoting,
                            crashes=self.guests.failed.get(name))

    def drives_task(self, name: str) -> bool:
        """Whether this agent's task runner drives a task of the VM now (a migration out)."""
        return self.tasks is not None and name in self.tasks.driving

    async def _carry_out(self, act: HP.HostAction, facts: dict[str, HP.VMFacts],
                         assign: Mapping[str, AssignRecord]) -> None:
        """One reconcile action (vigil.policy.host), with the ownership claim it needs."""
        name = act.vm
        if isinstance(act, HP.PowerOff):
            await self.guests.power_off(name, act.reason, report=act.report)
            if act.release:
                await self.guests.release(name)
        elif isinstance(act, HP.Shutdown):
            asyncio.create_task(self.guests.shutdown(name, act.reason))
        elif isinstance(act, HP.Claim):
            await self._claim(name, assign[name])
        elif isinstance(act, HP.ReportRunning):
            await self.guests.status(name, "running")
        elif isinstance(act, HP.Start):
            spec, a = facts[name].spec, facts[name].assignment
            assert spec is not None and a is not None
            if name not in self.promoting:  # a plain start claims in its own task (Guests.start)
                claim = (lambda rec=assign[name]: self._claim(name, rec)) if act.claim else None
                self.guests.starting.add(name)
                asyncio.create_task(self.guests.start(spec, a, claim))
                return
            if act.claim and not await self._claim(name, assign[name]):
                return
            sb = self.promoting.pop(name)
            asyncio.create_task(self.guests.promote(spec, a, sb))
        elif isinstance(act, HP.Wait):
            log.debug("%s: %s", name, act.reason)

    async def _claim(self, name: str, assigned: AssignRecord) -> bool:
        """Take the VM's ownership key, bound to our lease, if the assignment is unchanged."""
        return await self.store.txn(
            [self.store.absent(K.OWN + name), self.store.unchanged(K.ASSIGN + name, assigned.rev)],
            [self.store.put_op(K.OWN + name, self.me, self.lease_id)],
        )


_NO_FACTS = HP.VMFacts()  # etcd's word on a VM it has no key of (frozen: made once)


async def carry_out_in_order(host: Any, mine: Iterable[str], facts: Mapping[str, HP.VMFacts],
                             specs: Mapping[str, Any], assign: Mapping[str, Any]) -> None:
    """Reconcile's two passes, the agent's and the simulated agent's alike: first the VMs
    running here that should not (stopped, deleted, or handed to another host), then
    those assigned here; each decided by vigil.policy.host right before it is carried
    out (``host._carry_out``), so that every decision sees the steps before it."""
    nothing = _NO_FACTS
    for name, vm in list(host.vms.items()):
        if name in mine:
            continue
        here = HP.HereFacts(running=True, stopping=vm.stopping, driving=host.drives_task(name))
        await host._carry_out(HP.stray_action(host._host_facts(), name, facts.get(name, nothing), here),
                              facts, assign)
    for name in mine:
        a = facts[name].assignment
        assert a is not None
        vm = host.vms.get(name)
        if vm is not None:  # the spec and generation the assignment gives it
            vm.spec, vm.gen = specs[name], a.gen
        await host._carry_out(HP.assigned_action(host._host_facts(), name, facts[name], host._here(name)),
                              facts, assign)


def forget_deleted(specs: Mapping[str, Any], running: Mapping[str, Any], *memories: dict) -> None:
    """A VM deleted, and perhaps created again under its name, starts from nothing here:
    what a host remembers of a VM by name (its failed starts and crashes, kept with the
    assignment's generation, which a new VM counts from 1 again; the status it last wrote)
    is forgotten once the VM is gone from etcd and runs nowhere here. Without it a new VM
    assigned here at a generation the old one failed at was never started."""
    for memory in memories:
        for name in [n for n in memory if n not in specs and n not in running]:
            del memory[name]
