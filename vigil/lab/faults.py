"""Real faults on lab hosts, each undone by `heal`. Active faults are recorded in the lab
state (`state["faults"]`, shown by `Lab.status()`).

    power_off(lab, "host2"); heal(lab, "host2")      # or power_on(lab, "host2")
    partition(lab, ["host1"], ["host2", "host3"]); heal(lab)

    datastore_fail(lab, "ds1"); datastore_return(lab, "ds1")   # or heal(lab)

Fault records: {"kind": ..., "host": ..., "since": t, ...}; a partition has "a"/"b" lists
instead of "host", a datastore_fail only "ds" (it hits every host). Kinds: power_off, hang,
isolate, partition, datastore_loss, datastore_fail, etcd_down, bmc_fail.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from typing import Iterable

from . import datastores as dsmod
from . import net
from .lab import Lab, _fault_hosts
from .layout import (ETCD_DOWN_FLAG, WATCHDOG_LATE_FLAG, LabError, host_dir, kill_ns_processes, mntns_path,
                     netns_path, pid_alive, signal_pids, veth_name)

LINK_DOWN_KINDS = ("power_off", "isolate")


def _record(lab: Lab, fault: dict) -> None:
    with lab.mutate() as st:
        fault = {"since": time.time()} | fault
        key = {k: v for k, v in fault.items() if k != "since"}
        if not any({k: v for k, v in f.items() if k != "since"} == key for f in st["faults"]):
            st["faults"].append(fault)


def _active(lab: Lab, kind: str, host: str | None = None) -> list[dict]:
    return [f for f in lab.state["faults"] if f["kind"] == kind
            and (host is None or host in _fault_hosts(f))]


def _sync_link(lab: Lab, host: str) -> None:
    """The host's link is down while a power_off or isolate fault is active on it."""
    down = any(f["kind"] in LINK_DOWN_KINDS and f.get("host") == host for f in lab.state["faults"])
    net.set_link(host, up=not down)
    if not down:
        net.flush_unresolved_neighbors(lab.state["hosts"])


def _check_host(lab: Lab, host: str) -> None:
    lab.host(host)
    if not netns_path(host).exists():
        raise LabError(f"{host}'s network namespace is gone; is the lab up?")


# --- power -------------------------------------------------------------------------------
def power_off(lab: Lab, host: str) -> int:
    """SIGKILL every process of the host (supervisor included), link down. Returns the
    number of processes killed."""
    _check_host(lab, host)
    _record(lab, {"kind": "power_off", "host": host})
    net.set_link(host, up=False)
    n = kill_ns_processes(netns_path(host), timeout=10)
    with lab.mutate() as st:
        st["hosts"][host]["supervisor_pid"] = None
    return n


def power_on(lab: Lab, host: str) -> int:
    """Undo power_off: link up (unless isolated) and start the supervisor, which boots
    etcd and the agent. Returns the supervisor's pid."""
    _check_host(lab, host)
    with lab.mutate() as st:
        st["faults"] = [f for f in st["faults"]
                        if not (f["kind"] == "power_off" and f.get("host") == host)]
    _sync_link(lab, host)
    pid = lab.supervisor_pid(host)
    return pid if pid else lab.start_supervisor(host)


# --- processes ---------------------------------------------------------------------------
def hang(lab: Lab, host: str) -> list[int]:
    """SIGSTOP every process of the host except its supervisor (the watchdog keeps
    running, and resets the host after watchdog_timeout_s). Returns the stopped pids."""
    _check_host(lab, host)
    sup = lab.supervisor_pid(host)
    _record(lab, {"kind": "hang", "host": host})
    stopped: set[int] = set()
    for _ in range(3):   # catch processes forked meanwhile
        pids = [p for p in lab.host_pids(host) if p != sup and p not in stopped]
        if not pids:
            break
        signal_pids(pids, signal.SIGSTOP)
        stopped.update(pids)
        time.sleep(0.05)
    return sorted(stopped)


def unhang(lab: Lab, host: str) -> None:
    signal_pids(lab.host_pids(host), signal.SIGCONT)
    with lab.mutate() as st:
        st["faults"] = [f for f in st["faults"]
                        if not (f["kind"] == "hang" and f.get("host") == host)]


def watchdog_late(lab: Lab, host: str, seconds: float) -> None:
    """Make the host's watchdog stand-in fire `seconds` after its timeout (a slow or broken
    device), until heal. The controller cannot see it: what then keeps two copies of a VM
    from running is the rest of the design (disk locks, the agent killing what it no
    longer owns), which the tests check."""
    _check_host(lab, host)
    if not seconds >= 0:
        raise LabError(f"watchdog-late: seconds must be 0 or more, got {seconds}")
    _record(lab, {"kind": "watchdog-late", "host": host, "seconds": seconds})
    (host_dir(host) / WATCHDOG_LATE_FLAG).write_text(f"{seconds}\n")


