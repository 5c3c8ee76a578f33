"""The agent's load report: every SAMPLE_S it samples its VMs and itself through the
environment's LoadMeter, smooths the figures (vigil.policy.load_smoothing) and writes
``load/<host>`` when they changed noticeably, at a low rate. DRS and initial placement
read them (vigil.policy.drs_load); ``vigil host list``, ``vigil vm list``, the API and
/metrics show them."""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Mapping

from vigil.env.base import Env
from vigil.policy.disk_io import DiskIo, counters, latency_changed
from vigil.policy.load_smoothing import MIN_WRITE_S, due, ewma
from vigil.store import keys as K
from vigil.store.etcd import StoreError

log = logging.getLogger("vigil.agent")

SAMPLE_S = 2.0
DISK_SAMPLE_S = 10.0  # QMP's block statistics: a session per VM, so less often (the window is 30 s)

# (VM, its QEMU's pid) -> {"blockstats": its query-blockstats answer, "guest_used_mb": its
# guest's own figure through a balloon, or None}; None when not known now
QemuStats = Callable[[str, int], Awaitable[Mapping[str, Any] | None]]


class LoadReport:
    """The smoothed figures of one host and when they were last written."""

    def __init__(self, host: str, cpus: int, memory_mb: int) -> None:
        self.host, self.cpus, self.memory_mb = host, cpus, memory_mb
        self.vms: dict[str, tuple[float, float]] = {}
        self.total: tuple[float, float] | None = None
        self.written: dict[str, Any] | None = None
        self.written_at = -1e9
        self.sampled_at: float | None = None
        self.space: dict[str, tuple[float, float]] = {}  # datastore -> (size, used MiB), as last read
        self.io = DiskIo()  # the VMs' disk latency (Storage DRS), from QEMU's block statistics
        self.io_at = -1e9
        self.guest_mb: dict[str, float] = {}  # VM -> MiB its guest says it uses (a balloon's figures)

    def fold(self, now: float, vms: Mapping[str, tuple[float, float]], host: tuple[float, float]) -> None:
        dt = now - self.sampled_at if self.sampled_at is not None else 0.0
        self.sampled_at = now
        nxt: dict[str, tuple[float, float]] = {}
        for vm, (cpu, mem) in vms.items():
            mem = self.guest_mb.get(vm, mem)  # the guest's own figure where it has a balloon, else RSS
            old = self.vms.get(vm)
            nxt[vm] = (ewma(old[0] if old else None, cpu, dt), ewma(old[1] if old else None, mem, dt))
        self.vms = nxt
        t = self.total
        self.total = (ewma(t[0] if t else None, host[0], dt), ewma(t[1] if t else None, host[1], dt))

    def record(self, wall: float) -> dict[str, Any]:
        cpu, used = self.total or (0.0, 0.0)
        disks = self.io.record()
        vms: dict[str, dict[str, Any]] = {vm: {"cpu": round(c, 3), "memory_mb": round(m)}
                                          for vm, (c, m) in sorted(self.vms.items())}
        for vm, d in disks.items():
            if vm in vms:
                vms[vm]["disks"] = d
        for vm in self.guest_mb:
            if vm in vms:
                vms[vm]["memory_from"] = "balloon"  # else its QEMU's resident size
        return {"time": round(wall, 3), "cpus": self.cpus, "memory_mb": self.memory_mb, "cpu": round(cpu, 3),
                "memory_used_mb": round(used), "vms": vms,
                "datastores": {ds: {"size_mb": round(s), "used_mb": round(u)} for ds, (s, u) in sorted(self.space.items())}}

    async def sample_qemus(self, now: float, pids: Mapping[str, int], qemu_stats: QemuStats) -> None:
        """Every DISK_SAMPLE_S: each VM's block statistics and balloon figures, one VM
        after the other (a QMP session held elsewhere, an FT checkpoint's, costs its
        timeout, 2 s, at most)."""
        if now - self.io_at < DISK_SAMPLE_S:
            return
        self.io_at = now
        got: dict[str, Any] = {}
        guest: dict[str, float] = {}
        for n in sorted(pids):
            stats = await qemu_stats(n, pids[n])
            if not stats:
                continue
            if stats.get("blockstats"):
                got[n] = counters(stats["blockstats"])
            if stats.get("guest_used_mb") is not None:
                guest[n] = float(stats["guest_used_mb"])
        self.io.fold(now, got)
        self.io.keep(set(pids))
        self.guest_mb = guest


def disks_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """A VM's disk latency moved enough since the record last written."""
    if old is None:
        return True
    ov = old.get("vms", {})
    return any(latency_changed(ov.get(vm, {}).get("disks", {}), v.get("disks", {}))
               for vm, v in new.get("vms", {}).items())


async def load_loop(env: Env, store: Any, report: LoadReport, pids: Callable[[], Mapping[str, int]],
                    datastores: Mapping[str, str] | None = None, qemu_stats: QemuStats | None = None) -> None:
    """Sample, smooth, and write when due; etcd away costs a write, nothing else.
    ``datastores`` (name -> mount path): their space is reported too (Storage DRS), and
    with ``qemu_stats`` each VM's disk latency and, where its guest has a balloon, the
    guest's own memory figure instead of its QEMU's resident size."""
    while True:
        now = env.clock.monotonic()
        running = pids()
        vms, host = env.load.sample(running)
        report.fold(now, vms, host)
        if datastores:
            report.space = env.load.space(datastores)
        if qemu_stats is not None:
            await report.sample_qemus(now, running, qemu_stats)
        rec = report.record(env.clock.time())
        since = now - report.written_at
        if due(report.written, rec, since) or (since >= MIN_WRITE_S and disks_changed(report.written, rec)):
            try:
                await store.put(K.LOAD + report.host, rec)
                report.written, report.written_at = rec, now
            except StoreError as e:
                log.debug("load report: %s", e)
        await env.clock.sleep(SAMPLE_S)


def report_load(env: Env, store: Any, report: LoadReport, vms: Mapping[str, Any],
                datastores: Mapping[str, str], qemu_stats: QemuStats | None = None) -> Any:
    """The load loop of an agent whose running VMs (objects with a ``pid``) are ``vms``."""
    return load_loop(env, store, report, lambda: {n: v.pid for n, v in list(vms.items()) if getattr(v, "pid", 0)},
                     datastores, qemu_stats)
