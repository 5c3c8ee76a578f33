"""Simulated guests, for VM and application monitoring: their heartbeats, their I/O,
their application heartbeat, and the reset button.

A guest starts heartbeating ``BOOT_S`` after its QEMU starts (or is reset) and does I/O
all the time, until a scenario's fault stops one or both (vigil.sim.guest_faults). Its
I/O counter is its bytes so far: 1000 a second while it does I/O (a reset does not zero
it: QEMU's block statistics outlive the guest's reboot). A ``sticky`` failure comes back
``sticky`` seconds after each boot (a guest that keeps hanging).

A guest that panics stops at once (no heartbeat, no I/O; QEMU keeps it stopped) and its
host's agent is told, as the real one is by QMP's GUEST_PANICKED; a reset runs it again.

``SimResets`` is the part of the hypervisor the shared monitor (vigil.agent.vm_monitor)
calls on a simulated host, and ``watched`` its view of the host's VMs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vigil.agent.vm_monitor import Watched
from vigil.model import VMSpec

BOOT_S = 1.0
IO_RATE = 1000  # bytes a second while the guest does I/O


@dataclass
class SimGuest:
    booted: float  # wall time of the QEMU's start or last reset
    prev_hb: float = 0.0  # the last heartbeat before the last reset
    hb_stops: float | None = None  # its heartbeat stops (stopped) at this time
    io_stops: float | None = None
    io_before: int = 0  # bytes before io_since
    io_since: float | None = None  # I/O (re)started then; None: at boot
    app: bool = False  # an application heartbeats in it
    app_at_boot: bool = False  # ... again after each boot
    app_stops: float | None = None
    sticky: str = ""  # "hang" | "quiet" | "app": fails again after each boot
    sticky_s: float = 0.0
    resets: int = 0
    panicked: bool = False  # its kernel panicked: QEMU keeps it stopped until a reset

    def last_hb(self, now: float) -> float:
        up = self.booted + BOOT_S
        end = now if self.hb_stops is None else min(now, self.hb_stops)
        return end if end >= up else self.prev_hb

    def io(self, now: float) -> int:
        end = now if self.io_stops is None else min(now, self.io_stops)
        since = self.booted if self.io_since is None else self.io_since
        return self.io_before + int(IO_RATE * max(0.0, end - since))

    def app_moved(self, now: float) -> float | None:
        up = self.booted + BOOT_S
        if not self.app or now < up:
            return None
        end = now if self.app_stops is None else max(up, min(now, self.app_stops))
        return min(end, max(up, self.last_hb(now)))  # its beats ride on the guest heartbeat

    def reset(self, now: float) -> None:
        self.prev_hb, self.io_before, self.io_since = self.last_hb(now), self.io(now), None
        self.booted, self.resets = now, self.resets + 1
        self.hb_stops = self.io_stops = self.app_stops = None
        self.panicked = False
        self.app = self.app_at_boot
        again = now + BOOT_S + self.sticky_s
        if self.sticky in ("hang", "quiet"):
            self.hb_stops = again
        if self.sticky == "hang":
            self.io_stops = again
        if self.sticky == "app":
            self.app_stops = again


def guest_of(q: Any, now: float) -> SimGuest:
    """The guest of a simulated QEMU (vigil.sim.world.Qemu), made at its first look."""
    g = getattr(q, "guest", None)
    if g is None:
        g = q.guest = SimGuest(booted=now)
    return g


class SimResets:
    """I/O counters and the reset button of one simulated host's QEMUs."""

    def __init__(self, world: Any, host: str, clock: Any) -> None:
        self.w, self.host, self.clock = world, host, clock

    def _qemu(self, vm: str, pid: int) -> Any:
        q = self.w.hosts[self.host].qemus.get(vm)
        return q if q is not None and q.pid == pid and q.state == "running" else None

    async def io_counters(self, vm: str, pid: int, spec: VMSpec | None) -> int | None:
        q = self._qemu(vm, pid)
        now = self.clock.time()
        if q is None or guest_of(q, now).panicked:
            return None  # (a panicked guest is stopped: QMP says "guest-panicked", not "running")
        return guest_of(q, now).io(now)

    async def reset(self, vm: str, pid: int) -> None:
        q = self._qemu(vm, pid)
        if q is not None:
            now = self.clock.time()
            guest_of(q, now).reset(now)
            self.w.log(self.w.clock.now, "guest-reset", vm, f"{vm}'s guest boots again (system_reset on {self.host})")

    async def power_off(self, vm: str, pid: int) -> None:
        """Its QEMU ends (SIGKILL): the agent's crash watch sees it exit."""
        if self._qemu(vm, pid) is not None:
            self.w.log(self.w.clock.now, "qemu-killed", vm, f"{vm}'s QEMU on {self.host} powered off")
            self.w.stop_qemu(self.host, vm)


def watched(agent: Any, now: float) -> list[Watched]:
    """The simulated agent's running VMs as the monitor sees them (vigil.sim.agent.SimAgent)."""
    out = []
    for name, vm in list(agent.vms.items()):
        q = agent.h.qemus.get(name)
        if vm.stopping or q is None or q.state != "running":
            continue
        g = guest_of(q, now)
        out.append(Watched(name, q.pid, vm.spec, g.booted, g.last_hb(now), g.app_moved(now)))
    return out
