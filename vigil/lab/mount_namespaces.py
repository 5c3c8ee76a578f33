"""Per-host persistent mount namespaces (see vigil.lab.datastores)."""

from __future__ import annotations

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


def host_mounts(host: str) -> list[tuple[str, str, str]]:
    """(mount point, fstype, source) of every mount in the host's namespace."""
    out = run(nsenter_mnt(host, ["cat", "/proc/self/mountinfo"])).stdout
    res = []
    for line in out.splitlines():
        fields = line.split()
        sep = fields.index("-")
        res.append((fields[4], fields[sep + 1], fields[sep + 2]))
    return res
