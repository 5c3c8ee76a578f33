"""Lease keepalives on one stream: one request and its answer each, the stream opened once
and dropped (then opened again) after a refresh that failed or timed out."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from vigil.store.keepalive import KeepAliveStream


class FakeCall:
    def __init__(self, stub: "FakeStub") -> None:
        self.stub, self.pending, self.cancelled = stub, [], False

    async def write(self, req: object) -> None:
        self.pending.append(req)

    async def read(self) -> object:
        if self.stub.hang:
            await asyncio.sleep(10)
        req = self.pending.pop(0)
        return SimpleNamespace(ID=req.ID, TTL=3)

    def cancel(self) -> None:
        self.cancelled = True


class FakeStub:
    def __init__(self) -> None:
        self.calls: list[FakeCall] = []
        self.hang = False

    def LeaseKeepAlive(self, metadata: object = None) -> FakeCall:  # noqa: N802 (gRPC's name)
        self.calls.append(FakeCall(self))
        return self.calls[-1]


def test_one_stream_for_every_refresh_and_a_new_one_after_a_timeout() -> None:
    async def go() -> None:
        client = SimpleNamespace(leasestub=FakeStub(), metadata=None)
        ka = KeepAliveStream()
        for _ in range(3):
            assert (await ka.refresh(client, 7, 1.0)).TTL == 3
        assert len(client.leasestub.calls) == 1
        client.leasestub.hang = True
        with pytest.raises(TimeoutError):
            await ka.refresh(client, 7, 0.05)
        assert client.leasestub.calls[0].cancelled  # a late answer is never taken for the next
        client.leasestub.hang = False
        assert (await ka.refresh(client, 7, 1.0)).ID == 7
        assert len(client.leasestub.calls) == 2
        other = SimpleNamespace(leasestub=FakeStub(), metadata=None)  # the store moved to another member
        await ka.refresh(other, 7, 1.0)
        assert client.leasestub.calls[1].cancelled and len(other.leasestub.calls) == 1
        ka.close()
        assert other.leasestub.calls[0].cancelled

    asyncio.run(go())
