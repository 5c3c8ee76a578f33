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

A host is fenced once per episode: its status is forgotten when it is seen well again
(``fence_over``). Hosts without a fence device are classified as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from vigil.model import HostState
from vigil.policy.view import ClusterView, HostView, Timing

FENCED_STATES = (HostState.FAILED, HostState.AGENT_DOWN)
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


def storm(view: ClusterView, classified: Mapping[str, tuple[HostState, str]]) -> str:
    """Why fencing is off this cycle ("" when it is not): more than half of the hosts out
    of contact."""
    lost = sorted(h for h, (s, _) in classified.items() if s not in IN_CONTACT)
    if 2 * len(lost) > len(classified):
        return f"{len(lost)} of {len(classified)} hosts lost contact ({', '.join(lost)}): no fencing storm"
    return ""


def fence_over(h: HostView, t: Timing) -> bool:
    """The host is seen well again (lease alive, datastore heartbeat advancing): its fence
    status, if any, belongs to an episode that has ended."""
    return h.alive and h.hb_age is not None and h.hb_age < t.hb_grace


def decide(view: ClusterView, classified: Mapping[str, tuple[HostState, str]]
           ) -> tuple[list[FenceHost], dict[str, tuple[HostState, str]]]:
    """The fences to begin and the host states once fencing is taken into account."""
    t = view.timing
    out = dict(classified)
    fences: list[FenceHost] = []
    off = storm(view, classified)
    for name, (state, why) in sorted(classified.items()):
        h = view.hosts[name]
        dev = device_of(h)
        if dev is None or state not in FENCED_STATES:
            continue
        f = h.fence
        if state is HostState.FAILED:  # held back: its lease is not revoked (yet)
            why = why.replace("; its lease is revoked", "")
        bound = f"the watchdog bound ({t.fenced_after:g}s of silence)"
        if f is not None and f.state == "confirmed":
            out[name] = (HostState.FAILED, f"{why}; fenced through its BMC: {f.detail}")
        elif h.hb_age is not None and h.hb_age >= t.fenced_after:
            continue  # past the bound: failed as it stands, fenced or not
        elif f is not None and f.state == "failed":
            out[name] = (HostState.FENCING, f"{why}; its fence failed ({f.detail}): its VMs wait for {bound}")
        elif f is not None:
            out[name] = (HostState.FENCING, f"{why}; fencing through its BMC ({dev['kind']})")
        elif off:
            out[name] = (HostState.FENCING, f"{why}; {off}: its VMs wait for {bound}")
        else:
            fences.append(FenceHost(name, dev, why))
            out[name] = (HostState.FENCING, f"{why}; fencing through its BMC ({dev['kind']})")
    return fences, out
