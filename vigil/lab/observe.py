"""Watching a lab from outside: cluster state, QEMU processes, invariants, timelines.

Used by the demo, the integration tests and the benchmarks; it only reads.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vigil import service
from vigil.config import cluster_endpoints
from vigil.config.etcd_client import cluster_tls
from vigil.lab.layout import RUN_DIR
from vigil.model import Event
from vigil.store import keys as K
from vigil.store.etcd import Store, StoreError, run_with_store
from vigil.store.events import parse_events


def call(fn: Callable[[Store], Any], timeout: float = 3.0) -> Any:
    return run_with_store(cluster_endpoints(), fn, timeout, tls=cluster_tls())


def cluster() -> dict[str, Any]:
    return call(service.cluster)


def events() -> list[Event]:
    return parse_events(call(lambda s: s.get_prefix(K.EVENTS), timeout=5.0))


def wait_for(what: str, pred: Callable[[], Any], timeout: float, interval: float = 0.25,
             explain: Callable[[], str] | None = None) -> Any:
    """Poll until ``pred()`` is truthy; a hang guard, not a performance assertion.
    ``explain`` adds what the cluster looked like to the timeout's message."""
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except (StoreError, OSError) as e:
            last_err = e
        time.sleep(interval)
    msg = f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_err})" if last_err else "")
    if explain is not None:
        try:
            msg += "\n" + explain()
        except Exception as e:  # the explanation is a courtesy; never hide the timeout
            msg += f"\n(no explanation: {e})"
    raise TimeoutError(msg)


def recent_history(n: int = 30) -> str:
    """The last events and every task, as text: what a failed lab test should show."""
    from vigil import service

    lines = [f"{e.time:.2f} {e.kind} {e.message}" for e in events()[-n:]]
    lines += [f"task {t.vm} {t.kind} {t.state} {t.error}" for t in call(service.tasks)]
    return "\n".join(lines)


