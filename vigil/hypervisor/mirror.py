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
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from vigil.hypervisor.qemu import QEMU_IMG, TLS_CLIENT_ID, TLS_SERVER_ID, QemuError, QMPConn, _run, disk_device_id

MiB = 1024 * 1024
POLL_S = 0.2
JOB_EVENTS = ["BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR"]


class MirrorFailed(QemuError):
    """A disk copy failed; the VM still runs on its old disk (unless the message says otherwise)."""


class MirrorCancelled(MirrorFailed):
    """A disk copy was cancelled before the pivot; the VM runs on its old disk."""


@dataclass(frozen=True)
class MirrorProgress:
    job_id: str
    offset: int  # bytes copied so far (grows past len if the guest keeps dirtying blocks)
    len: int  # bytes to copy (grows too)
    ready: bool
    elapsed_s: float
    mb_s: float  # MiB/s since the start

    @property
    def fraction(self) -> float:
        return self.offset / self.len if self.len else 0.0


@dataclass(frozen=True)
class MirrorResult:
    job_id: str
    bytes: int  # bytes the job copied up to READY
    time_to_ready_s: float
    pivot_s: float  # job-complete -> BLOCK_JOB_COMPLETED (or cancel -> done for NBD mirrors)
    total_s: float
    old_node: str
    new_node: str
    new_path: Path | None = None

    @property
    def mb_s(self) -> float:
        """Copy rate to READY in MiB/s."""
        return self.bytes / MiB / self.time_to_ready_s if self.time_to_ready_s > 0 else 0.0


# ---------------------------------------------------------------------------------------
# block graph helpers


async def current_node(conn: QMPConn, disk_index: int) -> str:
    """The node name the VM's ``disk_index``-th disk device runs on now."""
    dev = disk_device_id(disk_index)
    for b in await conn.execute("query-block"):
        qdev = str(b.get("qdev", ""))
        if qdev == dev or qdev.startswith(f"/machine/peripheral/{dev}/"):
            ins = b.get("inserted")
            if not ins:
                raise MirrorFailed(f"VM {conn.name}: disk device {dev} has no medium")
            return str(ins["node-name"])
    raise MirrorFailed(f"VM {conn.name}: no disk device {dev}")


async def node_info(conn: QMPConn, node: str) -> dict[str, Any]:
    for n in await conn.execute("query-named-block-nodes", {"flat": True}):
        if n.get("node-name") == node:
            return dict(n)
    raise MirrorFailed(f"VM {conn.name}: no block node {node!r}")


async def virtual_size(conn: QMPConn, node: str) -> int:
    info = await node_info(conn, node)
    return int(info["image"]["virtual-size"])


async def release_node(conn: QMPConn, node: str) -> None:
    """``blockdev-del`` a node no device uses any more (the old disk after a move).

    The node's file node, defined inline with it, goes with it, and so does its image lock.
    """
    await conn.execute("blockdev-del", {"node-name": node})


def _new_node_name(base: str) -> str:
    # node names: at most 31 characters, starting with a letter
    return f"{base[:16]}-{uuid.uuid4().hex[:8]}"


