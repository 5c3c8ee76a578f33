"""A small facade over ``aetcd``: JSON values, leases, guarded transactions, one error type.

Every call has a deadline, so a partitioned member makes a call fail quickly rather than
hang; callers treat ``StoreError`` as "etcd is not reachable now" and decide what that means.
The gRPC channel is given every endpoint: a dead member is skipped by the channel itself.

``watch()`` keeps one etcd watch on every vigil key (vigil.store.changes), so that the
agent's loops sleep until something they read changes, and ``snapshot`` answers from
memory while nothing did (see its docstring for why that is as fresh as a read).

The Store is built in layers, one a module: vigil.store.etcd_conn (the connection: members,
TLS, deadlines, retries; ``StoreError``, ``Entry``), vigil.store.etcd_watch (the reads, the
watch and the snapshot), vigil.store.etcd_writes (writes and guarded transactions); this
module adds the leases and ``run_with_store``, and names them all.
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Iterable, TypeVar

from vigil.store.etcd_conn import Entry, StoreError
from vigil.store.etcd_watch import SNAPSHOT_MAX_AGE_S, WATCH_RETRY_S
from vigil.store.etcd_writes import Writes
from vigil.store.tls import EtcdTLS

__all__ = ["Store", "StoreError", "Entry", "run_with_store", "SNAPSHOT_MAX_AGE_S", "WATCH_RETRY_S"]

T = TypeVar("T")


class Store(Writes):
    """One connection to the etcd cluster."""

    # -- leases --------------------------------------------------------------------------
    async def grant(self, ttl: int) -> int:
        lease = await self._call(self._client.lease(ttl))
        return int(lease.id)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; return its remaining TTL (0 or less: it is gone)."""
        t0 = time.monotonic()
        reply = await self._call(self._client.refresh_lease(lease_id))
        self._leader_reached = t0  # the member answered for the raft leader (see snapshot)
        return int(reply.TTL) if reply is not None else 0

    async def lease_ttl(self, lease_id: int) -> int:
        info = await self._call(self._client.get_lease_info(lease_id, keys=False))
        return int(info.TTL)

    async def revoke(self, lease_id: int) -> None:
        await self._write(self._client.revoke_lease(lease_id))


def run_with_store(endpoints: Iterable[str], fn: Callable[[Store], Awaitable[T]], timeout: float = 3.0,
                   tls: EtcdTLS | None = None) -> T:
    """Open a connection, run ``fn`` on it, close it: for one-shot callers (CLI, tests).

    A member that is up but cut off from the raft leader answers nothing; the next member
    is tried then (each in turn first). vigil's writes are guarded transactions, so one
    that is sent again after a timeout fails its compare instead of applying twice."""
    eps = list(endpoints)
    if not eps:
        raise StoreError("no etcd endpoints configured")

    async def go() -> T:
        last: StoreError | None = None
        for i in range(len(eps)):
            store = Store(eps[i:] + eps[:i], timeout=timeout, prefer_first=True, tls=tls)
            try:
                await store.connect()
                return await fn(store)
            except StoreError as e:
                last = e
            finally:
                await store.close()
        assert last is not None
        raise last

    return asyncio.run(go())
