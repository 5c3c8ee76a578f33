"""Array failure (every host at once): FS_IOC_SHUTDOWN on a datastore's filesystem, and
its return once no process holds it (see vigil.lab.datastores)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time

from .datastore_fs import (LOSS_FSNAME, lose_datastore, mount_datastore_in_host, mount_datastore_in_root,
                           mount_store, restore_datastore)
from .layout import (LabCommandError, LabError, datastore_path, mntns_path, ns_inode, read_mounts, run,
                     store_path)
from .mount_namespaces import host_mounts, nsenter_mnt

FS_IOC_SHUTDOWN = 0x8004587D    # _IOR('X', 125, __u32)
SHUTDOWN_NOLOGFLUSH = 2         # stop at once, the journal not flushed: a dying array
ROOT_NS = "root namespace"


def shutdown_datastore(ds: str, device: str) -> None:
    """FS_IOC_SHUTDOWN on the datastore's filesystem, through its root-namespace mount."""
    shutdown_fs(store_path(ds), device)


def shutdown_fs(mountpoint: str | os.PathLike, device: str) -> None:
    """FS_IOC_SHUTDOWN (no log flush) on the filesystem mounted at ``mountpoint``: every
    I/O on it fails with EIO from now on, open files included. The mount is checked to
    be ``device``'s: shutting down whatever lies below an unmounted mount point would take
    the machine's own filesystem down."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if os.fstat(fd).st_dev != os.stat(device).st_rdev:
            raise LabError(f"{mountpoint} is not the filesystem of {device}; not shutting it down")
        fcntl.ioctl(fd, FS_IOC_SHUTDOWN, struct.pack("I", SHUTDOWN_NOLOGFLUSH))
    finally:
        os.close(fd)


def holders(ds: str, hosts: list[str]) -> dict[str, list[int]]:
    """Pids, per namespace (ROOT_NS or a host), with a file, cwd or root directory on the
    datastore (from /proc/<pid>/{fd/*,cwd,root}): what keeps it from being unmounted."""
    spaces: dict[tuple[int, int] | None, tuple[str, list[str]]] = {
        ns_inode(mntns_path(h)): (h, [str(datastore_path(ds))]) for h in hosts}
    spaces.pop(None, None)
    spaces[ns_inode("/proc/self/ns/mnt")] = (ROOT_NS, [str(store_path(ds)),
                                                      str(datastore_path(ds))])
    found: dict[str, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        space = spaces.get(ns_inode(f"/proc/{name}/ns/mnt"))
        if space and _holds(int(name), space[1]):
            found.setdefault(space[0], []).append(int(name))
    return {k: sorted(v) for k, v in found.items()}


def _holds(pid: int, prefixes: list[str]) -> bool:
    links = [f"/proc/{pid}/cwd", f"/proc/{pid}/root"]
    try:
        links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        pass
    for link in links:
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if any(target == p or target.startswith(p + "/") for p in prefixes):
            return True
    return False


def describe_holders(found: dict[str, list[int]]) -> str:
    return "; ".join(f"{where}: pids {', '.join(map(str, pids))}" for where, pids in found.items())


def _umount(argv: list[str], tries: int = 5) -> None:
    """umount, not lazily; retried a moment, for a file opened and closed meanwhile."""
    for i in range(tries):
        try:
            run(argv)
            return
        except LabCommandError:
            if i == tries - 1:
                raise
            time.sleep(0.2)


def unmount_in_host(host: str, ds: str) -> None:
    """Unmount the datastore in the host's namespace, a storage-loss overmount first."""
    target = str(datastore_path(ds))
    for _ in range(10):
        top = [src for p, _, src in host_mounts(host) if p == target]
        if not top:
            return
        if top[-1] == LOSS_FSNAME:
            restore_datastore(host, ds)
        else:
            _umount(nsenter_mnt(host, ["umount", target]))
    raise LabError(f"{host}: {target} still mounted after 10 unmounts")


def unmount_in_root(ds: str) -> None:
    for path in (datastore_path(ds), store_path(ds)):
        while str(path) in read_mounts():
            _umount(["umount", str(path)])


def _unmount_in(where: str, ds: str) -> None:
    if where == ROOT_NS:
        unmount_in_root(ds)
    else:
        unmount_in_host(where, ds)


def check_unused(device: str) -> None:
    """Raise LabError if the device is still mounted somewhere (a namespace outside the
    lab's): an exclusive open fails while any superblock holds it."""
    try:
        os.close(os.open(device, os.O_RDONLY | os.O_EXCL))
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        raise LabError(f"{device} is still in use outside the lab's namespaces "
                       f"(mounted in another mount namespace?)") from None


def fsck(device: str) -> None:
    proc = run(["e2fsck", "-fy", device], check=False, timeout=600)
    if proc.returncode not in (0, 1):   # 1: errors corrected
        raise LabError(f"e2fsck -fy {device} exited {proc.returncode}: "
                       f"{(proc.stderr or proc.stdout).strip()[-500:]}")


def mount_everywhere(ds: str, device: str, where: list[str], lost_on: list[str]) -> None:
    """Mount the datastore in the namespaces `where` (hosts, ROOT_NS); storage-loss
    overmounts of `lost_on` go back on top."""
    if ROOT_NS in where:
        mount_store(ds, device)
        mount_datastore_in_root(ds)
    for h in where:
        if h != ROOT_NS:
            mount_datastore_in_host(h, ds, device)
            if h in lost_on:
                lose_datastore(h, ds)


def return_datastore(ds: str, device: str, hosts: list[str], lost_on: list[str]) -> None:
    """Bring a (failed) datastore back: unmount it on every host and in the root namespace,
    `e2fsck -fy`, mount it again everywhere. Storage-loss overmounts of `lost_on` are lifted
    and put back on top. Raises LabError, naming where and which pids, while a process holds
    it; it is then left mounted everywhere as it was."""
    busy = holders(ds, hosts)
    if busy:
        raise LabError(f"datastore {ds} is busy ({describe_holders(busy)}); "
                       f"close those files and return it again")
    done: list[str] = []
    try:
        for where in [*hosts, ROOT_NS]:
            try:
                _unmount_in(where, ds)
            except LabError as e:
                if where in lost_on:
                    lose_datastore(where, ds)
                busy = holders(ds, hosts)
                place = "in the root namespace" if where == ROOT_NS else f"on {where}"
                raise LabError(f"datastore {ds} is busy {place}"
                               f"{' (' + describe_holders(busy) + ')' if busy else ''}: {e}"
                               ) from None
            done.append(where)
        check_unused(device)
    except LabError:
        mount_everywhere(ds, device, done, lost_on)   # the dead filesystem, as it was
        raise
    fsck(device)
    mount_everywhere(ds, device, [ROOT_NS, *hosts], lost_on)
