"""vigil host fence: the service refuses hosts it cannot fence, and records each attempt."""
from __future__ import annotations

import asyncio
from dataclasses import asdict

import pytest

from vigil.model import HostInfo
from vigil.service import Conflict, NotFound
from vigil.service.fencing import fence_host
from vigil.sim.store import MemoryStore
from vigil.store import keys as K

BMC = {"kind": "ipmi", "address": "10.0.1.2", "user": "vigil", "password_file": "/etc/vigil/bmc", "port": 6232}


class Recorder:
    def __init__(self, ok: bool) -> None:
        self.ok, self.asked = ok, []

    async def fence(self, host, device):
        self.asked.append((host, dict(device)))
        return self.ok, "chassis power off, status off" if self.ok else "no answer"


async def store() -> MemoryStore:
    s = MemoryStore(now=lambda: 0.0)
    await s.put(K.HOSTS + "h1", asdict(HostInfo(name="h1", address="10.0.0.1", memory_mb=1024, cpus=2)))
    await s.put(K.HOSTS + "h2", asdict(HostInfo(name="h2", address="10.0.0.2", memory_mb=1024, cpus=2,
                                                fencing=BMC)))
    return s


def events(s: MemoryStore) -> list[dict]:
    return [e.value for k, e in sorted(s._kv.items()) if k.startswith(K.EVENTS)]


def test_fence_on_request_asks_the_bmc_and_records_attempt_and_result():
    async def go():
        s, bmc = await store(), Recorder(True)
        ok, msg = await fence_host(s, "h2", bmc)
        return s, bmc, ok, msg
    s, bmc, ok, msg = asyncio.run(go())
    assert ok and "h2 fenced" in msg and bmc.asked == [("h2", BMC)]
    ev = events(s)
    assert [e["data"]["result"] for e in ev if e["kind"] == "fence"] == ["attempt", "confirmed"]
    assert all("/etc/vigil/bmc" not in e["message"] for e in ev)  # no credentials in events


def test_failed_fence_is_reported_and_recorded():
    async def go():
        s = await store()
        return s, await fence_host(s, "h2", Recorder(False))
    s, (ok, msg) = asyncio.run(go())
    assert not ok and "failed: no answer" in msg
    assert [e["data"]["result"] for e in events(s) if e["kind"] == "fence"] == ["attempt", "failed"]


def test_unknown_host_and_host_without_a_bmc_are_refused():
    async def go(host):
        return await fence_host(await store(), host, Recorder(True))
    with pytest.raises(NotFound):
        asyncio.run(go("h9"))
    with pytest.raises(Conflict, match="no fence device"):
        asyncio.run(go("h1"))
