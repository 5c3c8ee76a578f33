"""Leadership of a simulated host: vigil.agent.agent's leader_loop and _leader_dead.

Campaign for the leader key (bound to the host's lease), run the REAL controller while
holding it, revoke a dead leader's lease (silent on every datastore and no ping, the test
the controller applies to any host) instead of waiting it out.
"""
from __future__ import annotations

import asyncio

from vigil.controller.loop import Controller
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.sim.context import AgentContext



async def leader_loop(a: "AgentContext") -> None:
    task: asyncio.Task | None = None
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
                    if not leading and e.value != a.me and await leader_dead(a, e.value):
                        await a.store.revoke(e.lease)
                        await a.event("leader-fenced", f"{a.me}: leader {e.value} is silent on every "
                                      "datastore and answers no ping; its lease is revoked")
            except StoreError:
                leading = task is not None and a.lease_ok()
        if leading and task is None:
            controller = Controller(a.store, a.me, a.cfg, is_leader=a.lease_ok, env=a.env)  # type: ignore[arg-type]
            task = a.spawn(controller.run())
        elif not leading and task is not None:
            task.cancel()
            task = None
        await a.clock.sleep(0.5)


async def leader_dead(a: "AgentContext", leader: str) -> bool:
    now = a.clock.monotonic()
    records = [r for n, p in a.cfg.datastores.items() if a.ds_ok.get(n)
               for r in a.env.datastores.read_heartbeats(p).values()]
    if not records:
        return False
    a.leader_hb.observe(now, records)
    if a.leader_hb.age(leader, now, a.clock.time()) < a.cfg.hb_grace_s:
        return False
    address = a.cfg.peers.get(leader)
    return address is not None and not await a.env.network.any_answers([address], 0.5)