def kill_agent(lab: Lab, host: str) -> int:
    """SIGKILL the host's agent (the supervisor restarts it ~1 s later). Returns its pid."""
    _check_host(lab, host)
    pid = lab.agent_pid(host)
    if not pid:
        raise LabError(f"{host} has no running agent")
    signal_pids([pid], signal.SIGKILL)
    _wait_dead(pid)
    return pid


def _wait_dead(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def kill_etcd(lab: Lab, host: str, keep_down: bool = True) -> int:
    """SIGKILL the host's etcd member. With keep_down (the default) the supervisor does
    not restart it until heal; otherwise it is back ~1 s later. Returns its pid."""
    _check_host(lab, host)
    if not lab.host(host)["etcd_member"]:
        raise LabError(f"{host} runs no etcd member")
    if keep_down:
        (host_dir(host) / ETCD_DOWN_FLAG).touch()
        _record(lab, {"kind": "etcd_down", "host": host})
    pid = lab.etcd_pid(host)
    if pid:
        signal_pids([pid], signal.SIGKILL)
        _wait_dead(pid)
    elif not keep_down:
        raise LabError(f"{host}'s etcd is not running")
    return pid or 0


def start_etcd(lab: Lab, host: str) -> None:
    """Undo kill_etcd(keep_down=True): the supervisor starts etcd again."""
    with contextlib.suppress(FileNotFoundError):
        (host_dir(host) / ETCD_DOWN_FLAG).unlink()
    with lab.mutate() as st:
        st["faults"] = [f for f in st["faults"]
                        if not (f["kind"] == "etcd_down" and f.get("host") == host)]


# --- network -----------------------------------------------------------------------------
def isolate(lab: Lab, host: str) -> None:
    """Take the host's link down (root side of its veth: eth0 loses its carrier)."""
    _check_host(lab, host)
    _record(lab, {"kind": "isolate", "host": host})
    net.set_link(host, up=False)


def unisolate(lab: Lab, host: str) -> None:
    with lab.mutate() as st:
        st["faults"] = [f for f in st["faults"]
                        if not (f["kind"] == "isolate" and f.get("host") == host)]
    _sync_link(lab, host)


def blip(lab: Lab, host: str, seconds: float, wait: bool = True) -> None:
    """Link down for `seconds`, then up again (unless another fault keeps it down). With
    wait=False returns at once; a detached process brings the link up."""
    _check_host(lab, host)
    net.set_link(host, up=False)
    if wait:
        try:
            time.sleep(seconds)
        finally:
            _sync_link(lab, host)
    else:
        subprocess.run(["setsid", "-f", "sh", "-c",
                        f"sleep {float(seconds)}; ip link set {veth_name(host)} up"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)


def _apply_partitions(lab: Lab) -> None:
    st = lab.state
    net.apply_partitions([(f["a"], f["b"]) for f in st["faults"] if f["kind"] == "partition"])
    net.flush_unresolved_neighbors(st["hosts"])


def partition(lab: Lab, group_a: Iterable[str], group_b: Iterable[str]) -> None:
    """Drop every frame between the hosts of group_a and those of group_b (nftables,
    bridge family, in the root namespace). Both groups still reach everyone else and the
    isolation address."""
    a, b = sorted(set(group_a)), sorted(set(group_b))
    if not a or not b:
        raise LabError("partition needs two non-empty groups")
    if set(a) & set(b):
        raise LabError(f"host(s) {sorted(set(a) & set(b))} in both groups")
    for h in a + b:
        lab.host(h)
    _record(lab, {"kind": "partition", "a": a, "b": b})
    _apply_partitions(lab)


# --- storage -----------------------------------------------------------------------------
def datastore_loss(lab: Lab, host: str, ds: str) -> None:
    """In the host's mount namespace only, mount an empty read-only tmpfs over the
    datastore (its marker file disappears; the other hosts still see it)."""
    _check_host(lab, host)
    if ds not in lab.state["datastores"]:
        raise LabError(f"no datastore {ds!r}")
    _record(lab, {"kind": "datastore_loss", "host": host, "ds": ds})
    dsmod.lose_datastore(host, ds)


def datastore_restore(lab: Lab, host: str, ds: str) -> None:
    dsmod.restore_datastore(host, ds)
    with lab.mutate() as st:
        st["faults"] = [f for f in st["faults"] if not (
            f["kind"] == "datastore_loss" and f.get("host") == host and f.get("ds") == ds)]


def _device(lab: Lab, ds: str) -> str:
    d = lab.state["datastores"].get(ds)
    if d is None:
        raise LabError(f"no datastore {ds!r}")
    if not d.get("device"):
        raise LabError(f"datastore {ds} has no loop device; is the lab up?")
    return d["device"]


def datastore_fail(lab: Lab, ds: str) -> None:
    """The datastore's storage array dies: its filesystem is shut down (FS_IOC_SHUTDOWN,
    the journal not flushed). Every I/O on it then fails with EIO, on every host and in the
    root namespace, on files already open too; the marker file cannot be read either.
    What was written but not yet synced is lost, as when an array dies."""
    device = _device(lab, ds)
    _record(lab, {"kind": "datastore_fail", "ds": ds})
    dsmod.shutdown_datastore(ds, device)


def datastore_return(lab: Lab, ds: str) -> None:
    """Undo datastore_fail: unmount the datastore everywhere (not lazily), e2fsck it and
    mount it again. A host's datastore_loss stays in force: its overmount is lifted for the
    while and put back on top. Raises LabError (the datastore stays failed, the fault
    recorded) while a process on some host or in the root namespace holds a file or its
    cwd on it, naming them: the dead filesystem would come back as long as it is held."""
    device = _device(lab, ds)
    hosts = [h for h in lab.hosts if mntns_path(h).exists()]
    lost_on = [f["host"] for f in _active(lab, "datastore_loss") if f["ds"] == ds]
    dsmod.return_datastore(ds, device, hosts, lost_on)
    with lab.mutate() as st:
        st["faults"] = [f for f in st["faults"]
                        if not (f["kind"] == "datastore_fail" and f.get("ds") == ds)]


# --- BMCs ------------------------------------------------------------------------------
def bmc_fail(lab: Lab, host: str) -> None:
    """The host's BMCs (vigil.lab.bmc) stop answering: Redfish holds connections without
    a word, ipmi_sim is stopped. Undone by bmc_return or heal."""
    lab.host(host)
    if not lab.state.get("bmc_pid"):
        raise LabError("this lab has no BMCs (vigil lab up --fencing redfish|ipmi)")
    _record(lab, {"kind": "bmc_fail", "host": host})


def bmc_return(lab: Lab, host: str) -> None:
    with lab.mutate() as st:
        st["faults"] = [f for f in st["faults"] if not (f["kind"] == "bmc_fail" and f.get("host") == host)]


# --- heal --------------------------------------------------------------------------------
def heal(lab: Lab, host: str | None = None) -> list[dict]:
    """Undo every fault on `host` (partitions it is part of included), or on all hosts and
    then failed datastores too (one still held by a process stays failed: reported through
    lab.progress). Also makes sure each healed host's supervisor runs. Returns the faults
    undone."""
    st = lab.state
    hosts = [host] if host else list(st["hosts"])
    if host:
        lab.host(host)
    undone = [f for f in st["faults"] if set(_fault_hosts(f)) & set(hosts)]
    with lab.mutate() as s:
        s["faults"] = [f for f in s["faults"] if f not in undone]
    # partitions: rebuild the table from what is left (or delete it)
    _apply_partitions(lab)
    for h in hosts:
        if not netns_path(h).exists():
            continue
        for flag in (ETCD_DOWN_FLAG, WATCHDOG_LATE_FLAG):
            with contextlib.suppress(FileNotFoundError):
                (host_dir(h) / flag).unlink()
        for ds in st["datastores"]:
            dsmod.restore_datastore(h, ds)
        signal_pids(lab.host_pids(h), signal.SIGCONT)
        _sync_link(lab, h)
        if not lab.supervisor_pid(h):
            lab.start_supervisor(h)
    if host is None:
        undone += _return_datastores(lab)
    return undone


def _return_datastores(lab: Lab) -> list[dict]:
    """datastore_return of every failed datastore that can be; returns their records."""
    back = []
    for f in _active(lab, "datastore_fail"):
        try:
            datastore_return(lab, f["ds"])
            back.append(f)
        except LabError as e:
            lab.progress(f"datastore {f['ds']} stays failed: {e}")
    return back


__all__ = ["power_off", "power_on", "hang", "unhang", "kill_agent", "kill_etcd", "start_etcd",
           "isolate", "unisolate", "blip", "partition", "datastore_loss", "datastore_restore",
           "datastore_fail", "datastore_return", "bmc_fail", "bmc_return", "heal"]
