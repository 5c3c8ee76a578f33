"""The VM's block graph: which node a disk device runs on, node sizes, new nodes and images."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from vigil.hypervisor.block_job import MirrorFailed
from vigil.hypervisor.qemu import QEMU_IMG, QMPConn, _run, disk_device_id


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
