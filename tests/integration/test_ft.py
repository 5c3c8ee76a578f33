"""Fault Tolerance on the real lab: checkpoints into standby QEMUs, failover without a
restart, the output rule, re-protection.

Invariants after every fault: at most one running copy of the VM at any moment (the
standbys are paused QEMUs whose vCPUs never ran, which ``observe.qemu_processes`` does not
count); one boot of the guest; the heartbeat numbers the outside world saw (the agents'
guest.log files) never repeat or go back; every record the guest acknowledged to the
outside is on disk. Timeouts only catch hangs; bench/ft.py measures.
"""
from __future__ import annotations

import subprocess


from vigil.hypervisor import ftdisk as FTD
from vigil.lab import faults, observe
from vigil.lab.layout import DS_DIR
from vigil.lab.net import vm_address
from vigil.lab.netcheck import EchoClient
from vigil.lab.scenario import create_lab_vms

from labcheck import LAB_MARKS, assert_refused, vigil_cmd
from labpool import shared_lab

pytestmark = LAB_MARKS

TIMEOUT = 120


# one lab while each test leaves it as fresh (labpool): most tests here lose a host, and
# the next test then gets a new lab
lab_pool, lab = shared_lab(hosts=3, datastores=1, memory_mb=1024, reboot_delay_s=3.0)


def ft(vm: str) -> dict:
    return next(v for v in observe.cluster()["vms"] if v["name"] == vm)["ft"]


def vm_row(vm: str) -> dict:
    return next(v for v in observe.cluster()["vms"] if v["name"] == vm)


def protected(vm: str, min_checkpoints: int = 2, not_on: set[str] = frozenset()) -> dict | None:
    f = ft(vm)
    ok = (f["state"] == "protected" and f.get("checkpoints", 0) >= min_checkpoints
          and f.get("secondary") not in not_on)
    return f if ok else None


def start_protected(vm: str, host: str, ip: str = "") -> dict:
    create_lab_vms([vm], hosts=[host], workload=True, ips=[ip])
    observe.wait_for(f"{vm} running", lambda: observe.running_vms_ok([vm]), TIMEOUT)
    r = subprocess.run(vigil_cmd() + ["vm", "ft", "enable", vm], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return observe.wait_for(f"{vm} protected", lambda: protected(vm), TIMEOUT, explain=observe.recent_history)


def assert_nothing_visible_lost(vm: str) -> None:
    hbs = observe.guest_heartbeats(vm)
    assert len({b for *_, b in hbs}) == 1, "the guest rebooted"
    seqs = [s for _, _, s, _ in hbs]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), f"heartbeat numbers seen out of order or twice: {seqs}"
    acked = max(observe.acked_by_guest(h, vm) for h in ("host1", "host2", "host3"))
    assert acked > 0
    on_disk = set(observe.records_on_disk(vm))
    missing = [r for r in range(acked + 1) if r not in on_disk]
    assert not missing, f"records acknowledged to the outside but not on disk: {missing[:10]}"


def wait_failover(vm: str, away_from: str) -> dict:
    return observe.wait_for(f"{vm} live away from {away_from}",
                            lambda: observe.running_vms_ok([vm], exclude_hosts={away_from}), TIMEOUT,
                            explain=observe.recent_history)


def failed_over(vm: str, since: float) -> bool:
    return any(e.kind == "ft-failover" and e.vm == vm for e in observe.events() if e.time >= since)


def test_primary_power_off_secondary_goes_live_without_reboot_and_protection_returns(lab):
    """Also: a TCP client streaming numbered requests to the guest sees no reset and no
    answer lost or repeated across the failover (its packets obey the output rule too)."""
    ip = vm_address(11)
    start_protected("f1", "host1", ip=ip)
    secondary = ft("f1")["secondary"]
    client = EchoClient(ip.split("/")[0]).start()
    # refused while FT is on, and bad FT input: one clear line, nothing changes
    assert_refused([
        (["vm", "ft", "enable", "nosuch"], "no VM named 'nosuch'"),
        (["vm", "migrate", "f1", "--to", "host3"], "Fault Tolerance on"),
        (["vm", "move-disk", "f1", "root", "--to", "ds1"], "Fault Tolerance on"),
    ], lambda: {k: v for k, v in vm_row("f1").items() if k in ("owner", "assigned", "gen")})
    observe.wait_for("records acked", lambda: observe.acked_by_guest("host1", "f1") >= 20, 60)
    observe.wait_for("answers", lambda: client.last >= 10 or client.error, 60)
    # the disk writes since the last safe checkpoint wait in overlays, merged as checkpoints go
    assert 1 <= len(FTD.overlays(DS_DIR / "ds1" / "f1" / "disk0.qcow2")) <= 3
    t0 = observe.events()[-1].time
    try:
        with observe.DuplicateWatch() as watch:
            faults.power_off(lab, "host1")
            v = wait_failover("f1", "host1")
        watch.check()
        before = client.last
        observe.wait_for("answers after the failover", lambda: client.last >= before + 10 or client.error, 90)
    finally:
        client.stop()
    assert client.error is None, f"{client.error} (after {client.last} answers)"
    print(f"FT failover: {client.last} requests on one connection, longest wait "
          f"{client.longest_gap_s() * 1000:.0f} ms")
    assert v["f1"]["host"] == secondary
    assert failed_over("f1", t0), "the VM was restarted from disk, not failed over"
    again = observe.wait_for("protected by a new secondary",
                             lambda: protected("f1", 2, not_on={"host1", secondary}), TIMEOUT,
                             explain=observe.recent_history)
    assert again["secondary"] not in ("host1", secondary)
    acked = observe.acked_by_guest(secondary, "f1")
    observe.wait_for("the guest writing on", lambda: observe.acked_by_guest(secondary, "f1") > acked + 5, 60)
    assert_nothing_visible_lost("f1")
    assert len(observe.qemu_processes().get("f1", [])) == 1


