"""MemoryStore, the simulator's etcd: revisions, versions, leases, transactions, as etcd."""
from __future__ import annotations

import asyncio

import pytest

from vigil.sim.store import HostStore, MemoryStore
from vigil.store.etcd import StoreError


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def mk() -> tuple[MemoryStore, Clock]:
    c = Clock()
    return MemoryStore(c), c


def go(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_revisions_and_versions() -> None:
    async def t() -> None:
        s, _ = mk()
        r0 = s.revision
        await s.put("/vigil/a", {"x": 1})
        e = await s.get("/vigil/a")
        assert e is not None and e.value == {"x": 1} and e.version == 1 and e.mod_revision == r0 + 1
        assert s.create_revision("/vigil/a") == r0 + 1
        await s.put("/vigil/b", 2)
        await s.put("/vigil/a", {"x": 2})
        e = await s.get("/vigil/a")
        assert e.version == 2 and e.mod_revision == r0 + 3 and s.create_revision("/vigil/a") == r0 + 1
        assert await s.delete("/vigil/a") and s.revision == r0 + 4
        assert not await s.delete("/vigil/a") and s.revision == r0 + 4  # nothing deleted: no new revision
        await s.put("/vigil/a", 3)
        e = await s.get("/vigil/a")
        assert e.version == 1 and s.create_revision("/vigil/a") == r0 + 5  # a new life of the key
    go(t())


def test_txn_compares_and_one_revision_per_transaction() -> None:
    async def t() -> None:
        s, _ = mk()
        await s.put("/vigil/leader", "host1")
        e = await s.get("/vigil/leader")
        rev = s.revision
        ok = await s.txn([s.equals("/vigil/leader", "host1"), s.absent("/vigil/own/vm"),
                          s.unchanged("/vigil/assign/vm", 0)],
                         [s.put_op("/vigil/assign/vm", {"host": "h2"}), s.put_op("/vigil/x", 1)])
        assert ok and s.revision == rev + 1
        assert (await s.get("/vigil/x")).mod_revision == (await s.get("/vigil/assign/vm")).mod_revision == rev + 1
        assert not await s.txn([s.equals("/vigil/leader", "host2")], [s.put_op("/vigil/y", 1)])
        assert await s.get("/vigil/y") is None and s.revision == rev + 1
        assert not await s.txn([s.unchanged("/vigil/leader", e.mod_revision - 1)], [s.delete_op("/vigil/leader")])
        assert await s.txn([s.unchanged("/vigil/leader", e.mod_revision)], [s.delete_op("/vigil/leader")])
        assert not await s.txn([s.absent("/vigil/x")], [], [s.put_op("/vigil/failed", 1)])
        assert (await s.get("/vigil/failed")).value == 1  # the failure branch ran
        assert await s.txn([s.tx.version(b"/vigil/x") > 0], [])
        assert not await s.create("/vigil/x", 2) and await s.create("/vigil/z", 2)
    go(t())


def test_leases_expire_on_the_clock_with_their_keys() -> None:
    async def t() -> None:
        s, c = mk()
        lid = await s.grant(3)
        await s.put("/vigil/alive/h1", {}, lease=lid)
        await s.put("/vigil/own/vm", "h1", lease=lid)
        await s.put("/vigil/own/vm", "h1", lease=lid)
        assert (await s.get("/vigil/own/vm")).lease == lid
        c.t = 2.0
        assert await s.keepalive(lid) == 3 and await s.lease_ttl(lid) == 3
        c.t = 4.9
        assert len(await s.get_prefix("/vigil/")) == 2
        c.t = 5.0
        assert await s.get_prefix("/vigil/") == {}
        assert await s.keepalive(lid) == 0 and await s.lease_ttl(lid) == -1
        with pytest.raises(StoreError):
            await s.put("/vigil/k", 1, lease=lid)  # etcd: lease not found
        with pytest.raises(StoreError):
            await s.revoke(lid)
    go(t())


def test_revoke_deletes_attached_keys_only() -> None:
    async def t() -> None:
        s, _ = mk()
        a, b = await s.grant(3), await s.grant(3)
        await s.put("/vigil/own/x", "h1", lease=a)
        await s.put("/vigil/own/y", "h2", lease=b)
        await s.put("/vigil/own/z", "h1", lease=a)
        await s.put("/vigil/own/z", "h3")  # re-put without a lease: detached from a
        await s.revoke(a)
        assert sorted(await s.get_prefix("/vigil/own/")) == ["/vigil/own/y", "/vigil/own/z"]
    go(t())


def test_snapshot_is_sorted_and_prefix_bound() -> None:
    async def t() -> None:
        s, _ = mk()
        for k in ("/vigil/vms/b", "/vigil/vms/a", "/vigil/assign/a", "/other/x", "/vigil/vmsx"):
            await s.put(k, 1)
        assert list(await s.get_prefix("/vigil/vms/")) == ["/vigil/vms/a", "/vigil/vms/b"]
        snap = await s.snapshot()
        assert list(snap) == sorted(snap) and "/other/x" not in snap
    go(t())


def test_watchers_see_every_put() -> None:
    async def t() -> None:
        s, _ = mk()
        seen: list[str] = []
        s.watchers.append(("/vigil/events/", lambda e: seen.append(e.value)))
        await s.txn([], [s.put_op("/vigil/events/1", "a"), s.put_op("/vigil/x", 1)])
        await s.put("/vigil/events/2", "b")
        assert seen == ["a", "b"]
    go(t())


def test_host_store_fails_after_its_timeout_while_cut_off() -> None:
    async def t() -> None:
        s, _ = mk()
        up = [True]
        slept: list[float] = []

        async def sleep(x: float) -> None:
            slept.append(x)

        h = HostStore(s, lambda: up[0], sleep, timeout=1.5)
        await h.put("/vigil/a", 1)
        up[0] = False
        with pytest.raises(StoreError):
            await h.get("/vigil/a")
        assert slept == [1.5]
        up[0] = True
        assert (await h.get("/vigil/a")).value == 1
    go(t())


def test_a_stale_raft_leader_renews_from_its_own_lease_table_until_it_steps_down() -> None:
    """vigil.sim.stale_member: the member stopped with its host answers the host's
    keepalives for a while out of the hang, even for a lease the quorum revoked; reads
    still fail (they need the quorum)."""
    from vigil.sim.stale_member import MemberStore, StaleMember

    async def t() -> None:
        s, c = mk()
        lid = await s.grant(3)
        member = StaleMember(s._leases, leads_for=1.5)
        await s.revoke(lid)  # the other side's controller
        c.t = 2.5
        member.resumed(c.t)
        slept: list[float] = []

        async def sleep(x: float) -> None:
            slept.append(x)

        h = MemberStore(s, lambda: False, sleep, timeout=1.5, stale=lambda le: member.keepalive(le, c.t))
        assert await h.keepalive(lid) == 3 and not slept  # answered at once, though revoked
        with pytest.raises(StoreError):
            await h.get("/vigil/alive/h")
        c.t = 4.0  # stepped down (resumed + 1.5)
        with pytest.raises(StoreError):
            await h.keepalive(lid)
        assert await s.keepalive(lid) == 0  # the cluster's answer all along
    go(t())


def test_a_stale_leader_does_not_renew_a_lease_past_its_ttl_by_its_own_clock() -> None:
    from vigil.sim.stale_member import StaleMember

    async def t() -> None:
        s, c = mk()
        lid = await s.grant(3)
        member = StaleMember(s._leases, leads_for=1.5)
        c.t = 3.2
        member.resumed(c.t)
        assert member.keepalive(lid, c.t) is None
    go(t())
