"""Disks kept on two datastores: QEMU's quorum driver with one vote.

A disk with a ``replica`` runs as a qcow2 node over a ``quorum`` node of one *file* per
copy (see :func:`vigil.hypervisor.qemu.quorum_blockdev`). With ``vote-threshold`` 1 a
write succeeds when one file took it, and ``read-pattern: fifo`` reads the first file,
falling over to the next on an error: the guest sees no error while one datastore is
dead. Both files are whole qcow2 images, byte for byte the same.

- :func:`drop_copy` takes a failed copy out of the quorum. Its file is closed, so the dead
  datastore can be unmounted and brought back; vigil marks the copy stale in etcd *first*,
  so nothing ever starts the VM on it again before a resync.
- :func:`resync_copy` makes the disk whole again while the guest runs. QEMU mirrors only
  from a root node, so the whole disk is mirrored (``copy-mode: write-blocking``: once in
  sync, a guest write completes only when both sides have it) into a new qcow2 node over
  a new quorum of two fresh files: one beside the good copy (renamed over it once in
  sync), one in place of the stale copy. The device then pivots onto it, as in Storage
  vMotion. The stale copy stays marked stale in etcd until the caller clears it.
- A VM started with a stale copy opens a quorum of the good copy alone (see
  :func:`vigil.hypervisor.qemu.build_argv`), so the same resync applies.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from vigil.hypervisor.mirror import (MiB, MirrorCancelled, MirrorFailed, MirrorProgress, current_node, node_info,
                                     pivot_disk, release_node, virtual_size)
from vigil.hypervisor.qemu import QemuError, QMPConn, create_copies, quorum_blockdev

RESYNC_SUFFIX = ".resync"


async def _graph(conn: QMPConn) -> tuple[dict[int, str], list[dict]]:
    g = await conn.execute("x-debug-query-block-graph")
    return {n["id"]: str(n.get("name", "")) for n in g["nodes"]}, list(g["edges"])


async def quorum_of(conn: QMPConn, index: int) -> str:
    """The quorum node under the disk's current qcow2 node (QemuError: not replicated)."""
    top = await current_node(conn, index)
    names, edges = await _graph(conn)
    ids = {name: i for i, name in names.items()}
    for e in edges:
        if e["parent"] == ids.get(top) and e["name"] == "file":
            q = names.get(e["child"], "")
            with contextlib.suppress(MirrorFailed):
                if (await node_info(conn, q)).get("drv") == "quorum":
                    return q
    raise QemuError(f"VM {conn.name}: disk {index} runs on no quorum")


async def copy_children(conn: QMPConn, index: int) -> dict[str, str]:
    """child name in the quorum (``children.N``) -> its image file (a file opened under
    its resync name has been renamed to the copy's name since)."""
    quorum = await quorum_of(conn, index)
    names, edges = await _graph(conn)
    qid = next(i for i, n in names.items() if n == quorum)
    files = {str(n.get("node-name")): str(n.get("file", "")) for n in
             await conn.execute("query-named-block-nodes", {"flat": True})}
    return {e["name"]: files.get(names.get(e["child"], ""), "").removesuffix(RESYNC_SUFFIX)
            for e in edges if e["parent"] == qid}


async def drop_copy(conn: QMPConn, index: int, path: Path) -> bool:
    """Take the copy at ``path`` out of the disk's quorum (False: it was not in it)."""
    quorum = await quorum_of(conn, index)
    for child, filename in (await copy_children(conn, index)).items():
        if filename == str(path):
            await conn.execute("x-blockdev-change", {"parent": quorum, "child": child})
            return True
    return False


