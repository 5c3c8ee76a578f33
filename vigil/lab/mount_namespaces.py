"""Per-host persistent mount namespaces (see vigil.lab.datastores)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .layout import MNT_NS_DIR, NETNS_DIR, LabCommandError, LabError, mntns_path, read_mounts, run


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


def bind_new_mount_namespace(path: Path, timeout: float = 10.0) -> None:
    """Make a new private mount namespace and keep it alive as ``path``; see
    :func:`_bind_new_mount_namespace`.

    The kernel refuses (EINVAL) to bind a mount namespace that is not newer than the
    caller's own, to prevent loops, and judges "newer" by the namespaces' ids. Linux 6.18
    hands those ids out in per-CPU batches, so inside a container (whose namespace is not
    the first one) a namespace made on another CPU than the container's can get a smaller
    id: in a container root about half of the binds failed. On the CPU whose batch the
    caller's namespace came from, ids only grow. So after a refusal the namespace is made
    again on each CPU in turn, one of which must work; a last failure says how the mount
    under ``path`` propagates, the other usual cause of that EINVAL."""
    cpus: list[int | None] = [None, *sorted(os.sched_getaffinity(0))]
    for attempt, cpu in enumerate(cpus, 1):
        try:
            _bind_new_mount_namespace(path, timeout, cpu)
            return
        except LabCommandError as e:
            if attempt == len(cpus):
                lines = [line.strip() for line in open("/proc/self/mountinfo")
                         if line.split()[4] in (str(path.parent), str(path))]
                raise LabError(f"{e} (tried {attempt} times, on every CPU; mounts there: {lines})") from None


def _bind_new_mount_namespace(path: Path, timeout: float, cpu: int | None = None) -> None:
    """Make a new private mount namespace and keep it alive as ``path`` (a bind mount of
    its nsfs file). A helper process enters it (``unshare --mount``, on ``cpu`` if given)
    and waits on stdin while this process binds ``/proc/<helper>/ns/mnt``."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    helper = subprocess.Popen([*pin, "unshare", "--mount", "--propagation", "private", "cat"],
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


def host_mounts(host: str) -> list[tuple[str, str, str]]:
    """(mount point, fstype, source) of every mount in the host's namespace."""
    out = run(nsenter_mnt(host, ["cat", "/proc/self/mountinfo"])).stdout
    res = []
    for line in out.splitlines():
        fields = line.split()
        sep = fields.index("-")
        res.append((fields[4], fields[sep + 1], fields[sep + 2]))
    return res
