"""Shared-nothing migration's disks: NBD exports on the destination, mirrors from the
source, ended without pivot at switchover (see vigil.hypervisor.mirror)."""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from vigil.hypervisor.block_job import JOB_EVENTS, MirrorFailed, MirrorProgress, MirrorResult, _Job, _start_mirror
from vigil.hypervisor.block_nodes import _new_node_name, release_node
from vigil.hypervisor.qemu import TLS_CLIENT_ID, TLS_SERVER_ID, QemuError, QMPConn


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