async def _fresh_copies(size: int, paths: Sequence[Path]) -> None:
    """Empty qcow2 images of one fixed length (metadata preallocated) at every path,
    replacing what was there."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    await create_copies(paths, str(size), preallocate=True)


async def resync_copy(
    conn: QMPConn,
    index: int,
    copies: Sequence[tuple[int, Path, bool]],
    progress: Callable[[MirrorProgress], None] | None = None,
    timeout_s: float = 3600.0,
) -> float:
    """Make every copy of the running disk whole again; returns the seconds it took.

    ``copies``: (copy index, image path, in sync) for each copy, in order. On failure the
    VM runs on its old disk, the in-sync copies untouched (MirrorFailed)."""
    t0 = time.monotonic()
    await _drop_orphan_jobs(conn, index)
    old = await current_node(conn, index)
    size = await virtual_size(conn, old)
    files = [(j, Path(str(p) + RESYNC_SUFFIX) if good else Path(p)) for j, p, good in copies]
    await _fresh_copies(size, [f for _, f in files])
    stamp = f"{int(time.time() * 1000) % 10**9}"
    blockdev = quorum_blockdev(index, files)
    blockdev["node-name"] = f"disk{index}-s{stamp}"
    blockdev["file"]["node-name"] = f"disk{index}-q{stamp}"
    for child in blockdev["file"]["children"]:
        child["node-name"] = f"{child['node-name']}-{stamp}"

    goods = [(Path(p), f) for (_, p, good), (_, f) in zip(copies, files) if good]
    renamed = False

    async def on_ready() -> None:
        # In sync, and from now on every write reaches both sides before it completes:
        # the new file takes the good copy's name. The old file keeps a second name until
        # the pivot is done, to be put back should the pivot fail.
        nonlocal renamed
        for path, f in goods:
            await asyncio.to_thread(_swap_in, path, f)
        renamed = True

    def undo() -> None:
        for path, f in goods:
            if renamed:
                os.replace(_prev(path), path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()

    res = await pivot_disk(conn, index, blockdev, progress, ready_timeout_s=timeout_s,
                           extra={"copy-mode": "write-blocking"}, on_ready=on_ready, undo=undo)
    with contextlib.suppress(QemuError):
        await release_node(conn, res.old_node)
    for path, _ in goods:
        with contextlib.suppress(FileNotFoundError):
            _prev(path).unlink()
    return time.monotonic() - t0


async def _drop_orphan_jobs(conn: QMPConn, index: int) -> None:
    """A resync whose agent died mid-way left its mirror job running (never pivoted, its
    target files deleted since): cancel it before starting afresh."""
    orphans = [str(j["device"]) for j in await conn.execute("query-block-jobs")
               if str(j.get("device", "")).startswith(f"move-disk{index}-s")]
    for job in orphans:
        with contextlib.suppress(QemuError):
            await conn.execute("block-job-cancel", {"device": job, "force": True})
    for job in orphans:
        for _ in range(50):
            if not any(j.get("device") == job for j in await conn.execute("query-block-jobs")):
                break
            await asyncio.sleep(0.1)
        with contextlib.suppress(QemuError):
            await release_node(conn, job.removeprefix("move-"))


def _prev(path: Path) -> Path:
    return Path(str(path) + ".prev")


def _swap_in(path: Path, new: Path) -> None:
    """``new`` takes ``path``'s name; the file there keeps the name ``path.prev``."""
    with contextlib.suppress(FileNotFoundError):
        _prev(path).unlink()
    os.link(path, _prev(path))
    os.replace(new, path)


async def copy_offline(src: Path, dst: Path, timeout_s: float = 3600.0, *,
                       progress: Callable[[int, int], None] | None = None,
                       cancel: asyncio.Event | None = None) -> None:
    """A powered-off VM's resync: the good image copied over the stale one.

    The copy goes to a temporary file, renamed over ``dst`` only once complete: a failed
    or cancelled copy (MirrorFailed / MirrorCancelled) leaves ``dst`` as it was.
    ``progress(copied, total)`` gets the bytes written so far, about every 0.2 s."""
    tmp = Path(str(dst) + RESYNC_SUFFIX)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    total = os.stat(src).st_size
    proc = await asyncio.create_subprocess_exec(
        "cp", "--sparse=always", str(src), str(tmp),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    done = asyncio.ensure_future(proc.communicate())
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise MirrorCancelled(f"copying {src} to {dst} cancelled; {dst} is as it was")
            if time.monotonic() > deadline:
                raise MirrorFailed(f"copying {src} to {dst}: not done within {timeout_s:.0f}s")
            await asyncio.wait({done}, timeout=0.2)
            if done.done():
                break
            if progress is not None:
                with contextlib.suppress(OSError):
                    progress(os.stat(tmp).st_size, total)
        _, err = done.result()
        if proc.returncode != 0:
            raise MirrorFailed(f"copying {src} to {tmp}: {(err or b'').decode(errors='replace').strip()}")
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()
        done.cancel()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if progress is not None:
        progress(total, total)
    await asyncio.to_thread(os.replace, tmp, dst)


__all__ = ["quorum_of", "copy_children", "drop_copy", "resync_copy", "copy_offline", "RESYNC_SUFFIX", "MiB"]
