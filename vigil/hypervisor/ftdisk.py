"""An FT primary's disk writes, kept in step with its checkpoints.

A standby goes live where the last checkpoint left the guest's memory; the disk must be
as it was at that same moment, not as the primary left it later. So at each checkpoint,
while the primary is stopped, its writes are switched to a new qcow2 overlay per disk
(:func:`hold_writes`), named after the checkpoint: ``<image>.ft-<seq>`` holds the writes
made after checkpoint ``seq``. Once checkpoint ``k`` is acknowledged no failover can use an
older one, and the overlays older than ``k`` are merged into the base image while the
guest runs (:func:`commit_before`). The chain stays short: the base, the overlay being
merged, the one being written.

- Failover to the standby of checkpoint ``k`` (:func:`settle`, ``upto=k``): the overlays
  older than ``k`` are merged into the base image, the others (writes the dead primary made
  after ``k``, which no one outside has seen) are deleted, then the standby runs.
- Cold start of an FT VM from disk (``upto=None``): every overlay is merged (the guest
  reboots; it keeps every write it made).
- FT turned off on a running VM (:func:`collapse`): an active commit folds the overlays
  back into the base image, which the VM runs on again.

Every step keeps the rule: the files of the chain that holds the newest data are merged
before anything is deleted, and only the overlays never merged are discarded.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Mapping

from vigil.hypervisor import qemu as Q
from vigil.hypervisor.mirror import JOB_EVENTS, _Job, current_node
from vigil.model import VMSpec

SEP = ".ft-"
_SEQ = re.compile(r"\.ft-(\d+)$")


def overlay_path(image: Path, seq: int) -> Path:
    return Path(f"{image}{SEP}{seq}")


def overlays(image: Path) -> list[tuple[int, Path]]:
    """(seq, file) of the image's FT overlays, oldest first."""
    out = []
    try:
        found = list(Path(image).parent.glob(Path(image).name + SEP + "*"))
    except OSError as e:  # a datastore gone bad: not knowing is not "none"
        raise Q.QemuError(f"cannot list the FT overlays of {image}: {e}") from None
    for p in found:
        m = _SEQ.search(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def chain_top(image: Path) -> Path:
    """The file that holds the disk's newest data: its newest overlay, or the image."""
    ovs = overlays(image)
    return ovs[-1][1] if ovs else Path(image)


def has_overlays(spec: VMSpec, datastore_paths: Mapping[str, str]) -> bool:
    try:
        return any(overlays(p) for p in _images(spec, datastore_paths))
    except Q.QemuError:  # a datastore not mounted here
        return False


def _images(spec: VMSpec, datastore_paths: Mapping[str, str]) -> list[Path]:
    return [Q.disk_path(d, datastore_paths) for d in spec.disks]


async def _node_of(conn: Q.QMPConn, path: Path) -> str:
    for n in await conn.execute("query-named-block-nodes", {"flat": True}):
        if n.get("file") == str(path) and n.get("drv") == "qcow2":
            return str(n["node-name"])
    raise Q.QemuError(f"VM {conn.name}: no qcow2 node on {path}")


async def hold_writes(conn: Q.QMPConn, spec: VMSpec, datastore_paths: Mapping[str, str], seq: int) -> None:
    """At checkpoint ``seq``, the primary stopped: its writes go to new overlays from now
    on. The images are active again afterwards (the checkpoint had handed them over)."""
    await conn.execute("blockdev-set-active", {"active": True})
    for i, image in enumerate(_images(spec, datastore_paths)):
        top = await current_node(conn, i)
        await conn.execute("blockdev-snapshot-sync", {
            "node-name": top, "snapshot-file": str(overlay_path(image, seq)), "format": "qcow2",
            "snapshot-node-name": f"disk{i}-o{seq % 10**9}", "mode": "absolute-paths"})


async def _run_job(conn: Q.QMPConn, args: dict[str, Any], active: bool, timeout: float = 120.0) -> None:
    """A block-commit job to its end (an active one is completed at READY: it pivots)."""
    job = _Job(conn, str(args["job-id"]))
    with conn.listener(JOB_EVENTS) as events:
        await conn.execute("block-commit", args)
        try:
            if active:
                await job.wait_ready(events, None, None, timeout)
                await conn.execute("job-complete", {"id": job.job_id})
            end = await job.wait_end(events, timeout)
        except Q.QemuError:
            with contextlib.suppress(Q.QemuError):
                await job.cancel(events, force=True, timeout=30.0)
            raise
    if end.get("error") or end["event"] != "BLOCK_JOB_COMPLETED":
        raise Q.QemuError(f"VM {conn.name}: {job.job_id}: {end.get('error') or end['event']}")


async def commit_before(conn: Q.QMPConn, spec: VMSpec, datastore_paths: Mapping[str, str], seq: int) -> int:
    """Checkpoint ``seq`` is safe: merge the overlays older than it into the base images,
    under the running guest, and delete their files. Returns how many were merged."""
    merged = 0
    for i, image in enumerate(_images(spec, datastore_paths)):
        old = [p for s, p in overlays(image) if s < seq]
        if not old:
            continue
        await _run_job(conn, {"job-id": f"ftc-disk{i}", "device": await current_node(conn, i),
                              "top-node": await _node_of(conn, old[-1]), "base-node": await _node_of(conn, image)},
                       active=False)
        for p in old:
            p.unlink(missing_ok=True)
        merged += len(old)
    return merged


async def collapse(conn: Q.QMPConn, spec: VMSpec, datastore_paths: Mapping[str, str]) -> int:
    """FT is off: fold every overlay back into the base image (an active commit: the VM
    runs on the base image again) and delete them. Returns how many were folded."""
    merged = 0
    for i, image in enumerate(_images(spec, datastore_paths)):
        ovs = [p for _, p in overlays(image)]
        if not ovs:
            continue
        top = await current_node(conn, i)
        if top != await _node_of(conn, image):
            await _run_job(conn, {"job-id": f"ftc-disk{i}", "device": top, "base-node": await _node_of(conn, image)},
                           active=True)
        for p in ovs:
            p.unlink(missing_ok=True)
        merged += len(ovs)
    return merged


async def settle(spec: VMSpec, datastore_paths: Mapping[str, str], upto: int | None,
                 lock_wait_s: float = 15.0) -> int:
    """No QEMU runs the disks any more (a failover to checkpoint ``upto``, or a cold start
    with None): merge the overlays older than ``upto`` (all with None) into the base images
    with ``qemu-img commit``, delete the rest. Returns how many were merged.

    A primary handed over early may still be running for a moment: its QEMU holds the
    image locks until it is gone, so a lock refusal is retried for ``lock_wait_s``."""
    merged = 0
    for image in _images(spec, datastore_paths):
        ovs = overlays(image)
        keep = [p for s, p in ovs if upto is None or s < upto]
        for s, p in ovs:
            if p not in keep:
                p.unlink(missing_ok=True)
        if keep:
            # the newest kept overlay's chain holds everything; an older file outside that
            # chain was merged already (its deletion was cut short) and is only deleted
            await _commit_waiting_for_locks(image, keep[-1], lock_wait_s)
            for p in keep:
                p.unlink(missing_ok=True)
            merged += len(keep)
    return merged


async def _commit_waiting_for_locks(image: Path, top: Path, lock_wait_s: float) -> None:
    async def commit() -> None:
        rc, msg = await Q._run([Q.QEMU_IMG, "commit", "-q", "-f", "qcow2", "-b", str(image), str(top)], timeout=600)
        if rc != 0:
            raise Q.QemuError(f"qemu-img commit {top} into {image}: {msg}")

    await Q.retry_while_locked(commit, lock_wait_s)


__all__ = ["overlay_path", "overlays", "chain_top", "has_overlays", "hold_writes", "commit_before", "collapse", "settle"]
