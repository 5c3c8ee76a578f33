"""Lease keepalives over one long-lived gRPC stream instead of a new stream per refresh.

aetcd's ``refresh_lease`` opens a LeaseKeepAlive stream, sends one request, reads one
answer and cancels the stream: twice a second per agent, each a new HTTP/2 stream that
etcd sets up and tears down (a goroutine, its interceptors, its metrics). Here the
stream stays open and each refresh is one request and its answer on it.

The timing is the caller's, unchanged: each refresh waits ``timeout`` at most, as the
one-shot call's deadline did. A refresh that times out or fails drops the stream (a late
answer on it could be taken for the next request's), and the next refresh opens a new
one; so does a refresh on another client (the store moved to another member). One
refresh at a time: a lock keeps requests and answers paired.
"""
from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio
from aetcd import rpc


class KeepAliveStream:
    def __init__(self) -> None:
        self._call: Any = None
        self._client: Any = None  # the client whose channel the stream runs on
        self._lock = asyncio.Lock()

    async def refresh(self, client: Any, lease_id: int, timeout: float) -> Any:
        """One keepalive of ``lease_id`` through ``client`` (an aetcd client): its
        answer (TTL 0 or less: the lease is gone). Raises what the call raised, or
        TimeoutError past ``timeout``."""
        stub = getattr(client, "leasestub", None)
        if stub is None:  # not connected (or a client without one): the one-shot call
            return await client.refresh_lease(lease_id)
        async with self._lock:
            try:
                return await asyncio.wait_for(self._refresh(client, stub, lease_id), timeout)
            except BaseException:
                self.close()
                raise

    async def _refresh(self, client: Any, stub: Any, lease_id: int) -> Any:
        if self._call is None or self._client is not client:
            self.close()
            self._call = stub.LeaseKeepAlive(metadata=getattr(client, "metadata", None))
            self._client = client
        await self._call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
        reply = await self._call.read()
        if reply is None or reply is grpc.aio.EOF:
            raise ConnectionError("etcd ended the keepalive stream")
        return reply

    def close(self) -> None:
        call, self._call, self._client = self._call, None, None
        if call is not None:
            call.cancel()
