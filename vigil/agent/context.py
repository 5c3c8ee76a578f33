"""What the agent's helpers (FT roles, disk copies, migrations) may see of their host.

They get this small surface, not the whole Agent: which host they are on, its
configuration, the environment and the store, the VMs it runs, and the few things the
agent does for them (record an event, power a VM off, wait without missing a stop). The
Agent provides it; nothing here imports the agent, so the helpers and the agent do not
import each other in a circle.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from vigil.config import AgentConfig
from vigil.env.base import Env
from vigil.env.hypervisor import Hypervisor
from vigil.hypervisor.qemu import OutputGate
from vigil.model import VMSpec
from vigil.store.etcd import Store


@dataclass
class LocalVM:
    """A QEMU this agent runs (or adopted)."""

    name: str
    pid: int
    gen: int = 0
    spec: VMSpec | None = None
    started: float = 0.0  # wall-clock seconds, set when adopted
    guest: str = "unknown"  # unknown (booting) | ok | lost
    guest_seq: int = -1
    acked: int = -1
    last_hb: float = 0.0
    app_seq: int = -1  # the application heartbeat's counter (-1: none runs in the guest)
    app_moved: float = 0.0  # when that counter last moved
    stopping: bool = False
    monitor: asyncio.Task | None = None
    gate: OutputGate | None = None  # the guest's output on its way out (held for FT)
    nics: asyncio.Task | None = None  # carries the NICs' frames (vigil.env.nics)
    panics: asyncio.Task | None = None  # watches for guest panics (vigil.agent.panics)


class HostContext(Protocol):
    """The host as the FT, disk and task helpers see it."""

    me: str
    cfg: AgentConfig
    env: Env
    hypervisor: Hypervisor  # its QEMUs: start, find, alive, power off, shut down
    store: Store
    vms: dict[str, LocalVM]  # the QEMUs running here, by VM name
    accel: str  # "kvm" or "tcg"
    ds_ok: dict[str, bool]  # datastores this host reaches now
    stopped: asyncio.Event  # set when the agent is told to stop

    @property
    def lease_id(self) -> int:
        """The host's lease (0: none yet); keys bound to it vanish with the host."""
        ...

    def lease_ok(self) -> bool: ...

    async def sleep(self, seconds: float) -> None:
        """Sleep on the environment's clock, or until the agent stops."""
        ...

    def mark(self) -> int:
        """Where the store's changes stand, taken before a read (for wait_change)."""
        ...

    async def wait_change(self, mark: int, prefixes: tuple[str, ...], idle_s: float, poll_s: float) -> None:
        """Sleep until a key under ``prefixes`` changed after ``mark``, ``idle_s`` at
        most (``poll_s`` while no etcd watch runs), or until the agent stops."""
        ...

    async def event(self, kind: str, message: str, vm: str = "", **data: object) -> None: ...

    async def power_off(self, name: str, why: str, report: bool = True) -> None: ...


class MigrationHost(HostContext, Protocol):
    """What a migration's two ends need on top: the NICs of an incoming QEMU, plugged
    before its switchover; a VM that arrived, to watch like ours; disk copies known stale."""

    def plug_incoming(self, name: str, pid: int, spec: VMSpec) -> None: ...

    def unplug_incoming(self, name: str) -> None: ...

    def ft_on(self, name: str) -> bool:
        """FT is on for the VM: an incoming QEMU's NICs must be ones QEMU can hold."""
        ...

    def adopt_migrated(self, name: str, pid: int, spec: VMSpec, gen: int) -> None: ...

    def stale_disks(self, vm: str) -> dict[str, str]: ...
