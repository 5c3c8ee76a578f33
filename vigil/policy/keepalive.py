"""How often a host's agent renews its lease (the real agent and the simulated one).

Every lease_ttl/6 (0.5 s at the 3 s TTL), a failed one retried after the same wait. The
lease cannot expire before ttl after a keepalive that renewed it, so one lost keepalive
(a quick failure) still leaves four more tries before it could lapse.

Every ttl/3 was measured (~0.2 % of a core less per agent on loopback) and not taken: a
host that stops dies with a lease last renewed up to 1 s (not 0.5 s) before, so its lease
can expire before its datastore heartbeat is seen silent. The simulated scenarios then
show other outcomes (the host declared partitioned before failed, another host elected
leader after a leader loss, a VM restarted on another host), not only other timings.
"""
from __future__ import annotations

from vigil.policy.view import Timing


def keepalive_delay(timing: Timing) -> float:
    """Seconds from one keepalive (or a failed try) to the next: lease_ttl / 6."""
    return timing.lease_ttl / 6
