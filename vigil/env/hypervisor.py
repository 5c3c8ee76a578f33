"""One host's hypervisor as the agent sees it: the QEMUs it starts, finds, watches and ends.

A protocol of its own beside vigil.env.base.Env (whose interface stays as it is), so that
the agent's core (reconcile, crash watch, isolation responses, migrations' end) reaches
QEMU through one seam: the real implementation wraps vigil.env.executor; a simulated
one can stand in for it. The deeper QEMU work (QMP, FT checkpoints, disk mirrors, NICs)
stays in vigil.hypervisor and the agent's helpers.
"""
from __future__ import annotations

from typing import Any, Protocol

from vigil.env import executor
from vigil.config import AgentConfig
from vigil.hypervisor import iostats
from vigil.hypervisor.argv import tap_name
from vigil.model import VMSpec

StartError = executor.StartError  # raised by Hypervisor.start when QEMU does not start


class Hypervisor(Protocol):
    async def probe_accel(self) -> str:
        """"kvm" or "tcg"; may take seconds (the agent's tick goes on meanwhile)."""
        ...

    def find_running(self) -> dict[str, int]:
        """The VMs whose QEMU runs here already (daemonized: they outlive the agent), by pid."""
        ...

    def alive(self, pid: int) -> bool: ...

    async def start(self, spec: VMSpec, accel: str, stale: dict[str, str] | None = None, ft: bool = False) -> int:
        """Start the VM's QEMU without the disk copies ``stale`` names; its pid, or StartError.
        ``ft``: FT is on for it, so its NICs must be ones QEMU can hold (no vhost-net)."""
        ...

    async def power_off(self, vm: str, pid: int) -> None:
        """Stop it now, no guest shutdown."""
        ...

    async def shutdown(self, vm: str, pid: int, timeout_s: float) -> bool:
        """Guest shutdown, then power off after ``timeout_s``; True when the guest shut down."""
        ...

    async def io_counters(self, vm: str, pid: int, spec: VMSpec | None) -> int | None:
        """Disk and NIC bytes the VM moved so far (VM monitoring); None: not known now."""
        ...

    async def reset(self, vm: str, pid: int) -> None:
        """The guest's reset button (VM monitoring): the QEMU stays, the guest boots again."""
        ...

    async def qemu_stats(self, vm: str, pid: int) -> dict[str, Any] | None:
        """QEMU's ``blockstats`` (Storage DRS's latency) and the guest's ``guest_used_mb``
        (a balloon's figure, else None) for the load report; None: not known now."""
        ...


class QemuHypervisor:
    """The real one: QEMU processes under the agent's run dir (vigil.env.executor)."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg

    async def probe_accel(self) -> str:
        return await executor.probe_accel(self.cfg)

    def find_running(self) -> dict[str, int]:
        return executor.find_running(self.cfg)

    def alive(self, pid: int) -> bool:
        return executor.alive(pid)

    async def start(self, spec: VMSpec, accel: str, stale: dict[str, str] | None = None, ft: bool = False) -> int:
        return await executor.start(self.cfg, spec, accel, stale=stale, ft=ft)

    async def power_off(self, vm: str, pid: int) -> None:
        await executor.power_off(self.cfg, vm, pid)

    async def shutdown(self, vm: str, pid: int, timeout_s: float) -> bool:
        return await executor.shutdown(self.cfg, vm, pid, timeout_s)

    async def io_counters(self, vm: str, pid: int, spec: VMSpec | None) -> int | None:
        paths = executor.paths(self.cfg, vm)
        disks = await iostats.disk_bytes(paths, pid, vm)
        if disks is None:
            return None
        nics = len(spec.networks) if spec else 0
        return disks + iostats.nic_bytes([tap_name(paths, i) for i in range(nics)])

    async def reset(self, vm: str, pid: int) -> None:
        await iostats.system_reset(executor.paths(self.cfg, vm), pid, vm)

    async def qemu_stats(self, vm: str, pid: int) -> dict[str, Any] | None:
        return await iostats.qemu_stats(executor.paths(self.cfg, vm), pid, vm)
