"""Leadership of a simulated host: vigil.agent.leader's Leadership (loop and _leader_dead).

Campaign for the leader key (bound to the host's lease), run the REAL controller while
holding it, revoke a dead leader's lease (silent on every datastore and no ping, the test
the controller applies to any host) instead of waiting it out.
"""
from __future__ import annotations

import asyncio

from vigil.controller.loop import Controller
from vigil.policy.heartbeats import PING_AFTER_S
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.sim.context import AgentContext



PING_FRESH_S = 2.0  # as vigil.agent.leader


class _Watch:
    """What the agent watching the leader remembers (vigil.agent.leader.Leadership's)."""

    def __init__(self) -> None:
        self.pings: dict[str, tuple[float, bool]] = {}
        self.pinging: set[str] = set()
        self.next_check = 0.5


async def leader_loop(a: "AgentContext") -> None:
    task: asyncio.Task | None = None
    w = _Watch()
    while True:
        leading = False
        if a.lease_ok():
            try:
                e = await a.store.get(K.LEADER)
                if e is None:
                    leading = await a.store.create(K.LEADER, a.me, lease=a.lease_id)
                    if leading:
                        await a.event("leader-elected", f"{a.me} is the leader; its controller is active")
                else:
                    leading = e.value == a.me and e.lease == a.lease_id
                    if not leading and e.value != a.me and await leader_dead(a, e.value, w):
                        await a.store.revoke(e.lease)
                        await a.event("leader-fenced", f"{a.me}: leader {e.value} is silent on every "
                                      "datastore and answers no ping; its lease is revoked")
            except StoreError:
                leading = task is not None and a.lease_ok()
        if leading and task is None:
            now = a.clock.monotonic()
            controller = Controller(a.store, a.me, a.cfg, is_leader=a.lease_ok, env=a.env,  # type: ignore[arg-type]
                                    hb=a.leader_hb.handed_over(now, 1.0),
                                    pings={k: v for k, v in w.pings.items() if now - v[0] < PING_FRESH_S})
            task = a.spawn(controller.run())
        elif not leading and task is not None:
            task.cancel()
            task = None
        nap, w.next_check = w.next_check, 0.5
        await a.clock.sleep(nap)


async def leader_dead(a: "AgentContext", leader: str, w: _Watch) -> bool:
    now = a.clock.monotonic()
    records = [r for n, p in a.cfg.datastores.items() if a.ds_ok.get(n)
               for r in a.env.datastores.read_heartbeats(p).values()]
    if not records:
        return False
    a.leader_hb.observe(now, records)
    age = a.leader_hb.age(leader, now, a.clock.time())
    address = a.cfg.peers.get(leader)
    if address is not None and age >= PING_AFTER_S and leader not in w.pinging:
        w.pinging.add(leader)

        async def ping() -> None:
            try:
                ok = await a.env.network.any_answers([address], 0.5)
                w.pings[leader] = (a.clock.monotonic(), ok)
            finally:
                w.pinging.discard(leader)
        a.spawn(ping())
    if age < a.cfg.hb_grace_s:
        if age >= PING_AFTER_S:  # look again right when the grace ends
            w.next_check = min(0.5, max(0.05, a.cfg.hb_grace_s - age + 0.02))
        return False
    if address is None:
        return False
    p = w.pings.get(leader)
    if p is not None and now - p[0] < PING_FRESH_S:
        return not p[1]
    ok = await a.env.network.any_answers([address], 0.5)
    w.pings[leader] = (a.clock.monotonic(), ok)
    return not ok
