"""Fencing through the lab's BMC emulators (vigil.lab.bmc: a Redfish server and ipmi_sim
per host, whose power actions are the lab's real power-off), each test with the
duplicate-copy watch running: a hung host is fenced and its VMs restart once the fence
is confirmed, well before the watchdog bound; a BMC that dies with its host leaves the
VMs to the watchdog bound; a partitioned host still running its VMs is fenced before
they restart; with two of three hosts lost, nobody is fenced.

Run alone, under the lab queue:  flock /run/vigil-lab-queue.lock .venv/bin/pytest -x tests/integration/test_fencing.py
"""
from __future__ import annotations

import time

import pytest

from labcheck import LAB_MARKS, running_lab
from vigil.lab import faults, observe
from vigil.lab.raft_leader import leader_host
from vigil.lab.scenario import create_lab_vms, wait_cluster_ready

pytestmark = LAB_MARKS

TIMEOUT = 120
WATCHDOG_S, MARGIN_S = 5.0, 1.5  # the lab's watchdog, policy.view.Timing.watchdog_margin
BOUND_S = WATCHDOG_S + MARGIN_S  # the heartbeat silence past which a host counts as reset
TICK_S = 0.5  # the agent's heartbeat period: its last write may be this much before the fault


def lab_with(fencing: str, **kw):
    return running_lab(hosts=3, datastores=1, reboot_delay_s=60.0, fencing=fencing, **kw)


def etcd_leader(lab) -> str:
    """The host whose etcd member leads: etcd extends every lease by its TTL when it elects
    a new leader, so hanging that host delays the lease expiry a hang is detected by."""
    return leader_host({h: lab.address(h) for h in ("host1", "host2", "host3")}, lab.etcd_tls)


def others(n: int, lab=None) -> list[str]:
    """``n`` hosts that do not lead (nor, given ``lab``, lead etcd, when enough are left):
    faults on them keep the controller and etcd's leader where they are."""
    leader = observe.cluster()["leader"]
    hosts = [h for h in ("host1", "host2", "host3") if h != leader]
    if lab is not None:
        calm = [h for h in hosts if h != etcd_leader(lab)]
        hosts = calm + [h for h in hosts if h not in calm]
    return hosts[:n]


def start_vms(names: list[str], host: str) -> None:
    create_lab_vms(names, hosts=[host], stagger_s=0.5)
    observe.wait_for(f"{names} running on {host}", lambda: observe.running_vms_ok(names), timeout=180)


def fence_events(t0: float, host: str) -> list:
    return [e for e in observe.events() if e.time >= t0 and e.kind == "fence" and e.host == host]


def first(t0: float, kind: str, vm: str) -> float:
    return min(e.time for e in observe.events() if e.time >= t0 and e.kind == kind and e.vm == vm)


def restarted(names: list[str], away: set[str]) -> dict:
    return observe.wait_for("VMs restarted elsewhere", lambda: observe.running_vms_ok(names, exclude_hosts=away),
                            TIMEOUT)


def lead_from_host1(lab) -> None:
    """Move the leader key to host1 (the etcd member): revoke another leader's lease (the
    key goes with it; that agent takes a new lease) until host1 wins the campaign."""
    from vigil.store import keys as K

    async def revoke(store):
        e = await store.get(K.LEADER)
        if e is not None and e.lease:
            await store.revoke(e.lease)

    for _ in range(8):
        leader = observe.cluster()["leader"]
        if leader == "host1":
            break
        observe.call(revoke)
        observe.wait_for("a leader", lambda: observe.cluster()["leader"], 30)
    wait_cluster_ready(3, timeout=60)
    assert observe.cluster()["leader"] == "host1"


@pytest.mark.parametrize("kind", ["redfish", "ipmi"])
def test_hung_host_is_fenced_and_its_vms_restart_once_the_fence_is_confirmed(kind):
    with lab_with(kind) as lab:
        (victim,) = others(1, lab)
        names = ["f1", "f2"]
        start_vms(names, victim)
        with observe.DuplicateWatch() as watch:
            t0 = time.time()
            faults.hang(lab, victim)
            restarted(names, {victim})
        watch.check()
        fences = fence_events(t0, victim)
        results = [e.data.get("result") for e in fences]
        assert results and results[0] == "attempt" and "confirmed" in results, [e.message for e in fences]
        confirmed = fences[results.index("confirmed")].time
        for n in names:
            restart = first(t0, "vm-restart", n)
            assert restart >= confirmed  # never before the BMC said it is off
        # the BMC's power-off was the lab's real one
        assert any(f["kind"] == "power_off" and f["host"] == victim for f in lab.state["faults"])
        # how much sooner than the watchdog bound (BOUND_S) is measured by bench/failover.py --hung
        print(f"{kind}: fence asked {fences[0].time - t0:.2f}s, confirmed {confirmed - t0:.2f}s, restarts "
              + ", ".join(f"{first(t0, 'vm-restart', n) - t0:.2f}s" for n in names))


