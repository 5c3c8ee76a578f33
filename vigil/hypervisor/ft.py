"""Fault Tolerance checkpoints built on live migration (no COLO).

A checkpoint is one live migration of the running primary into a fresh *standby* QEMU on
the secondary host, started paused (``-incoming defer -S``, :func:`start_standby`). When
the migration completes the primary is stopped in ``postmigrate`` with the very state the
standby now holds; :func:`resume` (``cont``) lets the primary run on, and the standby stays
paused until the next checkpoint replaces it or a failover runs it (:func:`go_live`).

Why not COLO: on QEMU 7.2 the primary deadlocks at its first checkpoint, and on 10.0 a COLO
start ends as a plain migration. Why a fresh standby each time: a QEMU that received one
incoming migration cannot take another, so the secondary keeps the committed standby (the
last complete checkpoint) and a receiving one, and quits the older when a newer commits.

Disks are on shared datastores. Each checkpoint inactivates the primary's images at the
switchover and ``cont`` activates them again; the standby must not take the image locks
when its migration completes, hence ``late-block-activate`` (it activates them only at
``cont``, after the primary is gone).

Every checkpoint copies the whole RAM (zero pages cost almost nothing): QEMU starts each
migration with every page dirty, and incremental checkpoints would need dirty tracking
across migrations, which only COLO has (this kernel has no soft-dirty bits either).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from pathlib import Path

from vigil.hypervisor import migration as MG
from vigil.hypervisor import qemu as Q
from vigil.model import VMSpec

# A checkpoint must finish or fail quickly: while one is stuck nothing new is protected.
FT_POLICY = MG.MigrationPolicy(
    downtime_limit_ms=30, auto_converge=False, postcopy_fallback=False,
    stall_timeout_s=3.0, total_timeout_s=30.0, poll_interval_s=0.02,
)
MAX_FT_MEMORY_MB = 1024  # each checkpoint copies the whole RAM: ~1 s per 100 MiB over TLS in the lab


class CheckpointFailed(MG.MigrationFailed):
    """The checkpoint did not complete; the primary runs on, the last committed one stays."""


@dataclass(frozen=True)
class Checkpoint:
    """One completed checkpoint, as the primary saw it."""

    pause_ms: int  # guest stopped for the final copy (QEMU's downtime)
    total_ms: int  # from migrate to completed
    bytes: int  # RAM bytes sent
    resumed_ms: float  # from completion seen to the primary running again


async def start_standby(spec: VMSpec, paths: Q.VMPaths, accel: str, datastore_paths: dict[str, str],
                        tls_dir: str | Path | None = None) -> int:
    """Start a paused standby QEMU for ``spec`` (its disks are the primary's, on shared
    datastores; an incoming QEMU keeps them inactive, so no lock conflict)."""
    return await Q.start(spec, paths, accel, datastore_paths, standby=True, tls_dir=tls_dir)


async def prepare_standby(dest: Q.QMPConn, uri: str, policy: MG.MigrationPolicy = FT_POLICY) -> None:
    """Make the standby listen on ``uri`` for one checkpoint."""
    await MG.set_caps(dest, {"late-block-activate": True})
    await MG.prepare_incoming(dest, uri, replace(policy, postcopy_fallback=False))


async def standby_state(dest: Q.QMPConn) -> str:
    """``listening`` (no checkpoint came yet), ``receiving`` (one is coming in),
    ``committed`` (holds a whole checkpoint, paused) or ``failed`` (its incoming migration
    failed: quit it)."""
    info = await dest.execute("query-migrate")
    status = str(info.get("status", "none"))
    if status == "completed":
        return "committed"
    if status in ("failed", "cancelled"):
        return "failed"
    return "receiving" if status == "active" else "listening"


async def checkpoint(src: Q.QMPConn, uri: str, policy: MG.MigrationPolicy = FT_POLICY,
                     cancel: asyncio.Event | None = None) -> MG.MigrationResult:
    """Send one checkpoint to the standby listening on ``uri``. On return the primary is
    stopped (``postmigrate``): take the output cut now, then :func:`resume`. On failure the
    primary runs on (CheckpointFailed)."""
    await settle(src)
    try:
        return await MG.migrate(src, uri, replace(policy, postcopy_fallback=False), cancel=cancel)
    except MG.MigrationFailed as e:
        raise CheckpointFailed(str(e)) from None


async def settle(src: Q.QMPConn) -> None:
    """Undo what an interrupted checkpoint left: a migration still going (to a standby that
    may be gone) is cancelled, a primary left stopped after one runs again."""
    info = await src.execute("query-migrate")
    if info.get("status") in ("setup", "active", "pre-switchover", "device"):
        await MG.cancel_migration(src, "an earlier checkpoint was interrupted")
    if await src.status() in ("postmigrate", "finish-migrate"):
        await resume(src)


async def resume(src: Q.QMPConn) -> float:
    """Let the primary run on after a checkpoint; returns the ms it took."""
    t0 = time.monotonic()
    # query-migrate says "completed" a moment before the run state leaves finish-migrate,
    # and QEMU refuses cont until it has
    while await src.status() == "finish-migrate" and time.monotonic() - t0 < 5.0:
        await asyncio.sleep(0.002)
    await src.execute("cont")
    return (time.monotonic() - t0) * 1000


async def go_live(dest: Q.QMPConn, lock_wait_s: float = 15.0) -> None:
    """Failover: run the committed standby (it activates the disks, so the primary must be
    gone or fenced first: that is the caller's etcd test-and-set).

    A primary that was just killed can hold its image locks a moment longer (its threads
    exit after the main one); a hung primary holds them until its host's watchdog resets
    it. So a lock refusal is retried for ``lock_wait_s``: the disks are never shared."""
    if await standby_state(dest) != "committed":
        raise Q.QemuError(f"VM {dest.name}: the standby holds no complete checkpoint")
    await Q.retry_while_locked(lambda: dest.execute("cont"), lock_wait_s)
