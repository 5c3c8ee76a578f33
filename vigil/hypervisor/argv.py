"""QEMU's command line for a VM: machine, disks (quorum for two copies), NICs, TLS."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vigil.hypervisor.base import HB_PORT_NAME, MACHINE, QEMU_BIN, QemuError, _opt
from vigil.hypervisor.processes import VMPaths
from vigil.model import DiskSpec, VMSpec, mac_address

def disk_path(disk: DiskSpec, datastore_paths: Mapping[str, str], datastore: str = "") -> Path:
    """The image of ``disk``'s copy on ``datastore`` (its primary copy by default)."""
    ds = datastore or disk.datastore
    try:
        root = datastore_paths[ds]
    except KeyError:
        raise QemuError(f"disk {disk.name}: datastore {ds!r} is not mounted on this host") from None
    return Path(root) / disk.path


def live_copies(disk: DiskSpec, stale: Mapping[str, str]) -> list[tuple[int, str]]:
    """(copy index, datastore) of the copies of ``disk`` that are in sync."""
    return [(j, ds) for j, ds in enumerate(disk.copies) if stale.get(disk.name) != ds]


def disk_node_name(index: int) -> str:
    """The qcow2 (format) node name of the VM's index-th disk, for blockdev-mirror & co."""
    return f"disk{index}"


BALLOON_ID = "balloon0"


def disk_device_id(index: int) -> str:
    return f"virtio-disk{index}"


def quorum_node_name(index: int) -> str:
    """The quorum node under a replicated disk's qcow2 node (its ``file`` child)."""
    return f"{disk_node_name(index)}-q"


def copy_node_name(index: int, copy: int) -> str:
    """The file node of one copy of a replicated disk (a child of its quorum node)."""
    return f"{disk_node_name(index)}-c{copy}"


def quorum_blockdev(index: int, files: Sequence[tuple[int, Path]]) -> dict[str, Any]:
    """The ``-blockdev`` of a replicated disk: one qcow2 node over a quorum of the copies'
    *files* ((copy index, image path)), one vote enough, reads from the first child and
    from the next on an error. The quorum sits below qcow2 so that a dead copy is only
    ever read through its file, which fails, never through metadata cached in memory
    (a qcow2 per copy answers reads of clusters it never allocated with zeros)."""
    return {
        "driver": "qcow2",
        "node-name": disk_node_name(index),
        "file": {
            "driver": "quorum",
            "node-name": quorum_node_name(index),
            "vote-threshold": 1,
            "read-pattern": "fifo",
            "children": [{"driver": "file", "node-name": copy_node_name(index, j), "filename": str(p)}
                         for j, p in files],
        },
    }


VHOST_NET = "/dev/vhost-net"


def tap_name(paths: VMPaths, index: int) -> str:
    """The tap QEMU makes for the NIC ``index`` of the QEMU run from ``paths`` (at most 15
    characters): unique per run dir on a host, so an FT secondary's standbys never ask for
    the same tap, and the NIC's index is its last digit (vigil.env.nics reads it back)."""
    return f"vt{hashlib.sha256(str(paths.dir).encode()).hexdigest()[:9]}n{index}"


def vhost_usable(accel: str) -> bool:
    """vhost-net moves a NIC's frames in the kernel, but only KVM gives it the guest's
    notifications (under TCG QEMU falls back to its own path anyway), and only where the
    device is there and ours to open."""
    return accel == "kvm" and os.access(VHOST_NET, os.R_OK | os.W_OK)


def vhost_for(accel: str, ft: bool) -> bool:
    """Whether a VM's NICs get vhost-net: where usable, and never while FT is on for it (an
    FT primary's output is held by QEMU's net filters, which vhost-net would bypass; a VM
    FT was turned on for while it ran with vhost-net gets filterable NICs at its next start
    or migration)."""
    return vhost_usable(accel) and not ft


def nic_argv(index: int, tap: str, mac: str, vhost: bool) -> list[str]:
    """One virtio NIC on the tap ``tap`` (QEMU makes it; the agent puts it on the bridge,
    no script), with vhost-net or not."""
    netdev = f"tap,id=net{index},ifname={tap},script=no,downscript=no" + (",vhost=on" if vhost else "")
    return ["-netdev", netdev, "-device", f"virtio-net-pci,netdev=net{index},id=nic{index},mac={mac}"]


TLS_SERVER_ID = "vigil-tls-server"
TLS_CLIENT_ID = "vigil-tls-client"


