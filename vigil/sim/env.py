"""``SimEnv``: ``vigil.env.base.Env`` for one simulated host.

The clock is the world's virtual one; a hung host's sleeps do not end until it is
resumed (a SIGSTOPped agent, like the lab's hang fault), so every loop of its agent and
of its controller freezes at its next wait. Datastores are the world's in-memory
heartbeat files as this host reaches them; ping is answered by powered hosts with a link
in the same partition group; a fence asks the host's simulated BMC, which powers it off.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from vigil.config import AgentConfig
from vigil.model import HbRecord
from vigil.sim.world import GATEWAY, World
from vigil.store import keys as K

PING_RTT_S = 0.001


class HostClock:
    def __init__(self, world: World, host: str) -> None:
        self.w, self.h = world, world.hosts[host]
        # time and monotonic are the world's clock's own (no call of ours around them:
        # hosts' loops read the clock hundreds of thousands of times a run)
        self.time: Callable[[], float] = world.clock.time
        self.monotonic: Callable[[], float] = world.clock.monotonic

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:  # asyncio.sleep's future and timer, without its coroutine (the same wait)
            fut, timer = asyncio.get_running_loop().sleeper(seconds)  # (a VirtualLoop)
            try:
                await fut
            finally:
                if timer._scheduled:  # (cancelled: a timer that went off has left the heap)
                    timer.cancel()
        else:
            await asyncio.sleep(seconds)
        while self.h.hung:
            await self.h.resumed.wait()


class SimDatastores:
    def __init__(self, world: World, host: str) -> None:
        self.w, self.host = world, host

    @staticmethod
    def name_of(path: str) -> str:
        return path.rsplit("/", 1)[-1]

    def reachable(self, name: str, path: str) -> bool:
        return self.w.ds_reachable(self.host, name)

    def write_heartbeat(self, path: str, record: HbRecord) -> bool:
        return self.w.write_hb(self.host, self.name_of(path), record)

    def read_heartbeats(self, path: str) -> dict[str, HbRecord]:
        name = self.name_of(path)
        # a read-only view, not a copy: every caller takes the records at once
        return MappingProxyType(self.w.hb.get(name, {})) if self.w.ds_reachable(self.host, name) else {}  # type: ignore[return-value]


class SimNetwork:
    def __init__(self, world: World, host: str, clock: HostClock) -> None:
        self.w, self.host, self.clock = world, host, clock

    async def ping(self, address: str, timeout_s: float = 1.0) -> bool:
        ok = self.w.answers(self.host, address)
        await self.clock.sleep(PING_RTT_S if ok else timeout_s)
        return ok

    async def any_answers(self, addresses: Sequence[str], timeout_s: float = 1.0) -> bool:
        ok = any(self.w.answers(self.host, a) for a in addresses)
        await self.clock.sleep(PING_RTT_S if ok else timeout_s)
        return ok


class SimLoadMeter:
    """The load a scenario sets on each VM (``World.vm_load``: CPU cores, resident MiB);
    a VM it sets nothing for idles (DEFAULT_CPU cores, half its memory)."""

    DEFAULT_CPU = 0.1

    def __init__(self, world: World, host: str) -> None:
        self.w, self.host = world, host

    def sample(self, pids: Mapping[str, int]) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for vm in pids:
            q = self.w.hosts[self.host].qemus.get(vm)
            if q is None or q.state != "running":
                continue
            out[vm] = self.w.vm_load.get(vm, (self.DEFAULT_CPU, self.w.vm_memory.get(vm, 256) / 2))
        return out, (sum(c for c, _ in out.values()), sum(m for _, m in out.values()))

    def space(self, datastores: Mapping[str, str]) -> dict[str, tuple[float, float]]:
        """A datastore the scenario gives a size: what it holds besides the VMs' disks
        (``World.ds_used``, the datastore-fill action) plus their disks' sizes as the specs
        place them now (a disk moved off frees its room)."""
        out: dict[str, tuple[float, float]] = {}
        on: dict[str, float] = {}
        for k, e in self.w.store._kv.items():
            if k.startswith(K.VMS) and isinstance(e.value, dict):
                for d in e.value.get("disks", ()):
                    on[d["datastore"]] = on.get(d["datastore"], 0.0) + d.get("size_mb", 64)
                    if d.get("replica"):
                        on[d["replica"]] = on.get(d["replica"], 0.0) + d.get("size_mb", 64)
        for name in datastores:
            size = self.w.ds_size.get(name)
            if size and self.w.ds_reachable(self.host, name):
                out[name] = (float(size), self.w.ds_used.get(name, 0.0) + on.get(name, 0.0))
        return out


BMC_RTT_S = 0.1  # one request to a simulated BMC and its answer


class SimFencing:
    """The simulated BMCs: a fence powers the host off (as the lab's BMC emulators do)."""

    def __init__(self, world: World, host: str, clock: HostClock) -> None:
        self.w, self.host, self.clock = world, host, clock

    async def fence(self, host: str, device: Mapping[str, Any]) -> tuple[bool, str]:
        timeout = float(device.get("timeout_s") or 5.0)
        where = f"{device.get('kind')} {device.get('address')}"
        if not self.w.bmc_answers(self.host, host):
            await self.clock.sleep(min(timeout, 2.0))
            return False, f"{where}: connection timed out"
        h = self.w.hosts[host]
        await self.clock.sleep(BMC_RTT_S)
        if h.bmc_slow:
            await self.clock.sleep(timeout - BMC_RTT_S)
            return False, f"no confirmation within {timeout:g}s"
        if h.powered:
            self.w.log(self.w.clock.now, "bmc-power-off", host, f"{host}: powered off by its BMC ({where})")
            self.w.power_off(host, "powered off by its BMC")
        await self.clock.sleep(BMC_RTT_S)
        return True, f"{where}: power off, state off"


class SimEnv:
    """What one simulated host's agent and controller see of the world."""

    def __init__(self, world: World, host: str) -> None:
        self.clock = HostClock(world, host)
        self.datastores = SimDatastores(world, host)
        self.network = SimNetwork(world, host, self.clock)
        self.load = SimLoadMeter(world, host)
        self.fencing = SimFencing(world, host, self.clock)


def agent_config(world: World, host: str) -> AgentConfig:
    h = world.hosts[host]
    return AgentConfig(
        host=host, address=h.address, etcd_endpoints=("memory",), run_dir=f"/sim/{host}",
        datastores={ds: f"/sim/ds/{ds}" for ds in h.datastores}, watchdog_file="sim",
        isolation_addresses=(GATEWAY,), peers={o.name: o.address for o in world.hosts.values() if o.name != host},
        memory_mb=h.memory_mb, cpus=h.cpus, networks={n: "br-" + n for n in h.networks},
        **({"fencing_kind": h.bmc, "fencing_address": world.bmc_address(host), "fencing_user": "vigil",
            "fencing_password_file": "/sim/bmc-password"} if h.bmc else {}))
