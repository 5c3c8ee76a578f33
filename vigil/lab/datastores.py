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

The parts: vigil.lab.mount_namespaces, vigil.lab.datastore_fs (images, loop devices,
mounts, storage loss) and vigil.lab.array_failure; this module names them all.
"""

from __future__ import annotations

from .array_failure import (FS_IOC_SHUTDOWN, ROOT_NS, SHUTDOWN_NOLOGFLUSH, check_unused, describe_holders,
                            fsck, holders, mount_everywhere, return_datastore, shutdown_datastore,
                            shutdown_fs, unmount_in_host, unmount_in_root)
from .datastore_fs import (LOSS_FSNAME, attach_image, create_datastore, create_image, datastore_reachable,
                           detach_loop_devices, lab_loop_devices, lose_datastore, mount_datastore_in_host,
                           mount_datastore_in_root, mount_store, remove_tree, restore_datastore,
                           unmount_all)
from .layout import DS_DIR, STORE_DIR
from .mount_namespaces import (bind_new_mount_namespace, create_host_mntns, host_mounts, nsenter_mnt,
                               prepare_mntns_dir, prepare_private_dir)

__all__ = ["prepare_mntns_dir", "create_host_mntns", "create_datastore",
           "mount_datastore_in_host", "mount_datastore_in_root", "lose_datastore",
           "restore_datastore", "shutdown_datastore", "return_datastore", "holders",
           "lab_loop_devices", "detach_loop_devices", "unmount_all", "remove_tree",
           "host_mounts", "datastore_reachable", "DS_DIR", "STORE_DIR"]

_ = (FS_IOC_SHUTDOWN, ROOT_NS, SHUTDOWN_NOLOGFLUSH, check_unused, describe_holders, fsck, mount_everywhere,
     shutdown_fs, unmount_in_host, unmount_in_root, LOSS_FSNAME, attach_image, create_image, mount_store,
     bind_new_mount_namespace, nsenter_mnt, prepare_private_dir)  # re-exported