def tls_argv(tls_dir: str | Path) -> list[str]:
    """``-object tls-creds-x509`` for both migration roles of a host (see migration.py).

    ``tls_dir`` holds ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem and
    client-key.pem: the server object serves incoming migrations, the client one outgoing.
    """
    d = _opt(tls_dir)
    return [
        "-object", f"tls-creds-x509,id={TLS_SERVER_ID},dir={d},endpoint=server,verify-peer=on",
        "-object", f"tls-creds-x509,id={TLS_CLIENT_ID},dir={d},endpoint=client,verify-peer=on",
    ]


def build_argv(
    spec: VMSpec,
    paths: VMPaths,
    accel: str,
    datastore_paths: dict[str, str],
    *,
    incoming: bool = False,
    tls_dir: str | Path | None = None,
    standby: bool = False,
    stale: Mapping[str, str] | None = None,
    vhost: bool = False,
) -> list[str]:
    """The full QEMU command line of a VM (no I/O).

    A disk with a replica runs as a quorum of its copies, without the copy ``stale``
    (disk name -> datastore) names: that one missed writes and waits for a resync.

    ``incoming``: start as the destination of a live migration (``-incoming defer``: the VM
    waits in run state "inmigrate" for ``migrate-incoming``, then runs where the source
    stopped). ``tls_dir``: add the TLS credential objects of :func:`tls_argv`. ``standby``:
    an FT standby, incoming and ``-S``: it stays paused once a checkpoint arrived, until
    ``cont`` makes it the running copy (:mod:`vigil.hypervisor.ft`).

    Each NIC is a tap (:func:`tap_name`) that the agent plugs into the host's bridge for its
    network: frames go guest <-> QEMU (or vhost-net with ``vhost``) <-> tap <-> bridge, no
    daemon in between. A standby never gets vhost-net: an FT primary's output is held by
    QEMU's net filters (vigil.hypervisor.nichold), which vhost-net would bypass.
    """
    if accel not in ("kvm", "tcg"):
        raise QemuError(f"unknown accelerator {accel!r}")
    argv = [
        QEMU_BIN,
        "-name", f"{_opt(spec.name)},debug-threads=on",  # vCPU threads named "CPU n/TCG"
        "-daemonize",
        "-pidfile", str(paths.pidfile),
        "-qmp", f"unix:{_opt(paths.qmp_sock)},server=on,wait=off",
        "-qmp", f"unix:{_opt(paths.events_sock)},server=on,wait=off",
        "-machine", MACHINE,
        "-accel", accel,
        "-m", str(spec.memory_mb),
        "-smp", str(spec.vcpus),
        "-nodefaults",
        "-display", "none",
        "-chardev", f"file,id=serial0,path={_opt(paths.serial_log)},append=on",
        "-serial", "chardev:serial0",
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"socket,id=hb,path={_opt(paths.hb_sock)},server=on,wait=off",
        "-device", f"virtserialport,bus=vser0.0,chardev=hb,name={HB_PORT_NAME}",
        "-device", "pvpanic",
        "-action", "panic=pause",
    ]
    if spec.balloon:  # the guest's memory figures (vigil.hypervisor.balloon), never inflated by vigil
        argv += ["-device", f"virtio-balloon-pci,id={BALLOON_ID}"]
    for i, disk in enumerate(spec.disks):
        node = disk_node_name(i)
        blockdev: dict[str, Any]
        if disk.replica:
            blockdev = quorum_blockdev(i, [(j, disk_path(disk, datastore_paths, ds))
                                           for j, ds in live_copies(disk, stale or {})])
        else:
            blockdev = {
                "driver": "qcow2",
                "node-name": node,
                "file": {"driver": "file", "filename": str(disk_path(disk, datastore_paths)),
                         "node-name": f"{node}-file"},
            }
        dev = f"virtio-blk-pci,drive={node},id={disk_device_id(i)}"
        if spec.boot is None:
            dev += f",bootindex={i}"
        argv += ["-blockdev", json.dumps(blockdev, separators=(",", ":")), "-device", dev]
    for i, _ in enumerate(spec.networks):
        argv += nic_argv(i, tap_name(paths, i), mac_address(spec.name, i), vhost and not standby)
    if spec.boot is not None:
        argv += ["-kernel", spec.boot.kernel]
        if spec.boot.initrd:
            argv += ["-initrd", spec.boot.initrd]
        if spec.boot.cmdline:
            argv += ["-append", spec.boot.cmdline]
    if tls_dir is not None:
        argv += tls_argv(tls_dir)
    if incoming or standby:
        argv += ["-incoming", "defer"]
    if standby:
        argv += ["-S"]  # an FT standby stays paused after its checkpoint arrived
    return argv
