"""The cluster's /metrics in Prometheus' format (prometheus-client), read from one etcd
snapshot per scrape: any API server gives the same figures.

States are one-hot gauges (``vigil_host_state{host,state}`` is 1 for the host's present
state and 0 for the others), so that ``max_over_time(...{state="failed"}[5m])`` and
friends work. Counters and histograms come from the leader's stored figures
(``vigil.policy.hastats``), so they survive API restarts and leader changes.
"""
from __future__ import annotations

from typing import Any, Iterable

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from vigil.api import readmodel
from vigil.policy import hastats
from vigil.model import HostState
from vigil.store import keys as K

HOST_STATES = [s.value for s in HostState]
VM_STATES = ("starting", "running", "stopped", "failed", "fenced", "-")  # "-": no agent reported it yet


class Snapshot:
    """A collector over figures read once (prometheus-client asks collectors synchronously)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterable[Any]:
        return iter(self.families)


def _histogram(name: str, doc: str, h: dict[str, Any]) -> HistogramMetricFamily:
    cum, buckets = 0, []
    for b, n in zip(h["buckets"], h["counts"]):
        cum += n
        buckets.append((repr(float(b)), cum))
    buckets.append(("+Inf", h["count"]))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h["sum"])


def families(c: dict[str, Any], stored: Any, etcd: list[dict[str, Any]]) -> list[Any]:
    host_state = GaugeMetricFamily("vigil_host_state", "1 for the host's state as the controller sees it",
                                   labels=["host", "state"])
    mem = GaugeMetricFamily("vigil_host_memory_bytes", "memory a host offers to VMs", labels=["host"])
    mem_used = GaugeMetricFamily("vigil_host_memory_used_bytes", "memory given to VMs on the host", labels=["host"])
    vms_on = GaugeMetricFamily("vigil_host_vms", "VMs the host runs", labels=["host"])
    leader = GaugeMetricFamily("vigil_leader", "1 for the host whose controller is active", labels=["host"])
    host_cpu = GaugeMetricFamily("vigil_host_cpu_used_cores", "CPU the host uses, smoothed (its agent's load report)",
                                 labels=["host"])
    host_rss = GaugeMetricFamily("vigil_host_memory_in_use_bytes", "memory in use on the host, smoothed",
                                 labels=["host"])
    vm_cpu = GaugeMetricFamily("vigil_vm_cpu_used_cores", "CPU the VM's QEMU uses, smoothed", labels=["vm", "host"])
    vm_rss = GaugeMetricFamily("vigil_vm_memory_in_use_bytes", "resident memory of the VM's QEMU, smoothed",
                               labels=["vm", "host"])
    for h in c["hosts"]:
        if h.get("load"):
            host_cpu.add_metric([h["name"]], float(h["load"].get("cpu") or 0.0))
            host_rss.add_metric([h["name"]], float(h["load"].get("memory_used_mb") or 0.0) * 2**20)
        for s in HOST_STATES:
            host_state.add_metric([h["name"], s], 1.0 if h["state"] == s else 0.0)
        mem.add_metric([h["name"]], h["memory_mb"] * 2**20)
        mem_used.add_metric([h["name"]], h["memory_used_mb"] * 2**20)
        vms_on.add_metric([h["name"]], len(h["vms"]))
        leader.add_metric([h["name"]], 1.0 if h["leader"] else 0.0)
    vm_state = GaugeMetricFamily("vigil_vm_state", "1 for the VM's state", labels=["vm", "state"])
    guest = GaugeMetricFamily("vigil_vm_guest_up", "1 while the guest's heartbeat arrives", labels=["vm"])
    power = GaugeMetricFamily("vigil_vm_power_on", "1 when the VM is meant to run", labels=["vm"])
    ft_interval = GaugeMetricFamily("vigil_ft_checkpoint_interval_seconds",
                                    "median time between a protected VM's checkpoints", labels=["vm"])
    for v in c["vms"]:
        states = VM_STATES if v["state"] in VM_STATES else (*VM_STATES, v["state"])
        for s in states:
            vm_state.add_metric([v["name"], s], 1.0 if v["state"] == s else 0.0)
        guest.add_metric([v["name"]], 1.0 if v["guest"] == "ok" else 0.0)
        power.add_metric([v["name"]], 1.0 if v["power"] == "on" else 0.0)
        if v.get("load"):
            vm_cpu.add_metric([v["name"], v["owner"] or ""], float(v["load"].get("cpu") or 0.0))
            vm_rss.add_metric([v["name"], v["owner"] or ""], float(v["load"].get("memory_mb") or 0.0) * 2**20)
        if v["ft"].get("interval_ms") is not None:
            ft_interval.add_metric([v["name"]], float(v["ft"]["interval_ms"]) / 1000.0)
    member = GaugeMetricFamily("vigil_etcd_member_up", "1 when the etcd member answers healthy", labels=["endpoint"])
    for m in etcd:
        member.add_metric([m["endpoint"]], 1.0 if m["healthy"] else 0.0)
    st = hastats.loaded(stored)
    restarts = CounterMetricFamily("vigil_ha_restarts", "VM restarts and FT failovers the controller ordered")
    restarts.add_metric([], st["restarts_total"])
    drs = GaugeMetricFamily("vigil_drs_imbalance", "the cluster's load imbalance at the last DRS round "
                            "(coefficient of variation / sqrt(N-1), 0..1)")
    if c.get("drs_imbalance") is not None:
        drs.add_metric([], float(c["drs_imbalance"]))
    return [host_state, mem, mem_used, vms_on, leader, host_cpu, host_rss, vm_cpu, vm_rss, drs, vm_state, guest, power, ft_interval, member, restarts,
            _histogram("vigil_ha_failover_seconds", "host failure detected to the VM running again", st["failovers"]),
            _histogram("vigil_migration_downtime_seconds", "live migrations' downtime", st["downtime"])]


async def metrics_response(app: FastAPI, accept: str) -> Response:
    store = app.state.store
    c = await readmodel.cluster(app)
    stored = await store.get(K.STATS_HA)
    rec = await store.get(K.DRS)
    if rec is not None and isinstance(rec.value, dict):
        c = {**c, "drs_imbalance": rec.value.get("imbalance")}

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Snapshot(families(c, stored.value if stored else None, await readmodel.etcd_members(app))))
    if "application/openmetrics-text" in accept:
        return Response(generate_openmetrics(reg), media_type=OPENMETRICS)
    return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)
