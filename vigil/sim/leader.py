"""Leadership of a simulated host: vigil.agent.leader's Leadership loop.

Campaign for the leader key (bound to the host's lease), run the REAL controller while
holding it, revoke a dead leader's lease (silent on every datastore and no ping, the test
the controller applies to any host) instead of waiting it out. Whether the leader is
dead, and when to look again, is the agent's own vigil.agent.leader.leader_dead (its
pure part vigil.policy.leader.watch_leader), run here over the simulated environment.
"""
from __future__ import annotations

import asyncio

from vigil.agent.leader import CHECK_S, leader_dead
from vigil.controller.loop import Controller
from vigil.env.pings import Pings
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.sim.context import AgentContext


async def leader_loop(a: "AgentContext") -> None:
    task: asyncio.Task | None = None
    pings = Pings(a.env, spawn=a.spawn)  # type: ignore[arg-type]
    nap = CHECK_S
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
                        dead, nap = await leader_dead(a.env, a.cfg, a.ds_ok, a.leader_hb, pings, e.value, CHECK_S)
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
        nap = CHECK_S
