"""VM and application monitoring, carried out by the agent that owns the VM.

Each second it looks at the VMs this host runs: their guest and application heartbeats
(the agent's guest watcher), and, once a guest heartbeat is late, their disk and NIC
byte counters (the hypervisor's ``io_counters``). vigil.policy.vm_monitoring decides;
a reset is first counted in etcd (``monitoring/<vm>``, guarded by this host still
owning the VM, with its ``vm-monitoring-reset`` event in the same transaction) and only
then carried out through the hypervisor (QMP ``system_reset``). A reset that cannot be
counted is not made: the count survives agent restarts and moves with the VM.

A guest's kernel panic is told to it (:meth:`VmMonitor.note_panic`, by the real agent's
QMP event watch, vigil.agent.panics, or by the simulator's fault) and decided at the
next round, by the same policy: a reset within the same limits, or, where VM monitoring
does not watch the VM, its QEMU ended (the crash restarts take it from there).

The real agent and the simulated one run this same class; each hands it its own view of
its VMs (``Watched``) and its own hypervisor.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Protocol

from vigil.agent.context import LocalVM
from vigil.model import VMSpec
from vigil.policy import vm_monitoring as VM
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.store.events import event_put_op, make_event

log = logging.getLogger("vigil.agent.monitoring")

SAMPLE_S = 1.0  # how often the VMs are looked at
SAMPLE_AFTER_S = 2.0  # I/O counters are read once the guest heartbeat is this late
KEEP_RESETS = 50  # reset times kept per VM (the longest window needs max_resets of them)


@dataclass(frozen=True)
class Watched:
    """A VM running here, as the monitor needs it (times on the host's wall clock)."""

    name: str
    pid: int
    spec: VMSpec | None
    started: float  # its QEMU started (or was adopted)
    last_hb: float  # its guest's last heartbeat; 0: none yet
    app_moved: float | None = None  # its application heartbeat last moved; None: none runs


def watched_here(vms: Mapping[str, LocalVM], now: float = 0.0) -> list[Watched]:
    """The real agent's running VMs (those being stopped aside)."""
    return [Watched(v.name, v.pid, v.spec, v.started, v.last_hb, v.app_moved if v.app_seq >= 0 else None)
            for v in list(vms.values()) if not v.stopping]


class Resettable(Protocol):
    """The part of vigil.env.hypervisor.Hypervisor the monitor uses."""

    async def io_counters(self, vm: str, pid: int, spec: VMSpec | None) -> int | None: ...

    async def reset(self, vm: str, pid: int) -> None: ...

    async def power_off(self, vm: str, pid: int) -> None: ...


class MonitorHost(Protocol):
    me: str
    store: Any  # vigil.store.etcd.Store, or the simulator's

    def lease_ok(self) -> bool: ...


@dataclass
class _Track:
    pid: int
    booted: float  # its QEMU's start, or the last reset
    io: list[tuple[float, int]] = field(default_factory=list)
    limited: bool = False  # 'vm-monitoring-limit' said for this silence


class VmMonitor:
    """``watched(now)``: the host's running VMs; ``specs()``: their specs, cheaply (no
    monitoring anywhere: nothing is looked at, not even the time)."""

    def __init__(self, host: MonitorHost, clock: Any, hypervisor: Resettable,
                 watched: Callable[[float], list[Watched]], specs: Callable[[], Iterable[VMSpec | None]]) -> None:
        self.host, self.clock, self.hv, self.watched, self.specs = host, clock, hypervisor, watched, specs
        self.cluster = VM.DEFAULT
        self.tracks: dict[str, _Track] = {}
        self._read_rev: int | None = None  # the key's mod_revision read_settings parsed last
        self.panics: dict[str, int] = {}  # vm -> the pid of its QEMU whose guest panicked

    def note_panic(self, vm: str, pid: int) -> None:
        """The guest of ``vm``'s QEMU ``pid`` panicked (it stays stopped): the next round
        decides what is done."""
        self.panics[vm] = pid

    def use_settings(self, raw: Any, rev: int | None = None) -> None:
        """The cluster's ``settings/monitoring``, as the agent's reconcile read it."""
        self.cluster = VM.cluster_settings(raw if isinstance(raw, Mapping) else None)
        self._read_rev = rev

    async def read_settings(self) -> None:
        """The same, read on its own (the simulated agent, whose reconcile reads no snapshot);
        parsed again only when the key changed (0: absent)."""
        e = await self.host.store.get(K.SETTINGS + "monitoring")
        rev = e.mod_revision if e is not None else 0
        if rev != self._read_rev:
            self.use_settings(e.value if e is not None else None, rev)

    async def loop(self) -> None:
        while True:
            await self.clock.sleep(SAMPLE_S)
            await self.round()

    async def round(self) -> None:
        """One look at every VM; etcd away: try again next round (no reset uncounted)."""
        try:
            await self._round()
        except StoreError as e:
            log.debug("monitoring: %s", e)

    async def _round(self) -> None:
        if not self.host.lease_ok():
            return
        if not self.cluster.enabled and not any(s is not None and s.monitoring is not None for s in self.specs()):
            self.tracks.clear()
            if not self.panics:
                return
        now = self.clock.time()
        vms = self.watched(now)
        for gone in set(self.tracks) - {w.name for w in vms}:
            del self.tracks[gone]
        if self.panics:
            for gone in set(self.panics) - {w.name for w in vms if w.pid == self.panics.get(w.name)}:
                del self.panics[gone]  # that QEMU is gone (or not ours any more)
        for w in vms:
            await self._check(w, now)

    async def _check(self, w: Watched, now: float) -> None:
        s = VM.effective(self.cluster, w.spec.monitoring if w.spec else None)
        tr = self.tracks.get(w.name)
        if tr is None or tr.pid != w.pid:
            tr = self.tracks[w.name] = _Track(w.pid, w.started)
        panicked = self.panics.get(w.name) == w.pid
        if not s.enabled:
            tr.io.clear()
            if panicked:
                await self._end(w, VM.decide(VM.GuestFacts(0.0, False, 0.0, panicked=True, now=now), s), now)
            return
        hb_age = now - max(w.last_hb, tr.booted)
        if hb_age >= SAMPLE_AFTER_S:
            total = await self.hv.io_counters(w.name, w.pid, w.spec)
            if total is not None:
                tr.io.append((now, total))
            while len(tr.io) > 1 and tr.io[1][0] <= now - s.interval_s:
                tr.io.pop(0)  # one sample at or before the interval's start is enough
        else:
            tr.io.clear()
        facts = VM.GuestFacts(
            uptime_s=now - tr.booted, hb_seen=w.last_hb > 0, hb_age_s=hb_age,
            app_age_s=None if w.app_moved is None else now - max(w.app_moved, tr.booted),
            io=tuple(tr.io), now=now, panicked=panicked)
        verdict = VM.decide(facts, s)
        if isinstance(verdict, VM.Healthy):
            tr.limited = False
            return
        # a reset, or its limit: ask etcd's count (the one that survives us), decide again
        e = await self.host.store.get(K.MONITORING + w.name)
        record = dict(e.value) if e is not None and isinstance(e.value, dict) else {}
        resets = [float(t) for t in record.get("resets", [])]
        verdict = VM.decide(replace(facts, resets=tuple(resets)), s)
        if isinstance(verdict, VM.LimitReached):
            if not tr.limited:
                tr.limited = True
                await self._event("vm-monitoring-limit", f"{w.name}: {verdict.reason}", w.name, now)
        elif isinstance(verdict, VM.Reset):
            await self._reset(w, tr, verdict, record, resets, e, now)

    async def _reset(self, w: Watched, tr: _Track, v: VM.Reset, record: dict[str, Any], resets: list[float],
                     entry: Any, now: float) -> None:
        st, key = self.host.store, K.MONITORING + w.name
        record |= {"resets": (resets + [now])[-KEEP_RESETS:],
                   "last": {"time": now, "host": self.host.me, "cause": v.cause, "reason": v.reason}}
        ev = make_event("vm-monitoring-reset", f"{w.name}: reset on {self.host.me}: {v.reason}", host=self.host.me,
                        vm=w.name, source=self.host.me, at=now, cause=v.cause)
        guard = st.unchanged(key, entry.mod_revision) if entry is not None else st.absent(key)
        if not await st.txn([st.equals(K.OWN + w.name, self.host.me), guard],
                            [st.put_op(key, record), event_put_op(st, ev)]):
            return  # no longer ours, or counted meanwhile: look again next round
        tr.booted, tr.io, tr.limited = now, [], False
        self.panics.pop(w.name, None)
        try:
            await self.hv.reset(w.name, w.pid)
        except Exception as e:  # QEMU went away meanwhile: the crash watch takes it from here
            log.warning("%s: reset failed: %s", w.name, e)

    async def _end(self, w: Watched, v: VM.Verdict, now: float) -> None:
        """A panicked guest VM monitoring does not watch: end its QEMU (the host's crash
        watch then sees it exit, as it used to when QEMU quit on a panic)."""
        if not isinstance(v, VM.EndQemu):
            return
        self.panics.pop(w.name, None)
        await self._event("guest-panicked", f"{w.name}: {v.reason} (on {self.host.me})", w.name, now)
        try:
            await self.hv.power_off(w.name, w.pid)
        except Exception as e:
            log.warning("%s: power off failed: %s", w.name, e)

    async def _event(self, kind: str, message: str, vm: str, now: float) -> None:
        st = self.host.store
        ev = make_event(kind, message, host=self.host.me, vm=vm, source=self.host.me, at=now)
        try:
            await st.txn([], [event_put_op(st, ev)])
        except StoreError:
            log.info("%s: %s", kind, message)


__all__ = ["VmMonitor", "Watched", "watched_here", "Resettable", "SAMPLE_S", "SAMPLE_AFTER_S"]