def qemu_processes() -> dict[str, list[int]]:
    """Every QEMU of the lab that runs a VM, by VM name (the ``-name`` argument).

    A lab QEMU's pidfile is in its host's run dir, under the lab's (``RUN_DIR``): QEMUs
    outside the lab (a test's or a benchmark's, vigil.lab.standalone) may run beside it,
    with the same VM names, and are none of the lab's business.

    ``-daemonize`` forks twice and the first process waits for the last to be ready, so
    one start briefly shows two processes: only the one whose pid is in its ``-pidfile``
    (the daemon itself) counts. Zombies do not count.
    """
    out: dict[str, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            if not argv or not argv[0].endswith(b"qemu-system-x86_64") or b"-name" not in argv:
                continue
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            named_threads = any(a.endswith(b",debug-threads=on") for a in argv)
            if b"-incoming" in argv and _waiting_for_migration(int(d.name), named_threads):
                continue
            if b"-pidfile" not in argv:
                continue
            pidfile = Path(argv[argv.index(b"-pidfile") + 1].decode())
            if not pidfile.is_relative_to(RUN_DIR):
                continue
            if pidfile.exists() or b"-incoming" not in argv:
                if pidfile.read_text().strip() != d.name:
                    continue
            # else: a promoted FT standby, whose pidfile moved to the VM's run dir
        except (OSError, IndexError):
            continue
        name = argv[argv.index(b"-name") + 1].decode().split(",")[0]
        out.setdefault(name, []).append(int(d.name))
    return out


VCPU_SETUP_TICKS = 3


def _waiting_for_migration(pid: int, named_threads: bool) -> bool:
    """A destination QEMU (or an FT standby) whose vCPUs have not run yet is no running
    copy. Its vCPU threads ("CPU 0/TCG") have used no CPU time until then; while it starts
    it has none yet."""
    found = False
    try:
        for t in Path(f"/proc/{pid}/task").iterdir():
            if (t / "comm").read_text().startswith("CPU "):
                found = True
                f = (t / "stat").read_text().rsplit(")", 1)[1].split()
                # utime + stime, in clock ticks: a vCPU that ran a guest has used far more;
                # a standby's vCPU thread may be charged a tick while it is set up
                if int(f[11]) + int(f[12]) > VCPU_SETUP_TICKS:
                    return False
    except OSError:
        # gone while we looked (a standby being ended, its run dir already removed): a
        # process that exits runs no guest; one still there that we cannot read counts
        return not Path(f"/proc/{pid}").exists()
    # no vCPU thread: still starting if its threads are named, else unknown: count it, to be safe
    return found or named_threads


def running_vms_ok(names: list[str], exclude_hosts: set[str] = frozenset()) -> dict[str, dict] | None:
    """All named VMs running with a guest heartbeat, none on an excluded host; else None."""
    c = cluster()
    vms = {v["name"]: v for v in c["vms"] if v["name"] in names}
    if len(vms) != len(names):
        return None
    for v in vms.values():
        if v["state"] != "running" or v["guest"] != "ok" or v["host"] in exclude_hosts or v["owner"] != v["host"]:
            return None
    return vms


@dataclass
class DuplicateWatch:
    """Samples the QEMU processes in the background: no VM may ever have two."""

    interval: float = 0.1
    samples: int = 0
    worst: dict[str, list[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "DuplicateWatch":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pids in qemu_processes().items():
                if len(pids) > 1:
                    self.worst.setdefault(name, [_describe(p) for p in pids])
            self.samples += 1
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def check(self) -> None:
        assert self.samples > 0
        assert not self.worst, f"VMs with two running QEMUs: {self.worst}"


def _describe(pid: int) -> str:
    """pid, parent, state and network namespace: enough to tell two copies apart."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ns = os.readlink(f"/proc/{pid}/ns/net")
        return f"{pid}(ppid {f[1]}, {f[0]}, {ns})"
    except OSError:
        return f"{pid}(gone)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@dataclass
class Timeline:
    """Seconds after the power cut at which each step was seen (from the event log)."""

    t0: float
    failed: float | None = None
    restart: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    guest: dict[str, float] = field(default_factory=dict)


def failover_timeline(t0: float, host: str, vms: list[str]) -> Timeline:
    tl = Timeline(t0=t0)
    for e in events():
        if e.time < t0:
            continue
        dt = e.time - t0
        if e.kind == "host-failed" and e.host == host and tl.failed is None:
            tl.failed = dt
        elif e.vm in vms and e.kind == "vm-restart":
            tl.restart.setdefault(e.vm, dt)
        elif e.vm in vms and e.kind == "vm-started" and e.host != host:
            tl.started.setdefault(e.vm, dt)
        elif e.vm in vms and e.kind == "guest-heartbeat" and e.host != host:
            tl.guest.setdefault(e.vm, dt)
    return tl


def acked_by_guest(host: str, vm: str) -> int:
    """The highest workload record the guest acknowledged while it ran on ``host``
    (from the agent's copy of the guest's heartbeat lines), -1 if none."""
    from vigil.lab.layout import HOSTS_DIR

    best = -1
    try:
        lines = (HOSTS_DIR / host / "run" / vm / "guest.log").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        parts = line.split()
        if len(parts) >= 5 and parts[1] == "hb" and parts[4].lstrip("-").isdigit():
            best = max(best, int(parts[4]))
    return best


def guest_heartbeats(vm: str) -> list[tuple[float, str, int, str]]:
    """Every heartbeat line the agents received from ``vm``, on any host:
    (host time, host, seq, boot_id), in time order."""
    from vigil.lab.layout import HOSTS_DIR

    out = []
    for log in HOSTS_DIR.glob(f"*/run/{vm}/guest.log"):
        host = log.parts[-4]
        for line in log.read_text().splitlines():
            p = line.split()
            if len(p) >= 6 and p[1] == "hb" and p[2].isdigit():
                out.append((float(p[0]), host, int(p[2]), p[5]))
    return sorted(out)


def records_on_disk(vm: str, datastore: str = "ds1") -> list[int]:
    from vigil.hypervisor.guest_image import read_records
    from vigil.lab.layout import DS_DIR

    from vigil.hypervisor.ftdisk import chain_top

    from vigil.hypervisor.guest_image import GuestImageError

    # an FT primary writes to overlays of its image: read the newest, with what is below it.
    # While the primary commits or starts an overlay, a node of the chain briefly refuses
    # even a shared read (QEMU unshares "consistent read" on a job's intermediate nodes):
    # read the chain again, as it is then, rather than fail on that moment (the same for an
    # overlay removed between finding the chain's top and opening it).
    for attempt in range(20):
        try:
            return read_records(chain_top(DS_DIR / datastore / vm / "disk0.qcow2"))
        except GuestImageError as e:
            if not ("lock" in str(e) or "No such file" in str(e)) or attempt == 19:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")
