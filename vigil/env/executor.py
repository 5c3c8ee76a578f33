"""The agent's hands on QEMU: start, stop, adopt, follow the guest (through vigil.hypervisor)."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import AsyncIterator

from vigil.config import AgentConfig, cache_dir
from vigil.hypervisor import accel, ftdisk, qemu, start_boost, start_timing
from vigil.model import VMSpec

log = logging.getLogger("vigil.agent")


class StartError(RuntimeError):
    """QEMU did not start; the message says why (QEMU's own words where it gave some)."""


def paths(cfg: AgentConfig, vm: str) -> "qemu.VMPaths":
    return qemu.VMPaths.for_vm(Path(cfg.run_dir), vm)


async def probe_accel(cfg: AgentConfig) -> str:
    """"kvm" or "tcg", in a thread: a probe boot takes seconds where KVM hangs, and the
    agent's tick (datastore heartbeats, watchdog) must go on meanwhile. The lab probes
    before it starts its hosts, so its agents find the answer cached."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir()

    def probe() -> str:
        if accel.cached(cache) is None and accel.kvm_usable() is None:
            from vigil.hypervisor.guest_image import build_guest_image  # the probe's guest

            return accel.probe_accel(cache, build_guest_image(cache / "guest", progress=lambda _m: None))
        return accel.probe_accel(cache, None)

    return await asyncio.to_thread(probe)


def find_running(cfg: AgentConfig) -> dict[str, int]:
    """The QEMUs running here (for the agent to adopt at its start). A QEMU whose start
    an agent's end cut short may still have its start's raised CPU share: set back."""
    found = qemu.find_running(Path(cfg.run_dir))
    for pid in found.values():
        start_boost.set_session_nice(pid, 0)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def start(cfg: AgentConfig, spec: VMSpec, accel: str, stale: dict[str, str] | None = None,
                ft: bool = False) -> int:
    """Start the VM's QEMU (without the disk copies ``stale`` names); StartError if not.
    An FT primary's disk overlays left by its last run are merged first; ``ft``: see
    vigil.hypervisor.qemu.start."""
    try:
        t0 = time.monotonic()
        await ftdisk.settle(spec, cfg.datastores, upto=None)
        t1 = time.monotonic()
        timing: dict[str, object] = {}
        pid = await qemu.start(spec, paths(cfg, spec.name), accel, dict(cfg.datastores),
                               tls_dir=cfg.tls_dir or None, stale=stale, ft=ft, timing=timing)
        log.info("%s: QEMU pid %d up in %.3fs (disk overlays checked in %.3fs; %s)", spec.name, pid,
                 time.monotonic() - t1, t1 - t0, start_timing.describe(timing))
        return pid
    except qemu.QemuError as e:
        raise StartError(str(e)) from None


async def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.1)
    return not alive(pid)


async def power_off(cfg: AgentConfig, vm: str, pid: int) -> None:
    """Stop the VM now: no guest shutdown. SIGKILL is the one way that never waits."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    await _wait_gone(pid, 10)


async def shutdown(cfg: AgentConfig, vm: str, pid: int, timeout: float) -> bool:
    """ACPI power button, then power off after ``timeout``; True when the guest shut down."""
    try:
        async with qemu.QMPConn(paths(cfg, vm), pid=pid, name=vm) as conn:
            return await conn.shutdown(timeout)
    except qemu.QemuError:
        # No QMP answer (QEMU hung or already gone): the power-off path still works by PID.
        await power_off(cfg, vm, pid)
        return False


async def guest_heartbeats(cfg: AgentConfig, vm: str,
                           gate: "qemu.OutputGate | None" = None) -> AsyncIterator["qemu.Heartbeat"]:
    async with qemu.GuestChannel(paths(cfg, vm), gate) as ch:
        async for hb in ch:
            yield hb
