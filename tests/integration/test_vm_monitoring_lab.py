"""VM and application monitoring on the real lab: real QEMU guests that hang, stop
heartbeating while they write to their disk, or whose application stops heartbeating.

Each VM carries its own monitoring settings (its spec's, over the cluster's default of
off): 10 s failure interval, 12 s minimum uptime, one reset an hour, so that a guest
that fails again after its reset shows the limit too. The guests fail by themselves
(vigil.hang=..., vigil.app_stop_after=... on their command line, see the guest's init),
but for one that panics when the test tells it to (``vigil-hang panic`` through its shell
port: its kernel panics, pvpanic stops it, and VM monitoring resets it).
Each reset's delay after the guest failed is printed (run with -s to see it).
"""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from vigil import service
from vigil.lab import observe
from vigil.lab.guestshell import guest_sh, with_shell
from vigil.lab.net import vm_address
from vigil.lab.netcheck import EchoClient
from vigil.lab.scenario import lab_vm_spec
from vigil.model import MonitoringSpec
from vigil.service import monitoring as SM

from labcheck import LAB_MARKS, kinds_since, running_lab

pytestmark = LAB_MARKS

OWN = MonitoringSpec(preset="custom", interval_s=10.0, min_uptime_s=12.0, max_resets=1, window_s=3600.0)
HANG_AFTER = 15  # seconds after boot: past the minimum uptime, which counts from QEMU's start
VMS = {
    "hung": f" vigil.hang=freeze vigil.hang_after={HANG_AFTER}",
    "suspended": f" vigil.hang=suspend vigil.hang_after={HANG_AFTER}",
    "quiet": f" vigil.workload=1 vigil.hang=heartbeat vigil.hang_after={HANG_AFTER}",
    "app": " vigil.app_hb=1 vigil.app_stop_after=18",
    "net": f" vigil.hang=heartbeat vigil.hang_after={HANG_AFTER}",  # no disk I/O: only its NIC's traffic
    "panicky": "",  # panics on command (its shell port)
}
NET_IP = vm_address(21)
PANICKY_IP = vm_address(22)
IPS = {"net": NET_IP, "panicky": PANICKY_IP}


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=2, datastores=1):
        t0 = time.time()
        for i, (name, extra) in enumerate(VMS.items()):
            spec = lab_vm_spec(name, ip=IPS.get(name, ""))
            assert spec.boot is not None
            spec = replace(spec, boot=replace(spec.boot, cmdline=spec.boot.cmdline + extra), monitoring=OWN)
            if name == "panicky":
                spec = with_shell(spec)
            observe.call(lambda s, spec=spec, host=f"host{i % 2 + 1}": service.create_vm(s, spec, host))
            time.sleep(0.5)
        observe.wait_for("the guests heartbeating", lambda: observe.running_vms_ok(list(VMS)), timeout=180)
        pids = {n: observe.qemu_processes()[n] for n in VMS}
        client = EchoClient(NET_IP.split("/")[0]).start()  # requests to net's guest, all along
        try:
            yield t0, pids, client
        finally:
            client.stop()


def resets(t0: float, vm: str) -> list:
    return [e for e in kinds_since(t0, "vm-monitoring-reset") if e.vm == vm]


def last_heartbeat_before(t: float, vm: str) -> float:
    return max(h[0] for h in observe.guest_heartbeats(vm) if h[0] < t)


def boots(vm: str) -> list[str]:
    """The guest's boot ids, in the order its heartbeats came."""
    out: list[str] = []
    for _, _, _, boot in observe.guest_heartbeats(vm):
        if not out or out[-1] != boot:
            out.append(boot)
    return out


def test_a_hung_guest_is_reset_comes_back_and_the_limit_holds(lab) -> None:
    t0, pids, _ = lab
    ev = observe.wait_for("hung reset", lambda: resets(t0, "hung"), timeout=150)[0]
    assert ev.data.get("cause") == "guest" and "no disk or network I/O" in ev.message
    print(f"hung: reset {ev.time - last_heartbeat_before(ev.time, 'hung'):.1f}s after its last heartbeat")
    # the same QEMU (a reset, not a restart), and the guest heartbeats again from a new boot
    observe.wait_for("hung heartbeating again", lambda: len(boots("hung")) >= 2, timeout=90)
    assert observe.qemu_processes()["hung"] == pids["hung"]
    # it hangs again after its boot: one reset an hour, so the limit, said once
    lim = observe.wait_for("the limit", lambda: [e for e in kinds_since(t0, "vm-monitoring-limit")
                                                 if e.vm == "hung"], timeout=120)
    assert "not reset" in lim[0].message and len(resets(t0, "hung")) == 1
    m = observe.call(lambda s: SM.vm_monitoring(s, "hung"))
    assert len(m["resets"]) == 1 and m["last_reset"]["cause"] == "guest"


