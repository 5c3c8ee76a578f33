"""Disks on two datastores, as a simulated host's agent keeps them.

Mirrors vigil.agent.disks (DiskKeeper.degrade and sync) at the protocol level, with the
real pure decisions of vigil.policy.replicas: a copy whose datastore this host lost,
while the disk's other copy is reachable, is marked stale in ``diskstate/<vm>`` (before
it leaves the quorum) and the VM runs on; once both datastores are reachable again the
disk is resynced (``RESYNC_S`` of virtual time, no progress figures) and marked in sync.
"""
from __future__ import annotations

from typing import Any

from vigil.policy import replicas as P
from vigil.store import keys as K
from vigil.store.etcd import Entry, StoreError
from vigil.sim.context import AgentContext


RESYNC_S = 3.0


class SimDisks:
    def __init__(self, agent: "AgentContext") -> None:
        self.a = agent
        self.state: dict[str, dict[str, Any]] = {}  # vm -> its diskstate value
        self.resyncing: set[str] = set()
        self._seen: tuple[Any, bool] = (None, False)
        self._found: dict[str, Entry] | None = None  # what state was last read from

    def stale(self, vm: str) -> dict[str, str]:
        return P.stale_map(self.state.get(vm))

    def update(self, found: dict[str, Entry]) -> None:
        """``state`` read from ``found`` (the reads' diskstate keys, a new dict per store
        change): the same ``found`` as last time, with no write of ours since, gives the
        same state, which is kept."""
        if found is self._found:
            return
        n = len(K.DISKSTATE)
        self.state = {k[n:]: dict(e.value) for k, e in found.items() if isinstance(e.value, dict)}
        self._found = found

    def _running(self) -> list[tuple[str, Any]]:
        return [(n, v.spec) for n, v in self.a.vms.items() if v.spec is not None and not v.stopping
                and self._replicated(v.spec)]

    def _replicated(self, spec: Any) -> bool:
        """``spec.replicated``, asked once per spec (specs are frozen; reconcile asks per tick)."""
        hit = self._seen
        if hit[0] is not spec:
            hit = self._seen = (spec, spec.replicated)
        return hit[1]  # type: ignore[no-any-return]

    async def _write(self, vm: str, change: Any) -> None:
        self.state[vm] = await self.a.store.update(K.DISKSTATE + vm, change)
        self._found = None  # (state is no longer what found gives)

    async def degrade(self) -> None:
        a = self.a
        for name, spec in self._running():
            for disk, ds in P.copies_to_drop(spec, self.stale(name), a.ds_ok):
                why = f"datastore {ds} lost on {a.me}"
                now = a.clock.time()
                try:
                    await self._write(name, lambda st, d=disk, s=ds: P.mark_stale(st, d, s, now, why))
                except StoreError:
                    continue
                other = next(c for c in spec.disks[spec.disk_index(disk)].copies if c != ds)
                await a.event("disk-degraded", f"{name}: disk {disk} lost its copy on {ds} ({why}); "
                              f"running on the copy on {other} alone until it is resynced", vm=name)

    def sync(self) -> None:
        for name, spec in self._running():
            st = self.state.get(name)
            if not st or not st.get("stale"):  # no stale copy (stale() is empty): nothing to resync
                continue
            disks = P.copies_to_resync(spec, self.stale(name), self.a.ds_ok)
            if disks and name not in self.resyncing:
                self.resyncing.add(name)
                self.a.spawn(self._resync(name, disks))

    async def _resync(self, name: str, disks: list[str]) -> None:
        a = self.a
        try:
            stale = self.stale(name)
            for disk in disks:
                await a.event("disk-resync-started", f"{name}: resyncing disk {disk}'s copy on {stale[disk]}", vm=name)
                await a.clock.sleep(RESYNC_S)
                if name not in a.vms or not P.copies_to_resync(a.vms[name].spec, stale, a.ds_ok):  # type: ignore[arg-type]
                    return
                await self._write(name, lambda st, dd=disk: P.mark_in_sync(st, [dd]))
                await a.event("disk-resynced", f"{name}: disk {disk} whole again, copy on {stale[disk]} in sync",
                              vm=name)
        except StoreError:
            pass
        finally:
            self.resyncing.discard(name)
