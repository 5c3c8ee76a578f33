"""The agent's tick: the heartbeat loop (watchdog, datastore heartbeats) and the check
loop (datastores reached or lost, QEMU exits, guests gone silent, isolation).

What each check concludes is vigil.policy's (host, crashes, isolation); these loops
gather the facts and carry the answers out.
"""
from __future__ import annotations

import asyncio
import logging

from vigil.agent.agent_base import AgentBase
from vigil.model import HbRecord
from vigil.policy import host as HP
from vigil.policy.crashes import after_exit
from vigil.env.base import until
from vigil.policy.isolation import RunningVM, isolation_actions, isolation_verdict, tick_step
from vigil.store.etcd import StoreError

log = logging.getLogger("vigil.agent")


class TickLoops(AgentBase):
    """The heartbeat and check loops, and the checks they run."""

    async def heartbeat_loop(self) -> None:
        """The watchdog and the datastore heartbeats, from the agent's first moment, and
        never waiting on etcd: a host cut off from etcd keeps its heartbeat advancing, so
        the controller sees it partitioned, not silent (each etcd call waits out its
        timeout there, and a tick that waited on them let the heartbeat stop for seconds).
        A silent heartbeat must mean an unfed watchdog: both live here, nowhere else."""
        while not self.stopped.is_set():
            self.stalls.tick(self.env.clock.monotonic())  # did this host stand still? (_check_isolation)
            self.watchdog.tick(holds_lease=self.lease_ok(), runs_vms=bool(self.vms))
            self.ds_reach = self._reachable()
            self._write_heartbeats()
            self._ticked.set()
            self.notify.tick()
            await self.sleep(self.cfg.tick_s)

    async def check_loop(self) -> None:
        """What the tick reports to etcd, once connected: datastore changes, QEMU exits,
        guests gone silent, the start and end of an isolation. It runs right after each
        tick of the heartbeat loop and takes the datastores that tick reached (one read
        of them a tick); two ticks at most if that loop were ever late."""
        checking = None
        while not self.stopped.is_set():
            self._ticked.clear()
            await self._check_datastores()
            await self._check_processes()
            step = tick_step(self.lease.ok_until > 0, self.lease_ok(), self.isolated,
                             checking is not None and not checking.done())
            if step == "check":
                checking = asyncio.create_task(self._check_isolation())
            elif step == "end":
                self.isolated = False
                await self.event("isolation-ended", f"{self.me} reaches the cluster again")
            await self.sleep(2 * self.cfg.tick_s, self._ticked.wait())

    def _reachable(self) -> dict[str, bool]:
        return {n: self.env.datastores.reachable(n, p) for n, p in self.cfg.datastores.items()}

    def _write_heartbeats(self) -> None:
        rec = HbRecord(host=self.me, counter=int(self.env.clock.time() * 1000), boot=self.boot,
                       isolated=self.isolated, vms=tuple(sorted(self.vms)))
        for name, path in self.cfg.datastores.items():
            if self.ds_reach.get(name):
                self.env.datastores.write_heartbeat(path, rec)

    async def _check_datastores(self) -> None:
        """``ds_ok`` is the datastore list as published (host info, disk decisions); it
        follows what this host reaches (``ds_reach``, the heartbeat loop's reading) only
        after lost copies are dropped."""
        now = dict(self.ds_reach)
        changed = [n for n in now if now[n] != self.ds_ok.get(n)]
        first = not self.ds_ok
        self.ds_ok = now
        # Replicated disks drop a lost copy (every tick, until it is recorded) before the
        # controller learns of the loss, so that it sees a VM running on the copy it still
        # has, not a VM to move. (Without a lease etcd is away: no stale mark, no drop.)
        if self.lease_ok():
            await self.disks.degrade()
        if changed and not first:
            for n in changed:
                await self.event("datastore-" + ("back" if now[n] else "lost"),
                                 f"datastore {n} {'reachable again' if now[n] else 'lost'} on {self.me}")
            if self.lease_ok():
                try:
                    await self.lease.publish()
                except StoreError:
                    pass

    async def _check_processes(self) -> None:
        """Each VM in turn: a guest gone silent is reported; a QEMU that exited is counted
        and reported, and handed back once its restarts here are used up (policy.crashes)."""
        for name, vm in list(self.vms.items()):
            if vm.stopping or self.hypervisor.alive(vm.pid):
                if HP.guest_went_silent(vm.guest, vm.last_hb, self.env.clock.time(), self.cfg.guest_hb_timeout_s):
                    vm.guest = "lost"
                    await self.event("guest-heartbeat-lost",
                                     f"{name}: no guest heartbeat for {self.cfg.guest_hb_timeout_s:.0f}s on {self.me}",
                                     vm=name)
                    await self.guests.status(name, "running", message="guest heartbeat lost")
                continue
            self.guests.forget(name)
            out = after_exit(vm.gen, self.guests.failed.get(name))
            self.guests.failed[name] = out.crashes
            log.info("%s: %s", name, out.reason)
            await self.event("vm-exited", f"{name}: QEMU (pid {vm.pid}) exited on {self.me}", vm=name)
            await self.guests.status(name, out.state, message=out.message)
            if out.release:
                await self.guests.release(name)

    async def _check_isolation(self) -> None:
        peers = list(self.cfg.peers.values())
        net = self.env.network
        stalled = self.stalls.since(self.lease.ok_until - self.cfg.lease_ttl)  # since etcd last confirmed it
        # after a stall, the lease loop's first keepalive gets its chance (its own timeout;
        # past hb_grace, with the read that must back its answer: HostLease._read_back)
        peer_ok, iso_ok, _ = await asyncio.gather(
            net.any_answers(peers), net.any_answers(list(self.cfg.isolation_addresses)),
            until(self.env.clock, self.lease_ok, self.cfg.lease_ttl / 2 if stalled else 0.0))
        verdict, why = isolation_verdict(self.lease_ok(), self.isolated, peer_ok, iso_ok,
                                         stalled, self.cfg.hb_grace_s)
        if verdict == "partitioned":
            log.warning(why)
        if verdict != "isolated":
            return
        self.isolated = True
        log.warning("%s is isolated: %s", self.me, why)
        running = {n: RunningVM(vm.spec, n in self.ft.enabled) for n, vm in list(self.vms.items())}
        for act in isolation_actions(running):
            if isinstance(act, HP.PowerOff):
                await self.guests.power_off(act.vm, act.reason, report=act.report)
            elif isinstance(act, HP.Shutdown):
                asyncio.create_task(self.guests.shutdown(act.vm, act.reason))
        self._write_heartbeats()
