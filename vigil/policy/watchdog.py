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

import math
from fractions import Fraction
from typing import Literal

from vigil.model import SpecError
from vigil.policy.view import Timing

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


StopAction = Literal["disarm", "leave-armed"]


def clean_stop_step(runs_vms: bool) -> tuple[StopAction, str]:
    """What a cleanly stopping agent does with an armed device, and why.

    Disarming (the magic close) is only safe when nothing here needs guarding: a stopped
    agent's heartbeat goes silent, and once it has been silent past the watchdog window the
    controller may restart this host's VMs elsewhere, counting on a reset that a disarmed
    device would never do. With VMs running, the device stays armed: the next agent run
    (``systemctl restart``) must feed it within its timeout, or the host is reset."""
    if runs_vms:
        return "leave-armed", "VMs run here: the device stays armed until the next agent run feeds it"
    return "disarm", "no VM runs here: nothing to guard, the device is disarmed (magic close)"


# -- the inequality: the host is reset before the controller may restart its VMs ----------
#
# Let F be the agent's last feed; the same tick then writes the datastore heartbeats, at or
# after F. A hung host is reset by F + D + s, where D is the device's timeout and s its
# slack (timer granularity, reset latency). The controller measures the heartbeat's silence
# from when it saw the counter advance, which is never before the write, so it may restart
# the VMs of a host that answers ping no sooner than F + R, with R = restart_after(t). Safe
# when D + s <= R; the margin M = Timing.watchdog_margin stands for s, and the device gets
#
#     D = floor(R - M)   (whole seconds, as the Linux watchdog API takes),  so D + M <= R.
#
# A host that answers no ping is restarted after hb_grace whatever its watchdog (vSphere's
# rule: no heartbeat of either kind and no ping means powered off); the disk locks cover a
# hung host that also lost its network until its watchdog fires. The inequality is not
# about that path.

MIN_MARGIN_S = 1.0  # the device's timeout is in whole seconds, and many tick once a second
MIN_TICKS = 2  # a healthy host may miss one tick (load, a slow datastore) without a reset


class WatchdogTimingError(SpecError):
    """Timings under which the watchdog could not reset a hung host before the controller
    restarts its VMs elsewhere (or would reset healthy hosts): a config error, so that
    ``vigil agent`` refuses to start with it."""


def restart_after(t: Timing) -> float:
    """Heartbeat silence after which the controller may restart the VMs of a host that
    still answers ping (vigil.policy.hoststate.classify_host): silent (``hb_grace``) and
    past the watchdog window (``fenced_after``). Its lease adds nothing to count on: it may
    have expired long before the host hung."""
    return max(t.hb_grace, t.fenced_after)


def device_timeout(t: Timing, tick_s: float) -> int:
    """The timeout (seconds) to program into the host's watchdog device: the largest whole
    number D with D + margin <= restart_after(t); raises WatchdogTimingError when the
    timings leave no such D that a healthy host, fed every ``tick_s``, can live with."""
    margin = t.watchdog_margin
    if margin < MIN_MARGIN_S:
        raise WatchdogTimingError(
            f"watchdog margin {margin:g}s is below {MIN_MARGIN_S:g}s: it must cover the device's "
            "whole-second timer and its reset")
    r = restart_after(t)
    d = math.floor(Fraction(r) - Fraction(margin))
    # r is itself a rounded float sum: judge "fits" as check_device_timeout does, so that
    # a D the check accepts is never left out (watchdog 9 + margin 119.101... rounds down)
    while (d + 1) + margin <= r:
        d += 1
    return check_device_timeout(d, t, tick_s)


def check_device_timeout(d: int, t: Timing, tick_s: float) -> int:
    """``d`` if a device running with timeout ``d`` keeps the inequality and lets a healthy
    host live (the device may round what it is asked for); else WatchdogTimingError."""
    r = restart_after(t)
    if d + t.watchdog_margin > r:
        raise WatchdogTimingError(
            f"watchdog timeout {d}s + margin {t.watchdog_margin:g}s exceeds {r:g}s, the heartbeat "
            "silence after which the controller may restart this host's VMs elsewhere: raise "
            "watchdog_s (every host and the controller must agree on it)")
    if d < 1 or d < MIN_TICKS * tick_s:
        raise WatchdogTimingError(
            f"watchdog timeout {d}s leaves a host fed every {tick_s:g}s no missed tick "
            f"(at least {MIN_TICKS} ticks and 1s): raise watchdog_s or lower tick_s")
    return d
