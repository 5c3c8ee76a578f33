"""Names and paths of the lab (one lab per machine), and small process helpers.

Everything the lab creates carries one of these prefixes, so that `Lab.down()` can find
and remove it even when the state file is missing or a `Lab.up()` failed half-way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable, Sequence

# --- paths -------------------------------------------------------------------------------
RUN_DIR = Path("/run/vigil-lab")
STATE_FILE = RUN_DIR / "lab.json"
CLUSTER_FILE = RUN_DIR / "cluster.json"
MNT_NS_DIR = RUN_DIR / "mnt"          # persistent mount namespaces: mnt/host1, ...
HOSTS_DIR = RUN_DIR / "hosts"         # per-host run dirs: logs, vigil.toml, watchdog, ...

DATA_DIR = Path("/var/lib/vigil-lab")
ARRAYS_DIR = DATA_DIR / "arrays"      # datastore disk images: arrays/ds1.img, ...
STORE_DIR = DATA_DIR / "store"        # datastore filesystems, mounted in the root namespace
DS_DIR = DATA_DIR / "ds"              # canonical datastore mount points (same on every host)
ETCD_DATA_DIR = DATA_DIR / "etcd"     # etcd member data dirs

DATASTORE_MARKER = ".vigil-datastore"
DATASTORE_IMAGE_BYTES = 8 << 30       # sparse: only what is written takes disk space

# --- network -----------------------------------------------------------------------------
BRIDGE = "vigilbr0"
NETNS_PREFIX = "vigil-"               # netns vigil-host1
VETH_PREFIX = "vgl-h"                 # root-side veth vgl-h1 (peer is eth0 in the host)
HOST_IFNAME = "eth0"
NETNS_DIR = Path("/run/netns")
NFT_FAMILY = "bridge"
NFT_TABLE = "vigil_lab"
DEFAULT_SUBNET = "10.77.0.0/24"
BRIDGE_HOST_INDEX = 254               # bridge address 10.77.0.254 = isolation address
# The VM network "vmnet": bridge vmbr0 in each host, a veth (vgl-vN, root side) to the root
# bridge vigilvm0, which has 10.78.0.254 for the tests' clients; lab guests take .1-.253.
VM_NETWORK = "vmnet"
VM_BRIDGE = "vigilvm0"
VM_VETH_PREFIX = "vgl-v"
HOST_VM_BRIDGE = "vmbr0"
HOST_VM_IFNAME = "vmnet0"
VM_SUBNET = "10.78.0.0/24"

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
MAX_ETCD_MEMBERS = 5

# --- per-host files ----------------------------------------------------------------------
SUPERVISOR_LOG = "supervisor.log"
SUPERVISOR_STATUS = "supervisor.json"  # written by the supervisor: pids, state, resets
AGENT_CONFIG = "vigil.toml"
AGENT_LOG = "agent.log"
ETCD_LOG = "etcd.log"
WATCHDOG_FILE = "watchdog"
ETCD_DOWN_FLAG = "etcd.down"           # while it exists the supervisor does not start etcd
WATCHDOG_LATE_FLAG = "watchdog.late"   # seconds the watchdog stand-in fires late (the watchdog-late fault)


def host_name(i: int) -> str:
    return f"host{i}"


def host_index(host: str) -> int:
    if not host.startswith("host") or not host[4:].isdigit():
        raise ValueError(f"not a lab host name: {host!r}")
    return int(host[4:])


def netns_name(host: str) -> str:
    return f"{NETNS_PREFIX}{host}"


def netns_path(host: str) -> Path:
    return NETNS_DIR / netns_name(host)


def mntns_path(host: str) -> Path:
    return MNT_NS_DIR / host


def veth_name(host: str) -> str:
    return f"{VETH_PREFIX}{host_index(host)}"


def vm_veth_name(host: str) -> str:
    return f"{VM_VETH_PREFIX}{host_index(host)}"


def host_dir(host: str) -> Path:
    return HOSTS_DIR / host


def datastore_path(ds: str) -> Path:
    return DS_DIR / ds


def store_path(ds: str) -> Path:
    return STORE_DIR / ds


def image_path(ds: str) -> Path:
    return ARRAYS_DIR / f"{ds}.img"


def host_exec_argv(host: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside `host`'s network and mount namespaces."""
    return ["nsenter", f"--net={netns_path(host)}", f"--mount={mntns_path(host)}", "--", *argv]


# --- processes ---------------------------------------------------------------------------
def run(argv: Sequence[str], check: bool = True, timeout: float = 30,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run a command, capture output; raise LabCommandError with its stderr when check."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise LabCommandError(argv, proc.returncode, proc.stderr.strip() or proc.stdout.strip())
    return proc


class LabError(RuntimeError):
    """A lab operation failed, or cannot be done in the lab's current state."""


class LabCommandError(LabError):
    def __init__(self, argv: Sequence[str], rc: int, output: str):
        self.argv, self.rc, self.output = list(argv), rc, output
        super().__init__(f"{' '.join(argv)} exited {rc}: {output}")


def pid_alive(pid: int | None) -> bool:
    """True when `pid` exists and is not a zombie."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # state is the field after the ")" that closes comm
    state = stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3]
    return state not in (b"Z", b"X")


def pid_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3].decode()


def ns_inode(path: str | os.PathLike) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a namespace file (/run/netns/x or /proc/<pid>/ns/net)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in_ns(ns_file: str | os.PathLike, kind: str = "net",
               exclude: Iterable[int] = ()) -> list[int]:
    """Pids whose /proc/<pid>/ns/<kind> is the namespace bound at `ns_file` (like
    `ip netns pids`). Zombies have no namespaces any more and are not listed."""
    target = ns_inode(ns_file)
    if target is None:
        return []
    return pids_in_ns_inode(target, kind, exclude)


def pids_in_ns_inode(target: tuple[int, int], kind: str = "net",
                     exclude: Iterable[int] = ()) -> list[int]:
    skip = set(exclude)
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in skip:
            continue
        if ns_inode(f"/proc/{pid}/ns/{kind}") == target:
            out.append(pid)
    return out


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_ns_processes(ns_file: str | os.PathLike, kind: str = "net",
                      exclude: Iterable[int] = (), timeout: float = 5.0) -> int:
    """SIGKILL every process in a namespace until none is left; returns how many were
    signalled. Raises LabError if some survive `timeout` seconds."""
    target = ns_inode(ns_file)
    if target is None:
        return 0
    excl = set(exclude)
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = pids_in_ns_inode(target, kind, excl)
        if not pids:
            return len(killed)
        signal_pids(pids, signal.SIGKILL)
        killed.update(pids)
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} in {ns_file} survive SIGKILL")
        time.sleep(0.05)


def wait_for(pred, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def read_mounts() -> list[str]:
    """Mount points of the calling process's mount namespace, in mount order."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            points.append(_unescape(fields[4]))
    return points


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
