"""Copying a running VM's disks: Storage vMotion and the disk half of a shared-nothing migration.

Both are QEMU ``blockdev-mirror`` jobs (``sync: full``): the job copies the whole image
while the guest keeps writing, tracks what the guest dirties meanwhile, and reports
``BLOCK_JOB_READY`` once source and target are in sync; from then on every guest write
goes to both until the job ends. How it ends is the difference:

- :func:`move_disk` (Storage vMotion, one QEMU): ``job-complete`` *pivots* the device onto
  the new image; the old node stays open, unused, until the caller (who first updates the
  VM spec) drops it with :func:`release_node` and removes its file.
- :func:`mirror_to_nbd` (shared-nothing migration): the target is the destination QEMU's
  disk, exported over NBD by :func:`nbd_export`. The job must never pivot (the source
  would then run on the remote export); it is ended by :func:`finish_mirrors`
  (``block-job-cancel`` of a READY job: QEMU copies the last dirty blocks, then stops
  without pivot) while the source VM is stopped at the migration's switchover, so the
  destination starts on a disk that holds every write the guest made.

Node names: the VM's disks start as ``disk{i}`` (:func:`vigil.hypervisor.qemu.disk_node_name`);
after a move the device runs on a new node, so use :func:`current_node` to find it.

The parts: vigil.hypervisor.block_job (the job, its progress and errors),
vigil.hypervisor.block_nodes (the block graph), vigil.hypervisor.nbd_mirror (the NBD side);
this module holds Storage vMotion and re-exports the rest, so callers use one name.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from vigil.hypervisor.block_job import (JOB_EVENTS, MiB, POLL_S, MirrorCancelled, MirrorFailed, MirrorProgress,
                                        MirrorResult, _Job, _start_mirror)
from vigil.hypervisor.block_nodes import (_create_image, _new_node_name, current_node, node_info, release_node,
                                          virtual_size)
from vigil.hypervisor.nbd_mirror import (NbdExport, NbdMirrors, _drop_clients, abort_mirrors, finish_mirrors,
                                         mirror_to_nbd, nbd_export, nbd_stop)
from vigil.hypervisor.qemu import QMPConn

__all__ = [
    "JOB_EVENTS", "MiB", "POLL_S", "MirrorCancelled", "MirrorFailed", "MirrorProgress", "MirrorResult",
    "current_node", "node_info", "release_node", "virtual_size", "move_disk", "pivot_disk",
    "NbdExport", "NbdMirrors", "abort_mirrors", "finish_mirrors", "mirror_to_nbd", "nbd_export", "nbd_stop",
]
_ = (_Job, _drop_clients)  # re-exported for vigil.hypervisor.ftdisk and tests


async def move_disk(
    conn: QMPConn,
    disk_index: int,
    new_path: Path,
    size_mb: int | None = None,
    progress: Callable[[MirrorProgress], None] | None = None,
    cancel: asyncio.Event | None = None,
    *,
    ready_timeout_s: float | None = None,
    buf_size: int | None = None,
    speed: int = 0,
) -> MirrorResult:
    """Move a running VM's disk to ``new_path`` (a new qcow2 of the same virtual size).

    On return the device runs on ``result.new_node``; the old node (``result.old_node``)
    is still open: update the VM spec, then :func:`release_node` it and delete its file.
    If ``cancel`` is set before the pivot, or anything fails, the VM stays on its old
    disk, the new file is removed and MirrorCancelled/MirrorFailed is raised.
    """
    new_path = Path(new_path)
    old = await current_node(conn, disk_index)
    size = size_mb * MiB if size_mb is not None else await virtual_size(conn, old)
    await _create_image(new_path, size)
    new = _new_node_name(f"disk{disk_index}")
    extra: dict[str, Any] = {}
    if buf_size:
        extra["buf-size"] = buf_size
    if speed:
        extra["speed"] = speed  # bytes/s
    blockdev = {"driver": "qcow2", "node-name": new,
                "file": {"driver": "file", "filename": str(new_path), "node-name": f"{new}-f"}}

    def drop_image() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(new_path)

    res = await pivot_disk(conn, disk_index, blockdev, progress, cancel, ready_timeout_s=ready_timeout_s,
                           extra=extra, undo=drop_image)
    return dataclasses.replace(res, new_path=new_path)


async def pivot_disk(
    conn: QMPConn,
    disk_index: int,
    blockdev: dict[str, Any],
    progress: Callable[[MirrorProgress], None] | None = None,
    cancel: asyncio.Event | None = None,
    *,
    ready_timeout_s: float | None = None,
    extra: dict[str, Any] | None = None,
    on_ready: Callable[[], Awaitable[None]] | None = None,
    undo: Callable[[], None] | None = None,
) -> MirrorResult:
    """Mirror the disk into the new node ``blockdev`` describes (its images made by the
    caller) and pivot the device onto it; ``on_ready`` runs once both are in sync, just
    before the pivot. The old node stays open (see :func:`move_disk`). On failure or
    ``cancel`` before the pivot, the new node is dropped, ``undo`` runs (to remove the new
    images) and the VM runs on as before."""
    t0 = time.monotonic()
    old = await current_node(conn, disk_index)
    new = str(blockdev["node-name"])
    added = pivoted = False
    job: _Job | None = None
    with conn.listener(JOB_EVENTS) as events:
        try:
            await conn.execute("blockdev-add", blockdev)
            added = True
            job = await _start_mirror(conn, f"move-{new}", old, new, extra or {})
            await job.wait_ready(events, progress, cancel, ready_timeout_s)
            if on_ready is not None:
                await on_ready()
            t_pivot = time.monotonic()
            await conn.execute("job-complete", {"id": job.job_id})
            end = await job.wait_end(events, 120.0)
            pivot_s = time.monotonic() - t_pivot
            if end.get("error"):
                raise MirrorFailed(f"VM {conn.name}: pivot of {job.job_id} failed: {end['error']}")
            pivoted = True
            now = await current_node(conn, disk_index)
            if now != new:
                raise MirrorFailed(f"VM {conn.name}: after the pivot the disk runs on {now!r}, not {new!r}")
        except BaseException:
            if not pivoted:
                if job is not None and job.ended is None:
                    with contextlib.suppress(Exception):
                        await job.cancel(events, force=True, timeout=30.0)
                if added:
                    with contextlib.suppress(Exception):
                        await release_node(conn, new)
                if undo is not None:
                    undo()
            raise
    assert job.ready_at is not None
    return MirrorResult(
        job_id=job.job_id, bytes=job.ready_bytes, time_to_ready_s=job.ready_at - job.t0, pivot_s=pivot_s,
        total_s=time.monotonic() - t0, old_node=old, new_node=new,
    )
