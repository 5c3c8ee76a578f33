"""What the agent's parts share: the host's state and the few things every loop uses.

The Agent (vigil.agent.agent) is this base and its loops: the tick (vigil.agent.tick:
heartbeats, watchdog, the process, datastore and isolation checks) and reconcile
(vigil.agent.reconcile). Here: the world it acts on (env, store, hypervisor), the
VMs it runs, its helpers (lease, leadership, guests, FT, disks, monitoring), and
what the helpers ask of their host (vigil.agent.context): record an event, sleep
without missing a stop, wait for a change of the keys a loop reads.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable

from vigil.agent.context import LocalVM
from vigil.agent.disks import DiskKeeper
from vigil.agent.ft import FtRunner, Standby
from vigil.agent.guests import Guests
from vigil.agent.leader import Leadership
from vigil.agent.lease import HostLease
from vigil.agent.vm_monitor import VmMonitor, watched_here
from vigil.agent.sdnotify import Notifier
from vigil.agent.watchdog import make_watchdog
from vigil.config import AgentConfig
from vigil.env.base import Env
from vigil.policy.isolation import StallWatch
from vigil.env.hypervisor import Hypervisor, QemuHypervisor
from vigil.model import VMSpec
from vigil.store.changes import Changes
from vigil.store.etcd import Store
from vigil.config.etcd_client import etcd_tls
from vigil.store.state import StateCache
from vigil.store.events import make_event, record

if TYPE_CHECKING:
    from vigil.agent.tasks import TaskRunner

log = logging.getLogger("vigil.agent")


class AgentBase:
    """The host's state and shared helpers; vigil.agent.agent.Agent adds the loops."""

    def __init__(self, cfg: AgentConfig, env: Env | None = None, store: Store | None = None,
                 hypervisor: Hypervisor | None = None) -> None:
        """``env``, ``store`` and ``hypervisor``: the world this agent acts on; by default
        the real one (a real host's clock, mounts and ping; etcd, the host's own member
        first; QEMU through vigil.env.executor)."""
        self.cfg = cfg
        self.me = cfg.host
        if env is None:
            from vigil.env.real import RealEnv

            env = RealEnv()
        self.env: Env = env
        self.store = store if store is not None else self._default_store(cfg)
        self.hypervisor: Hypervisor = hypervisor if hypervisor is not None else QemuHypervisor(cfg)
        self.run_dir = Path(cfg.run_dir)
        self.isolated = False
        self.stalls = StallWatch(cfg.hb_grace_s)  # this host's own stalls (the heartbeat tick's gaps)
        self.boot = os.urandom(4).hex()
        self.vms: dict[str, LocalVM] = {}
        self.ds_ok: dict[str, bool] = {}  # datastores reached, as published (see _check_datastores)
        self.ds_reach: dict[str, bool] = {}  # datastores reached now (the heartbeat loop's)
        self.accel = "tcg"
        self.ft = FtRunner(self)
        self.disks = DiskKeeper(self)
        self.guests = Guests(self, self.ft)
        self.promoting: dict[str, Standby] = {}  # FT failovers whose standby is taken
        self.tasks: TaskRunner | None = None  # made once etcd is reached (Agent.run)
        self.watchdog, self.notify = make_watchdog(cfg), Notifier()  # the host's, and systemd's
        self.stopped = asyncio.Event()
        self._ticked = asyncio.Event()  # set by each heartbeat tick, for the check loop
        self.lease = HostLease(self, self.boot, self.stalls)
        self.leadership = Leadership(self)
        self.states = StateCache()  # the snapshots' typed state, parsed once per revision
        self.monitoring = VmMonitor(self, self.env.clock, self.hypervisor, lambda now: watched_here(self.vms),
                                    lambda: [vm.spec for vm in self.vms.values()])
        self.guests.on_panic = self.monitoring.note_panic  # guest panics (vigil.agent.panics) are its to decide

    @staticmethod
    def _default_store(cfg: AgentConfig) -> Store:
        local = [e for e in cfg.etcd_endpoints if e.rpartition(":")[0] == cfg.address]
        others = [e for e in cfg.etcd_endpoints if e not in local]
        return Store(local + others, timeout=min(2.0, cfg.lease_ttl / 2), prefer_first=True, tls=etcd_tls(cfg))

    # -- small helpers -----------------------------------------------------------------
    @property
    def lease_id(self) -> int:
        return self.lease.id

    def lease_ok(self) -> bool:
        return self.lease.ok()

    def stale_disks(self, vm: str) -> dict[str, str]:
        """The VM's disk copies known stale (left out when it starts here)."""
        return self.disks.stale(vm)

    async def event(self, kind: str, message: str, vm: str = "", **data: object) -> None:
        """Log and record an event, stamped by the environment's clock."""
        log.info("%s: %s", kind, message)
        ev = make_event(kind, message, host=self.me, vm=vm, source=self.me, **data)
        await record(self.store, replace(ev, time=self.env.clock.time()))

    async def sleep(self, s: float, *until: Awaitable[object]) -> None:
        """Sleep ``s`` on the environment's clock, or until the agent is told to stop (or
        one of ``until`` is done)."""
        if self.stopped.is_set():
            return
        waits = [asyncio.ensure_future(self.env.clock.sleep(s)), asyncio.ensure_future(self.stopped.wait()),
                 *map(asyncio.ensure_future, until)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def mark(self) -> int:
        """Where the store's changes stand: taken before a loop reads (see wait_change)."""
        changes = getattr(self.store, "changes", None)
        return changes.mark() if changes is not None else 0

    async def wait_change(self, mark: int, prefixes: tuple[str, ...], idle_s: float, poll_s: float) -> None:
        """Sleep until a key under ``prefixes`` changed after ``mark`` (the etcd watch
        says so), ``idle_s`` at most; while no watch runs, ``poll_s`` (the loop's old
        period: a lost watch costs reads, never a late decision)."""
        changes: Changes | None = getattr(self.store, "changes", None)
        if changes is None or not changes.watching:
            await self.sleep(poll_s)
        else:
            await self.sleep(idle_s, changes.wait(mark, prefixes))

    # -- VM execution (vigil.agent.guests) ----------------------------------------------
    async def power_off(self, name: str, why: str, report: bool = True) -> None:
        await self.guests.power_off(name, why, report)

    def plug_incoming(self, name: str, pid: int, spec: VMSpec) -> None:
        self.guests.plug_incoming(name, pid, spec)

    def unplug_incoming(self, name: str) -> None:
        self.guests.unplug_incoming(name)

    def ft_on(self, name: str) -> bool:
        return name in self.ft.enabled

    def adopt_migrated(self, name: str, pid: int, spec: VMSpec, gen: int) -> None:
        self.guests.adopt_migrated(name, pid, spec, gen)
