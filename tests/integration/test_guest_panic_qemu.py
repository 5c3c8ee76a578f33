"""The agent's guest panic path against a real QEMU (no lab): the event watch hears
GUEST_PANICKED on the VM's event monitor, VM monitoring (the in-memory etcd) counts a
reset and the real hypervisor makes it (system_reset, then cont); the guest boots again.
Every QEMU started here is killed by pid in the fixture teardown."""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from vigil.agent.context import LocalVM
from vigil.agent.panics import watch_panics
from vigil.agent.vm_monitor import VmMonitor, Watched
from vigil.config import AgentConfig
from vigil.env.hypervisor import QemuHypervisor
from vigil.hypervisor import qemu as Q
from vigil.lab.standalone import Standalone, heartbeats, unavailable
from vigil.model import MonitoringSpec
from vigil.sim.store import MemoryStore
from vigil.store import keys as K

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(unavailable() is not None, reason=unavailable() or ""),
    pytest.mark.timeout(300),
]


class Host:
    me = "h1"

    def __init__(self, store) -> None:
        self.store = store

    def lease_ok(self) -> bool:
        return True


class Clock:
    def time(self) -> float:
        return time.time()

    async def sleep(self, s: float) -> None:
        await asyncio.sleep(s)


async def test_a_panicked_guest_is_heard_reset_and_boots_again(rig: Standalone) -> None:
    own = MonitoringSpec(preset="custom", interval_s=30.0, min_uptime_s=60.0, max_resets=3, window_s=3600.0)
    spec = rig.spec(extra="vigil.panic_after=5")
    spec = replace(spec, monitoring=own)
    paths = rig.paths()
    pid = await rig.start_pid(spec, paths)
    first = (await heartbeats(paths, 1, timeout=60))[0].boot_id
    store = MemoryStore(now=lambda: 0.0)
    await store.put(K.OWN + spec.name, "h1")
    cfg = AgentConfig(host="h1", address="127.0.0.1", etcd_endpoints=("x:1",), run_dir=str(paths.dir.parent),
                      datastores=rig.ds)
    started = time.time()
    mon = VmMonitor(Host(store), Clock(), QemuHypervisor(cfg),
                    lambda now: [Watched(spec.name, pid, spec, started, time.time())], lambda: [spec])
    vm = LocalVM(name=spec.name, pid=pid, spec=spec)
    heard: list[float] = []

    def on_panic(name: str, p: int) -> None:
        heard.append(time.time())
        mon.note_panic(name, p)

    watch = asyncio.create_task(watch_panics(vm, paths, lambda: on_panic, lambda: True))
    try:
        deadline = time.monotonic() + 90
        while not heard and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert heard, "no GUEST_PANICKED heard"
        await mon.round()  # under the minimum uptime: a panic is reset all the same
        rec = (await store.get(K.MONITORING + spec.name)).value
        assert rec["last"]["cause"] == "panic" and len(rec["resets"]) == 1
        hb = (await heartbeats(paths, 1, timeout=60))[0]
        assert hb.boot_id != first  # the same QEMU, a new boot
        assert Q.pid_alive(pid)
    finally:
        watch.cancel()
