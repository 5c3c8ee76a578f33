"""``LoadMeter`` on a real host: CPU use of each QEMU from its threads' times in
/proc/<pid>/task/*/stat (a rate between two samples), its resident memory from
/proc/<pid>/statm, and the host's from /proc/stat and /proc/meminfo."""
from __future__ import annotations

import os
import time
from typing import Mapping

from vigil.hypervisor.processes import thread_files

TICK = os.sysconf("SC_CLK_TCK")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def thread_cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds of every thread of ``pid`` (vCPU threads, I/O threads)."""
    stats = thread_files(pid, "stat")
    if stats is None:
        return None
    total = 0
    for (stat,) in stats:
        try:
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (IndexError, ValueError):
            continue
    return total / TICK


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_MB
    except (OSError, IndexError, ValueError):
        return None


def host_cpu_seconds() -> float:
    """Busy CPU seconds of the whole host (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    ticks = [int(x) for x in parts[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


def host_memory_used_mb() -> float:
    info: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, rest = line.partition(":")
            info[k] = int(rest.split()[0])
    return (info.get("MemTotal", 0) - info.get("MemAvailable", 0)) / 1024


class ProcLoadMeter:
    """Rates from the difference between this sample and the previous one (a VM first
    seen is reported from its second sample on)."""

    def __init__(self) -> None:
        self._prev: dict[int, tuple[float, float]] = {}  # pid -> (when, CPU seconds)
        self._host: tuple[float, float] | None = None

    def sample(self, pids: Mapping[str, int]) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
        now = time.monotonic()
        out: dict[str, tuple[float, float]] = {}
        seen: dict[int, tuple[float, float]] = {}
        for vm, pid in pids.items():
            cpu, rss = thread_cpu_seconds(pid), rss_mb(pid)
            if cpu is None or rss is None:
                continue
            seen[pid] = (now, cpu)
            prev = self._prev.get(pid)
            if prev is None or now <= prev[0]:
                continue  # no rate before a second sample
            out[vm] = (max(0.0, (cpu - prev[1]) / (now - prev[0])), rss)
        self._prev = seen
        try:
            busy = host_cpu_seconds()
            used = host_memory_used_mb()
        except (OSError, ValueError, IndexError):
            return out, (sum(c for c, _ in out.values()), sum(m for _, m in out.values()))
        prev_h = self._host
        self._host = (now, busy)
        if prev_h is None or now <= prev_h[0]:
            return out, (sum(c for c, _ in out.values()), used)
        return out, (max(0.0, (busy - prev_h[1]) / (now - prev_h[0])), used)

    def space(self, datastores: Mapping[str, str]) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for name, path in datastores.items():
            try:
                st = os.statvfs(path)
            except OSError:
                continue
            size = st.f_blocks * st.f_frsize / 2**20
            out[name] = (size, size - st.f_bavail * st.f_frsize / 2**20)
        return out
