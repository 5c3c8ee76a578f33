"""The agent's lease loop out of a stall (vigil.agent.lease): a keepalive's answer alone
confirms the lease only when the host did not stand still past hb_grace since the last
confirmation; after such a stall a read must back it (vigil.policy.isolation.keepalive_confirms)."""
from __future__ import annotations

import asyncio

from vigil.agent.lease import HostLease
from vigil.config import AgentConfig
from vigil.policy.isolation import StallWatch
from vigil.store import keys as K
from vigil.store.etcd import Entry, StoreError


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return self.t


class Env:
    def __init__(self) -> None:
        self.clock = Clock()


class Store:
    """A keepalive answered as a stale raft leader answers it: at once, TTL 3; reads as
    the quorum answers them (``alive``: alive/h1's lease, None: the key is gone,
    "cut": the read fails)."""

    def __init__(self, alive: object) -> None:
        self.alive = alive
        self.reads = 0

    async def keepalive(self, lease_id: int) -> int:
        return 3

    async def grant(self, ttl: int) -> int:  # (a new lease: none while cut off)
        raise StoreError("etcd: deadline exceeded (no quorum)")

    async def get(self, key: str) -> Entry | None:
        assert key == K.ALIVE + "h1"
        self.reads += 1
        if self.alive == "cut":
            raise StoreError("etcd: deadline exceeded (no quorum)")
        return None if self.alive is None else Entry(key, {}, 1, 1, int(self.alive))  # type: ignore[arg-type]


class Host:
    def __init__(self, store: Store) -> None:
        self.me = "h1"
        self.cfg = AgentConfig(host="h1", address="10.0.0.1", etcd_endpoints=("127.0.0.1:2379",),
                               run_dir="/nonexistent", datastores={})
        self.env = Env()
        self.store = store
        self.stopped = asyncio.Event()
        self.ds_ok: dict[str, bool] = {}

    async def sleep(self, s: float) -> None:
        self.stopped.set()  # one round of the loop


def one_round(alive: object, stalled: bool) -> tuple[HostLease, Store]:
    store = Store(alive)
    host = Host(store)
    stalls = StallWatch(host.cfg.hb_grace_s)
    lease = HostLease(host, "boot", stalls)  # type: ignore[arg-type]
    lease.id, lease.ok_until = 7, 100.0 + 3  # confirmed by a keepalive sent at 100.0
    stalls.tick(100.0)
    host.env.clock.t = 102.9 if stalled else 100.5  # 2.9 s without a tick: past hb_grace (2.5)
    stalls.tick(host.env.clock.t)
    asyncio.run(lease.loop())
    return lease, store


def test_without_a_stall_the_keepalive_alone_confirms_the_lease():
    lease, store = one_round("cut", stalled=False)
    assert lease.ok_until == 100.5 + 3 and store.reads == 0


def test_after_a_stall_an_answer_no_read_backs_does_not_confirm_the_lease():
    # the stale leader answered; the quorum read fails: the lease runs out as it would
    lease, store = one_round("cut", stalled=True)
    assert lease.ok_until == 103.0 and lease.id == 7 and store.reads == 1


def test_after_a_stall_a_read_showing_the_lease_confirms_it():
    lease, _ = one_round(7, stalled=True)
    assert lease.ok_until == 102.9 + 3


def test_after_a_stall_a_read_showing_the_lease_gone_asks_for_a_new_one():
    for alive in (None, 8):  # alive/h1 gone (the lease revoked), or on another lease
        lease, _ = one_round(alive, stalled=True)
        assert lease.id == 0 and lease.ok_until == 103.0


def test_the_read_after_a_stall_confirms_only_a_lease_the_alive_key_is_still_on():
    from vigil.policy.isolation import read_confirms

    assert read_confirms(7, 7)
    assert not read_confirms(None, 7)  # the key is gone: the lease was revoked
    assert not read_confirms(8, 7)  # another lease holds it
