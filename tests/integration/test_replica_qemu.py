"""A disk on two datastores (QEMU quorum) against a real QEMU and real I/O errors.

Each datastore is its own ext4 file system on a loop device; the fault is the kernel's
file system shutdown, after which every I/O on it fails with EIO, open files included.
Every QEMU, mount and loop device made here is removed at the end.
"""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from vigil.hypervisor import qemu as Q
from vigil.hypervisor import replica as R
from vigil.lab.datastores import shutdown_fs
from vigil.hypervisor.guest_image import GuestImage, read_records
from vigil.lab.standalone import Standalone, heartbeats, standalone, unavailable

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(unavailable() is not None, reason=unavailable() or ""),
    pytest.mark.timeout(300),
]


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


class Array:
    """One ext4 file system on a loop device, mounted at ``mnt``."""

    def __init__(self, root: Path, name: str) -> None:
        self.image = root / f"{name}.img"
        self.mnt = root / name
        self.mnt.mkdir()
        _run("truncate", "-s", "1G", str(self.image))
        _run("mkfs.ext4", "-q", "-F", str(self.image))
        self.dev = _run("losetup", "--find", "--show", str(self.image))
        self.mount()

    def mount(self) -> None:
        _run("mount", self.dev, str(self.mnt))

    def fail(self) -> None:
        shutdown_fs(self.mnt, self.dev)

    def come_back(self) -> None:
        _run("umount", str(self.mnt))
        subprocess.run(["e2fsck", "-fy", self.dev], capture_output=True, timeout=120, check=False)
        self.mount()

    def remove(self) -> None:
        """Unmount (retried while the last QEMU closes its files) and detach."""
        deadline = time.monotonic() + 15
        while subprocess.run(["mountpoint", "-q", str(self.mnt)], check=False).returncode == 0:
            if subprocess.run(["umount", str(self.mnt)], capture_output=True, check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot unmount {self.mnt}")
            time.sleep(0.2)
        subprocess.run(["losetup", "-d", self.dev], capture_output=True, check=False)


@pytest.fixture
def arrays(tmp_path: Path) -> Iterator[dict[str, Array]]:
    made: dict[str, Array] = {}
    try:
        for name in ("ds1", "ds2"):
            made[name] = Array(tmp_path, name)
        yield made
    finally:
        for a in made.values():
            a.remove()


@pytest.fixture
async def rig2(arrays: dict[str, Array], tmp_path: Path, image: GuestImage, accel: str):
    async with standalone(image, accel, root=tmp_path / "rig", datastores=()) as r:
        r.ds = {n: str(a.mnt) for n, a in arrays.items()}
        yield r


async def _acked_past(paths: Q.VMPaths, n: int, timeout: float = 60.0) -> int:
    """Wait until the guest acknowledged a record after ``n``; the newest acknowledged."""
    async def wait() -> int:
        while True:
            hb = (await heartbeats(paths, 1, timeout=timeout))[-1]
            if hb.acked > n:
                return hb.acked
    return await asyncio.wait_for(wait(), timeout)


async def test_disk_survives_its_primary_datastore_and_resyncs(rig2: Standalone, arrays: dict[str, Array]) -> None:
    base = rig2.spec()
    spec = replace(base, disks=(replace(base.disks[0], replica="ds2"),))
    paths, qmp = await rig2.start(spec)
    copies = {ds: Q.disk_path(spec.disks[0], rig2.ds, ds) for ds in ("ds1", "ds2")}
    assert all(p.exists() for p in copies.values())
    assert sorted((await R.copy_children(qmp, 0)).values()) == sorted(map(str, copies.values()))
    acked = await _acked_past(paths, 5)

    # the datastore of the first copy (the one reads go to) dies under the running VM
    arrays["ds1"].fail()
    with pytest.raises(OSError):
        (arrays["ds1"].mnt / "probe").write_text("x")
    acked = await _acked_past(paths, acked + 5)  # the guest writes and reads on, no error
    assert await qmp.status() == "running"

    # the dead copy leaves the quorum: its file is closed and the datastore can come back
    assert await R.drop_copy(qmp, 0, copies["ds1"])
    assert not await R.drop_copy(qmp, 0, copies["ds1"])
    assert list((await R.copy_children(qmp, 0)).values()) == [str(copies["ds2"])]
    arrays["ds1"].come_back()
    acked = await _acked_past(paths, acked + 3)

    # a resync cut short (its agent died) left a mirror job behind: the next one ends it
    orphan = arrays["ds2"].mnt / "orphan.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(orphan), "64M"], check=True, timeout=60)
    await qmp.execute("blockdev-add", {"driver": "qcow2", "node-name": "disk0-s1",
                                       "file": {"driver": "file", "filename": str(orphan)}})
    await qmp.execute("blockdev-mirror", {"job-id": "move-disk0-s1", "device": "disk0", "target": "disk0-s1",
                                          "sync": "full", "copy-mode": "write-blocking"})

    # resync while the guest writes: a fresh copy joins the quorum
    seen: list[float] = []
    took = await R.resync_copy(qmp, 0, [(0, copies["ds1"], False), (1, copies["ds2"], True)],
                               progress=lambda p: seen.append(p.fraction))
    assert took > 0 and seen
    assert await qmp.execute("query-block-jobs") == []
    assert not list(copies["ds2"].parent.glob("*.resync")) and not list(copies["ds2"].parent.glob("*.prev"))
    assert sorted((await R.copy_children(qmp, 0)).values()) == sorted(map(str, copies.values()))
    acked = await _acked_past(paths, acked + 5)

    await asyncio.wait_for(qmp.shutdown(timeout=30), 60)
    for ds, path in copies.items():
        recs = read_records(path)
        assert recs == list(range(len(recs))), ds
        assert recs[-1] >= acked, ds
    rc = await asyncio.to_thread(subprocess.run, ["qemu-img", "compare", str(copies["ds1"]), str(copies["ds2"])],
                                 capture_output=True, text=True, timeout=120, check=False)
    assert rc.returncode == 0, rc.stdout + rc.stderr

    # started again with ds2's copy marked stale: a quorum of the ds1 copy alone
    with contextlib.suppress(FileNotFoundError):
        copies["ds2"].unlink()
    paths2, qmp2 = await rig2.start(spec, stale={"root": "ds2"})
    assert list((await R.copy_children(qmp2, 0)).values()) == [str(copies["ds1"])]
    await _acked_past(paths2, acked)
