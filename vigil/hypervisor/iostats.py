"""A VM's I/O so far, in bytes: its disks (QMP ``query-blockstats``) and its NICs, and
its reset (QMP ``system_reset``), for VM monitoring (vigil.agent.vm_monitor); its disks'
raw block statistics for Storage DRS's latency (vigil.policy.disk_io).

NIC bytes are read from the host's side of each NIC, its tap device: ``/proc/net/dev``
of the reader's network namespace (the agent's, where its taps are), else
``/sys/class/net/<tap>/statistics``. That holds whoever opens the tap, the agent that
carries the frames or QEMU on a bridge. (QMP's ``query-stats`` has no NIC counters.)
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vigil.hypervisor import balloon
from vigil.hypervisor.base import QemuError
from vigil.hypervisor.processes import VMPaths
from vigil.hypervisor.qmp import QMPConn

QMP_TIMEOUT_S = 2.0  # a QMP session held by someone else (an FT checkpoint) is not waited for


def block_bytes(stats: Sequence[dict[str, Any]]) -> int:
    """Bytes read and written over every device of a ``query-blockstats`` answer."""
    return sum(int(d.get("stats", {}).get("rd_bytes", 0)) + int(d.get("stats", {}).get("wr_bytes", 0))
               for d in stats)


def proc_net_dev(text: str) -> dict[str, int]:
    """Interface -> received + sent bytes, from /proc/net/dev's text."""
    out: dict[str, int] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        cols = rest.split()
        if sep and len(cols) >= 9:
            out[name.strip()] = int(cols[0]) + int(cols[8])
    return out


def nic_bytes(taps: Sequence[str], proc: Path = Path("/proc/net/dev"), sys: Path = Path("/sys/class/net")) -> int:
    """Received + sent bytes of the taps that exist (a tap not there counts 0)."""
    if not taps:
        return 0
    seen: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        seen = proc_net_dev(proc.read_text())
    total = 0
    for t in taps:
        if t in seen:
            total += seen[t]
            continue
        with contextlib.suppress(OSError, ValueError):
            total += sum(int((sys / t / "statistics" / f).read_text()) for f in ("rx_bytes", "tx_bytes"))
    return total


async def disk_bytes(paths: VMPaths, pid: int, name: str) -> int | None:
    """The VM's disk bytes so far; None when QMP does not answer in time or the VM does
    not run (paused: its guest is silent for a reason of ours)."""
    try:
        async with asyncio.timeout(QMP_TIMEOUT_S):
            conn = QMPConn(paths, pid=pid, name=name)
            await conn.connect(QMP_TIMEOUT_S)
            try:
                if (await conn.execute("query-status")).get("status") != "running":
                    return None  # paused (a migration's end, a storage error): not a hung guest
                return block_bytes(await conn.execute("query-blockstats"))
            finally:
                await conn.close()
    except (QemuError, TimeoutError, OSError):
        return None


async def qemu_stats(paths: VMPaths, pid: int, name: str) -> dict[str, Any] | None:
    """What the load report reads of a VM in one QMP session: ``blockstats`` (the
    ``query-blockstats`` answer: its disks' operations and their total time, for Storage
    DRS's latency) and ``guest_used_mb`` (its guest's own figure through a balloon
    device, vigil.hypervisor.balloon; None without one). None when QMP does not answer in time."""
    try:
        async with asyncio.timeout(QMP_TIMEOUT_S):
            conn = QMPConn(paths, pid=pid, name=name)
            await conn.connect(QMP_TIMEOUT_S)
            try:
                got = await conn.execute("query-blockstats")
                used = await balloon.read_guest_used(conn, time.time())
                return {"blockstats": list(got) if isinstance(got, list) else [], "guest_used_mb": used}
            finally:
                await conn.close()
    except (QemuError, TimeoutError, OSError):
        return None


async def system_reset(paths: VMPaths, pid: int, name: str) -> None:
    """The guest's reset button: QEMU stays, the guest boots again. A guest that panicked
    (run state "guest-panicked") is left stopped by the reset ("prelaunch"): ``cont`` then
    runs it. No other stopped VM is resumed (a migration's source, a storage error's pause)."""
    async with QMPConn(paths, pid=pid, name=name) as conn:
        panicked = await conn.status() == "guest-panicked"
        await conn.execute("system_reset")
        if panicked and await conn.status() != "running":
            await conn.execute("cont")