async def _create_image(path: Path, size_bytes: int) -> None:
    if path.exists():
        raise MirrorFailed(f"target image {path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    rc, msg = await _run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(path), str(size_bytes)])
    if rc != 0:
        raise MirrorFailed(f"qemu-img create {path}: {msg}")


# ---------------------------------------------------------------------------------------
# one mirror job


class _Job:
    """A running block job (a mirror, a commit): progress polling, READY, and its end."""

    def __init__(self, conn: QMPConn, job_id: str) -> None:
        self.conn = conn
        self.job_id = job_id
        self.t0 = time.monotonic()
        self.ready_at: float | None = None
        self.ready_bytes = 0
        self.ended: dict[str, Any] | None = None  # the COMPLETED/CANCELLED event's data + name
        self.error: str | None = None

    def _on_event(self, name: str, data: dict[str, Any]) -> None:
        if data.get("device") != self.job_id:
            return
        if name == "BLOCK_JOB_READY" and self.ready_at is None:
            self.ready_at = time.monotonic()
            self.ready_bytes = int(data.get("offset", 0))
        elif name == "BLOCK_JOB_ERROR":
            self.error = f"I/O error ({data.get('operation')}, action {data.get('action')})"
        elif name in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"):
            self.ended = {"event": name, **data}

    async def _query(self) -> dict[str, Any] | None:
        for j in await self.conn.execute("query-block-jobs"):
            if j.get("device") == self.job_id:
                return dict(j)
        return None

    async def pump(self, events: Any, timeout: float) -> None:
        """Take the events that arrive within ``timeout`` (at least one wait)."""
        with contextlib.suppress(asyncio.TimeoutError):
            msg = await asyncio.wait_for(events.get(), timeout)
            self._on_event(str(msg["event"]), dict(msg.get("data") or {}))
        while not events.empty():
            msg = await events.get()
            self._on_event(str(msg["event"]), dict(msg.get("data") or {}))

    async def wait_ready(
        self,
        events: Any,
        progress: Callable[[MirrorProgress], None] | None,
        cancel: asyncio.Event | None,
        timeout: float | None,
    ) -> None:
        """Until READY; MirrorCancelled if ``cancel`` is set, MirrorFailed on error/timeout."""
        while self.ready_at is None:
            if self.ended is not None:
                raise MirrorFailed(
                    f"VM {self.conn.name}: block job {self.job_id} ended before READY: "
                    f"{self.ended.get('error') or self.ended['event']}"
                )
            if self.error:
                raise MirrorFailed(f"VM {self.conn.name}: block job {self.job_id}: {self.error}")
            if cancel is not None and cancel.is_set():
                raise MirrorCancelled(f"VM {self.conn.name}: block job {self.job_id} cancelled before the pivot")
            if timeout is not None and time.monotonic() - self.t0 > timeout:
                raise MirrorFailed(f"VM {self.conn.name}: block job {self.job_id} not READY after {timeout:.0f}s")
            j = await self._query()
            if j is not None:
                if j.get("ready") and self.ready_at is None:
                    self.ready_at = time.monotonic()
                    self.ready_bytes = int(j.get("offset", 0))
                if progress is not None:
                    el = time.monotonic() - self.t0
                    off = int(j.get("offset", 0))
                    progress(MirrorProgress(self.job_id, off, int(j.get("len", 0)), bool(j.get("ready")), el,
                                            off / MiB / el if el > 0 else 0.0))
            if self.ready_at is None:
                await self.pump(events, POLL_S)

    async def wait_end(self, events: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while self.ended is None:
            if time.monotonic() > deadline:
                raise MirrorFailed(f"VM {self.conn.name}: block job {self.job_id} did not end within {timeout:.0f}s")
            await self.pump(events, 0.5)
            if self.ended is None and await self._query() is None:
                # ended and dismissed without us seeing the event (should not happen)
                self.ended = {"event": "gone"}
        return self.ended

    async def cancel(self, events: Any, force: bool, timeout: float = 60.0) -> dict[str, Any]:
        """``block-job-cancel``: force drops the copy at once; otherwise a READY job first
        copies what is still dirty, then ends *without* pivot (BLOCK_JOB_COMPLETED)."""
        if self.ended is None:
            with contextlib.suppress(QemuError):
                await self.conn.execute("block-job-cancel", {"device": self.job_id, "force": force})
        return await self.wait_end(events, timeout)


async def _start_mirror(conn: QMPConn, job_id: str, source: str, target: str, extra: dict[str, Any]) -> _Job:
    job = _Job(conn, job_id)
    args = {"job-id": job_id, "device": source, "target": target, "sync": "full", **extra}
    await conn.execute("blockdev-mirror", args)
    return job


# ---------------------------------------------------------------------------------------
# Storage vMotion


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


# ---------------------------------------------------------------------------------------
# shared-nothing migration: NBD export on the destination, mirror from the source


@dataclass(frozen=True)
class NbdExport:
    host: str
    port: int
    names: tuple[str, ...]  # export name == the destination's node name
    tls: bool = False


async def nbd_export(dest: QMPConn, host: str, port: int, node_names: list[str], *, tls: bool = False) -> NbdExport:
    """Destination side: serve ``node_names`` writable over NBD on host:port.

    ``dest`` is the incoming QEMU (``-incoming defer``) whose disks are new empty images of
    the source's virtual sizes. With ``tls`` the server uses the ``vigil-tls-server`` creds.
    """
    args: dict[str, Any] = {"addr": {"type": "inet", "data": {"host": host, "port": str(port)}}}
    if tls:
        args["tls-creds"] = TLS_SERVER_ID
    await dest.execute("nbd-server-start", args)
    try:
        for node in node_names:
            await dest.execute("block-export-add", {
                "type": "nbd", "id": f"exp-{node}", "node-name": node, "name": node, "writable": True,
            })
    except BaseException:
        with contextlib.suppress(Exception):
            await dest.execute("nbd-server-stop")
        raise
    return NbdExport(host, port, tuple(node_names), tls)


async def nbd_stop(dest: QMPConn) -> None:
    """Destination side, after the migration: drop the exports and stop the NBD server."""
    with contextlib.suppress(QemuError):
        await dest.execute("nbd-server-stop")


@dataclass
class NbdMirrors:
    """The source's mirror jobs to the destination's exports (see :func:`mirror_to_nbd`)."""

    conn: QMPConn
    jobs: list[_Job]
    client_nodes: list[str]
    results: list[MirrorResult] = field(default_factory=list)
    finish_s: float = 0.0

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.results)


async def mirror_to_nbd(
    src: QMPConn,
    export: NbdExport,
    pairs: dict[str, str],
    progress: Callable[[MirrorProgress], None] | None = None,
    cancel: asyncio.Event | None = None,
    *,
    ready_timeout_s: float | None = None,
    tls_hostname: str | None = None,
) -> NbdMirrors:
    """Source side: mirror each source node of ``pairs`` (source node -> export name) to
    the destination's NBD export and wait until all jobs are READY.

    From then on guest writes reach both sides; end the jobs with :func:`finish_mirrors`
    while the source is stopped at switchover (or :func:`abort_mirrors` to give up).
    """
    mirrors = NbdMirrors(src, [], [])
    with src.listener(JOB_EVENTS) as events:
        try:
            for source, name in pairs.items():
                client = _new_node_name(f"nbd-{name}")
                server: dict[str, Any] = {"type": "inet", "host": export.host, "port": str(export.port)}
                opts: dict[str, Any] = {"driver": "nbd", "node-name": client, "server": server, "export": name}
                if export.tls:
                    opts["tls-creds"] = TLS_CLIENT_ID
                    if tls_hostname:
                        opts["tls-hostname"] = tls_hostname
                await src.execute("blockdev-add", opts)
                mirrors.client_nodes.append(client)
                job = await _start_mirror(src, f"mig-{client}", source, client, {})
                mirrors.jobs.append(job)
            for job in mirrors.jobs:
                await job.wait_ready(events, progress, cancel, ready_timeout_s)
        except BaseException:
            await abort_mirrors(mirrors)
            raise
    for job, (source, _name), client in zip(mirrors.jobs, pairs.items(), mirrors.client_nodes):
        assert job.ready_at is not None
        mirrors.results.append(MirrorResult(job.job_id, job.ready_bytes, job.ready_at - job.t0, 0.0,
                                            job.ready_at - job.t0, source, client))
    return mirrors


async def finish_mirrors(mirrors: NbdMirrors, timeout: float = 60.0) -> None:
    """End READY NBD mirrors without pivot (``block-job-cancel``): QEMU first copies the
    blocks still dirty. Call it with the source VM stopped (migration pre-switchover), so
    nothing is written after; MirrorFailed if a job ends with an error."""
    t0 = time.monotonic()
    with mirrors.conn.listener(JOB_EVENTS) as events:
        for job in mirrors.jobs:
            if job.ended is None:
                with contextlib.suppress(QemuError):
                    await mirrors.conn.execute("block-job-cancel", {"device": job.job_id, "force": False})
        for job in mirrors.jobs:
            end = await job.wait_end(events, timeout)
            if end.get("error") or end["event"] == "BLOCK_JOB_CANCELLED":
                raise MirrorFailed(f"VM {mirrors.conn.name}: mirror {job.job_id} did not finish in sync: "
                                   f"{end.get('error') or end['event']}")
    mirrors.finish_s = time.monotonic() - t0
    await _drop_clients(mirrors)


async def abort_mirrors(mirrors: NbdMirrors) -> None:
    """Force-cancel the jobs and drop the NBD client nodes (the migration is given up)."""
    with mirrors.conn.listener(JOB_EVENTS) as events:
        for job in mirrors.jobs:
            with contextlib.suppress(Exception):
                await job.cancel(events, force=True, timeout=30.0)
    await _drop_clients(mirrors)


async def _drop_clients(mirrors: NbdMirrors) -> None:
    for node in mirrors.client_nodes:
        with contextlib.suppress(QemuError):
            await release_node(mirrors.conn, node)
    mirrors.client_nodes = []
