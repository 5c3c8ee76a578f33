"""How long a host's datastore heartbeat has been silent, on the observer's own clock."""
from __future__ import annotations

from vigil.model import HbRecord

# Hosts' clocks agree within this (NTP); only used to shorten a new leader's first look.
CLOCK_SKEW_S = 0.5
# Start pinging a host whose heartbeat has been silent this long (the controller any host,
# an agent its leader), so that the answer is there when the grace time ends.
PING_AFTER_S = 1.0


class HbTracker:
    """The controller's memory of when each host's counter last moved, on its own clock.

    A host first seen at ``t`` counts as silent since ``t`` at most: a new leader must
    watch for the grace time before it may call a host's heartbeat stopped.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self._last: dict[str, tuple[int, float]] = {}
        self.latest: dict[str, HbRecord] = {}
        self.observed_at: float | None = None  # the last observe()

    def handed_over(self, now: float, max_gap: float) -> "HbTracker":
        """The tracker a new controller starts with: this one's memory when it has been
        observing up to ``max_gap`` ago (an agent watching a leader's heartbeat, which
        becomes the leader: its view of who fell silent when is as good as a running
        controller's, so it need not watch for the grace time again), else a fresh one
        (started now). A memory with gaps would make a host that heartbeats look silent."""
        if self.observed_at is None or now - self.observed_at > max_gap:
            return HbTracker(now)
        t = HbTracker(self.started)
        t._last, t.latest, t.observed_at = dict(self._last), dict(self.latest), self.observed_at
        return t

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
        self.observed_at = now

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
