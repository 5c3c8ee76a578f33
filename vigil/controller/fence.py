"""The controller's fences: each FenceHost of the plan is carried out through the
environment (Env.fencing: the real BMC drivers, or the simulator's BMCs) in a task of its
own, so a slow BMC never holds up a cycle; the plan sees the outcome as the host's
FenceStatus the next cycle. Every attempt and every result is an event ``fence``, and
counted in ``COUNTS`` (the agent's /metrics: vigil_fence_total)."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from vigil.policy.fencing import FenceHost, fence_over
from vigil.policy.view import FenceStatus, HostView, Timing
from vigil.store.events import make_event, record

log = logging.getLogger("vigil.controller")

# (host, driver, result) -> fences of this process; result: "confirmed" | "failed"
COUNTS: Counter[tuple[str, str, str]] = Counter()


def where(device: Any) -> str:
    """The BMC as events name it (kind, address, port: never the user or password)."""
    port = f":{device['port']}" if device.get("port") else ""
    return f"{device.get('kind', '?')} {device.get('address', '?')}{port}"


class Fences:
    def __init__(self, env: Any, store: Any, me: str) -> None:
        self.env, self.store, self.me = env, store, me
        self.status: dict[str, FenceStatus] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def of(self, h: HostView, t: Timing) -> FenceStatus | None:
        """The host's fence status for this cycle's view; forgotten once it is seen well."""
        if not self.status:  # (no fence of any host: nothing to look at or forget)
            return None
        if fence_over(h, t) and h.name in self.status and self.status[h.name].state != "pending":
            del self.status[h.name]
        return self.status.get(h.name)

    async def begin(self, action: FenceHost) -> None:
        clock = self.env.clock
        host, dev = action.host, action.device
        self.status[host] = FenceStatus("pending", clock.monotonic())
        log.warning("fencing %s through its BMC (%s): %s", host, where(dev), action.reason)
        await record(self.store, make_event(
            "fence", f"fencing {host} through its BMC ({where(dev)}): {action.reason}", host=host,
            source="controller", at=clock.time(), result="attempt", driver=dev.get("kind", "")))
        task = asyncio.ensure_future(self._run(action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, action: FenceHost) -> None:
        clock = self.env.clock
        host, dev = action.host, action.device
        fencing = getattr(self.env, "fencing", None)
        t0 = clock.monotonic()
        if fencing is None:
            ok, detail = False, "this controller cannot reach BMCs"
        else:
            try:
                ok, detail = await fencing.fence(host, dev)
            except Exception as e:  # a driver bug must not leave the fence pending for ever
                log.exception("fencing %s", host)
                ok, detail = False, f"{type(e).__name__}: {e}"
        result = "confirmed" if ok else "failed"
        self.status[host] = FenceStatus(result, t0, detail)
        COUNTS[(host, str(dev.get("kind", "")), result)] += 1
        took = clock.monotonic() - t0
        msg = (f"{host} fenced: power off confirmed by its BMC ({detail})" if ok
               else f"fencing {host} failed after {took:.1f}s: {detail}")
        (log.warning if ok else log.error)("%s", msg)
        await record(self.store, make_event("fence", msg, host=host, source="controller", at=clock.time(),
                                            result=result, driver=dev.get("kind", ""), seconds=round(took, 3)))