def test_bmc_dead_with_its_host_leaves_the_restart_to_the_watchdog_bound():
    with lab_with("ipmi") as lab:
        (victim,) = others(1)
        names = ["g1"]
        start_vms(names, victim)
        with observe.DuplicateWatch() as watch:
            faults.bmc_fail(lab, victim)
            t0 = time.time()
            faults.power_off(lab, victim)
            restarted(names, {victim})
        watch.check()
        results = [e.data.get("result") for e in fence_events(t0, victim)]
        assert "confirmed" not in results and "attempt" in results
        restart = first(t0, "vm-restart", "g1")
        assert restart - t0 >= BOUND_S - TICK_S, f"restart {restart - t0:.1f}s after the power cut"


def test_partitioned_host_still_running_its_vms_is_fenced_before_they_restart():
    with lab_with("redfish") as lab:
        (victim,) = others(1)
        rest = [h for h in ("host1", "host2", "host3") if h != victim]
        names = ["p1"]
        start_vms(names, victim)
        with observe.DuplicateWatch() as watch:
            t0 = time.time()
            # cut from the other hosts and from its datastore: silent and no ping, yet running
            faults.partition(lab, [victim], rest)
            faults.datastore_loss(lab, victim, "ds1")
            restarted(names, {victim})
        watch.check()
        fences = fence_events(t0, victim)
        confirmed = [e.time for e in fences if e.data.get("result") == "confirmed"]
        assert confirmed, [e.message for e in fences]
        assert first(t0, "vm-restart", "p1") >= confirmed[0]


def test_two_of_three_hosts_lost_no_fencing_storm():
    # etcd on host1 alone: it keeps its quorum with the other two hosts hung
    with lab_with("redfish", etcd_members=1) as lab:
        lead_from_host1(lab)
        names = ["s2", "s3"]
        start_vms(["s2"], "host2")
        start_vms(["s3"], "host3")
        with observe.DuplicateWatch() as watch:
            t0 = time.time()
            faults.hang(lab, "host2")
            faults.hang(lab, "host3")
            restarted(names, {"host2", "host3"})
        watch.check()
        assert fence_events(t0, "host2") == [] and fence_events(t0, "host3") == []
        for n in names:
            assert first(t0, "vm-restart", n) - t0 >= BOUND_S - TICK_S
        assert any(e.kind == "host-fencing" and "no fencing storm" in e.message
                   for e in observe.events() if e.time >= t0)


def test_vigil_host_fence_cuts_the_power_through_the_bmc():
    import subprocess

    from labcheck import vigil_cmd

    with lab_with("redfish") as lab:
        (victim,) = others(1)
        t0 = time.time()
        r = subprocess.run(vigil_cmd() + ["host", "fence", victim, "--yes"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{victim} fenced" in r.stdout
        assert any(f["kind"] == "power_off" and f["host"] == victim for f in lab.state["faults"])
        fences = fence_events(t0, victim)
        results = [e.data.get("result") for e in fences]  # the controller may fence the host too, once it is off
        assert results and results[0] == "attempt" and "confirmed" in results, [e.message for e in fences]
        assert fences[0].user  # who asked
        r = subprocess.run(vigil_cmd() + ["host", "fence", "nosuchhost", "--yes"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and "unknown host" in r.stderr and "Traceback" not in r.stderr


def test_a_clean_agent_restart_is_not_fenced_and_its_vms_run_on():
    """``systemctl restart vigil-agent`` on a host with a BMC (here the lab supervisor
    starting the agent again 1 s after its clean stop): its heartbeat is silent longer than
    hung_after_s, but the stopping agent marked the restart, so nothing is fenced and its
    VMs run on in the same QEMU processes, adopted by the new agent."""
    import os
    import signal

    with lab_with("redfish") as lab:
        (victim,) = others(1, lab)
        names = ["r1"]
        start_vms(names, victim)
        qemu = observe.qemu_processes()["r1"]
        old = lab.agent_pid(victim)
        t0 = time.time()
        os.kill(old, signal.SIGTERM)
        observe.wait_for("a new agent", lambda: lab.agent_pid(victim) not in (None, old), 60)
        observe.wait_for("the VM adopted by the new agent", lambda: any(
            e.kind == "vms-adopted" and e.host == victim for e in observe.events() if e.time >= t0), 60)
        time.sleep(2 * BOUND_S)  # past any fence the silence could have led to
        assert not fence_events(t0, victim), [e.message for e in fence_events(t0, victim)]
        assert observe.qemu_processes()["r1"] == qemu
        got = observe.running_vms_ok(names)
        assert got and got["r1"]["host"] == victim
