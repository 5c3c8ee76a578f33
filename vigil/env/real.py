"""The real environment: the system clock, datastore files through this host's mounts, ping,
other hosts' BMCs (vigil.fencing)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from vigil.env import dsheartbeat, net
from vigil.env.procload import ProcLoadMeter
from vigil.model import HbRecord


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FileDatastores:
    def reachable(self, name: str, path: str) -> bool:
        return dsheartbeat.reachable(name, path)

    def write_heartbeat(self, path: str, record: HbRecord) -> bool:
        return dsheartbeat.write(path, record)

    def read_heartbeats(self, path: str) -> dict[str, HbRecord]:
        return dsheartbeat.read_all(path)


class PingNetwork:
    async def ping(self, address: str, timeout_s: float = 1.0) -> bool:
        return await net.ping(address, timeout_s)

    async def any_answers(self, addresses: Sequence[str], timeout_s: float = 1.0) -> bool:
        return await net.any_answers(list(addresses), timeout_s)


class BmcFencing:
    async def fence(self, host: str, device: Mapping[str, Any]) -> tuple[bool, str]:
        from vigil import fencing

        dev = fencing.FenceDevice.from_json(dict(device))
        if dev is None:
            return False, f"{host} has no usable fence device"
        r = await fencing.fence(dev)
        return r.ok, f"{r.detail} ({r.seconds:.2f}s)"


class RealEnv:
    """What a host's agent and controller use on a real host (and in the lab)."""

    def __init__(self) -> None:
        self.clock = SystemClock()
        self.datastores = FileDatastores()
        self.network = PingNetwork()
        self.load = ProcLoadMeter()
        self.fencing = BmcFencing()
