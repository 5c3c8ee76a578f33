"""The agents' load report: /proc readings, smoothing, and when a record is written."""
from __future__ import annotations

import time

import os

from vigil.agent.loadreport import LoadReport
from vigil.env.procload import ProcLoadMeter, thread_cpu_seconds
from vigil.policy.load_smoothing import MIN_WRITE_S, changed, due, ewma


def test_ewma_follows_slowly_and_starts_at_the_first_sample():
    assert ewma(None, 4.0, 2.0) == 4.0
    x = ewma(0.0, 4.0, 2.0)  # one spike of 2 s moves a 30 s average little
    assert 0.1 < x < 0.5
    for _ in range(100):
        x = ewma(x, 4.0, 2.0)
    assert abs(x - 4.0) < 0.01


def test_a_record_is_written_when_changed_noticeably_and_not_too_often():
    a = {"cpu": 1.0, "memory_used_mb": 1000, "vms": {"v": {"cpu": 1.0, "memory_mb": 500}}}
    b = {"cpu": 1.02, "memory_used_mb": 1010, "vms": {"v": {"cpu": 1.02, "memory_mb": 505}}}
    c = {"cpu": 1.5, "memory_used_mb": 1000, "vms": {"v": {"cpu": 1.5, "memory_mb": 500}}}
    assert not changed(a, b) and changed(a, c) and changed(None, a)
    assert changed(a, {**a, "vms": {}})
    assert not due(a, c, MIN_WRITE_S / 2) and due(a, c, MIN_WRITE_S) and not due(a, b, MIN_WRITE_S)


def test_report_smooths_per_vm_and_forgets_vms_gone():
    r = LoadReport("h1", 4, 8192)
    r.fold(0.0, {"a": (2.0, 100.0), "b": (1.0, 50.0)}, (3.0, 150.0))
    r.fold(2.0, {"a": (0.0, 100.0)}, (0.0, 100.0))
    rec = r.record(10.0)
    assert set(rec["vms"]) == {"a"} and 1.5 < rec["vms"]["a"]["cpu"] < 2.0
    assert rec["cpus"] == 4 and rec["memory_mb"] == 8192


def test_proc_meter_reads_this_process_from_its_second_sample():
    m = ProcLoadMeter()
    me = {"self": os.getpid()}
    first, host = m.sample(me)
    assert first == {} and host[1] > 0
    sum(i * i for i in range(200000))  # burn a little CPU
    second, _ = m.sample(me)
    cpu, rss = second["self"]
    assert cpu >= 0 and rss > 1
    assert thread_cpu_seconds(os.getpid()) > 0
    assert m.sample({"gone": 999999999})[0] == {}


def test_agent_metrics_show_the_smoothed_load():
    from vigil.agent.metrics import HostCollector

    r = LoadReport("h1", 4, 8192)
    r.fold(0.0, {"a": (1.5, 300.0)}, (1.5, 300.0))
    fams = {f.name: f for f in HostCollector("h1", lambda: {}, {}, r.record, time.time).collect()}
    assert fams["vigil_vm_cpu_used_cores"].samples[0].value == 1.5
    assert fams["vigil_vm_memory_in_use_bytes"].samples[0].value == 300 * 2**20
    assert fams["vigil_host_cpu_used_cores"].samples[0].value == 1.5


def test_agent_metrics_show_each_disks_latency():
    from vigil.agent.metrics import HostCollector
    from vigil.policy.disk_io import DiskAverage

    r = LoadReport("h1", 4, 8192)
    r.fold(0.0, {"a": (0.5, 100.0)}, (0.5, 100.0))
    avg = DiskAverage(((0, 0), (0, 0), (0, 0)))
    avg.fold(((0, 0), (100, 100 * 3_000_000), (0, 0)), 10.0)
    r.io.disks[("a", 0)] = avg
    fams = {f.name: f for f in HostCollector("h1", lambda: {}, {}, r.record, time.time).collect()}
    s = fams["vigil_vm_disk_latency_seconds"].samples[0]
    assert s.labels == {"vm": "a", "host": "h1", "disk": "0"} and abs(s.value - 0.003) < 1e-9
    assert fams["vigil_vm_disk_operations_per_second"].samples[0].value == 10.0


def test_a_change_of_the_host_totals_alone_waits_longer():
    from vigil.policy.load_smoothing import HOST_WRITE_S, vms_changed

    a = {"cpu": 1.0, "memory_used_mb": 1000, "vms": {"v": {"cpu": 1.0, "memory_mb": 500}}}
    busy = {**a, "cpu": 1.5}  # the host's other work, not its VMs
    assert changed(a, busy) and not vms_changed(a, busy)
    assert not due(a, busy, MIN_WRITE_S) and due(a, busy, HOST_WRITE_S)
    vm = {**a, "vms": {"v": {"cpu": 1.5, "memory_mb": 500}}}  # what DRS reads: as soon as before
    assert vms_changed(a, vm) and due(a, vm, MIN_WRITE_S)
