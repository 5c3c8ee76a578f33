"""Leadership: the agent holding the leader key runs the controller loop.

Every agent with a lease campaigns for the key (bound to its lease, so it goes with the
host); the holder runs vigil.controller.loop. A leader that is silent on every datastore
and answers no ping is judged by the controller's own host classification
(vigil.policy.leader) and its lease revoked, instead of waited out. The key is read from
the store's snapshot (answered from memory while the etcd watch reports no change), and
a change of it wakes the loop at once: a vanished leader key is campaigned for without
waiting out the period.

A dead leader's host is acted on as fast as any other: the leader is pinged in the
background as soon as its heartbeat is late (as the controller pings any host), the check
runs when the grace time is reached rather than on the next period, and the new
controller starts with what this agent observed (the heartbeat tracker and the ping), so
it can call the old leader's host failed in its first cycle instead of watching for the
grace time again.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Mapping

from vigil.agent.context import HostContext
from vigil.config import AgentConfig
from vigil.env.base import Env
from vigil.env.pings import Pings
from vigil.policy.heartbeats import HbTracker
from vigil.policy.leader import leader_failed, watch_leader
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.store.state import read_leader

log = logging.getLogger("vigil.agent")

CHECK_S = 0.5


class Leadership:
    def __init__(self, host: HostContext) -> None:
        self.host = host
        self.task: asyncio.Task | None = None  # the controller, while this host leads
        self.hb = HbTracker(host.env.clock.monotonic())  # the leader's datastore heartbeat
        self.pings = Pings(host.env)  # the leader's, handed to the controller this host may start
        self._next_check = CHECK_S  # sooner when the leader's grace time ends before then

    async def loop(self) -> None:
        from vigil.controller.loop import Controller

        h, store = self.host, self.host.store
        controller: Controller | None = None
        while not h.stopped.is_set():
            mark = h.mark()
            leading = False
            if h.lease_ok():
                try:
                    e = (await store.snapshot()).get(K.LEADER)  # a read, or as fresh as one
                    cur = read_leader(e)
                    if e is None:
                        leading = await store.create(K.LEADER, h.me, lease=h.lease_id)
                        if leading:
                            await h.event("leader-elected", f"{h.me} is the leader; its controller is active")
                    elif cur is not None:
                        leading = cur.host == h.me and cur.lease == h.lease_id
                        if not leading and cur.host != h.me and await self._leader_dead(cur.host):
                            await store.revoke(cur.lease)
                            await h.event("leader-fenced", f"{h.me}: leader {cur.host} is silent on every "
                                          "datastore and answers no ping; its lease is revoked")
                except StoreError:
                    leading = self.task is not None and h.lease_ok()
            if leading and self.task is None:
                now = h.env.clock.monotonic()
                controller = Controller(store, h.me, h.cfg, is_leader=h.lease_ok,
                                        hb=self.hb.handed_over(now, 2 * CHECK_S),
                                        pings=self.pings.fresh_answers(now))
                self.task = asyncio.create_task(controller.run())
            elif not leading and self.task is not None:
                self.task.cancel()
                self.task = None
                log.warning("no longer the leader")
            # every CHECK_S, for _leader_dead's time-driven test of the heartbeat (no etcd
            # change announces a dead leader), and at once when the leader key changes
            nap, self._next_check = self._next_check, CHECK_S
            await h.wait_change(mark, (K.LEADER,), nap, nap)

    async def _leader_dead(self, leader: str) -> bool:
        h = self.host
        dead, self._next_check = await leader_dead(h.env, h.cfg, h.ds_ok, self.hb, self.pings, leader, CHECK_S)
        return dead


async def leader_dead(env: Env, cfg: AgentConfig, ds_ok: Mapping[str, bool], hb: HbTracker, pings: Pings,
                      leader: str, period: float) -> tuple[bool, float]:
    """The controller's own classification (vigil.policy.leader over hoststate): silent
    datastore heartbeat and no ping, so a dead leader's lease is not waited out before
    another one takes over. It is pinged once its heartbeat is late (in the background,
    so the answer is there when the grace time ends), and again if that answer is old.
    Returns whether the leader is dead and when to look again. The simulator's agents
    call this too (vigil.sim.leader): one test of the leader, not two."""
    clock = env.clock
    now = clock.monotonic()
    records = [r for n, p in cfg.datastores.items() if ds_ok.get(n)
               for r in env.datastores.read_heartbeats(p).values()]
    age = None  # no record readable here: the leader's silence means nothing
    if records:
        hb.observe(now, records)
        age = hb.age(leader, now, clock.time())
    address = cfg.peers.get(leader)
    watch = watch_leader(leader, age, cfg.hb_grace_s, period)
    if watch.probe and address is not None:
        pings.probe(leader, address)
    if not watch.ask:
        return False, watch.next_check
    answered = pings.fresh(leader, now)
    if answered is None and address is not None:
        answered = await pings.ask(leader, address)
    return leader_failed(leader, age, answered, cfg.hb_grace_s)[0], watch.next_check
