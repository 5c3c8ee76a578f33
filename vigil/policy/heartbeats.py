"""How long a host's datastore heartbeat has been silent, on the observer's own clock."""
from __future__ import annotations

from vigil.model import HbRecord

# Hosts' clocks agree within this (NTP); only used to shorten a new leader's first look.
CLOCK_SKEW_S = 0.5


class HbTracker:
    """The controller's memory of when each host's counter last moved, on its own clock.

    A host first seen at ``t`` counts as silent since ``t`` at most: a new leader must
    watch for the grace time before it may call a host's heartbeat stopped.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self._last: dict[str, tuple[int, float]] = {}
        self.latest: dict[str, HbRecord] = {}

    def observe(self, now: float, records: list[HbRecord]) -> None:
        """Take the freshest record of each host over all datastores (the counter is the
        writer's clock in ms, so it grows across agent restarts)."""
        best: dict[str, HbRecord] = {}
        for r in records:
            if r.host not in best or r.counter > best[r.host].counter:
                best[r.host] = r
        for host, r in best.items():
            prev = self._last.get(host)
            if prev is None or r.counter > prev[0]:
                self._last[host] = (r.counter, now)
            self.latest[host] = r

    def age(self, host: str, now: float, wall: float | None = None) -> float:
        """Seconds the host's heartbeat has not advanced, as far as we can tell.

        Our own observation is a lower bound. With ``wall`` (this host's clock), the
        writer's timestamp gives a second lower bound, less ``CLOCK_SKEW_S``: a freshly
        elected controller need not watch for the whole grace time first.
        """
        prev = self._last.get(host)
        seen = now - (prev[1] if prev else self.started)
        rec = self.latest.get(host)
        if wall is None or rec is None:
            return seen
        return max(seen, wall - rec.counter / 1000 - CLOCK_SKEW_S)
