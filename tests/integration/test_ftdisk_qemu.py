"""An FT primary's disk writes in step with its checkpoints, against real QEMUs: overlays
per checkpoint, merged once a later checkpoint is safe, and a failover that takes the
disk back to the standby's checkpoint (the guest then goes on without a reboot and every
record it acknowledged before that checkpoint is on disk).
"""
from __future__ import annotations

import asyncio

import pytest

from vigil.hypervisor import ft as FT
from vigil.hypervisor import ftdisk as FTD
from vigil.hypervisor import qemu as Q
from vigil.hypervisor.guest_image import read_records
from vigil.lab.standalone import Standalone, loopback_uri, unavailable

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(unavailable() is not None, reason=unavailable() or ""),
    pytest.mark.timeout(300),
]


async def _acked_past(paths: Q.VMPaths, n: int, timeout: float = 60.0) -> tuple[int, str]:
    """The guest's acknowledged record count once it is past ``n``, from a live heartbeat.
    The guest sends one a second; what it wrote while no one read comes first, in a burst,
    on connecting (seen on a loaded machine: a stale "acked" taken for a fresh one made the
    base image look written after a checkpoint). So a heartbeat counts only when it came
    at least half a second after the one before it on the same connection."""
    async def wait() -> tuple[int, str]:
        async with Q.GuestChannel(paths) as chan:
            last = None
            async for hb in chan:
                live = last is not None and hb.received - last >= 0.5
                last = hb.received
                if live and hb.acked > n:
                    return hb.acked, hb.boot_id
        raise AssertionError("the guest's heartbeat channel closed")
    return await asyncio.wait_for(wait(), timeout)


async def _checkpoint(rig: Standalone, spec, src: Q.QMPConn, seq: int) -> tuple[Q.VMPaths, Q.QMPConn]:
    """One checkpoint into a new standby, the primary's writes split at it."""
    paths, sb = await rig.start(spec, standby=True)
    uri = loopback_uri()
    await FT.prepare_standby(sb, uri)
    await FT.checkpoint(src, uri)
    await FTD.hold_writes(src, spec, rig.ds, seq)
    await FT.resume(src)
    for _ in range(200):  # the standby finishes loading a moment after the source completed
        if await FT.standby_state(sb) == "committed":
            break
        await asyncio.sleep(0.05)
    assert await FT.standby_state(sb) == "committed"
    return paths, sb


async def _primary(rig: Standalone):  # noqa: ANN202
    """A running workload guest: its spec, disk image, paths, QMP, last acked record, boot id."""
    spec = rig.spec()
    paths, src = await rig.start(spec)
    acked, boot = await _acked_past(paths, 3)
    return spec, rig.disk(spec), paths, src, acked, boot


async def test_disk_writes_follow_the_checkpoints_and_a_failover_takes_the_disk_back(rig: Standalone) -> None:
    spec, image, paths, src, acked, boot = await _primary(rig)

    await _checkpoint(rig, spec, src, 1)
    assert [s for s, _ in FTD.overlays(image)] == [1]
    acked, _ = await _acked_past(paths, acked + 3)
    # the base image has nothing written after checkpoint 1; the chain has it all
    assert set(read_records(FTD.chain_top(image))) >= set(range(acked + 1))
    assert max(read_records(image)) < acked

    _, sb2 = await _checkpoint(rig, spec, src, 2)
    acked2, _ = await _acked_past(paths, acked + 3)  # acknowledged before checkpoint 2 -> survives
    assert await FTD.commit_before(src, spec, rig.ds, 2) == 1
    assert [s for s, _ in FTD.overlays(image)] == [2]
    assert set(read_records(image)) >= set(range(acked + 1))
    _, sb3 = await _checkpoint(rig, spec, src, 3)
    after3, _ = await _acked_past(paths, acked2 + 3)  # written after checkpoint 3 only

    # the primary dies; its secondary goes live from checkpoint 3
    Q.kill_pid(src.pid)
    await Q.wait_pid_exit(src.pid, 10)
    assert await FTD.settle(spec, rig.ds, upto=3) == 1
    assert FTD.overlays(image) == []
    on_disk = set(read_records(image))
    assert on_disk >= set(range(acked2 + 1))
    assert max(on_disk) < after3  # writes made after checkpoint 3 are gone with the primary
    await FT.go_live(sb3)
    _, boot3 = await _acked_past(sb3.paths, max(on_disk))
    assert boot3 == boot  # the same boot: no restart


async def test_turning_ft_off_folds_the_overlays_back(rig: Standalone) -> None:
    spec, image, paths, src, acked, _ = await _primary(rig)
    await _checkpoint(rig, spec, src, 1)
    await _checkpoint(rig, spec, src, 2)
    acked, _ = await _acked_past(paths, acked + 3)
    assert len(FTD.overlays(image)) == 2
    assert await FTD.collapse(src, spec, rig.ds) == 2
    assert FTD.overlays(image) == [] and FTD.chain_top(image) == image
    acked, _ = await _acked_past(paths, acked + 3)  # writing on, on the base image
    await asyncio.wait_for(src.shutdown(timeout=30), 60)
    assert set(read_records(image)) >= set(range(acked + 1))
