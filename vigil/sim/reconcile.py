"""A simulated agent's reconcile: vigil.agent.agent.Agent.reconcile over the simulated host.

The same vigil.policy.host decisions, asked one VM at a time right before each is carried
out (by vigil.sim.vm_exec), in the same order, over the keys every host reads once per
store change (vigil.sim.reads). A mixin of vigil.sim.agent.SimAgent.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from vigil.agent.reconcile import carry_out_in_order, forget_deleted
from vigil.policy import host as HP
from vigil.policy.crashes import Crashes
from vigil.sim.reads import EtcdWord, etcd_word
from vigil.sim.vm_exec import VmExecution
from vigil.store.etcd import Entry, StoreError


# The facts asked for are few and frozen: made once each, shared by every host (a
# reconcile asks for them per VM, several times per virtual second per host).
_HOST_FACTS: dict[tuple[str, bool, bool], HP.HostFacts] = {}
_HERE_FACTS: dict[tuple, HP.HereFacts] = {}
_KEEP = 4096


class Reconciler(VmExecution):
    """reconcile_loop and reconcile, carried out by VmExecution (SimAgent's base)."""

    cfg: Any
    ft: Any
    migrations: Any
    monitoring: Any
    promoting: dict[str, int]
    isolated: bool

    if TYPE_CHECKING:  # SimAgent's
        def lease_ok(self) -> bool: ...

    async def reconcile_loop(self) -> None:
        while True:
            if self.lease_ok():
                try:
                    await self.reconcile(await etcd_word(self.store))
                    await self.monitoring.read_settings()  # the real agent: from its snapshot
                except StoreError:
                    pass
            await self.clock.sleep(self.cfg.tick_s / 2)

    async def reconcile(self, word: EtcdWord) -> None:
        """vigil.agent.agent.Agent.reconcile over the simulated host: the same
        vigil.policy.host decisions, asked one VM at a time right before each is carried
        out, in the same order (FT standbys taken, FT and disk sync, VMs that must stop
        here, VMs assigned here). ``word``: the keys reconcile looks at (the real agent
        takes a whole snapshot), read at one revision (vigil.sim.reads)."""
        specs, facts, assign = word.specs, word.facts, word.assign
        forget_deleted(specs, self.vms, self.failed)  # as the real agent (its status cache also holds datastore keys)
        mine = word.mine.get(self.me, ())
        for name in mine:  # FT failovers: keep the standby before sync drops the role
            if HP.take_standby(self.me, name, facts[name], self._here(name)) is not None:
                seq = self.ft.take(name)
                if seq is not None:
                    self.promoting[name] = seq
        if word.ft or self.ft.standby:
            await self.ft.sync(word)
        self.disks.update(word.diskstate)
        self.disks.sync()
        await carry_out_in_order(self, mine, facts, specs, assign)  # the real agent's two passes

    def _host_facts(self) -> HP.HostFacts:
        key = (self.me, self.lease_ok(), self.isolated)
        f = _HOST_FACTS.get(key)
        if f is None:
            f = _HOST_FACTS[key] = HP.HostFacts(me=key[0], lease_ok=key[1], isolated=key[2])
        return f

    def drives_task(self, name: str) -> bool:
        """As the real agent's: a task of the VM is driven here now."""
        return name in self.migrations.driving

    def _here(self, name: str) -> HP.HereFacts:
        """As the real agent's: an incoming migration's copy counts as a start under way
        (the real agent's takeover and adoption of it happen with no wait between)."""
        vm = self.vms.get(name)
        key = (vm is not None, vm is not None and vm.stopping,
               name in self.starting or name in self.migrations.incoming, name in self.promoting, self.failed.get(name))
        f = _HERE_FACTS.get(key)
        if f is None:
            if len(_HERE_FACTS) > _KEEP:
                _HERE_FACTS.clear()
            crashes = None if key[4] is None else Crashes(*key[4])
            f = _HERE_FACTS[key] = HP.HereFacts(running=key[0], stopping=key[1], starting=key[2],
                                                has_standby=key[3], crashes=crashes)
        return f

    async def _carry_out(self, act: HP.HostAction, facts: Mapping[str, HP.VMFacts],
                         assign: Mapping[str, Entry]) -> None:
        """One reconcile action, as vigil.agent.agent.Agent._carry_out does it."""
        name = act.vm
        if isinstance(act, HP.PowerOff):
            await self._power_off(name, act.reason, report=act.report)
            if act.release:
                await self._release(name)
        elif isinstance(act, HP.Shutdown):
            self.spawn(self._shutdown(name, act.reason))
        elif isinstance(act, HP.Claim):
            await self._claim(name, assign[name])
        elif isinstance(act, HP.ReportRunning):
            await self._status(name, "running")
        elif isinstance(act, HP.Start):
            if act.claim and not await self._claim(name, assign[name]):
                return
            spec, a = facts[name].spec, facts[name].assignment
            assert spec is not None and a is not None
            seq = self.promoting.pop(name, None)
            if seq is not None:
                self.spawn(self.ft.promote(spec, a.gen, seq))
            else:
                self.spawn(self._start(spec, a))
