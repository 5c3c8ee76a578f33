"""Each agent's own /metrics (prometheus-client, plain HTTP on the host's address): what only
the host sees. Its QEMUs' CPU time and resident memory (from /proc), and the age of every
host's heartbeat file on each datastore as this host reads it through its own mounts (a
datastore one host cannot reach shows there first), and the fences its controller carried
out while it led (vigil_fence_total). The cluster's view is the API's
/metrics; this one is scraped per host, like a node exporter.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vigil.controller.fence import COUNTS as FENCES
from vigil.env import dsheartbeat

log = logging.getLogger("vigil.agent")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def qemu_usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, user and system, of every thread; resident bytes) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK, rss_pages * PAGE


def heartbeat_ages(datastores: Mapping[str, str], now: float) -> Iterable[tuple[str, str, float]]:
    """(datastore, host, seconds since its heartbeat file changed) as seen from here."""
    for ds, path in datastores.items():
        d = dsheartbeat.hb_dir(path)
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.name.endswith(".json"):
                try:
                    yield ds, e.name[:-5], max(0.0, now - e.stat().st_mtime)
                except OSError:
                    continue


class HostCollector:
    def __init__(self, host: str, vms: Callable[[], Mapping[str, int]], datastores: Mapping[str, str],
                 load: Callable[[float], Mapping[str, Any]] | None, now: Callable[[], float]) -> None:
        self.host, self.vms, self.datastores, self.load, self.now = host, vms, datastores, load, now

    def collect(self) -> Iterable[Any]:
        cpu = CounterMetricFamily("vigil_vm_cpu_seconds", "CPU time of the VM's QEMU process", labels=["vm", "host"])
        rss = GaugeMetricFamily("vigil_vm_rss_bytes", "resident memory of the VM's QEMU process", labels=["vm", "host"])
        for vm, pid in sorted(self.vms().items()):
            u = qemu_usage(pid)
            if u is not None:
                cpu.add_metric([vm, self.host], u[0])
                rss.add_metric([vm, self.host], u[1])
        age = GaugeMetricFamily("vigil_datastore_heartbeat_age_seconds",
                                "time since a host's heartbeat file on a datastore changed, as this host reads it",
                                labels=["datastore", "host", "observer"])
        for ds, h, a in heartbeat_ages(self.datastores, self.now()):
            age.add_metric([ds, h, self.host], a)
        fences = CounterMetricFamily("vigil_fence", "fences through a host's BMC carried out by this agent's "
                                     "controller (while it led), by result", labels=["host", "driver", "result"])
        for (h, driver, result), n in sorted(FENCES.items()):
            fences.add_metric([h, driver, result], n)
        return [cpu, rss, age, fences] + (self._smoothed(self.load(self.now())) if self.load is not None else [])

    def _smoothed(self, rec: Mapping[str, Any]) -> list[Any]:
        """The load report's smoothed figures (what DRS weighs): cores and MiB in use."""
        cores = GaugeMetricFamily("vigil_vm_cpu_used_cores", "CPU the VM's QEMU threads use, smoothed",
                                  labels=["vm", "host"])
        used = GaugeMetricFamily("vigil_vm_memory_in_use_bytes", "resident memory of the VM's QEMU (its guest's "
                                 "own figure where it has a balloon), smoothed", labels=["vm", "host"])
        lat = GaugeMetricFamily("vigil_vm_disk_latency_seconds", "mean time of a disk's operations, smoothed "
                                "(Storage DRS)", labels=["vm", "host", "disk"])
        ops = GaugeMetricFamily("vigil_vm_disk_operations_per_second", "a disk's operations, smoothed",
                                labels=["vm", "host", "disk"])
        for vm, v in sorted(rec.get("vms", {}).items()):
            cores.add_metric([vm, self.host], float(v.get("cpu", 0.0)))
            used.add_metric([vm, self.host], float(v.get("memory_mb", 0.0)) * 2**20)
            for i, d in sorted((v.get("disks") or {}).items()):
                lat.add_metric([vm, self.host, str(i)], float(d.get("latency_ms", 0.0)) / 1000)
                ops.add_metric([vm, self.host, str(i)], float(d.get("iops", 0.0)))
        host = GaugeMetricFamily("vigil_host_cpu_used_cores", "CPU the host uses, smoothed", labels=["host"])
        host.add_metric([self.host], float(rec.get("cpu", 0.0)))
        return [cores, used, host, lat, ops]


def start(listen: str, host: str, vms: Mapping[str, Any], datastores: Mapping[str, str],
          load: Callable[[float], Mapping[str, Any]] | None, now: Callable[[], float]) -> None:
    """Serve in a thread of its own (prometheus-client's server): a scrape never waits on
    the agent's event loop, nor the loop on a scrape. ``now``: the environment's wall clock. ``vms``: the agent's running VMs
    (objects with a ``pid``), read at each scrape. A failure is logged, not raised:
    metrics are not worth failing the agent for."""
    collector = HostCollector(host, lambda: {n: v.pid for n, v in list(vms.items()) if v.pid}, datastores, load, now)
    addr, _, port = listen.rpartition(":")
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)  # type: ignore[arg-type]
    try:
        start_http_server(int(port), addr=addr.strip("[]"), registry=reg)
    except (OSError, ValueError) as e:
        log.warning("cannot serve metrics on %s: %s", listen, e)
