"""A host's etcd member that was the raft leader when the host hung (the lab's SIGSTOP
stops it too), as it is just after the host resumes.

The other members elected a new leader meanwhile, and the controller there may have
revoked the host's lease. The stopped member knows nothing of it: it takes itself for
the leader until etcd's check-quorum steps it down (one or two election timeouts after it
runs again), and meanwhile answers the host's lease keepalives from its own lease table,
since etcd renews a lease on the leader without asking the quorum (3.4 does; a lease past
its TTL there is not renewed). Reads and writes need the quorum and fail as for any
member cut off from it. So one keepalive's answer is no proof that the cluster still
counts the lease; a read is.
"""
from __future__ import annotations

from typing import Any, Callable

from vigil.sim.store import HostStore


class StaleMember:
    """The member's lease table as of the hang: lease id -> (ttl, expires at)."""

    def __init__(self, leases: dict[int, tuple[int, float]], leads_for: float) -> None:
        self.leases = dict(leases)
        self.leads_for = leads_for  # seconds it takes itself for the leader once running again
        self.until = float("inf")  # set when the host resumes

    def resumed(self, now: float) -> None:
        self.until = now + self.leads_for

    def keepalive(self, lease_id: int, now: float) -> int | None:
        """The TTL it answers, or None: no answer (stepped down, or the lease ran out by
        its own clock), and the call fails as any call to a cut-off member does."""
        cur = self.leases.get(lease_id)
        if now >= self.until or cur is None or cur[1] <= now:
            return None
        self.leases[lease_id] = (cur[0], now + cur[0])
        return cur[0]


class MemberStore(HostStore):
    """A host's client of the simulated etcd whose keepalives, while the host is cut off,
    its own member may still answer (``stale``: that answer, None when it gives none)."""

    def __init__(self, *args: Any, stale: Callable[[int], int | None], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.stale = stale

    async def keepalive(self, lease_id: int) -> int:
        if not self.reachable() and (ttl := self.stale(lease_id)) is not None:
            return ttl
        return await super().keepalive(lease_id)
