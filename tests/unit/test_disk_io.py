"""Disk latency from QEMU's block statistics (vigil.policy.disk_io) and its place in the
agents' load records (vigil.agent.loadreport)."""
from __future__ import annotations

import asyncio

import pytest

from vigil.agent.loadreport import LoadReport, disks_changed
from vigil.policy.disk_io import DiskAverage, DiskIo, counters, disk_index, latency_changed


def entry(i: int, rd=(0, 0), wr=(0, 0), fl=(0, 0), node: str | None = None) -> dict:
    return {"device": "", "qdev": f"/machine/peripheral/virtio-disk{i}/virtio-backend", "node-name": node or f"disk{i}",
            "stats": {"rd_operations": rd[0], "rd_total_time_ns": rd[1], "wr_operations": wr[0],
                      "wr_total_time_ns": wr[1], "flush_operations": fl[0], "flush_total_time_ns": fl[1]}}


def test_a_disk_is_named_by_its_device_whatever_its_node_is_now():
    assert disk_index(entry(2, node="disk2-m7")) == 2
    assert disk_index({"device": "", "node-name": "disk1"}) == 1
    assert disk_index({"device": "ide0-cd0"}) is None
    got = counters([entry(0, rd=(10, 5_000_000)), {"device": "pflash0", "stats": {}}])
    assert got == {0: ((10, 5_000_000), (0, 0), (0, 0))}


def test_latency_is_time_over_operations_per_kind_and_overall_weighted_by_them():
    avg = DiskAverage(counters([entry(0)])[0])
    # 10 s later: 100 reads of 2 ms, 300 writes of 10 ms, 0 flushes
    avg.fold(counters([entry(0, rd=(100, 200_000_000), wr=(300, 3_000_000_000))])[0], 10.0)
    f = avg.figures()
    assert f == {"iops": 40.0, "latency_ms": 8.0, "read_ms": 2.0, "write_ms": 10.0, "flush_ms": 0.0}


def test_smoothing_lets_one_slow_sample_move_the_latency_a_little_only():
    avg = DiskAverage(((0, 0), (0, 0), (0, 0)))
    ops, ns = 0, 0
    for _ in range(20):  # 100 writes of 1 ms every 10 s
        ops, ns = ops + 100, ns + 100 * 1_000_000
        avg.fold(((0, 0), (ops, ns), (0, 0)), 10.0)
    ops, ns = ops + 100, ns + 100 * 100_000_000  # one sample at 100 ms
    avg.fold(((0, 0), (ops, ns), (0, 0)), 10.0)
    assert 1.0 < avg.figures()["latency_ms"] < 40.0


def test_counters_that_start_again_count_as_no_io_not_as_negative():
    avg = DiskAverage(((0, 0), (1000, 10**9), (0, 0)))
    avg.fold(((0, 0), (10, 10**7), (0, 0)), 10.0)  # a new QEMU
    assert avg.figures()["iops"] == 0.0 and avg.figures()["latency_ms"] == 0.0


def test_vms_gone_are_dropped_and_a_vm_first_seen_is_reported_from_its_second_sample():
    io = DiskIo()
    io.fold(0.0, {"a": {0: ((0, 0), (0, 0), (0, 0))}})
    assert io.record() == {}
    io.fold(10.0, {"a": {0: ((0, 0), (50, 50 * 4_000_000), (0, 0))}, "b": {0: ((0, 0), (0, 0), (0, 0))}})
    assert io.record() == {"a": {"0": {"iops": 5.0, "latency_ms": 4.0, "read_ms": 0.0, "write_ms": 4.0,
                                       "flush_ms": 0.0}}}
    io.keep({"b"})
    assert io.record() == {}


def test_a_latency_change_writes_the_record_again_when_it_is_worth_it():
    a = {"0": {"latency_ms": 10.0}}
    assert not latency_changed(a, {"0": {"latency_ms": 10.9}})
    assert latency_changed(a, {"0": {"latency_ms": 13.0}})
    assert latency_changed(a, {})
    assert not latency_changed({"0": {"latency_ms": 0.2}}, {"0": {"latency_ms": 0.9}})  # under 1 ms: noise


def test_load_report_samples_block_stats_every_ten_seconds_and_reports_per_disk():
    calls: list[str] = []

    async def stats(vm: str, pid: int):
        calls.append(vm)
        n = len(calls)
        return {"blockstats": [entry(0, wr=(100 * n, 100 * n * 20_000_000))], "guest_used_mb": 90.0}

    r = LoadReport("h1", 4, 8192)
    r.fold(0.0, {"a": (0.5, 300.0)}, (0.5, 1000.0))

    async def go():
        for t in (0.0, 2.0, 4.0, 10.0):
            await r.sample_qemus(t, {"a": 1001}, stats)

    asyncio.run(go())
    assert calls == ["a", "a"]  # at 0 s and 10 s
    rec = r.record(100.0)
    assert rec["vms"]["a"]["disks"]["0"]["latency_ms"] == pytest.approx(20.0)
    r.fold(12.0, {"a": (0.5, 300.0)}, (0.5, 1000.0))  # RSS 300 MiB, the guest says 90
    rec = r.record(100.0)
    assert rec["vms"]["a"]["memory_from"] == "balloon" and rec["vms"]["a"]["memory_mb"] < 300
    assert disks_changed(None, rec)
    assert not disks_changed(rec, rec)


def test_balloon_figures_are_the_guests_used_memory_while_fresh():
    from vigil.hypervisor.balloon import STALE_S, guest_used_mb

    mib = 2**20
    st = {"last-update": 1000, "stats": {"stat-total-memory": 512 * mib, "stat-available-memory": 400 * mib,
                                         "stat-free-memory": 300 * mib, "stat-disk-caches": 50 * mib}}
    assert guest_used_mb(st, 1001) == 112.0
    assert guest_used_mb({**st, "stats": {**st["stats"], "stat-available-memory": -1}}, 1001) == 162.0
    assert guest_used_mb(st, 1000 + STALE_S + 1) is None  # the guest stopped answering
    assert guest_used_mb({"last-update": 0, "stats": {}}, 1) is None  # never asked yet
