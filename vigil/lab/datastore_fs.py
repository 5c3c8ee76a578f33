"""The datastores' filesystems: images, loop devices, their mounts in the root and host
namespaces, storage loss on one host (see vigil.lab.datastores)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .layout import (ARRAYS_DIR, DATA_DIR, DATASTORE_IMAGE_BYTES, DATASTORE_MARKER, DS_DIR, RUN_DIR,
                     STORE_DIR, LabError, datastore_path, image_path, read_mounts, run, store_path)
from .mount_namespaces import host_mounts, nsenter_mnt, prepare_private_dir

LOSS_FSNAME = "vigil-ds-lost"   # tmpfs "device" name of a storage-loss overmount


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
