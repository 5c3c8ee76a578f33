"""What the simulated agent's helpers (disks, FT, leadership, migrations) and the world
see of a simulated agent: a small protocol, so that they need not import the agent (as
vigil.agent.context does for the real agent's helpers)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Coroutine, Protocol

from vigil.config import AgentConfig
from vigil.model import VMSpec


@dataclass
class LocalVM:
    """A VM this simulated agent runs (or adopted)."""

    name: str
    spec: VMSpec | None
    gen: int = 0
    stopping: bool = False


class AgentContext(Protocol):
    """The simulated agent, as its helpers use it."""

    me: str
    cfg: AgentConfig
    env: Any     # vigil.sim.env.SimEnv
    store: Any   # vigil.sim.store.HostStore
    clock: Any   # vigil.sim.clock.VirtualClock
    leader_hb: Any  # vigil.policy.heartbeats.HbTracker: the leader's datastore heartbeat
    w: Any       # vigil.sim.world.World
    h: Any       # vigil.sim.world.SimHost (this host's side of the world)
    vms: dict[str, LocalVM]
    ds_ok: dict[str, bool]
    lease_id: int
    migrations: Any  # vigil.sim.migrate.SimTasks

    def lease_ok(self) -> bool: ...

    async def event(self, kind: str, message: str, vm: str = "") -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task: ...

    async def _status(self, name: str, state: str, message: str = "") -> None: ...


class AgentProcess(Protocol):
    """The simulated agent, as the world starts and kills it."""

    def start(self) -> None: ...

    def kill(self) -> None: ...
