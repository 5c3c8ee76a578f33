"""A QEMU block job (a mirror, a commit) followed to READY and to its end, with the
progress, result and error types the disk copies report (see vigil.hypervisor.mirror)."""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vigil.hypervisor.qemu import QemuError, QMPConn

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
                # The job is gone: its end event came before the query's answer, so it
                # waits in the queue now (a job that finished between the pump and the
                # query); only when there is none did it end unseen.
                await self.pump(events, 0.2)
                if self.ended is None:
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
