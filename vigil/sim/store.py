"""An in-memory etcd: a test double for pure logic and the simulator, never for production.

``MemoryStore`` offers the methods of ``vigil.store.etcd.Store`` that the controller and
the agents use, with etcd's semantics as far as they rely on them: one global revision
that every write (or write transaction) raises by one; per key its create and mod
revision and a version that counts puts since creation; leases with a TTL that run out on
the simulator's virtual clock and delete every key attached when they expire or are
revoked; transactions over the same compares (``equals``, ``unchanged``, ``absent``) and
operations (``put_op``, ``delete_op``) as the real facade; snapshots of ``Entry`` objects.
Values are JSON-encoded like etcd's and compared on that encoding; stored values are
shared with readers, who must not change them (vigil's code never does).

``HostStore`` is one host's connection to it: every call fails with ``StoreError`` after
the client's timeout while the host cannot reach etcd (a partition, isolation), as a real
call to an unreachable member would.
"""
from __future__ import annotations

import bisect
import heapq
import json
from typing import Any, Awaitable, Callable

from vigil.sim.store_txn import Compare, Op, _encode, _Tx
from vigil.store import keys as K
from vigil.store.etcd import Entry, StoreError


def _range_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix`` (etcd's range end)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _collection(key: str) -> str:
    """The collection a key belongs to: its prefix up to the slash after vigil's own
    (``/vigil/vms/`` for ``/vigil/vms/a``; a key with no such slash is its own)."""
    i = key.find("/", len(K.PREFIX))
    return key if i < 0 else key[:i + 1]


class MemoryStore:
    """etcd in a dict, on a virtual clock (``now()`` gives its seconds)."""

    tx = _Tx()

    def __init__(self, now: Callable[[], float], sink: tuple[str, ...] = ()) -> None:
        """``sink``: prefixes whose puts go to the watchers only and are not kept (the
        simulator keeps the event log itself, as if it were trimmed at once: nothing in
        vigil decides on past events, and a long log would make every snapshot slow)."""
        self.now = now
        self.sink = sink
        self.revision = 1
        self._snap: dict[str, Entry] | None = None
        self._snap_rev = 0
        self._snap_gen = -1
        # counts changes of the kept keys (not sink puts, which raise the revision too):
        # what reads are cached on, as nothing they return can differ while it stands
        self._gen = 0
        self._stamps: dict[str, int] = {}  # collection -> _gen at its last change (never: absent)
        self._ranges: dict[str, tuple[int, dict[str, Entry]]] = {}
        self._memo: dict[str, tuple[int, Any]] = {}
        self._kv: dict[str, Entry] = {}
        self._enc: dict[str, str] = {}
        self._created: dict[str, int] = {}
        self._keys: list[str] = []  # sorted, as etcd returns ranges
        self._leases: dict[int, tuple[int, float]] = {}  # id -> (ttl, expires at)
        self._lease_keys: dict[int, set[str]] = {}
        self._expiry: list[tuple[float, int]] = []
        self._next_lease = 0x7E57_0000
        self.watchers: list[tuple[str, Callable[[Entry], None]]] = []  # (prefix, on put)

    def copy(self, now: Callable[[], float] | None = None) -> "MemoryStore":
        """An independent store with the same keys, leases and revision (entries are never
        changed, so they are shared); no watchers. For benchmarks that start many runs
        from one large cluster."""
        c = MemoryStore(now or self.now, self.sink)
        c.revision, c._next_lease, c._gen, c._stamps = self.revision, self._next_lease, self._gen, dict(self._stamps)
        c._kv, c._enc, c._created, c._keys = dict(self._kv), dict(self._enc), dict(self._created), list(self._keys)
        c._leases, c._expiry = dict(self._leases), list(self._expiry)
        c._lease_keys = {lid: set(keys) for lid, keys in self._lease_keys.items()}
        return c

    # -- internals -------------------------------------------------------------------------
    def _expire(self) -> None:
        now = self.now()
        while self._expiry and self._expiry[0][0] <= now:
            at, lid = heapq.heappop(self._expiry)
            cur = self._leases.get(lid)
            if cur is not None and cur[1] == at:
                self._drop_lease(lid)

    def _drop_lease(self, lid: int) -> None:
        self._leases.pop(lid, None)
        keys = sorted(self._lease_keys.pop(lid, ()))
        if keys:
            self.revision += 1
            for k in keys:
                self._remove(k)

    def _remove(self, key: str) -> None:
        e = self._kv.pop(key, None)
        if e is None:
            return
        del self._enc[key], self._created[key]
        self._gen += 1
        self._stamps[_collection(key)] = self._gen
        self._keys.pop(bisect.bisect_left(self._keys, key))
        if e.lease:
            self._lease_keys.get(e.lease, set()).discard(key)

    def _put(self, key: str, value: Any, lease: int) -> None:
        if self.sink and key.startswith(self.sink):
            e = Entry(key, value, self.revision, 1, lease)
            for prefix, fn in self.watchers:
                if key.startswith(prefix):
                    fn(e)
            return
        old = self._kv.get(key)
        if old is None:
            bisect.insort(self._keys, key)
            self._created[key] = self.revision
        elif old.lease and old.lease != lease:
            self._lease_keys.get(old.lease, set()).discard(key)
        enc = _encode(value)
        self._gen += 1
        self._stamps[_collection(key)] = self._gen
        e = Entry(key, json.loads(enc), self.revision, (old.version if old else 0) + 1, lease)
        self._kv[key], self._enc[key] = e, enc
        if lease:
            self._lease_keys[lease].add(key)
        for prefix, fn in self.watchers:
            if key.startswith(prefix):
                fn(e)

    def _apply(self, ops: list[Op]) -> None:
        for op in ops:
            if op.kind == "put" and op.lease and op.lease not in self._leases:
                raise StoreError(f"etcd (memory): lease {op.lease:x} not found")
        if all(op.kind == "delete" and op.key not in self._kv for op in ops):
            return  # nothing changes: etcd keeps its revision
        self.revision += 1
        for op in ops:
            if op.kind == "put":
                self._put(op.key, op.value, op.lease)
            else:
                self._remove(op.key)

    def create_revision(self, key: str) -> int:
        self._expire()
        return self._created.get(key, 0)

    # -- reads ---------------------------------------------------------------------------
    async def get(self, key: str) -> Entry | None:
        self._expire()
        return self._kv.get(key)

    def stamp(self, prefix: str) -> int:
        """What changes whenever a key under ``prefix`` does: the store's change count at
        the last change in the collection when ``prefix`` is one (``/vigil/vms/``), else
        the store's change count itself."""
        if prefix.find("/", len(K.PREFIX)) == len(prefix) - 1:
            return self._stamps.get(prefix, 0)
        return self._gen

    def _range(self, prefix: str) -> dict[str, Entry]:
        """The keys under ``prefix`` in etcd's order, read once per change under it (the
        caller must not change the dict)."""
        hit = self._ranges.get(prefix)
        stamp = self.stamp(prefix)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        keys, kv = self._keys, self._kv
        i = bisect.bisect_left(keys, prefix)
        j = bisect.bisect_left(keys, _range_end(prefix), i) if prefix else len(keys)  # etcd's range end
        out = {k: kv[k] for k in keys[i:j]}
        self._ranges[prefix] = (stamp, out)
        return out

    async def get_prefix(self, prefix: str) -> dict[str, Entry]:
        self._expire()
        return dict(self._range(prefix))

    def memo(self, name: str, build: Callable[["MemoryStore", Any], Any], reads: tuple[str, ...] = ()) -> Any:
        """``build(store, previous)``, computed once per change of the store (of the keys
        under ``reads``, when it names the collections build reads) and shared by every
        caller: the simulator's hosts read the same keys many times per virtual second
        and derive the same things from them (the result must not be changed)."""
        self._expire()
        hit = self._memo.get(name)
        stamp: Any = tuple([self._stamps.get(p, 0) for p in reads]) if reads else self._gen  # (collections)
        if hit is None or hit[0] != stamp:
            hit = self._memo[name] = (stamp, build(self, hit[1] if hit else None))
        return hit[1]

    async def snapshot(self) -> dict[str, Entry]:
        """Every vigil key; read again only when the revision moved (as the real store does:
        hosts' loops ask many times per virtual second and mostly nothing changed)."""
        self._expire()
        if self._snap is None or self._snap_gen != self._gen:
            # (a sink put raises the revision but changes no kept key: the same snapshot,
            # under the revision it was read at, so its typed state is not parsed again)
            self._snap, self._snap_rev, self._snap_gen = self._range(K.PREFIX), self.revision, self._gen
        return dict(self._snap)

    @property
    def snapshot_revision(self) -> int:
        """The revision of the last snapshot (typed state is parsed once per revision)."""
        return self._snap_rev if self._snap is not None else 0

    # -- writes --------------------------------------------------------------------------
    async def put(self, key: str, value: Any, lease: int = 0) -> None:
        self._expire()
        self._apply([Op("put", key, value, lease)])

    async def delete(self, key: str) -> bool:
        self._expire()
        if key not in self._kv:
            return False
        self._apply([Op("delete", key)])
        return True

    async def delete_prefix(self, prefix: str) -> None:
        for k in list(await self.get_prefix(prefix)):
            await self.delete(k)

    async def txn(self, compare: list, success: list, failure: list | None = None) -> bool:
        self._expire()
        ok = all(c.holds(self) for c in compare)
        self._apply(list(success if ok else failure or []))
        return ok

    async def create(self, key: str, value: Any, lease: int = 0, also: list | None = None) -> bool:
        return await self.txn([self.absent(key)], [self.put_op(key, value, lease)] + list(also or []))

    async def update(self, key: str, change: Callable[[Any], Any], tries: int = 5) -> Any:
        for _ in range(tries):
            e = await self.get(key)
            new = change(e.value if e else None)
            if await self.txn([self.unchanged(key, e.mod_revision if e else 0)], [self.put_op(key, new)]):
                return new
        raise StoreError(f"{key}: changed under us {tries} times")

    def put_op(self, key: str, value: Any, lease: int = 0) -> Op:
        return Op("put", key, value, lease)

    def delete_op(self, key: str) -> Op:
        return Op("delete", key)

    def absent(self, key: str) -> Compare:
        return Compare(key, "version", "==", 0)

    def unchanged(self, key: str, mod_revision: int) -> Compare:
        return Compare(key, "mod", "==", mod_revision)

    def equals(self, key: str, value: Any) -> Compare:
        return Compare(key, "value", "==", _encode(value))

    # -- leases --------------------------------------------------------------------------
    async def grant(self, ttl: int) -> int:
        self._expire()
        self._next_lease += 1
        lid = self._next_lease
        self._leases[lid] = (ttl, self.now() + ttl)
        self._lease_keys[lid] = set()
        heapq.heappush(self._expiry, (self.now() + ttl, lid))
        return lid

    async def keepalive(self, lease_id: int) -> int:
        """Like etcd: the remaining TTL after the refresh, 0 for a lease that is gone."""
        self._expire()
        cur = self._leases.get(lease_id)
        if cur is None:
            return 0
        at = self.now() + cur[0]
        self._leases[lease_id] = (cur[0], at)
        heapq.heappush(self._expiry, (at, lease_id))
        return cur[0]

    async def lease_ttl(self, lease_id: int) -> int:
        """Seconds left (rounded down, like etcd), -1 for a lease that is gone."""
        self._expire()
        cur = self._leases.get(lease_id)
        return -1 if cur is None else int(cur[1] - self.now())

    async def revoke(self, lease_id: int) -> None:
        self._expire()
        if lease_id not in self._leases:
            raise StoreError(f"etcd (memory): lease {lease_id:x} not found")
        self._drop_lease(lease_id)

    async def close(self) -> None:
        pass


class HostStore:
    """One host's client of a ``MemoryStore``: while ``reachable()`` is False every call
    waits out ``timeout`` (virtual) and raises ``StoreError``, as a real call would."""

    def __init__(self, mem: MemoryStore, reachable: Callable[[], bool], sleep: Callable[[float], Awaitable[None]],
                 timeout: float = 1.5) -> None:
        self.mem, self.reachable, self._sleep, self.timeout = mem, reachable, sleep, timeout
        self.tx = mem.tx
        self.put_op, self.delete_op, self.absent = mem.put_op, mem.delete_op, mem.absent
        self.unchanged, self.equals = mem.unchanged, mem.equals

    async def _cut_off(self) -> None:
        """A call while etcd is out of reach: the client's timeout, then its error. (Each
        call asks ``reachable()`` itself and comes here only then: no coroutine per call
        on the way that almost every call takes.)"""
        await self._sleep(self.timeout)
        raise StoreError("etcd (memory): unreachable from this host")

    async def get(self, key: str) -> Entry | None:
        if not self.reachable():
            await self._cut_off()
        return await self.mem.get(key)

    async def get_prefix(self, prefix: str) -> dict[str, Entry]:
        if not self.reachable():
            await self._cut_off()
        return await self.mem.get_prefix(prefix)

    async def snapshot(self) -> dict[str, Entry]:
        if not self.reachable():
            await self._cut_off()
        return await self.mem.snapshot()

    @property
    def snapshot_revision(self) -> int:
        """The revision of the store's last snapshot (MemoryStore.snapshot_revision)."""
        return self.mem.snapshot_revision

    async def memo(self, name: str, build: Callable[[MemoryStore, Any], Any], reads: tuple[str, ...] = ()) -> Any:
        """``MemoryStore.memo`` through this host's link."""
        if not self.reachable():
            await self._cut_off()
        return self.mem.memo(name, build, reads)

    async def put(self, key: str, value: Any, lease: int = 0) -> None:
        if not self.reachable():
            await self._cut_off()
        await self.mem.put(key, value, lease)

    async def delete(self, key: str) -> bool:
        if not self.reachable():
            await self._cut_off()
        return await self.mem.delete(key)

    async def txn(self, compare: list, success: list, failure: list | None = None) -> bool:
        if not self.reachable():
            await self._cut_off()
        return await self.mem.txn(compare, success, failure)

    async def create(self, key: str, value: Any, lease: int = 0, also: list | None = None) -> bool:
        if not self.reachable():
            await self._cut_off()
        return await self.mem.create(key, value, lease, also)

    async def update(self, key: str, change: Callable[[Any], Any], tries: int = 5) -> Any:
        if not self.reachable():
            await self._cut_off()
        return await self.mem.update(key, change, tries)

    async def grant(self, ttl: int) -> int:
        if not self.reachable():
            await self._cut_off()
        return await self.mem.grant(ttl)

    async def keepalive(self, lease_id: int) -> int:
        if not self.reachable():
            await self._cut_off()
        return await self.mem.keepalive(lease_id)

    async def lease_ttl(self, lease_id: int) -> int:
        if not self.reachable():
            await self._cut_off()
        return await self.mem.lease_ttl(lease_id)

    async def revoke(self, lease_id: int) -> None:
        if not self.reachable():
            await self._cut_off()
        await self.mem.revoke(lease_id)

    async def close(self) -> None:
        pass
