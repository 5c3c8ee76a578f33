"""When the host's watchdog is armed and fed: a pure decision, with its reason.

The controller restarts a silent host's VMs once its datastore heartbeat has been silent
past the watchdog window (DESIGN.md, "Never two running copies"). That is safe only if a
host whose heartbeat stopped is reset within the window, so the watchdog must be fed by
the same tick that writes the heartbeats, and must be armed whenever the controller could
count on it:

- once the host holds its lease (the controller sees it as a running host from then on);
- at once when VMs already run here (an agent restart adopting its QEMUs): a hung agent
  must get those VMs killed before they restart elsewhere;
- and, once armed, fed for as long as the tick runs: the device (or the lab's supervisor)
  stays armed across an agent restart, so a new agent keeps feeding what the old one armed.

Until then nothing is guarded and slow start-up work (the accelerator probe, the first
etcd connection) runs unarmed, so it can never get a healthy host reset (Patroni arms its
watchdog only while it holds the leader lock, for the same reason).
"""
from __future__ import annotations

from typing import Literal

WatchdogAction = Literal["arm", "feed", "wait"]


def watchdog_step(armed: bool, holds_lease: bool, runs_vms: bool) -> tuple[WatchdogAction, str]:
    """What the tick does with the watchdog now, and why."""
    if armed:
        return "feed", "armed: fed by the tick that writes the datastore heartbeats"
    if holds_lease:
        return "arm", "the host holds its lease: the controller counts on the watchdog bound from now on"
    if runs_vms:
        return "arm", "VMs run here: a hung agent must get the host reset before they restart elsewhere"
    return "wait", "no lease and no VM yet: nothing to guard, start-up work runs unarmed"
