"""Ping answers per host, each probe made in the background so that no loop waits on one.

The controller pings any host whose heartbeat is late; the agent watching the leader pings
the leader. Both keep the answers here, and a new controller starts with the fresh answers
of the agent that became the leader (Pings.fresh_answers), so it need not ask again.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine

from vigil.env.base import Env

FRESH_S = 2.0    # an answer counts this long
TIMEOUT_S = 0.5  # one probe's wait


class Pings:
    def __init__(self, env: Env, answers: dict[str, tuple[float, bool]] | None = None,
                 spawn: Callable[[Coroutine[Any, Any, None]], object] = asyncio.create_task) -> None:
        """``spawn``: how a probe runs in the background (the simulator's agents pass theirs)."""
        self.env = env
        self.answers: dict[str, tuple[float, bool]] = dict(answers or {})  # host -> (when, answered)
        self._busy: set[str] = set()
        self._spawn = spawn

    def probe(self, host: str, address: str) -> None:
        """Ping ``host`` in the background unless a probe of it is under way."""
        if host in self._busy:
            return
        self._busy.add(host)

        async def go() -> None:
            try:
                await self.ask(host, address)
            finally:
                self._busy.discard(host)

        self._spawn(go())

    async def ask(self, host: str, address: str) -> bool:
        """Ping now and wait for the answer (it is kept as the newest)."""
        ok = await self.env.network.ping(address, TIMEOUT_S)
        self.answers[host] = (self.env.clock.monotonic(), ok)
        return ok

    def fresh(self, host: str, now: float) -> bool | None:
        """The answer of a probe less than FRESH_S old; None when there is none."""
        p = self.answers.get(host)
        return p[1] if p is not None and now - p[0] < FRESH_S else None

    def fresh_answers(self, now: float) -> dict[str, tuple[float, bool]]:
        return {h: p for h, p in self.answers.items() if now - p[0] < FRESH_S}
