"""``vigil demo``: a 3-host lab, 6 VMs, one host's power cut, the failover shown live."""
from __future__ import annotations

import time
from typing import Callable

from rich.console import Console
from rich.table import Table

from vigil.lab import faults, observe
from vigil.hypervisor.guest_image import build_guest_image
from vigil.lab.lab import Lab, LabConfig
from vigil.lab.layout import LabError
from vigil.lab.scenario import create_lab_vms, wait_cluster_ready
from vigil.store.etcd import StoreError

VMS = [f"vm{i}" for i in range(1, 7)]
PRIORITIES = ["highest", "high", "medium", "medium", "low", "lowest"]


def run_demo(console: Console, keep: bool = False) -> None:
    """Run the demo, then tear the lab down (unless keep). A cluster that does not come up
    or answer raises LabError carrying the lab's log tails, read before the teardown
    removes them; a failing teardown does not hide what went wrong first."""
    say = lambda m: console.print(f"[cyan]>[/] {m}", highlight=False)  # noqa: E731
    lab = Lab(progress=say)
    failed = True
    try:
        _demo(console, lab, say)
        failed = False
    except (TimeoutError, StoreError) as e:
        raise LabError(f"demo failed: {e}{lab.log_tails()}") from e
    finally:
        if keep:
            say("leaving the lab up ('vigil lab down' removes it)")
        else:
            say("tearing the lab down")
            try:
                lab.down()
            except (LabError, OSError) as e:
                if not failed:
                    raise
                say(f"tearing the lab down failed too: {e}; run 'vigil lab down'")


def _demo(console: Console, lab: Lab, say: Callable[[str], None]) -> None:
    say("building the guest image (Debian kernel + busybox)")
    build_guest_image(progress=say)
    lab.up(LabConfig(hosts=3, datastores=1))
    wait_cluster_ready(3, timeout=90)
    say("cluster ready: 3 hosts with leases, a leader elected")
    create_lab_vms(VMS, hosts=["host1", "host2", "host3"], priorities=PRIORITIES, progress=say)
    observe.wait_for("6 guests heartbeating", lambda: observe.running_vms_ok(VMS), timeout=240)
    c = observe.cluster()
    leader = c["leader"]
    victim = next(h["name"] for h in c["hosts"] if h["name"] != leader and h["vms"])
    theirs = sorted(next(h["vms"] for h in c["hosts"] if h["name"] == victim))
    _print_vms(console, "before", c)
    say(f"cutting the power of {victim} (runs {', '.join(theirs)}; the leader is {leader})")
    t0 = time.time()
    faults.power_off(lab, victim)
    shown: set[tuple[str, str]] = set()

    def progress_done() -> bool:
        for e in observe.events():
            if e.time >= t0 and (e.kind, e.vm or e.host) not in shown and (
                    e.host == victim or e.vm in theirs):
                shown.add((e.kind, e.vm or e.host))
                console.print(f"  [dim]+{e.time - t0:5.2f}s[/] [bold]{e.kind:<16}[/] {e.message}", highlight=False)
        return observe.running_vms_ok(theirs, exclude_hosts={victim}) is not None

    observe.wait_for("the VMs of the failed host to run again", progress_done, timeout=120, interval=0.2)
    tl = observe.failover_timeline(t0, victim, theirs)
    _print_vms(console, "after", observe.cluster())
    t = Table(title=f"failover timeline after cutting the power of {victim} (seconds)")
    for col in ("VM", "host declared failed", "restart issued", "QEMU started", "guest heartbeat back"):
        t.add_column(col)
    for vm in theirs:
        t.add_row(vm, _f(tl.failed), _f(tl.restart.get(vm)), _f(tl.started.get(vm)), _f(tl.guest.get(vm)))
    console.print(t)
    console.print("vSphere HA starts restarts ~18 s after a host failure; Proxmox ~120 s.")
    from vigil.lab import api_servers

    api = api_servers.read()
    if api.get("urls"):
        console.print(f"dashboard: {api['urls'][0]}/  user {api['user']}, password {api['password']} "
                      f"(the lab's CA: {api['ca']}); the lab ends with the demo, 'vigil demo --keep' leaves it up",
                      highlight=False)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _print_vms(console: Console, title: str, c: dict) -> None:
    t = Table(title=f"VMs {title}")
    for col in ("VM", "host", "state", "guest", "priority"):
        t.add_column(col)
    for v in c["vms"]:
        t.add_row(v["name"], v["host"] or "-", v["state"], v["guest"], v["priority"])
    console.print(t)
