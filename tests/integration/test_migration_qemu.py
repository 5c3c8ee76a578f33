"""Live migration and disk mirroring between real QEMUs running the lab guest image.

Each test starts its QEMUs directly in a temp dir (vigil.lab.standalone: no lab, no
namespaces) and migrates over 127.0.0.1. Every QEMU started here is SIGCONT'd and killed by
pid in the fixture teardown. Timeouts are hang guards only.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from vigil import pki
from vigil.hypervisor import migration as MG
from vigil.hypervisor import mirror as MR
from vigil.hypervisor import qemu as Q
from vigil.hypervisor.guest_image import read_records
from vigil.lab.standalone import Standalone, free_port, heartbeats, unavailable, wait_serial

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(unavailable() is not None, reason=unavailable() or ""),
    pytest.mark.timeout(240),
]


async def assert_continues(paths: Q.VMPaths, before: Q.Heartbeat, disk: Path) -> list[Q.Heartbeat]:
    """The guest on `paths` is the same boot as `before`, its heartbeat and records go on."""
    hbs = await heartbeats(paths, 3, timeout=30)
    assert {h.boot_id for h in hbs} == {before.boot_id}, "the guest rebooted"
    assert hbs[0].seq >= before.seq and hbs[-1].seq > before.seq
    assert hbs[-1].uptime_ms > before.uptime_ms
    assert hbs[-1].acked > before.acked, "acked records stopped growing"
    recs = read_records(disk)
    assert recs == list(range(len(recs))), "records missing on the disk"
    assert recs[-1] >= hbs[-1].acked
    return hbs


async def test_migrate_shared_storage_then_busy_guest_with_postcopy(rig: Standalone) -> None:
    spec = rig.spec(memory_mb=256, extra="vigil.workload=1 vigil.dirty_mb=48")
    src_paths, src = await rig.start(spec, "run-a")
    await wait_serial(src_paths, "vigil-guest: dirtying")
    before = (await heartbeats(src_paths, 2))[-1]

    # 1. vigil's policy, busy guest: completes, short downtime, guest goes on
    dst_paths, dst, uri = await rig.incoming(spec, MG.VIGIL_POLICY, "run-b")
    seen: list[MG.MigrationProgress] = []
    res = await asyncio.wait_for(MG.migrate(src, uri, MG.VIGIL_POLICY, seen.append), 120)
    print("vigil policy:", res)
    assert await src.status() == "postmigrate"
    assert await MG.wait_incoming_done(dst) == "running"
    assert res.ram_total >= 200 * 2**20 and res.ram_transferred > 0
    assert res.downtime_ms < 1000 and res.total_time_ms > 0
    assert seen and seen[-1].status == "completed"
    assert any(p.status == "active" and p.transferred > 0 for p in seen)
    hbs = await assert_continues(dst_paths, before, rig.disk(spec))
    await src.power_off()

    # 2. a link slower than the guest dirties memory: pre-copy cannot converge, post-copy
    # takes over (the VM goes back to a new QEMU in run-a)
    slow = MG.MigrationPolicy(max_bandwidth_mib_s=24, postcopy_after_s=3.0)
    back_paths, back, uri2 = await rig.incoming(spec, slow, "run-c")
    res2 = await asyncio.wait_for(MG.migrate(dst, uri2, slow), 120)
    print("capped link:", res2)
    assert res2.postcopy and res2.postcopy_reason
    assert await dst.status() == "postmigrate"
    assert await MG.wait_incoming_done(back) == "running"
    await assert_continues(back_paths, hbs[-1], rig.disk(spec))


async def test_cancel_keeps_source_running(rig: Standalone) -> None:
    spec = rig.spec(memory_mb=256, extra="vigil.workload=1 vigil.dirty_mb=32")
    src_paths, src = await rig.start(spec, "run-a")
    await wait_serial(src_paths, "vigil-guest: dirtying")
    before = (await heartbeats(src_paths, 2))[-1]
    policy = MG.MigrationPolicy(max_bandwidth_mib_s=16, postcopy_fallback=False)
    dst_paths, dst, uri = await rig.incoming(spec, policy, "run-b")
    cancel = asyncio.Event()
    seen: list[MG.MigrationProgress] = []

    def progress(p: MG.MigrationProgress) -> None:
        seen.append(p)
        if p.transferred > 8 * 2**20:
            cancel.set()

    with pytest.raises(MG.MigrationCancelled, match="cancelled by request"):
        await asyncio.wait_for(MG.migrate(src, uri, policy, progress, cancel), 60)
    assert await src.status() == "running"
    assert seen[-1].status == "active"
    await assert_continues(src_paths, before, rig.disk(spec))
    # the destination gives up by itself once the source cancelled
    assert dst.pid is not None and await Q.wait_pid_exit(dst.pid, 15)


async def test_stalled_migration_is_cancelled(rig: Standalone) -> None:
    spec = rig.spec(memory_mb=256)
    src_paths, src = await rig.start(spec, "run-a")
    before = (await heartbeats(src_paths, 2))[-1]
    policy = MG.MigrationPolicy(max_bandwidth_mib_s=32, stall_timeout_s=2.0)
    dst_paths, dst, uri = await rig.incoming(spec, policy, "run-b")
    assert dst.pid is not None
    seen: list[MG.MigrationProgress] = []

    def progress(p: MG.MigrationProgress) -> None:
        seen.append(p)
        if p.transferred > 4 * 2**20 and dst.pid not in rig.stopped:
            rig.sigstop(dst.pid)  # the destination stops reading: the link is "cut"

    t0 = time.monotonic()
    with pytest.raises(MG.MigrationCancelled, match="stalled"):
        await asyncio.wait_for(MG.migrate(src, uri, policy, progress), 60)
    assert time.monotonic() - t0 < 30
    assert dst.pid in rig.stopped
    assert not any(p.postcopy for p in seen)
    assert await src.status() == "running"
    await assert_continues(src_paths, before, rig.disk(spec))


async def test_tls_migration(rig: Standalone) -> None:
    ca = rig.root / "ca"
    pki.create_ca(ca)
    tls = pki.create_host_certs(ca, rig.root / "tls", "localhost", ips=("127.0.0.1",))
    for f in ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem"):
        assert (tls / f).exists()
    spec = rig.spec(memory_mb=128)
    src_paths, src = await rig.start(spec, "run-a", tls_dir=tls)
    before = (await heartbeats(src_paths, 2))[-1]
    policy = MG.MigrationPolicy(tls=True)
    dst_paths, dst, uri = await rig.incoming(spec, policy, "run-b", tls_dir=tls)
    res = await asyncio.wait_for(MG.migrate(src, uri, policy), 60)
    print("tls:", res)
    assert await src.status() == "postmigrate"
    assert await MG.wait_incoming_done(dst) == "running"
    await assert_continues(dst_paths, before, rig.disk(spec))

    # a source without TLS cannot migrate into a TLS listener
    await src.power_off()
    plain_paths, plain, uri2 = await rig.incoming(spec, policy, "run-c", tls_dir=tls)
    with pytest.raises(MG.MigrationFailed):
        await asyncio.wait_for(MG.migrate(dst, uri2, MG.MigrationPolicy(stall_timeout_s=5)), 60)
    assert await MG.wait_incoming_done(dst) == "running"


async def test_move_disk_while_writing(rig: Standalone) -> None:
    spec = rig.spec(memory_mb=128)
    paths, conn = await rig.start(spec, "run-a")
    await heartbeats(paths, 2)
    old = rig.disk(spec)
    new = Path(rig.ds["ds2"]) / "vm1/root-moved.qcow2"
    seen: list[MR.MirrorProgress] = []
    res = await asyncio.wait_for(MR.move_disk(conn, 0, new, progress=seen.append), 60)
    print("move_disk:", res, f"{res.mb_s:.0f} MiB/s")
    assert res.old_node == "disk0" and res.new_node != "disk0"
    assert await MR.current_node(conn, 0) == res.new_node
    assert res.time_to_ready_s > 0 and res.bytes > 0
    await MR.release_node(conn, res.old_node)
    assert conn.pid is not None
    fds = {os.readlink(f"/proc/{conn.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{conn.pid}/fd")}
    assert str(new) in fds and str(old) not in fds
    # nobody holds the old image's lock any more (qemu-img info without -U)
    subprocess.run(["qemu-img", "info", str(old)], check=True, capture_output=True)
    hbs = await heartbeats(paths, 3)
    assert hbs[-1].acked > hbs[0].acked
    recs = read_records(new)
    assert recs == list(range(len(recs))) and recs[-1] >= hbs[-1].acked
    old.unlink()

    # cancelled before the pivot: the VM stays on its disk, the new file is gone
    cancel = asyncio.Event()
    cancel.set()
    other = Path(rig.ds["ds1"]) / "vm1/root-again.qcow2"
    with pytest.raises(MR.MirrorCancelled):
        await MR.move_disk(conn, 0, other, cancel=cancel)
    assert await MR.current_node(conn, 0) == res.new_node
    assert not other.exists()
    assert not await conn.execute("query-block-jobs")


async def test_shared_nothing_migration(rig: Standalone) -> None:
    src_spec = rig.spec(memory_mb=128, ds="ds1")
    dst_spec = rig.spec(memory_mb=128, ds="ds2")  # same VM, its disk on the other datastore
    src_paths, src = await rig.start(src_spec, "run-a")
    before = (await heartbeats(src_paths, 2))[-1]
    dst_paths, dst, uri = await rig.incoming(dst_spec, MG.VIGIL_POLICY, "run-b")
    assert rig.disk(dst_spec).exists() and read_records(rig.disk(dst_spec)) == []
    node = await MR.current_node(src, 0)
    res = await asyncio.wait_for(
        MG.migrate_shared_nothing(src, dst, uri, "127.0.0.1", free_port(), {node: Q.disk_node_name(0)}), 120)
    print("shared-nothing:", res)
    assert res.disk_bytes > 0
    assert await src.status() == "postmigrate"
    assert await MG.wait_incoming_done(dst) == "running"
    assert not await src.execute("query-block-jobs")
    hbs = await assert_continues(dst_paths, before, rig.disk(dst_spec))
    # the source's disk stops where the source stopped; the destination's holds all of it
    assert read_records(rig.disk(src_spec))[-1] <= read_records(rig.disk(dst_spec))[-1]
    assert hbs[-1].acked > before.acked
