"""The one environment interface: everything the agent and the controller touch in the world.

Clock and sleep, the cluster store (etcd), datastore heartbeats, ping, other hosts' BMCs: the real
implementation is vigil.env.real; the simulator (vigil.sim) gives the same interface
over a virtual clock, an in-memory store and simulated hosts, so that the same decision
code runs in both (Proxmox ha-manager's Env.pm does the same). Decisions themselves are
pure functions in vigil.policy and never see an Env.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from vigil.model import HbRecord


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds (event times, heartbeat counters: compared across hosts)."""
        ...

    def monotonic(self) -> float:
        """Seconds on this host's own steady clock (timeouts, ages)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


async def until(clock: Clock, done: Callable[[], bool], at_most_s: float, step_s: float = 0.05) -> None:
    """Poll ``done`` on ``clock`` until it holds, ``at_most_s`` at most (the agent's and the
    simulated agent's short waits, the same on a real and a virtual clock)."""
    end = clock.monotonic() + at_most_s
    while not done() and clock.monotonic() < end:
        await clock.sleep(min(step_s, at_most_s))


class Datastores(Protocol):
    """The datastores as one host sees them through its own mounts."""

    def reachable(self, name: str, path: str) -> bool: ...

    def write_heartbeat(self, path: str, record: HbRecord) -> bool: ...

    def read_heartbeats(self, path: str) -> dict[str, HbRecord]: ...


class Network(Protocol):
    async def ping(self, address: str, timeout_s: float = 1.0) -> bool: ...

    async def any_answers(self, addresses: Sequence[str], timeout_s: float = 1.0) -> bool: ...


class LoadMeter(Protocol):
    """What a host's VMs and the host itself use now (vigil.env.procload reads /proc; the
    simulator reports what the scenario sets)."""

    def sample(self, pids: Mapping[str, int]) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
        """Per VM (its QEMU's ``pid``): (CPU cores in use, resident MiB); and the host's
        (CPU cores in use, memory used MiB). A VM whose process is gone is left out."""
        ...

    def space(self, datastores: Mapping[str, str]) -> dict[str, tuple[float, float]]:
        """Per datastore reached (name -> mount path): (size MiB, used MiB)."""
        ...


class Fencing(Protocol):
    """Other hosts' management controllers (BMCs), as this host reaches them."""

    async def fence(self, host: str, device: Mapping[str, Any]) -> tuple[bool, str]:
        """Power ``host`` off through the BMC that ``device`` (hosts/<host>'s ``fencing``)
        names and confirm it: (confirmed, what happened). Never raises; bounded in time."""
        ...


class Env(Protocol):
    """One host's view of the world (the controller runs inside a host's agent)."""

    clock: Clock
    datastores: Datastores
    network: Network
    load: LoadMeter
    fencing: Fencing


def read_all_heartbeats(env: Env, datastores: Mapping[str, str]) -> tuple[bool, list[HbRecord]]:
    """Every heartbeat record on every reachable datastore; False when none is reachable
    (then silence means nothing: our own storage is gone, not the other hosts)."""
    records: list[HbRecord] = []
    reached = False
    for name, path in datastores.items():
        if env.datastores.reachable(name, path):
            reached = True
            records.extend(env.datastores.read_heartbeats(path).values())
    return reached, records
