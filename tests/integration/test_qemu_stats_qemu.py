"""What the load report reads of a real QEMU running the lab guest (outside the lab,
vigil.lab.standalone): its disk's latency from ``query-blockstats`` while the guest
writes records, and its guest's memory figures through a virtio-balloon device."""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from vigil.hypervisor import iostats
from vigil.lab.standalone import Standalone, heartbeats, unavailable
from vigil.policy.disk_io import DiskIo, counters

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(unavailable() is not None, reason=unavailable() or ""),
    pytest.mark.timeout(300),
]


async def test_disk_latency_and_balloon_figures_of_a_writing_guest(rig: Standalone) -> None:
    spec = replace(rig.spec(memory_mb=256), balloon=True)
    paths = rig.paths()
    pid = await rig.start_pid(spec, paths)
    await heartbeats(paths, 3, timeout=60)
    first = await iostats.qemu_stats(paths, pid, "vm1")
    assert first is not None and first["blockstats"], first
    io = DiskIo()
    io.fold(time.monotonic(), {"vm1": counters(first["blockstats"])})
    used = None
    for n in range(1, 13):  # the balloon's polling is turned on by the first read; the guest answers
        await asyncio.sleep(2.5)
        got = await iostats.qemu_stats(paths, pid, "vm1")
        assert got is not None
        io.fold(time.monotonic(), {"vm1": counters(got["blockstats"])})
        used = got["guest_used_mb"] if got["guest_used_mb"] is not None else used
        if used is not None and n >= 3:  # the guest answered, and 3 samples smoothed
            break
    fig = io.record()["vm1"]["0"]
    print(f"lab guest, records fsync'd one by one: {fig}; guest memory used {used} MiB of 256")
    assert fig["iops"] > 1 and 0 < fig["latency_ms"] < 1000
    assert used is not None and 5 < used < 256
    rss = int(open(f"/proc/{pid}/statm").read().split()[1]) * 4096 / 2**20
    print(f"QEMU resident {rss:.0f} MiB")


async def test_a_vm_without_balloon_reports_no_guest_figure(rig: Standalone) -> None:
    spec = rig.spec()
    paths = rig.paths()
    pid = await rig.start_pid(spec, paths)
    await heartbeats(paths, 2, timeout=60)
    got = await iostats.qemu_stats(paths, pid, "vm1")
    assert got is not None and got["guest_used_mb"] is None and counters(got["blockstats"])
