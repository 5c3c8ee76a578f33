"""``vigil agent``: the one daemon on each host.

It keeps the host's lease, writes the datastore heartbeats, pets the watchdog (and systemd's),
runs the QEMUs it is assigned (only while it holds their ownership keys), watches their guests,
applies isolation responses, campaigns for the leader key to run the controller. QEMU is
daemonized, so stopping or restarting the agent never stops a VM.

This module holds the start-up and names the Agent; its parts: agent_base.py (the host's
state and what every loop uses), tick.py (the heartbeat and check loops: watchdog,
datastore heartbeats, QEMU exits, isolation), reconcile.py (the reconcile loop). What each
does is decided in vigil.policy (host, crashes, isolation, leader, watchdog), and carried
out by the parts beside it: lease.py (the lease and the host's keys), leader.py (leadership
and the controller), guests.py (the QEMUs: start, adopt, watch, stop, status), ft.py,
disks.py and tasks.py (FT roles, disk copies, migrations), vm_monitor.py (VM and
application monitoring's resets), all through one Env.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from vigil.agent import metrics as host_metrics
from vigil.agent.context import LocalVM
from vigil.agent.loadreport import LoadReport, report_load
from vigil.agent.reconcile import RECONCILE_IDLE_S, RECONCILE_KEYS, Reconciler
from vigil.agent.tasks import TaskRunner
from vigil.agent.tick import TickLoops
from vigil.config import AgentConfig
from vigil.logs import setup_logging
from vigil.policy.crashes import LOCAL_RESTARTS
from vigil.store.etcd import StoreError

log = logging.getLogger("vigil.agent")

__all__ = ["Agent", "LocalVM", "LOCAL_RESTARTS", "RECONCILE_KEYS", "RECONCILE_IDLE_S",
           "main"]  # LOCAL_RESTARTS: its home is policy.crashes


class Agent(TickLoops, Reconciler):
    """One host's agent; to its helpers it is a vigil.agent.context.MigrationHost."""

    # -- main --------------------------------------------------------------------------
    async def run(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopped.set)
        self.ds_reach = self._reachable()
        await self._check_datastores()
        self.ft.clean_leftovers()
        for name, pid in self.hypervisor.find_running().items():
            self.guests.adopt(name, pid, None, 0, held=True)
            log.info("adopted running VM %s (pid %d)", name, pid)
        # From here on the heartbeats and the watchdog go on (armed now only if VMs run here or an
        # earlier run armed it): the slow start-up work below (the probe) never lets it expire.
        tasks = [asyncio.create_task(self.heartbeat_loop())]
        self.load = LoadReport(self.me, self.cfg.cpus, self.cfg.memory_mb)  # what report_load smooths
        if self.cfg.metrics_listen:
            host_metrics.start(self.cfg.metrics_listen, self.me, self.vms, self.cfg.datastores, self.load.record,
                               self.env.clock.time)
        self.accel = await self.hypervisor.probe_accel()
        while not self.stopped.is_set():
            try:
                await self.store.connect()
                self.store.watch()
                break
            except StoreError as e:
                log.warning("etcd: %s", e)
                await self.sleep(1)
        self.tasks = TaskRunner(self)
        tasks += [asyncio.create_task(c) for c in (self.check_loop(), self.lease.loop(), self.reconcile_loop(),
                                                   self.leadership.loop(), self.tasks.loop(),
                                                   report_load(self.env, self.store, self.load, self.vms, self.cfg.datastores,
                                                               getattr(self.hypervisor, "qemu_stats", None)),
                                                   self.monitoring.loop())]
        if self.vms:
            adopted = ", ".join(sorted(self.vms))
            asyncio.create_task(self.event("vms-adopted", f"{self.me} adopted running VMs: {adopted}"))
        await self.stopped.wait()
        self.notify.stopping()
        for t in tasks + ([self.leadership.task] if self.leadership.task else []):
            t.cancel()
        for vm in self.vms.values():
            if vm.monitor:
                vm.monitor.cancel()
        await self.ft.stop_all()
        if self.lease_ok():
            await self.lease.mark_restart()
        await self.store.close()
        self.watchdog.close_clean(runs_vms=bool(self.vms))  # a clean stop only: a crash leaves it armed


def main(config_path: str) -> None:
    setup_logging()
    asyncio.run(Agent(AgentConfig.load(config_path)).run())
