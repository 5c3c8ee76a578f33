"""The simulated world: hosts, their links and datastores, QEMU processes, watchdogs.

Everything the real environment touches is state here, changed only by the scenario's
faults and by the simulated agents, on the virtual clock. The world also watches the one
safety property that matters most (DESIGN.md, "Never two running copies of a VM"): it
sees every QEMU process of every VM at every instant, and records a violation whenever a
VM runs twice, and a lock refusal whenever a second copy is tried while QEMU's disk locks
(DESIGN rule 4, the last line) are still held by another.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from vigil.model import HbRecord, VMSpec
from vigil.sim.clock import VirtualClock
from vigil.sim.stale_member import StaleMember
from vigil.sim.store import MemoryStore
from vigil.sim.context import AgentProcess


GATEWAY = "10.0.0.254"  # every host's isolation address: it answers whoever has a link
# How long an agent out of a hang may take to give its VMs up, if it was declared failed
# meanwhile: a tick to see its lease lost, the isolation check's pings (1 s timeout), the
# power-off. A disk lock its copy holds that long after the hang is DESIGN's backstop.
RESUME_CHECK_S = 2.0


class StartFailed(Exception):
    """QEMU did not start (the message is QEMU's, or the simulator's stand-in for it)."""


@dataclass
class Qemu:
    vm: str
    host: str
    pid: int
    state: str = "running"  # running | incoming (a migration's paused destination) | paused
    guest: Any = None  # its guest, for VM monitoring (vigil.sim.guests.SimGuest), made at its first look


@dataclass
class SimHost:
    name: str
    address: str
    memory_mb: int
    cpus: int
    datastores: tuple[str, ...]
    networks: tuple[str, ...] = ()
    powered: bool = True
    hung: bool = False
    link_up: bool = True
    lost_ds: set[str] = field(default_factory=set)
    fail_start: set[str] = field(default_factory=set)  # VMs whose QEMU fails to start here
    qemus: dict[str, Qemu] = field(default_factory=dict)
    boots: int = 0
    lease_file: int = 0  # the agent's lease file in its run dir: survives an agent restart, not a reboot
    watchdog_fed: float | None = None  # None: disarmed
    agent: "AgentProcess | None" = None
    bmc: str = ""  # its BMC's kind ("redfish" | "ipmi"); empty: none
    bmc_up: bool = True  # the BMC answers (fault bmc-fail)
    bmc_slow: bool = False  # the BMC takes the power-off but never confirms it (fault bmc-slow)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    resumed_at: float = -1.0  # when it last came out of a hang (the world's clock)
    stale_member: StaleMember | None = None  # its etcd member led raft when it hung (hang etcd_leader)


class World:
    def __init__(self, clock: VirtualClock, store: MemoryStore, log: Callable[[float, str, str, str], None],
                 boot_s: float = 2.0, watchdog_s: float = 5.0, agent_factory: Callable[["World", str], "AgentProcess"]
                 | None = None) -> None:
        self.clock, self.store, self.log = clock, store, log
        self.boot_s, self.watchdog_s = boot_s, watchdog_s
        self.hosts: dict[str, SimHost] = {}
        self.ds_up: dict[str, bool] = {}
        self.hb: dict[str, dict[str, HbRecord]] = {}  # datastore -> host -> its heartbeat file
        self.groups: list[list[str]] | None = None  # a partition: etcd's quorum is with the first group
        self.violations: list[str] = []
        self.lock_refusals: list[str] = []
        self.crashes: list[str] = []
        self.guest_shutdown_s: dict[str, float] = {}  # how long a guest's ACPI shutdown takes, if not 1 s
        # how long after its QEMU runs a guest's heartbeat is first seen (absent: never)
        self.guest_up_s: dict[str, float] = {}
        self.agent_factory = agent_factory
        self.vm_load: dict[str, tuple[float, float]] = {}  # VM -> (CPU cores, resident MiB) it uses (vm-load)
        self.vm_memory: dict[str, int] = {}  # VM -> its spec's memory (the idle load's half)
        self.ds_size: dict[str, float] = {}  # datastore -> MiB (reported as space only when set)
        self.ds_used: dict[str, float] = {}  # datastore -> MiB used besides the VMs' disks (datastore-fill)
        self.vm_iops: dict[str, float] = {}  # VM -> writes a second on each disk (vigil.sim.blockio)
        self.ds_latency: dict[str, tuple[float, float]] = {}  # datastore -> (ms, ms per op/s on it)
        self.report_load = False  # the agents write load/ (scenarios about DRS; the others' logs unchanged)
        self._pid = 1000
        self._group_of: tuple[list[list[str]] | None, dict[str, int]] = (None, {})  # groups -> host -> index

    def task_done(self, t: asyncio.Task) -> None:
        """A simulated process's task ended: an exception in it is a simulator (or vigil) bug."""
        if not t.cancelled() and t.exception() is not None:
            e = t.exception()
            self.crashes.append(f"{self.clock.now:.2f}: {t.get_coro().__qualname__}: {type(e).__name__}: {e}")

    # -- topology ----------------------------------------------------------------------------
    def add_host(self, h: SimHost) -> None:
        h.resumed.set()
        self.hosts[h.name] = h
        for ds in h.datastores:
            self.ds_up.setdefault(ds, True)
            self.hb.setdefault(ds, {})

    def by_address(self, address: str) -> SimHost | None:
        return next((h for h in self.hosts.values() if h.address == address), None)

    def _group(self, host: str) -> int:
        groups = self.groups
        if groups is None:
            return 0
        seen, index = self._group_of
        if seen is not groups:  # a new partition (faults set ``groups`` anew each time)
            index = {}
            for i, g in enumerate(groups):
                for h in g:
                    index.setdefault(h, i)
            self._group_of = (groups, index)
        return index.get(host, -1)

    def answers(self, src: str, address: str) -> bool:
        """Whether a ping from ``src`` to ``address`` is answered (a hung host's kernel
        still answers: only its processes are stopped)."""
        s = self.hosts[src]
        if not (s.powered and s.link_up):
            return False
        if address == GATEWAY:
            return True
        d = self.by_address(address)
        return d is not None and d.powered and d.link_up and self._group(src) == self._group(d.name) >= 0

    def reaches_etcd(self, host: str) -> bool:
        h = self.hosts[host]
        return h.powered and h.link_up and self._group(host) == 0

    def ds_reachable(self, host: str, ds: str) -> bool:
        h = self.hosts[host]
        return h.powered and ds in h.datastores and ds not in h.lost_ds and self.ds_up.get(ds, False)

    def write_hb(self, host: str, ds: str, rec: HbRecord) -> bool:
        if not self.ds_reachable(host, ds):
            return False
        self.hb[ds][host] = rec
        return True

    # -- QEMU --------------------------------------------------------------------------------
    def running_copies(self, vm: str) -> list[Qemu]:
        return [q for h in self.hosts.values() if h.powered for q in h.qemus.values()
                if q.vm == vm and q.state == "running"]

    def _check(self, vm: str) -> None:
        copies = self.running_copies(vm)
        if len(copies) > 1:
            where = ", ".join(sorted(q.host for q in copies))
            self.violations.append(f"{self.clock.now:.2f}: {vm} runs on {where}")
            self.log(self.clock.now, "VIOLATION", vm, f"two running copies of {vm}: {where}")

    def start_qemu(self, host: str, spec: VMSpec, incoming: bool = False) -> Qemu:
        h = self.hosts[host]
        if spec.name in h.fail_start or "*" in h.fail_start:
            raise StartFailed("qemu-system-x86_64: simulated start failure")
        missing = sorted(ds for ds in spec.datastores if not self.ds_reachable(host, ds))
        if missing:
            raise StartFailed(f"datastore {', '.join(missing)} not reachable")
        # an incoming (or migrated-away, paused) QEMU has its images inactive: only a
        # running copy, frozen on a hung host or not, holds the lock (on this host too)
        others = [q for o in self.hosts.values() if o.powered for q in o.qemus.values()
                  if q.vm == spec.name and q.state == "running"]
        if spec.disks and others and not incoming:
            holder = others[0].host
            ho = self.hosts[holder]
            # a holder whose agent runs should have stopped its copy before losing its lease:
            # DESIGN counts on the locks only while the holder's agent is hung or dead, or
            # has just come out of a hang and is still finding out whether it was declared
            # failed meanwhile (its isolation check: lease lost, then the pings' timeout)
            resuming = 0 <= self.clock.now - ho.resumed_at <= RESUME_CHECK_S
            agent = "hung" if ho.hung else "dead" if ho.agent is None else "resuming" if resuming else "running"
            self.lock_refusals.append(f"{self.clock.now:.2f}: {spec.name} on {host} (held on {holder}, "
                                      f"whose agent is {agent})")
            self.log(self.clock.now, "disk-lock-held", spec.name,
                     f"QEMU on {host} refused {spec.name}'s disk: its image is locked by the copy on {holder}")
            raise StartFailed(f'Failed to get "write" lock (held by the copy on {holder})')
        self._pid += 1
        q = Qemu(spec.name, host, self._pid, "incoming" if incoming else "running")
        h.qemus[spec.name] = q
        self._check(spec.name)
        return q

    def stop_qemu(self, host: str, vm: str) -> None:
        self.hosts[host].qemus.pop(vm, None)

    def switch_over(self, src: str, dst: str, vm: str) -> None:
        """A live migration's switchover: the source's copy pauses, the destination's runs."""
        s, d = self.hosts[src].qemus.get(vm), self.hosts[dst].qemus.get(vm)
        if s is not None:
            s.state = "paused"
        if d is not None:
            d.state = "running"
            self._check(vm)

    # -- BMCs --------------------------------------------------------------------------------
    def bmc_address(self, host: str) -> str:
        """Each BMC on the management network, which is no host's link: a host cut off still
        has its BMC reachable (unless the BMC died: fault bmc-fail)."""
        return f"10.0.1.{list(self.hosts).index(host) + 1}"

    def bmc_answers(self, src: str, host: str) -> bool:
        s, h = self.hosts[src], self.hosts.get(host)
        return s.powered and s.link_up and h is not None and bool(h.bmc) and h.bmc_up

    # -- power, hangs, the watchdog ------------------------------------------------------------
    def feed_watchdog(self, host: str) -> None:
        h = self.hosts[host]
        armed = h.watchdog_fed is not None
        h.watchdog_fed = self.clock.now
        if not armed:
            asyncio.get_running_loop().create_task(self._watchdog(h, h.boots))

    async def _watchdog(self, h: SimHost, boot: int) -> None:
        """The host's hardware watchdog (the lab's supervisor): resets the host when not
        fed for ``watchdog_s``; it is hardware, so a hang does not stop it."""
        while h.boots == boot and h.powered and h.watchdog_fed is not None:
            due = h.watchdog_fed + self.watchdog_s
            if self.clock.now >= due:
                self.log(self.clock.now, "watchdog-reset", h.name,
                         f"{h.name}: watchdog not fed for {self.watchdog_s:.1f}s: host reset")
                self.power_off(h.name, "reset by its watchdog")
                await asyncio.sleep(self.boot_s)
                self.boot(h.name)
                return
            await asyncio.sleep(due - self.clock.now)

    def boot(self, host: str) -> None:
        """Power on and start the agent; a host already up is left alone (two power-ons
        pending at once must not give it two agents)."""
        h = self.hosts[host]
        if h.powered:
            return
        h.powered, h.hung = True, False
        h.resumed.set()
        h.boots += 1
        self.start_agent(host)

    def start_agent(self, host: str) -> None:
        assert self.agent_factory is not None
        h = self.hosts[host]
        h.agent = self.agent_factory(self, host)
        h.agent.start()

    def stop_agent(self, host: str) -> None:
        h = self.hosts[host]
        if h.agent is not None:
            h.agent.kill()
            h.agent = None

    def power_off(self, host: str, why: str) -> None:
        h = self.hosts[host]
        self.stop_agent(host)
        for vm, q in sorted(h.qemus.items()):
            what = "QEMU" if q.state == "running" else f"{q.state} QEMU"
            self.log(self.clock.now, "qemu-killed", vm, f"{vm}'s {what} on {host} is gone: {why}")
        h.qemus.clear()
        h.powered, h.hung, h.watchdog_fed, h.lease_file, h.stale_member = False, False, None, 0, None
        h.resumed.set()

    def hang(self, host: str, etcd_leader_s: float = 0.0) -> None:
        """``etcd_leader_s``: the host's etcd member was the raft leader; out of the hang it
        takes itself for the leader that long (vigil.sim.stale_member)."""
        h = self.hosts[host]
        h.hung = True
        h.resumed.clear()
        h.stale_member = StaleMember(self.store._leases, etcd_leader_s) if etcd_leader_s > 0 else None

    def unhang(self, host: str) -> None:
        h = self.hosts[host]
        h.hung, h.resumed_at = False, self.clock.now
        h.resumed.set()
        if h.stale_member is not None:
            h.stale_member.resumed(self.clock.now)

    def stale_keepalive(self, host: str, lease_id: int) -> int | None:
        """A keepalive answered by the host's own member that led raft before a hang and
        does not know yet that it no longer does (None: no such answer)."""
        m = self.hosts[host].stale_member
        return m.keepalive(lease_id, self.clock.now) if m is not None else None