def test_hung_primary_then_isolated_primary_exactly_one_runs(lab):
    start_protected("f2", "host1")
    t0 = observe.events()[-1].time
    with observe.DuplicateWatch() as watch:
        faults.hang(lab, "host1")  # the secondary goes live only once the watchdog reset host1
        v = wait_failover("f2", "host1")
    watch.check()
    assert failed_over("f2", t0), observe.recent_history(40)
    now = v["f2"]["host"]
    observe.wait_for("host1 back", lambda: any(
        h["name"] == "host1" and h["state"] == "running" for h in observe.cluster()["hosts"]), TIMEOUT)
    observe.wait_for("protected again", lambda: protected("f2", 2, not_on={now}), TIMEOUT,
                     explain=observe.recent_history)
    t1 = observe.events()[-1].time
    with observe.DuplicateWatch() as watch:
        faults.isolate(lab, now)  # FT primaries answer isolation with power-off
        wait_failover("f2", now)
        faults.heal(lab, now)
        observe.wait_for(f"{now} back", lambda: any(
            h["name"] == now and h["state"] == "running" for h in observe.cluster()["hosts"]), TIMEOUT)
    watch.check()
    assert failed_over("f2", t1), observe.recent_history(40)
    assert_nothing_visible_lost("f2")


def test_secondary_host_loss_never_stops_the_primary_and_a_new_secondary_protects_it(lab):
    start_protected("f3", "host1")
    secondary = ft("f3")["secondary"]
    pid = observe.qemu_processes()["f3"]
    t0 = observe.events()[-1].time
    with observe.DuplicateWatch() as watch:
        faults.power_off(lab, secondary)
        observe.wait_for("a new secondary protects it",
                         lambda: protected("f3", 2, not_on={secondary}), TIMEOUT, explain=observe.recent_history)
    watch.check()
    assert not failed_over("f3", t0)
    assert observe.qemu_processes()["f3"] == pid, "the primary was replaced"
    assert vm_row("f3")["owner"] == "host1"
    assert_nothing_visible_lost("f3")


def test_partition_between_primary_and_secondary_keeps_one_copy_and_protection_returns(lab):
    start_protected("f4", "host1")
    secondary = ft("f4")["secondary"]
    pid = observe.qemu_processes()["f4"]
    t0 = observe.events()[-1].time
    epoch = ft("f4")["epoch"]
    with observe.DuplicateWatch() as watch:
        faults.partition(lab, ["host1"], [secondary])  # both still reach the third host
        # The checkpoints stop: the primary runs on unprotected, or (when the cut also kept
        # the secondary's agent from etcd for a while) the controller picks a new secondary.
        observe.wait_for("protection disturbed", lambda: (
            (f := ft("f4"))["state"] == "unprotected" or f["epoch"] != epoch), TIMEOUT, explain=observe.recent_history)
        faults.heal(lab)
        observe.wait_for("protected again", lambda: protected("f4", 2), TIMEOUT, explain=observe.recent_history)
    watch.check()
    assert not failed_over("f4", t0)
    assert observe.qemu_processes()["f4"] == pid, "the primary was replaced"
    assert_nothing_visible_lost("f4")


def test_maintenance_hands_an_ft_vm_to_its_secondary_without_reboot(lab):
    start_protected("f5", "host1")
    secondary = ft("f5")["secondary"]
    t0 = observe.events()[-1].time
    with observe.DuplicateWatch() as watch:
        r = subprocess.run(vigil_cmd() + ["host", "maintenance", "enter", "host1"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        observe.wait_for("host1 in maintenance", lambda: any(
            h["name"] == "host1" and h["state"] == "maintenance" for h in observe.cluster()["hosts"]), TIMEOUT,
            explain=observe.recent_history)
        v = wait_failover("f5", "host1")
    watch.check()
    assert v["f5"]["host"] == secondary and failed_over("f5", t0)
    observe.wait_for("protected by the third host", lambda: protected("f5", 2, not_on={"host1", secondary}),
                     TIMEOUT, explain=observe.recent_history)
    assert_nothing_visible_lost("f5")
