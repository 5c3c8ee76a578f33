"""Leadership of a simulated host: vigil.agent.leader's Leadership (loop and _leader_dead).

Campaign for the leader key (bound to the host's lease), run the REAL controller while
holding it, revoke a dead leader's lease (silent on every datastore and no ping, the test
the controller applies to any host) instead of waiting it out.
"""
from __future__ import annotations

import asyncio

from vigil.controller.loop import Controller
from vigil.env.pings import Pings
from vigil.policy.heartbeats import PING_AFTER_S
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.sim.context import AgentContext


async def leader_loop(a: "AgentContext") -> None:
    task: asyncio.Task | None = None
    pings = Pings(a.env, spawn=a.spawn)  # type: ignore[arg-type]
    nap = 0.5
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
                    dead = False
                    if not leading and e.value != a.me:
                        dead, nap = await leader_dead(a, e.value, pings)
                    if dead:
                        await a.store.revoke(e.lease)
                        await a.event("leader-fenced", f"{a.me}: leader {e.value} is silent on every "
                                      "datastore and answers no ping; its lease is revoked")
            except StoreError:
                leading = task is not None and a.lease_ok()
        if leading and task is None:
            now = a.clock.monotonic()
            controller = Controller(a.store, a.me, a.cfg, is_leader=a.lease_ok, env=a.env,  # type: ignore[arg-type]
                                    hb=a.leader_hb.handed_over(now, 1.0),
                                    pings=pings.fresh_answers(now))
            task = a.spawn(controller.run())
        elif not leading and task is not None:
            task.cancel()
            task = None
        await a.clock.sleep(nap)
        nap = 0.5


async def leader_dead(a: "AgentContext", leader: str, pings: Pings) -> tuple[bool, float]:
    """As vigil.agent.leader.Leadership._leader_dead: whether the leader is dead, and when
    to look again (right when its grace time ends, if that comes before the period)."""
    now = a.clock.monotonic()
    records = [r for n, p in a.cfg.datastores.items() if a.ds_ok.get(n)
               for r in a.env.datastores.read_heartbeats(p).values()]
    if not records:
        return False, 0.5
    a.leader_hb.observe(now, records)
    age = a.leader_hb.age(leader, now, a.clock.time())
    address = a.cfg.peers.get(leader)
    if address is not None and age >= PING_AFTER_S:
        pings.probe(leader, address)
    if age < a.cfg.hb_grace_s:
        return False, min(0.5, max(0.05, a.cfg.hb_grace_s - age + 0.02)) if age >= PING_AFTER_S else 0.5
    if address is None:
        return False, 0.5
    answered = pings.fresh(leader, now)
    if answered is None:
        answered = await pings.ask(leader, address)
    return not answered, 0.5
