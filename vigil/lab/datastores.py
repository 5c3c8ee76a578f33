"""Per-host persistent mount namespaces and the datastores mounted into them.

- `/run/vigil-lab/mnt` is bind-mounted on itself and made private, so that a mount
  namespace can be kept alive by binding `/proc/<pid>/ns/mnt` on a file in it
  (`bind_new_mount_namespace`).
- Datastore `dsN` is its own ext4 filesystem: the sparse 8 GiB image
  `/var/lib/vigil-lab/arrays/dsN.img` (made once, so `down --keep-data` keeps its data) on
  a loop device (`losetup --find --show`, recorded as state["datastores"][ds]["device"]).
  The root namespace mounts it at `/var/lib/vigil-lab/store/dsN` and binds that at
  `/var/lib/vigil-lab/ds/dsN` for tools; every host's namespace mounts the device itself at
  `/var/lib/vigil-lab/ds/dsN` (a private namespace made earlier would not see a later root
  mount). All these mounts share one superblock: what happens to the filesystem happens on
  every host at once. `store/` and `ds/` are private self-binds in the root namespace, so
  that no datastore mount propagates into, and lingers in, other namespaces of the machine.
  The datastore's root holds the marker file `.vigil-datastore` (= its name).
- Storage loss (one host): a read-only empty tmpfs over the datastore path in that host's
  namespace.
- Array failure (every host): FS_IOC_SHUTDOWN on the filesystem; from then on every I/O on
  it fails with EIO, on files already open too. It comes back (`return_datastore`) once no
  process holds it: unmounted everywhere, `e2fsck -fy`, mounted again. Mounting it while
  the dead superblock is still held anywhere would only give the dead filesystem back.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

from .layout import (ARRAYS_DIR, DATA_DIR, DATASTORE_IMAGE_BYTES, DATASTORE_MARKER, DS_DIR,
                     MNT_NS_DIR, NETNS_DIR, RUN_DIR, STORE_DIR, LabCommandError, LabError,
                     datastore_path, image_path, mntns_path, ns_inode, read_mounts, run,
                     store_path)

LOSS_FSNAME = "vigil-ds-lost"   # tmpfs "device" name of a storage-loss overmount
FS_IOC_SHUTDOWN = 0x8004587D    # _IOR('X', 125, __u32)
SHUTDOWN_NOLOGFLUSH = 2         # stop at once, the journal not flushed: a dying array
ROOT_NS = "root namespace"


def nsenter_mnt(host: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--mount={mntns_path(host)}", "--", *argv]


def prepare_private_dir(path: Path) -> None:
    """Bind `path` on itself, private: mounts below it do not propagate elsewhere."""
    path.mkdir(parents=True, exist_ok=True)
    if str(path) not in read_mounts():
        run(["mount", "--bind", str(path), str(path)])
    run(["mount", "--make-private", str(path)])


def prepare_mntns_dir() -> None:
    prepare_private_dir(MNT_NS_DIR)


def bind_new_mount_namespace(path: Path, timeout: float = 10.0, tries: int = 3) -> None:
    """Make a new private mount namespace and keep it alive as ``path``; see
    :func:`_bind_new_mount_namespace`. Inside some container roots the bind fails now and
    then with EINVAL and succeeds when tried again; a last failure says how the mount
    under ``path`` propagates, the usual cause of that EINVAL."""
    for attempt in range(1, tries + 1):
        try:
            _bind_new_mount_namespace(path, timeout)
            return
        except LabCommandError as e:
            if attempt == tries:
                lines = [line.strip() for line in open("/proc/self/mountinfo")
                         if line.split()[4] in (str(path.parent), str(path))]
                raise LabError(f"{e} (tried {tries} times; mounts there: {lines})") from None
            time.sleep(0.2 * attempt)


def _bind_new_mount_namespace(path: Path, timeout: float) -> None:
    """Make a new private mount namespace and keep it alive as ``path`` (a bind mount of
    its nsfs file). A helper process enters it (``unshare --mount``) and waits on stdin
    while this process binds ``/proc/<helper>/ns/mnt``. ``unshare --mount=FILE`` does the
    same with a child of its own, and failed (EINVAL) now and then inside containers."""
    helper = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "cat"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        # `cat` runs once the namespace exists and its propagation is private
        while _comm(helper.pid) != "cat":
            if helper.poll() is not None:
                err = helper.stderr.read().decode(errors="replace").strip() if helper.stderr else ""
                raise LabError(f"cannot make a mount namespace for {path}: {err}")
            if time.monotonic() > deadline:
                raise LabError(f"cannot make a mount namespace for {path}: unshare did not start")
            time.sleep(0.005)
        run(["mount", "--bind", f"/proc/{helper.pid}/ns/mnt", str(path)])
    finally:
        if helper.stdin:
            helper.stdin.close()
        try:
            helper.wait(5)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def create_host_mntns(host: str) -> None:
    """A persistent private mount namespace for `host`, without the copies of the other
    namespaces' files (they would keep those namespaces alive after `down`)."""
    path = mntns_path(host)
    if path.exists() and str(path) in read_mounts():
        return
    path.touch()
    bind_new_mount_namespace(path)
    # The new namespace got a copy of every mount, including the nsfs bind mounts of the
    # other hosts' namespaces (/run/netns/*, /run/vigil-lab/mnt/*): drop those copies.
    points = [p for p, _, _ in host_mounts(host)]
    for top in (str(MNT_NS_DIR), str(NETNS_DIR)):
        if top in points:
            run(nsenter_mnt(host, ["umount", "-l", top]), check=False)
    for p, fstype, _ in reversed(host_mounts(host)):
        if fstype == "nsfs":
            run(nsenter_mnt(host, ["umount", "-l", p]), check=False)


