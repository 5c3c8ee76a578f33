"""The watch's bookkeeping (vigil.store.changes) and the snapshot it lets the store keep:
answered from memory only while the watch runs, nothing changed, this store wrote
nothing, and its member was seen in the cluster less than SNAPSHOT_MAX_AGE_S ago."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from vigil.store import etcd as E
from vigil.store import keys as K
from vigil.store.changes import Changes, group
from vigil.store.state import StateCache


def test_group_of_a_key() -> None:
    assert group(K.ASSIGN + "vm1") == K.ASSIGN
    assert group(K.LEADER) == K.LEADER
    assert group(K.EVENTS + "0001-host1") == K.EVENTS


def test_changes_since_a_mark_by_prefix() -> None:
    c = Changes()
    m = c.mark()
    c.note(K.EVENTS + "1")
    assert c.since(m) and not c.since(m, (K.ASSIGN, K.OWN))
    c.note(K.OWN + "vm1")
    assert c.since(m, (K.ASSIGN, K.OWN))
    m2 = c.mark()
    assert not c.since(m2, (K.OWN,))
    c.watch_lost()  # anything may have changed meanwhile
    assert not c.watching and c.since(m2, (K.OWN,))


def test_wait_wakes_on_a_change_under_its_prefixes_only() -> None:
    async def go() -> None:
        c = Changes()
        m = c.mark()
        w = asyncio.ensure_future(c.wait(m, (K.ASSIGN,)))
        await asyncio.sleep(0)
        c.note(K.EVENTS + "1")
        await asyncio.sleep(0)
        assert not w.done()
        c.note(K.ASSIGN + "vm1")
        await asyncio.wait_for(w, 30)  # a hang guard

    asyncio.run(go())


class FakeClient:
    """Counts range reads; every read answers at ``rev``."""

    def __init__(self) -> None:
        self.rev = 5
        self.reads = 0
        self.transactions = SimpleNamespace()

    async def get_prefix(self, prefix: bytes, keys_only: bool = False) -> object:
        self.reads += 1
        kv = SimpleNamespace(key=K.LEADER.encode(), value=b'"host1"', mod_revision=self.rev, version=1, lease=7)

        class R(list):
            header = SimpleNamespace(revision=self.rev)
        return R([kv])

    async def put(self, *a: object, **k: object) -> None:
        self.rev += 1

    async def refresh_lease(self, lease_id: int) -> object:
        return SimpleNamespace(TTL=3)


def store_with(client: FakeClient) -> E.Store:
    s = E.Store(["127.0.0.1:1"])
    s._client = client  # type: ignore[assignment]
    return s


def test_snapshot_from_memory_only_while_watched_and_unchanged(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    now = [100.0]
    monkeypatch.setattr(E.time, "monotonic", lambda: now[0])

    async def go() -> None:
        c = FakeClient()
        s = store_with(c)
        await s.snapshot()
        await s.snapshot()
        assert c.reads == 3  # no watch: the revision is checked every time (once read in full)
        s.changes.watch_started()
        await s.snapshot()  # the watch began after that read: read again
        n = c.reads
        await s.snapshot()
        assert c.reads == n  # watched, unchanged: from memory
        s.changes.note(K.ASSIGN + "vm1")
        await s.snapshot()
        assert c.reads > n
        n = c.reads
        await s.put(K.VMS + "a", {})
        await s.snapshot()
        assert c.reads > n  # its own write: read again
        n = c.reads
        now[0] += E.SNAPSHOT_MAX_AGE_S
        await s.snapshot()
        assert c.reads > n  # too long since the member was seen in the cluster
        n = c.reads
        now[0] += E.SNAPSHOT_MAX_AGE_S / 2
        await s.keepalive(7)  # the member reached the raft leader: it vouches
        now[0] += E.SNAPSHOT_MAX_AGE_S * 0.9
        await s.snapshot()
        assert c.reads == n
        s.changes.watch_lost()
        await s.snapshot()
        assert c.reads > n

    asyncio.run(go())


def test_state_cache_parses_once_per_revision() -> None:
    snap = {K.LEADER: E.Entry(K.LEADER, "host1", 3, 1, 7)}
    cache = StateCache()
    a = cache.of(snap, 9)
    assert cache.of(snap, 9) is a
    assert cache.of(snap, 10) is not a
    assert cache.of(snap, 0) is not cache.of(snap, 0)  # revision unknown: parsed each time
