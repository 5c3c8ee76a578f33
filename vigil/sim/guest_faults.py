"""Scenario actions inside guests, and the monitoring settings an operator changes.

Faults (the VM's running copy; ``sticky = S``: the failure comes back S seconds after
each boot, a guest that keeps failing):

    guest-hang vm        the guest hangs: no heartbeat, no I/O (lab: vigil-hang freeze)
    guest-quiet vm       its heartbeat stops, its I/O goes on (lab: vigil-hang heartbeat)
    guest-unhang vm      heartbeat and I/O again (``for`` on the two above)
    guest-panic vm       its kernel panics (lab: vigil-hang panic): QEMU stops it and tells
                         the agent (QMP GUEST_PANICKED); no ``sticky``
    app-start vm         an application heartbeats (``at_boot = true``: after each boot too)
    app-stop vm          the application dies: its heartbeat stops
    app-disable vm       it stops heartbeating cleanly (no longer monitored)

Operator commands: ``monitoring-set`` (the keys of ``vigil cluster set monitoring``:
preset, interval_s, max_resets, window_s, min_uptime_s, application) and
``vm-monitoring vm`` (the same keys, the VM's own: ``vigil vm set --monitoring``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from vigil.model import MonitoringSpec, VMSpec
from vigil.policy import vm_monitoring as VM
from vigil.sim.guests import BOOT_S, SimGuest, guest_of
from vigil.store import keys as K
from vigil.store.events import event_put_op, make_event

FAULTS = ("guest-hang", "guest-quiet", "guest-unhang", "guest-panic", "app-start", "app-stop", "app-disable")
OPERATOR = ("monitoring-set", "vm-monitoring")
UNDO = {"guest-hang": "guest-unhang", "guest-quiet": "guest-unhang"}
KEYS = ("preset", "interval_s", "max_resets", "window_s", "min_uptime_s", "application")


class GuestFaultError(ValueError):
    pass


def _guest(w: Any, vm: str) -> SimGuest:
    copies = w.running_copies(vm)
    if not copies:
        raise GuestFaultError(f"{vm} runs nowhere")
    return guest_of(copies[0], w.clock.time())


def apply_fault(w: Any, a: dict[str, Any]) -> None:
    f, now = a["fault"], w.clock.time()
    try:
        g = _guest(w, a["vm"])
    except GuestFaultError as e:
        w.log(w.clock.now, "fault-skipped", a["vm"], str(e))
        return
    sticky = float(a.get("sticky", 0.0)) if "sticky" in a else None
    if f in ("guest-hang", "guest-quiet"):
        g.hb_stops = now
        if f == "guest-hang":
            g.io_stops = now
        if sticky is not None:
            g.sticky, g.sticky_s = f.removeprefix("guest-"), sticky
    elif f == "guest-panic":
        g.hb_stops = g.io_stops = now
        g.panicked, g.sticky = True, ""
        _tell_panic(w, a["vm"])
    elif f == "guest-unhang":
        g.io_before, g.io_since = g.io(now), now  # its I/O goes on from here
        g.hb_stops = g.io_stops = None
        g.sticky = ""
    elif f == "app-start":
        g.app, g.app_stops = True, None
        g.app_at_boot = bool(a.get("at_boot", False))
        if now < g.booted + BOOT_S:
            g.booted = now - BOOT_S  # the application's first beat is now
    elif f == "app-stop":
        g.app_stops = now
        if sticky is not None:
            g.sticky, g.sticky_s = "app", sticky
    elif f == "app-disable":
        g.app = g.app_at_boot = False


def _tell_panic(w: Any, vm: str) -> None:
    """QMP's GUEST_PANICKED, on the agent's event watch: its VM monitoring is told (an
    agent not running then is not; the real one asks the run state when it connects)."""
    q = w.running_copies(vm)[0]
    monitor = getattr(w.hosts[q.host].agent, "monitoring", None)
    if monitor is not None:
        monitor.note_panic(vm, q.pid)


async def apply_operator(w: Any, a: dict[str, Any]) -> None:
    st, now = w.store, w.clock.time()
    values = {k: a[k] for k in KEYS if k in a}
    if a["fault"] == "monitoring-set":
        stored = VM.normalized(values)
        ev = make_event("settings", f"monitoring: {VM.parse(values).summary()}", source="cli", at=now)
        await st.txn([], [st.put_op(K.SETTINGS + "monitoring", stored), event_put_op(st, ev)])
        return
    e = await st.get(K.VMS + a["vm"])
    if e is None:
        raise GuestFaultError(f"vm-monitoring: unknown VM {a['vm']!r}")
    spec = replace(VMSpec.from_json(e.value), monitoring=MonitoringSpec(**values) if values else None)
    spec.validate()
    said = " ".join(f"{k}={v}" for k, v in values.items()) or "as the cluster's"
    ev = make_event("vm-monitoring-set", f"{spec.name}: monitoring {said}", vm=spec.name,
                    source="cli", at=now)
    await st.txn([st.unchanged(e.key, e.mod_revision)], [st.put_op(e.key, spec.to_json()), event_put_op(st, ev)])