# --- datastore filesystems ---------------------------------------------------------------
def create_image(ds: str) -> Path:
    """The datastore's disk image, made (sparse, mkfs.ext4) only when it does not exist, so
    that a kept image keeps its data. Made under a temporary name: a half-made image is
    never taken for a real one."""
    img = image_path(ds)
    if img.exists():
        return img
    ARRAYS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = img.with_name(img.name + ".new")
    with open(tmp, "wb") as f:
        f.truncate(DATASTORE_IMAGE_BYTES)
    run(["mkfs.ext4", "-q", "-F", "-L", ds, str(tmp)], timeout=300)
    os.replace(tmp, img)
    return img


def lab_loop_devices() -> dict[str, str]:
    """Loop device -> backing file, for every loop device on a file under ARRAYS_DIR
    (including images deleted while attached)."""
    if not shutil.which("losetup"):
        return {}
    out = run(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"]).stdout
    devices = json.loads(out).get("loopdevices", []) if out.strip() else []
    prefix = str(ARRAYS_DIR) + "/"
    return {d["name"]: d["back-file"] for d in devices
            if (d.get("back-file") or "").startswith(prefix)}


def attach_image(ds: str) -> str:
    """The loop device of the datastore's image: the one already attached, or a new one
    (two devices on one image would corrupt it)."""
    img = str(image_path(ds))
    for dev, back in sorted(lab_loop_devices().items()):
        if back == img:
            return dev
    return run(["losetup", "--find", "--show", img]).stdout.strip()


def detach_loop_devices(timeout: float = 5.0) -> list[str]:
    """Detach every loop device of the lab's images (call after unmounting them). A device
    still open is only marked to go when closed: wait for that a moment. Returns the
    devices still attached."""
    for dev in lab_loop_devices():
        run(["losetup", "-d", dev], check=False)
    deadline = time.monotonic() + timeout
    while (left := sorted(lab_loop_devices())) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def create_datastore(ds: str) -> str:
    """Make (once) and attach the datastore's filesystem, mount it at its store path in the
    root namespace and write its marker. Returns the loop device."""
    prepare_private_dir(STORE_DIR)
    prepare_private_dir(DS_DIR)
    create_image(ds)
    device = attach_image(ds)
    mount_store(ds, device)
    (store_path(ds) / DATASTORE_MARKER).write_text(ds + "\n")
    _syncfs(store_path(ds))  # the marker must outlive an array failure right after `up`
    datastore_path(ds).mkdir(parents=True, exist_ok=True)
    return device


def _syncfs(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
        run(["sync", "-f", str(path)])
    finally:
        os.close(fd)


def mount_store(ds: str, device: str) -> None:
    store = store_path(ds)
    store.mkdir(parents=True, exist_ok=True)
    if str(store) not in read_mounts():
        run(["mount", "-t", "ext4", device, str(store)])


def mount_datastore_in_host(host: str, ds: str, device: str) -> None:
    run(nsenter_mnt(host, ["mount", "-t", "ext4", device, str(datastore_path(ds))]))


def mount_datastore_in_root(ds: str) -> None:
    target = str(datastore_path(ds))
    if target not in read_mounts():
        run(["mount", "--bind", str(store_path(ds)), target])


def host_mounts(host: str) -> list[tuple[str, str, str]]:
    """(mount point, fstype, source) of every mount in the host's namespace."""
    out = run(nsenter_mnt(host, ["cat", "/proc/self/mountinfo"])).stdout
    res = []
    for line in out.splitlines():
        fields = line.split()
        sep = fields.index("-")
        res.append((fields[4], fields[sep + 1], fields[sep + 2]))
    return res


def lose_datastore(host: str, ds: str) -> None:
    target = str(datastore_path(ds))
    if any(p == target and src == LOSS_FSNAME for p, _, src in host_mounts(host)):
        return
    run(nsenter_mnt(host, ["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0755",
                           LOSS_FSNAME, target]))


def restore_datastore(host: str, ds: str) -> None:
    target = str(datastore_path(ds))
    while any(p == target and src == LOSS_FSNAME for p, _, src in host_mounts(host)):
        # the loss tmpfs is on top: unmount it (lazily, should a process sit in it)
        run(nsenter_mnt(host, ["umount", "-l", target]))


# --- array failure -------------------------------------------------------------------------
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


def unmount_all() -> list[str]:
    """Unmount, deepest first, every mount under the lab's directories in the root
    namespace (datastore binds, mount namespace files, the private mnt dir). Returns the
    mount points still present (should be none)."""
    prefixes = (str(RUN_DIR) + "/", str(DATA_DIR) + "/")
    for _ in range(5):
        points = [p for p in read_mounts() if p.startswith(prefixes) or p in
                  (str(RUN_DIR), str(DATA_DIR))]
        if not points:
            return []
        # reverse mount order unmounts children before parents
        for p in reversed(points):
            if run(["umount", p], check=False).returncode != 0:
                run(["umount", "-l", p], check=False)
    return [p for p in read_mounts() if p.startswith(prefixes)]


def remove_tree(path: Path) -> None:
    """rm -rf, refusing to descend into anything still mounted."""
    if not path.exists():
        return
    prefix = str(path).rstrip("/") + "/"
    busy = [p for p in read_mounts() if p == str(path) or p.startswith(prefix)]
    if busy:
        raise LabError(f"not removing {path}: still mounted: {', '.join(busy)}")
    shutil.rmtree(path, ignore_errors=False)


def datastore_reachable(root: str | os.PathLike, ds: str) -> bool:
    try:
        return (Path(root) / DATASTORE_MARKER).read_text().strip() == ds
    except OSError:
        return False


__all__ = ["prepare_mntns_dir", "create_host_mntns", "create_datastore",
           "mount_datastore_in_host", "mount_datastore_in_root", "lose_datastore",
           "restore_datastore", "shutdown_datastore", "return_datastore", "holders",
           "lab_loop_devices", "detach_loop_devices", "unmount_all", "remove_tree",
           "host_mounts", "datastore_reachable", "DS_DIR", "STORE_DIR"]