def test_a_guest_whose_kernel_hangs_is_reset_and_comes_back(lab) -> None:
    """Suspend to idle with nothing to wake it: the kernel itself stops (no process runs)."""
    t0, pids, _ = lab
    ev = observe.wait_for("suspended reset", lambda: resets(t0, "suspended"), timeout=150)[0]
    assert ev.data.get("cause") == "guest"
    print(f"suspended: reset {ev.time - last_heartbeat_before(ev.time, 'suspended'):.1f}s after its last heartbeat")
    observe.wait_for("suspended heartbeating again", lambda: len(boots("suspended")) >= 2, timeout=90)
    assert observe.qemu_processes()["suspended"] == pids["suspended"]


def silent_long_enough(t0: float, vm: str) -> None:
    """Wait until ``vm``'s heartbeat was lost more than its failure interval and 15 s ago
    (the other VMs' failures, reset meanwhile, are in those seconds): it would have been
    reset by then. Counted from the loss, not from this test's start, so that these waits
    overlap the earlier tests' instead of adding up."""
    lost = observe.wait_for(f"{vm}'s heartbeat lost", lambda: [e for e in kinds_since(t0, "guest-heartbeat-lost")
                                                              if e.vm == vm], timeout=120)[0]
    time.sleep(max(0.0, lost.time + OWN.interval_s + 15 - time.time()))


def test_a_guest_silent_but_writing_to_its_disk_is_not_reset(lab) -> None:
    t0, pids, _ = lab
    silent_long_enough(t0, "quiet")
    assert resets(t0, "quiet") == []
    assert observe.qemu_processes()["quiet"] == pids["quiet"] and len(boots("quiet")) == 1


def test_a_guest_silent_but_busy_on_its_network_is_not_reset(lab) -> None:
    """No disk I/O at all: only its NIC's byte counters (the tap's, in the host's network
    namespace) show it is alive."""
    t0, pids, client = lab
    silent_long_enough(t0, "net")
    before = client.last
    observe.wait_for("net's guest answering", lambda: client.error is not None or client.last > before, timeout=30)
    assert client.error is None and client.last > before, client.error
    assert resets(t0, "net") == []
    assert observe.qemu_processes()["net"] == pids["net"] and len(boots("net")) == 1


def test_an_application_heartbeat_loss_resets_the_vm(lab) -> None:
    t0, pids, _ = lab
    ev = observe.wait_for("app reset", lambda: resets(t0, "app"), timeout=150)[0]
    assert ev.data.get("cause") == "application" and "application heartbeat" in ev.message
    print(f"app: {ev.message}")
    observe.wait_for("app's guest back", lambda: len(boots("app")) >= 2, timeout=90)
    assert observe.qemu_processes()["app"] == pids["app"]


def test_a_guest_that_panics_is_reset_and_heartbeats_again(lab) -> None:
    """A kernel panic is a failure at once (no failure interval to wait out): the QEMU
    stays, stopped by pvpanic, the agent hears GUEST_PANICKED on its event monitor, VM
    monitoring counts the reset, and the guest boots again."""
    _, pids, _ = lab
    before = len(boots("panicky"))
    t_cmd = time.time()
    try:  # the shell's connection may go with the guest
        guest_sh(PANICKY_IP.split("/")[0], "(sleep 1; vigil-hang panic) >/dev/null 2>&1 &", timeout=10)
    except OSError:
        pass
    ev = observe.wait_for("panicky reset", lambda: resets(t_cmd, "panicky"), timeout=60)[0]
    assert ev.data.get("cause") == "panic" and "panicked" in ev.message
    print(f"panicky: reset {ev.time - t_cmd - 1:.1f}s after its panic")
    observe.wait_for("panicky heartbeating again", lambda: len(boots("panicky")) > before, timeout=90)
    assert observe.qemu_processes()["panicky"] == pids["panicky"]
    m = observe.call(lambda s: SM.vm_monitoring(s, "panicky"))
    assert m["last_reset"]["cause"] == "panic"
