"""The store's reads, and the etcd watch that lets ``snapshot`` answer from memory.

``watch()`` keeps one etcd watch on every vigil key (vigil.store.changes), so that the
agent's loops sleep until something they read changes, and ``snapshot`` answers from
memory while nothing did (see its docstring for why that is as fresh as a read). Writes
go through ``_write``, so that a snapshot read before a write ended is read again.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Iterable

import aetcd
import grpc

from vigil.store import keys as K
from vigil.store.changes import Changes
from vigil.store.etcd_conn import Connection, Entry, StoreError, decode_value
from vigil.store.tls import EtcdTLS

log = logging.getLogger("vigil.store")

# A snapshot kept up to date by the watch is still read again after this long (a member
# cut off from the raft leader keeps the watch open but sends nothing; a read there fails).
# It must stay well under the lease TTL minus the keepalive period (3 s - 0.5 s in every
# configuration vigil ships): see Store.snapshot.
SNAPSHOT_MAX_AGE_S = 1.0
WATCH_RETRY_S = 0.5  # a watch that broke is set up again after this long


class WatchedReads(Connection):
    """Reads of one key, a prefix, every vigil key (the snapshot); the watch behind them."""

    def __init__(self, endpoints: Iterable[str], timeout: float = 2.0, prefer_first: bool = False,
                 tls: EtcdTLS | None = None) -> None:
        super().__init__(endpoints, timeout, prefer_first, tls)
        self._snap: dict[str, Entry] | None = None  # the last snapshot and its revision
        self._snap_rev = 0
        self._writes = 0  # counts this store's writes, as they begin and as they end
        self._snap_seen = (-1, -1)  # (changes.seq, _writes) when that snapshot's read began
        self._snap_at = 0.0  # and the time it began (time.monotonic)
        self._leader_reached = 0.0  # when the last keepalive that got an answer began
        self.changes = Changes()
        self._watch_task: asyncio.Task | None = None

    def _client_changed(self) -> None:
        if self._watch_task is not None:  # the watch follows the calls to the new member
            self._watch_task.cancel()
            self._watch_task = asyncio.create_task(self._watch_loop())

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        await super().close()

    # -- the watch ---------------------------------------------------------------------
    def watch(self) -> None:
        """Keep a watch on every vigil key from now on (until ``close``), set up again
        whenever it breaks: ``changes`` then wakes whoever waits on the keys that moved,
        and ``snapshot`` answers from memory while none did."""
        if self._watch_task is None:
            self._watch_task = asyncio.create_task(self._watch_loop())

    @property
    def watching(self) -> bool:
        return self.changes.watching

    async def _watch_loop(self) -> None:
        while True:
            client = self._client
            try:
                w = await client.watch_prefix(K.PREFIX.encode())
                # every change from here on arrives; one in between did not: all is new
                self.changes.watch_started()
                consume = asyncio.ensure_future(self._consume(w))
                stream = _stream_task(client)
                try:
                    if stream is None:
                        raise StoreError("aetcd's watch stream cannot be followed")
                    await asyncio.wait((consume, stream), return_when=asyncio.FIRST_COMPLETED)
                    if not consume.done():
                        # aetcd tells no watcher of a stream the server ended cleanly
                        log.debug("watch: the stream ended")
                        await client._watcher.shutdown()  # so that the next watch gets a new one
                finally:
                    self.changes.watch_lost()
                    consume.cancel()
                if consume.done() and not consume.cancelled() and consume.exception() is not None:
                    raise consume.exception()  # type: ignore[misc]
            except asyncio.CancelledError:
                raise
            except Exception as e:  # aetcd and gRPC errors alike: the watch is gone
                log.debug("watch: %s: %s", type(e).__name__, e)
            await asyncio.sleep(WATCH_RETRY_S)

    async def _consume(self, w: Any) -> None:
        async for ev in w:
            self.changes.note(ev.kv.key.decode(errors="replace"))

    # -- reads ---------------------------------------------------------------------------
    async def get(self, key: str) -> Entry | None:
        r = await self._call(self._client.get(key.encode()))
        if r is None:
            return None
        return Entry(key, decode_value(r.value), r.mod_revision, r.version, r.lease)

    async def get_prefix(self, prefix: str) -> dict[str, Entry]:
        r = await self._call(self._client.get_prefix(prefix.encode()))
        return {
            kv.key.decode(): Entry(kv.key.decode(), decode_value(kv.value), kv.mod_revision, kv.version, kv.lease)
            for kv in r
        }

    async def snapshot(self) -> dict[str, Entry]:
        """Every vigil key, read at one revision.

        Agents and the controller ask for it several times a second; on an idle cluster
        nothing changes between two asks. While the watch runs and has reported no
        change since the last read began (and that read is under SNAPSHOT_MAX_AGE_S
        old), the last answer is given again without asking etcd. Otherwise a one-key
        read first gets the store's revision, and the whole range is read and decoded
        again only when it moved.

        Why the remembered answer is as good as a read: the watch runs on the member the
        reads go to, and that member sends each change as it applies it, which is when a
        read there would first show it; a change comes in before the next ask after it
        (up to the moment it takes to arrive, as a read's answer takes to arrive). This
        store's own writes drop the answer at once (a read after a write shows it). A
        watch that broke, or was set up again, drops it too, as the lost events could be
        anything. The one case the watch cannot tell: a member cut off from the raft
        leader keeps the watch open and sends nothing; a read there would fail. So the
        answer is only kept while the member was seen in the cluster less than
        SNAPSHOT_MAX_AGE_S ago: by the read itself, or by a lease keepalive answered
        since (etcd forwards those to the raft leader; the agent sends one every TTL/6,
        on this same connection, so an idle agent reads nothing at all). Past that the
        answer is read again, and the read fails on a cut-off member. So the agent acts
        on data of its member's last moment in the cluster for at most that long, which
        ends before its lease can have expired (it runs for its TTL after the last
        keepalive that got through; 1 s < 3 s - 0.5 s), and so before the controller may
        give its VMs to another host; every loop that acts also checks the lease first,
        which ends sooner still (the agent counts its TTL from before the keepalive).
        One member answers a keepalive without the cluster: a raft leader that stood
        still with its host (a hang) and does not know yet that it was replaced. Its
        answer keeps this answer for up to SNAPSHOT_MAX_AGE_S more, but it does not keep
        the lease: after such a stall the agent takes a keepalive's answer only once a
        read, which needs the quorum, backs it (vigil.policy.isolation.keepalive_confirms)."""
        now = time.monotonic()
        if (self._snap is not None and self.changes.watching and self._snap_seen == (self.changes.seq, self._writes)
                and now - max(self._snap_at, self._leader_reached) < SNAPSHOT_MAX_AGE_S):
            return dict(self._snap)
        seen = (self.changes.seq, self._writes)  # a change from here on: the next ask reads
        rev = await self.revision()
        if self._snap is not None and rev == self._snap_rev:
            self._snap_seen, self._snap_at = seen, now
            return dict(self._snap)
        r = await self._call(self._client.get_prefix(K.PREFIX.encode()))
        snap = {kv.key.decode(): Entry(kv.key.decode(), decode_value(kv.value), kv.mod_revision, kv.version, kv.lease)
                for kv in r}
        self._snap, self._snap_rev = snap, r.header.revision
        self._snap_seen, self._snap_at = seen, now
        return dict(snap)

    async def revision(self) -> int:
        """The store's present revision (one cheap read)."""
        head = await self._call(self._client.get_prefix(K.LEADER.encode(), keys_only=True))
        return int(head.header.revision)

    async def watch_prefix(self, prefix: str, start_revision: int) -> AsyncIterator[tuple[str, Entry | None]]:
        """Every change below ``prefix`` from ``start_revision`` on, as (key, entry), entry
        None for a delete. Ends with StoreError when the watch breaks (a member lost): the
        caller reads again and watches from where it got to."""
        try:
            watch = await self._client.watch_prefix(prefix.encode(), start_revision=start_revision)
            async for ev in watch:
                kv = ev.kv
                key = kv.key.decode()
                if ev.kind == "DELETE":
                    yield key, None
                else:
                    yield key, Entry(key, decode_value(kv.value), kv.mod_revision, kv.version, kv.lease)
        except (aetcd.ClientError, grpc.RpcError, OSError) as e:
            raise StoreError(f"etcd watch ({', '.join(self.endpoints)}): {type(e).__name__}: {e}") from None

    @property
    def snapshot_revision(self) -> int:
        """The etcd revision the last ``snapshot`` answer was read at (0: none yet); two
        answers with the same one hold the same keys and values."""
        return self._snap_rev if self._snap is not None else 0

    async def _write(self, coro):  # type: ignore[no-untyped-def]
        """A call that changes keys: a snapshot read begun before it ended is not kept
        (read-your-writes, as when every snapshot was a read)."""
        self._writes += 1
        try:
            return await self._call(coro)
        finally:
            self._writes += 1


def _stream_task(client: aetcd.Client) -> asyncio.Task | None:
    """The task running aetcd's watch stream (it ends, and tells no watcher, when the
    server closes the stream without an error). Should aetcd's insides change, None: the
    watch is then taken as lost, and the loops poll as they used to."""
    handler = getattr(getattr(client, "_watcher", None), "_request_handler", None)
    return handler if isinstance(handler, asyncio.Task) and not handler.done() else None
