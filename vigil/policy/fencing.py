"""Fencing (STONITH) through a host's BMC: when to fence, and what a fence changes.

A host with a fence device (hosts/<name>'s ``fencing``) that the controller finds failed
or hung is powered off through its BMC before its VMs are restarted elsewhere:

- a **confirmed** fence (the BMC reports the power off) makes the host failed at once: a
  hung host's VMs restart right away instead of after the watchdog window;
- until then, and when the fence **fails** (a BMC that does not answer, as when it lost
  power with its host; a refusal; no confirmation within the device's timeout), the host
  is "fencing" and its VMs wait for the **watchdog bound** (``Timing.fenced_after`` of
  datastore heartbeat silence), past which the host's own watchdog has surely reset it:
  never earlier than is safe, never for ever. This holds for a host found silent with no
  ping too, which without a fence device would be failed at once: with one, only the BMC
  or the bound says it is off;
- **no fencing storm**: when more than half of the hosts lost contact (oVirt's rule), the
  fault is more likely on this side than on theirs, and nobody is fenced; their VMs wait
  for the watchdog bound.

- **a hung host is fenced before its lease runs out**: a host whose lease is still alive
  but whose datastore heartbeat has been silent for the device's ``hung_after_s``
  (``hung_suspect``; default ``HUNG_AFTER_S``, shorter than the lease) is fenced at once.
  Once its BMC confirms the power off, and no heartbeat came since the fence began
  (``trusted``), it is failed: its lease is revoked and its VMs restart without waiting
  for etcd to expire it. A power-off the BMC confirms means its QEMU processes are gone,
  so nothing of it can write any more; the lease adds nothing to that (docs/fencing.md,
  "Why a confirmed fence may skip the lease"). Until the confirmation its VMs stay where
  they are; a fence that fails or is not trusted falls back to the lease and the watchdog
  bound as above.

A host is fenced once per episode: its status is forgotten when it is seen well again
(``fence_over``). Hosts without a fence device are classified as before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from vigil.model import HostState
from vigil.policy.view import ClusterView, FenceStatus, HostView, Timing
from vigil.policy.watchdog import restart_after

FENCED_STATES = (HostState.FAILED, HostState.AGENT_DOWN)
# Datastore heartbeat silence (s) after which a host with a fence device whose lease is
# still alive is taken as hung and fenced; a device's ``hung_after_s`` overrides it, 0
# turns it off. Several heartbeat periods (tick_s, 0.5 s by default), less than the lease.
HUNG_AFTER_S = 1.5
IN_CONTACT = (HostState.RUNNING, HostState.MAINTENANCE, HostState.ENTERING_MAINTENANCE)


@dataclass(frozen=True)
class FenceHost:
    """Power ``host`` off through its BMC (``device``: hosts/<host>'s ``fencing``) and
    confirm it; the controller carries it out through the environment (Env.fencing)."""

    host: str
    device: Mapping[str, Any] = field(hash=False, compare=False)
    reason: str = ""


def device_of(h: HostView) -> Mapping[str, Any] | None:
    d = h.info.fencing if h.info is not None else None
    return d if d and d.get("kind") else None


def hung_after(dev: Mapping[str, Any]) -> float:
    """The device's ``hung_after_s`` (absent: HUNG_AFTER_S; 0 or less: never early)."""
    try:
        v = float(dev.get("hung_after_s", HUNG_AFTER_S))
    except (TypeError, ValueError):
        v = HUNG_AFTER_S
    return v if v > 0 else float("inf")


def restart_mark_ttl(t: Timing) -> int:
    """How long (whole seconds, an etcd lease's TTL) a cleanly stopping agent's restart mark
    holds fencing off: until the controller may count on the host's watchdog anyway (an
    agent that is not back by then has let the armed device reset the host), so that the
    mark only ever trades a fence for the watchdog bound, never for less."""
    return max(1, math.ceil(restart_after(t)))


def hung_suspect(h: HostView, state: HostState, dev: Mapping[str, Any] | None) -> bool:
    """The host holds its lease but its datastore heartbeat has been silent for its
    device's ``hung_after_s``: its agent is likely stopped, as a hung host's is. Hosts in
    maintenance mode are left alone (their VMs have gone or are going), and so is a host
    whose agent marked a planned restart (``systemctl restart``: its heartbeat is silent
    while the new agent starts; if that never comes, its lease expires and the lease and
    watchdog path decides, as for any host)."""
    return (dev is not None and state is HostState.RUNNING and h.alive and not h.maintenance
            and not h.restarting and h.hb_age is not None and h.hb_age >= hung_after(dev))


def late(h: HostView, state: HostState) -> bool:
    """The host holds its lease but its heartbeat is half its ``hung_after`` late (a device
    of its own, or HUNG_AFTER_S): counted as out of contact for the storm rule. Half, so
    that when a shared datastore stalls, every host's heartbeat (stopped within one write
    period and one cycle of each other) is late by the time the first is a suspect."""
    dev = device_of(h)
    return (state is HostState.RUNNING and h.alive and not h.maintenance and not h.restarting
            and h.hb_age is not None and h.hb_age >= hung_after(dev if dev is not None else {}) / 2)


def trusted(h: HostView, f: FenceStatus, now: float) -> bool:
    """A confirmed fence is believed only if no datastore heartbeat of the host came after
    the fence began: a host that wrote one meanwhile was running, whatever its BMC says
    (a BMC reporting another machine, or lying)."""
    return h.hb_age is None or h.hb_age >= now - f.since


def storm(view: ClusterView, classified: Mapping[str, tuple[HostState, str]],
          suspects: frozenset[str] = frozenset()) -> str:
    """Why fencing is off this cycle ("" when it is not): more than half of the hosts out
    of contact (``suspects``: hosts whose lease is alive counted among them, see late)."""
    lost = sorted(h for h, (s, _) in classified.items() if s not in IN_CONTACT or h in suspects)
    if 2 * len(lost) > len(classified):
        return f"{len(lost)} of {len(classified)} hosts lost contact ({', '.join(lost)}): no fencing storm"
    return ""


def fence_over(h: HostView, t: Timing) -> bool:
    """The host is seen well again (lease alive, datastore heartbeat advancing, not
    silent long enough to be a hung suspect): its fence status, if any, belongs to an
    episode that has ended."""
    dev = device_of(h)
    well = min(t.hb_grace, hung_after(dev)) if dev is not None else t.hb_grace
    return h.alive and h.hb_age is not None and h.hb_age < well


def decide(view: ClusterView, classified: Mapping[str, tuple[HostState, str]]
           ) -> tuple[list[FenceHost], dict[str, tuple[HostState, str]]]:
    """The fences to begin and the host states once fencing is taken into account."""
    t = view.timing
    out = dict(classified)
    fences: list[FenceHost] = []
    if not any(device_of(h) is not None for h in view.hosts.values()):
        return fences, out  # no host has a BMC: every host is skipped below (most clusters)
    suspects = frozenset(n for n, (s, _) in classified.items()
                         if hung_suspect(view.hosts[n], s, device_of(view.hosts[n])))
    off = storm(view, classified, frozenset(n for n, (s, _) in classified.items() if late(view.hosts[n], s)))
    for name, (state, why) in sorted(classified.items()):
        h = view.hosts[name]
        dev = device_of(h)
        early = name in suspects
        f = h.fence
        if dev is None:
            continue
        if h.restarting and f is None and state in (HostState.RUNNING, HostState.AGENT_DOWN):
            continue  # a planned agent restart: no fence; the watchdog bound decides, as without a BMC
        fenced = f is not None and f.state == "confirmed" and trusted(h, f, view.now)
        if fenced and state not in FENCED_STATES and not early:
            # its lease revoked after the fence, before its heartbeat's silence says failed
            why = f"datastore heartbeat silent {h.hb_age or 0:.1f}s"
        elif early:
            heard = {True: ", host answers ping", False: ", no ping answer"}.get(h.ping, "")  # type: ignore[call-overload]
            why = f"lease alive, datastore heartbeat silent {h.hb_age:.1f}s (past {hung_after(dev):g}s){heard}"
        elif state is HostState.RUNNING and f is not None and f.state != "failed" and h.alive:
            # a fence begun early (or one the host came back during): see it through
            why = f"lease alive, datastore heartbeat silent {h.hb_age or 0:.1f}s"
        elif state not in FENCED_STATES:
            continue
        if state is HostState.FAILED:  # held back: its lease is not revoked (yet)
            why = why.replace("; its lease is revoked", "")
        bound = f"the watchdog bound ({t.fenced_after:g}s of silence)"
        revoked = "; its lease is revoked" if h.alive else ""
        if fenced:
            out[name] = (HostState.FAILED, f"{why}; fenced through its BMC: {f.detail}{revoked}")
        elif h.hb_age is not None and h.hb_age >= t.fenced_after:
            continue  # past the bound: failed as it stands, fenced or not
        elif f is not None and f.state == "confirmed":
            out[name] = (HostState.FENCING, f"{why}; its BMC reports it off ({f.detail}) but its datastore "
                         f"heartbeat advanced since the fence began: not trusted, its VMs wait for {bound}")
        elif f is not None and f.state == "failed":
            out[name] = (HostState.FENCING, f"{why}; its fence failed ({f.detail}): its VMs wait for {bound}")
        elif f is not None:
            out[name] = (HostState.FENCING, f"{why}; fencing through its BMC ({dev['kind']})")
        elif off:
            if early:
                continue  # a suspect only: not fenced, and nothing else changes
            out[name] = (HostState.FENCING, f"{why}; {off}: its VMs wait for {bound}")
        else:
            fences.append(FenceHost(name, dev, why))
            out[name] = (HostState.FENCING, f"{why}; fencing through its BMC ({dev['kind']})")
    return fences, out
