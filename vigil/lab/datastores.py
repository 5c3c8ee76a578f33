"""Per-host persistent mount namespaces and the datastores bind-mounted into them.

- `/run/vigil-lab/mnt` is bind-mounted on itself and made private, so that a mount
  namespace can be kept alive by binding `/proc/<pid>/ns/mnt` on a file in it
  (`unshare --mount=/run/vigil-lab/mnt/host1 --propagation private true`).
- Datastore `dsN` is the directory `/var/lib/vigil-lab/store/dsN` (on disk), bind-mounted
  at `/var/lib/vigil-lab/ds/dsN` inside every host's mount namespace, and in the root
  namespace for tools. Its root holds the marker file `.vigil-datastore` (= its name).
- Storage loss: a read-only empty tmpfs over the datastore path in one host's namespace.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .layout import (DATA_DIR, DATASTORE_MARKER, DS_DIR, MNT_NS_DIR, NETNS_DIR, RUN_DIR,
                     STORE_DIR, LabError, datastore_path, mntns_path, read_mounts, run,
                     store_path)

LOSS_FSNAME = "vigil-ds-lost"   # tmpfs "device" name of a storage-loss overmount


def nsenter_mnt(host: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--mount={mntns_path(host)}", "--", *argv]


def prepare_mntns_dir() -> None:
    MNT_NS_DIR.mkdir(parents=True, exist_ok=True)
    if str(MNT_NS_DIR) not in read_mounts():
        run(["mount", "--bind", str(MNT_NS_DIR), str(MNT_NS_DIR)])
    run(["mount", "--make-private", str(MNT_NS_DIR)])


def create_host_mntns(host: str) -> None:
    """A persistent private mount namespace for `host`, without the copies of the other
    namespaces' files (they would keep those namespaces alive after `down`)."""
    path = mntns_path(host)
    if path.exists() and str(path) in read_mounts():
        return
    path.touch()
    run(["unshare", f"--mount={path}", "--propagation", "private", "true"])
    # The new namespace got a copy of every mount, including the nsfs bind mounts of the
    # other hosts' namespaces (/run/netns/*, /run/vigil-lab/mnt/*): drop those copies.
    points = [p for p, _, _ in host_mounts(host)]
    for top in (str(MNT_NS_DIR), str(NETNS_DIR)):
        if top in points:
            run(nsenter_mnt(host, ["umount", "-l", top]), check=False)
    for p, fstype, _ in reversed(host_mounts(host)):
        if fstype == "nsfs":
            run(nsenter_mnt(host, ["umount", "-l", p]), check=False)


def create_datastore(ds: str) -> Path:
    store = store_path(ds)
    store.mkdir(parents=True, exist_ok=True)
    (store / DATASTORE_MARKER).write_text(ds + "\n")
    datastore_path(ds).mkdir(parents=True, exist_ok=True)
    return store


def mount_datastore_in_host(host: str, ds: str) -> None:
    run(nsenter_mnt(host, ["mount", "--bind", str(store_path(ds)), str(datastore_path(ds))]))


def mount_datastore_in_root(ds: str) -> None:
    target = str(datastore_path(ds))
    if target not in read_mounts():
        run(["mount", "--bind", str(store_path(ds)), target])
        run(["mount", "--make-private", target])


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
           "restore_datastore", "unmount_all", "remove_tree", "host_mounts",
           "datastore_reachable", "DS_DIR", "STORE_DIR"]
