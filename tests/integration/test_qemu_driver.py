"""The QEMU driver against real QEMUs running the lab guest image.

Needs root, qemu-system-x86_64 and busybox-static (scripts/install-deps.sh). Every QEMU
started here is killed by pid in the fixture teardown. Timeouts are hang guards only.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from vigil.hypervisor import accel as A
from vigil.hypervisor import qemu as Q
from vigil.hypervisor.guest_image import GuestImage, read_records, record_boot_ids
from vigil.hypervisor.iostats import system_reset
from vigil.hypervisor.panics import guest_panics
from vigil.lab.standalone import Standalone, heartbeats, unavailable

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(unavailable() is not None, reason=unavailable() or ""),
    pytest.mark.timeout(300),
]


async def test_vm_lifecycle(rig: Standalone) -> None:
    spec = rig.spec()
    paths = rig.paths()
    pid = await rig.start_pid(spec, paths)
    assert Q.pid_alive(pid)
    disk = rig.disk(spec)
    assert disk.exists()

    async with Q.QMPConn(paths, pid) as qmp:
        assert await qmp.status() == "running"

    # guest heartbeats arrive, seq grows, acked records advance
    hbs = await heartbeats(paths, 4, timeout=60)
    assert [h.seq for h in hbs[1:]] == list(range(hbs[1].seq, hbs[1].seq + len(hbs) - 1))
    assert len({h.boot_id for h in hbs}) == 1
    assert hbs[-1].acked > hbs[1].acked >= -1
    boot1 = hbs[-1].boot_id
    acked1 = hbs[-1].acked
    assert (paths.guest_log).read_text().count("hb ") >= 4
    assert "vigil-guest: up" in paths.serial_log.read_text()

    # every acked record is on the disk, in order, from 0
    recs = read_records(disk)
    assert recs == list(range(len(recs)))
    assert recs[-1] >= acked1

    # a second QEMU on the same disk cannot start: image locking
    other = rig.paths("vm1", run="run-other")
    with pytest.raises(Q.QemuError, match="lock"):
        await rig.start_pid(spec, other)
    assert Q.find_running(rig.root / "run-other") == {}

    # an agent restarted now adopts the running VM
    assert Q.find_running(rig.root / "run") == {"vm1": pid}
    qmp = await Q.QMPConn(paths, Q.find_running(rig.root / "run")["vm1"]).connect()
    try:
        assert await qmp.status() == "running"
        # graceful shutdown via the ACPI power button
        clean = await asyncio.wait_for(qmp.shutdown(timeout=30), 60)
        assert clean
        assert not Q.pid_alive(pid)
        names = [e.name async for e in qmp.events()]
        assert "POWERDOWN" in names and "SHUTDOWN" in names
    finally:
        await qmp.close()
    assert Q.find_running(rig.root / "run") == {}

    # all acked records survived; a restart continues the numbering after the last one
    before = read_records(disk)
    assert before == list(range(len(before))) and before[-1] >= acked1
    pid2 = await rig.start_pid(spec, paths)
    assert pid2 != pid
    hbs2 = await heartbeats(paths, 3, timeout=60)
    boot2 = hbs2[-1].boot_id
    assert boot2 != boot1
    assert hbs2[-1].acked > before[-1]
    owners = record_boot_ids(disk)
    assert sorted(owners) == list(range(len(owners)))
    assert owners[before[-1]] == boot1
    assert owners[before[-1] + 1] == boot2

    async with Q.QMPConn(paths, pid2) as qmp:
        await qmp.power_off()
    assert not Q.pid_alive(pid2)


async def test_guest_panic_gives_guest_panicked_and_a_reset_brings_it_back(rig: Standalone) -> None:
    """pvpanic with ``-action panic=pause``: GUEST_PANICKED on the event monitor, the guest
    stays stopped ("guest-panicked", the QEMU stays); VM monitoring's reset (system_reset,
    then cont) boots it again."""
    spec = rig.spec(extra="vigil.panic_after=4")
    paths = rig.paths()
    pid = await rig.start_pid(spec, paths)
    first = (await heartbeats(paths, 1, timeout=60))[0].boot_id
    panics = guest_panics(paths, "vm1")
    assert await asyncio.wait_for(anext(panics), 90) in ("pause", "guest-panicked")
    async with Q.QMPConn(paths, pid) as qmp:
        assert await qmp.status() == "guest-panicked"
    assert Q.pid_alive(pid)
    await system_reset(paths, pid, "vm1")
    async with Q.QMPConn(paths, pid) as qmp:
        assert await qmp.status() == "running"
    hbs = await heartbeats(paths, 1, timeout=60)
    assert hbs[-1].boot_id != first
    await panics.aclose()


async def test_power_off_and_second_start_refused(rig: Standalone) -> None:
    spec = rig.spec(extra="")
    paths = rig.paths()
    pid = await rig.start_pid(spec, paths)
    with pytest.raises(Q.QemuError, match="already runs"):
        await Q.start(spec, paths, rig.accel, rig.ds)
    qmp = await Q.QMPConn(paths).connect()
    try:
        assert qmp.pid == pid
        await asyncio.wait_for(qmp.power_off(), 30)
    finally:
        await qmp.close()
    assert not Q.pid_alive(pid)
    assert Q.find_running(rig.root / "run") == {}


async def test_shutdown_falls_back_to_power_off(rig: Standalone) -> None:
    # Right after start the guest has no ACPI button driver yet: the power button is lost,
    # so shutdown() must end the VM by power off after its timeout.
    spec = rig.spec(extra="")
    paths = rig.paths()
    pid = await rig.start_pid(spec, paths)
    qmp = await Q.QMPConn(paths, pid).connect()
    try:
        await asyncio.wait_for(qmp.shutdown(timeout=0.2), 60)
    finally:
        await qmp.close()
    assert not Q.pid_alive(pid)


def test_probe_accel_cached(accel: str, tmp_path: Path) -> None:
    (tmp_path / "accel.json").write_text('{"accel": "%s", "host_boot_id": "%s"}' % (accel, A.host_boot_id()))
    assert A.probe_accel(tmp_path, None) == accel  # from the cache: no guest needed, no probe


def test_probe_accel_of_another_boot_probes_again(image: GuestImage, tmp_path: Path) -> None:
    (tmp_path / "accel.json").write_text('{"accel": "kvm", "host_boot_id": "an-older-boot"}')
    assert A.probe_accel(tmp_path, image) in ("kvm", "tcg")
    assert json.loads((tmp_path / "accel.json").read_text())["host_boot_id"] == A.host_boot_id()
