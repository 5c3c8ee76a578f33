"""Classify a host from its lease, datastore heartbeats and ping (vSphere's HA state table).

| state       | lease   | datastore heartbeat          | ping      | isolation flag |
|-------------|---------|------------------------------|-----------|----------------|
| running     | alive   | -                            | -         | -              |
| partitioned | expired | advancing                    | -         | not set        |
| isolated    | expired | advancing                    | -         | set            |
| agent-down  | expired | stopped, within watchdog     | answers   | -              |
| failed      | any     | stopped, and no ping         | -         | -              |
| failed      | expired | stopped past the watchdog    | answers   | -              |

A host whose agent is silent but which answers ping may be hung: its watchdog resets it
at most ``Timing.watchdog`` after the agent last ran, so only past that is it "failed"
(fenced). A silent host that answers no ping is powered off, whether or not etcd has
expired its lease yet (vSphere's rule: no heartbeats of either kind and no ping); a hung
host that also lost its network is caught by the disk locks until its watchdog fires.
"""
from __future__ import annotations

from vigil.model import HostState
from vigil.policy.view import HostView, Timing


def classify_host(h: HostView, t: Timing) -> tuple[HostState, str]:
    if h.maintenance and h.alive:
        return HostState.MAINTENANCE, "in maintenance mode"
    silent = h.hb_age is not None and h.hb_age >= t.hb_grace
    if silent and h.ping is False:
        # Dead (or hung and cut off, which its watchdog and the disk locks cover): do not
        # wait for etcd to expire its lease; the controller revokes it.
        held = "; its lease is revoked" if h.alive else ""
        return HostState.FAILED, f"datastore heartbeat silent {h.hb_age:.1f}s, no ping answer{held}"
    if h.alive:
        return HostState.RUNNING, "lease alive"
    if h.hb_age is None:
        return HostState.UNKNOWN, "lease expired, datastore heartbeat not observed yet"
    if not silent:
        if h.hb_isolated:
            return HostState.ISOLATED, "lease expired, datastore heartbeat advancing, isolation flag set"
        return HostState.PARTITIONED, "lease expired, datastore heartbeat advancing"
    if h.hb_age >= t.fenced_after:
        return HostState.FAILED, f"lease expired, datastore heartbeat silent {h.hb_age:.1f}s (past the watchdog)"
    if h.ping is None:
        return HostState.UNKNOWN, "lease expired, datastore heartbeat silent, ping pending"
    return HostState.AGENT_DOWN, "lease expired, datastore heartbeat silent, host answers ping"


# The only states in which vm_lost_on can be True: callers asking for every VM of a large
# cluster skip the others without the call.
LOSES_VMS = frozenset({HostState.FAILED, HostState.ISOLATED})


def vm_lost_on(state: HostState, h: HostView, vm: str) -> bool:
    """True when the VM surely no longer runs on host ``h``, so it may be restarted elsewhere."""
    if state is HostState.FAILED:
        return True
    if state is HostState.ISOLATED:
        return vm not in h.hb_vms
    return False
