"""What the machine must offer before a lab can be built on it, each with a clear refusal.

A lab needs root, a few tools, and a mount and PID namespace of its own to hang the
hosts' namespaces on. Containers and chroots differ in ways that otherwise surface as a
bare EINVAL from mount(2) halfway through ``lab up``: each check names the cause and the fix.
"""
from __future__ import annotations

import os
import shutil
import subprocess

TOOLS = ("ip", "nft", "nsenter", "unshare", "mount", "umount", "setsid", "etcd", "ping", "losetup",
         "mkfs.ext4", "e2fsck")


def problems() -> str:
    """The first reason this machine cannot host the lab, or ""."""
    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        return f"missing tools: {', '.join(missing)} (run scripts/install-deps.sh)"
    return foreign_proc() or root_not_a_mount() or chrooted()


def foreign_proc() -> str:
    """Why /proc cannot serve the lab, or "". In a new PID namespace that kept the parent's
    /proc (a container or chroot set up without ``--mount-proc``), /proc/<our pid> is
    another process: binding a host's mount namespace from it fails with EINVAL."""
    try:
        seen = int(os.readlink("/proc/self"))
    except (OSError, ValueError) as e:
        return f"/proc is not usable here ({e}): mount a proc file system on /proc"
    if seen != os.getpid():
        return (f"/proc belongs to another PID namespace (this process is PID {os.getpid()}, /proc "
                f"says {seen}): mount a proc for this one (unshare --mount-proc, or mount -t proc proc /proc)")
    return ""


def root_not_a_mount() -> str:
    """Why / cannot serve the lab, or "": `ip netns exec` makes / a slave mount, which fails
    (EINVAL) where / is not a mount point, as in a chroot into a plain directory."""
    try:
        with open("/proc/self/mountinfo") as f:
            if any(line.split()[4] == "/" for line in f):
                return ""
    except (OSError, IndexError):
        return ""
    return ("/ is not a mount point here (a chroot into a plain directory?): network namespaces "
            "need it to be one; bind-mount the root on itself before the chroot (mount --rbind R R)")


def chrooted() -> str:
    """Why this mount namespace cannot serve the lab, or "": in a chroot inside a mount
    namespace (rather than a container's pivot_root), entering a host's mount namespace
    (nsenter --mount) lands at the namespace's real root, outside the chroot."""
    st = os.stat("/")
    try:
        out = subprocess.run(["nsenter", f"--mount=/proc/{os.getpid()}/ns/mnt", "stat", "-c", "%d:%i", "/"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if out.returncode == 0 and out.stdout.strip() != f"{st.st_dev}:{st.st_ino}":
        return ("this process runs in a chroot inside its mount namespace: entering a lab host's "
                "mount namespace would leave it; make the root the namespace's own (pivot_root, as "
                "containers do)")
    return ""
