"""A small facade over ``aetcd``: JSON values, leases, guarded transactions, one error type.

Every call has a deadline, so a partitioned member makes a call fail quickly rather than
hang; callers treat ``StoreError`` as "etcd is not reachable now" and decide what that means.
The gRPC channel is given every endpoint: a dead member is skipped by the channel itself.

``watch()`` keeps one etcd watch on every vigil key (vigil.store.changes), so that the
agent's loops sleep until something they read changes, and ``snapshot`` answers from
memory while nothing did (see its docstring for why that is as fresh as a read).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, TypeVar

import aetcd
import grpc

from vigil.store import keys as K
from vigil.store.changes import Changes
from vigil.store.keepalive import KeepAliveStream
from vigil.store.tls import EtcdTLS, TLSClient

log = logging.getLogger("vigil.store")

T = TypeVar("T")

# A snapshot kept up to date by the watch is still read again after this long (a member
# cut off from the raft leader keeps the watch open but sends nothing; a read there fails).
# It must stay well under the lease TTL minus the keepalive period (3 s - 0.5 s in every
# configuration vigil ships): see Store.snapshot.
SNAPSHOT_MAX_AGE_S = 1.0
WATCH_RETRY_S = 0.5  # a watch that broke is set up again after this long


class StoreError(RuntimeError):
    """etcd could not be reached or refused the request."""


@dataclass(frozen=True)
class Entry:
    key: str
    value: Any
    mod_revision: int
    version: int
    lease: int


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _target(endpoints: Iterable[str]) -> tuple[str, int]:
    """aetcd joins host and port into one gRPC target; a multi-address target lists them all."""
    eps = [e.removeprefix("http://").removeprefix("https://") for e in endpoints]
    if not eps:
        raise StoreError("no etcd endpoints configured")
    if len(eps) == 1:
        host, _, port = eps[0].rpartition(":")
        return host, int(port)
    head = ",".join(eps[:-1])
    host, _, port = eps[-1].rpartition(":")
    return f"ipv4:{head},{host}", int(port)


class Store:
    """One connection to the etcd cluster."""

    def __init__(self, endpoints: Iterable[str], timeout: float = 2.0, prefer_first: bool = False,
                 tls: EtcdTLS | None = None) -> None:
        """``prefer_first``: stick to the first reachable endpoint in order (an agent lists its
        own host's member first); otherwise spread calls over every connected member.
        ``tls``: the client certificate etcd asks for (None: plain text)."""
        self.endpoints = list(endpoints)
        self.tls = tls
        _target(self.endpoints)  # fail early on an empty list
        self.timeout = timeout
        self.prefer_first = prefer_first
        self._order = list(self.endpoints)
        self._failures = 0
        self._client = self._make_client()
        self._snap: dict[str, Entry] | None = None  # the last snapshot and its revision
        self._snap_rev = 0
        self._writes = 0  # counts this store's writes, as they begin and as they end
        self._snap_seen = (-1, -1)  # (changes.seq, _writes) when that snapshot's read began
        self._snap_at = 0.0  # and the time it began (time.monotonic)
        self._leader_reached = 0.0  # when the last keepalive that got an answer began
        self._keepalive = KeepAliveStream()  # one LeaseKeepAlive stream for every refresh
        self.changes = Changes()
        self._watch_task: asyncio.Task | None = None
        self.tx = self._client.transactions

    def _make_client(self) -> aetcd.Client:
        host, port = _target(self._order)
        tls = {} if self.tls is None else {"tls": self.tls}  # TLSClient: aetcd's over a secure channel
        return (aetcd.Client if self.tls is None else TLSClient)(
            host=host,
            port=port,
            timeout=self.timeout,
            options={
                "grpc.lb_policy_name": "pick_first" if self.prefer_first else "round_robin",
                "grpc.initial_reconnect_backoff_ms": 200,
                "grpc.min_reconnect_backoff_ms": 200,
                "grpc.max_reconnect_backoff_ms": 1000,
                # A member that vanished without a reset (power cut, link down) is noticed
                # by the missing ping answer within ~2 s, and its connection dropped. etcd
                # refuses pings while no call is open, so ping only during calls.
                "grpc.keepalive_time_ms": 1000,
                "grpc.keepalive_timeout_ms": 1000,
                "grpc.keepalive_permit_without_calls": 0,
                "grpc.http2.max_pings_without_data": 0,
                "grpc.enable_retries": 0,
                # Never inherit another channel's connection to a member that since died.
                "grpc.use_local_subchannel_pool": 1,
            },
            **tls,
        )

    async def _next_member(self) -> None:
        """Move to the next member. pick_first keeps a member whose connection is fine but
        which cannot serve (cut off from the raft leader by a partial partition): every call
        then times out, so after two failures in a row the agent tries another member."""
        self._order = self._order[1:] + self._order[:1]
        old, self._client = self._client, self._make_client()
        self.tx = self._client.transactions
        if self._watch_task is not None:  # the watch follows the calls to the new member
            self._watch_task.cancel()
            self._watch_task = asyncio.create_task(self._watch_loop())
        # Calls still running on the old channel end by their deadline; closing it now
        # would cancel them, and a cancelled call raises CancelledError in its caller.
        asyncio.get_running_loop().call_later(
            3 * self.timeout, lambda: asyncio.ensure_future(_close_quietly(old)))

    async def __aenter__(self) -> "Store":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, coro):  # type: ignore[no-untyped-def]
        try:
            result = await coro
        except (aetcd.ClientError, grpc.RpcError, OSError) as e:
            self._failures += 1
            if self.prefer_first and len(self._order) > 1 and self._failures >= 2:
                self._failures = 0
                await self._next_member()
            raise StoreError(f"etcd ({', '.join(self.endpoints)}): {type(e).__name__}: {e}") from None
        self._failures = 0
        return result

    async def connect(self) -> None:
        await self._call(self._client.connect())

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        self._keepalive.close()
        await _close_quietly(self._client)

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
        return Entry(key, _decode(r.value), r.mod_revision, r.version, r.lease)

    async def get_prefix(self, prefix: str) -> dict[str, Entry]:
        r = await self._call(self._client.get_prefix(prefix.encode()))
        return {
            kv.key.decode(): Entry(kv.key.decode(), _decode(kv.value), kv.mod_revision, kv.version, kv.lease)
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
        which ends sooner still (the agent counts its TTL from before the keepalive)."""
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
        snap = {kv.key.decode(): Entry(kv.key.decode(), _decode(kv.value), kv.mod_revision, kv.version, kv.lease)
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
                    yield key, Entry(key, _decode(kv.value), kv.mod_revision, kv.version, kv.lease)
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

    # -- writes --------------------------------------------------------------------------
    async def put(self, key: str, value: Any, lease: int = 0) -> None:
        await self._write(self._client.put(key.encode(), _encode(value), lease=lease or None))

    async def delete(self, key: str) -> bool:
        r = await self._write(self._client.delete(key.encode()))
        return bool(r and r.deleted)

    async def delete_prefix(self, prefix: str) -> None:
        await self._write(self._client.delete_prefix(prefix.encode()))

    async def txn(self, compare: list, success: list, failure: list | None = None) -> bool:
        ok, _ = await self._write(self._client.transaction(compare=compare, success=success, failure=failure or []))
        return bool(ok)

    async def create(self, key: str, value: Any, lease: int = 0, also: list | None = None) -> bool:
        """Write ``key`` only if it does not exist (plus the ``also`` operations, atomically)."""
        return await self.txn(
            [self.tx.version(key.encode()) == 0],
            [self.put_op(key, value, lease)] + list(also or []),
        )

    async def update(self, key: str, change: Callable[[Any], Any], tries: int = 5) -> Any:
        """Read-modify-write of one JSON key: ``change(old value or None)`` is written only
        if nobody wrote the key in between (retried ``tries`` times); the value written."""
        for _ in range(tries):
            e = await self.get(key)
            new = change(e.value if e else None)
            if await self.txn([self.unchanged(key, e.mod_revision if e else 0)], [self.put_op(key, new)]):
                return new
        raise StoreError(f"{key}: changed under us {tries} times")

    def put_op(self, key: str, value: Any, lease: int = 0):  # type: ignore[no-untyped-def]
        return self.tx.put(key.encode(), _encode(value), lease=lease or None)

    def delete_op(self, key: str):  # type: ignore[no-untyped-def]
        return self.tx.delete(key.encode())

    def absent(self, key: str):  # type: ignore[no-untyped-def]
        return self.tx.version(key.encode()) == 0

    def unchanged(self, key: str, mod_revision: int):  # type: ignore[no-untyped-def]
        """Compare: the key is as it was read (mod_revision 0 means: it did not exist)."""
        return self.tx.mod(key.encode()) == mod_revision

    def equals(self, key: str, value: Any):  # type: ignore[no-untyped-def]
        return self.tx.value(key.encode()) == _encode(value)

    # -- leases --------------------------------------------------------------------------
    async def grant(self, ttl: int) -> int:
        lease = await self._call(self._client.lease(ttl))
        return int(lease.id)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; return its remaining TTL (0 or less: it is gone)."""
        t0 = time.monotonic()
        reply = await self._call(self._keepalive.refresh(self._client, lease_id, self.timeout))
        self._leader_reached = t0  # the member answered for the raft leader (see snapshot)
        return int(reply.TTL) if reply is not None else 0

    async def lease_ttl(self, lease_id: int) -> int:
        info = await self._call(self._client.get_lease_info(lease_id, keys=False))
        return int(info.TTL)

    async def revoke(self, lease_id: int) -> None:
        await self._write(self._client.revoke_lease(lease_id))


def _stream_task(client: aetcd.Client) -> asyncio.Task | None:
    """The task running aetcd's watch stream (it ends, and tells no watcher, when the
    server closes the stream without an error). Should aetcd's insides change, None: the
    watch is then taken as lost, and the loops poll as they used to."""
    handler = getattr(getattr(client, "_watcher", None), "_request_handler", None)
    return handler if isinstance(handler, asyncio.Task) and not handler.done() else None


async def _close_quietly(client: aetcd.Client) -> None:
    try:
        await client.close()
    except Exception:  # closing a broken channel is not worth an error
        pass


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
