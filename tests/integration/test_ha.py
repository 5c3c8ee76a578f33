"""HA on the real lab: etcd, QEMU guests, network namespaces, real faults.

Every test checks the invariants the product promises: at most one QEMU per VM at any
sampled moment, and every protected VM running again (guest heartbeating) when capacity
allows. Timeouts here only catch hangs; speed is measured in bench/failover.py.
"""
from __future__ import annotations

import subprocess
import time

from vigil.lab import faults, observe

import apicheck
from labcheck import LAB_MARKS, assert_refused, kinds_since, vigil_cmd
from labpool import shared_lab
from vigil.lab.scenario import create_lab_vms

pytestmark = LAB_MARKS

FAILOVER_TIMEOUT = 120


# one lab for the module while each test leaves it as fresh (labpool): most tests here
# power off, hang or isolate a host, and the next test then gets a new lab
lab_pool, lab = shared_lab(hosts=3, datastores=1, reboot_delay_s=60.0)


def vms_on(host: str) -> list[str]:
    c = observe.cluster()
    return sorted(v["name"] for v in c["vms"] if v["owner"] == host)


def qemu_pids(names: list[str]) -> dict[str, list[int]]:
    procs = observe.qemu_processes()
    return {n: procs.get(n, []) for n in names}


def start_vms(names: list[str], host: str, **kw) -> None:
    create_lab_vms(names, hosts=[host], stagger_s=0.5, **kw)
    observe.wait_for(f"{names} running on {host}", lambda: observe.running_vms_ok(names), timeout=180)
    assert vms_on(host) == sorted(names)


def test_power_off_restarts_vms_on_survivors_never_twice_and_loses_no_acked_write(lab):
    names = ["a1", "a2", "a3"]
    start_vms(names, "host2", workload=True)
    observe.wait_for("the guests acknowledging records", lambda: all(
        observe.acked_by_guest("host2", n) >= 10 for n in names), 60)
    before = apicheck.scrape()
    with observe.DuplicateWatch() as watch:
        faults.power_off(lab, "host2")
        acked = {n: observe.acked_by_guest("host2", n) for n in names}
        got = observe.wait_for("VMs running on survivors",
                               lambda: observe.running_vms_ok(names, exclude_hosts={"host2"}), FAILOVER_TIMEOUT)
    watch.check()
    # /metrics (from a surviving host's API server) counts the restarts and their failover times
    after = observe.wait_for("the failovers in /metrics",
                             lambda: apicheck.grown(before, "vigil_ha_failover_seconds_count", 3), 30)
    assert apicheck.value(after, "vigil_ha_restarts_total") >= apicheck.value(before, "vigil_ha_restarts_total") + 3
    assert apicheck.value(after, "vigil_host_state", host="host2", state="failed") == 1.0
    assert 0 < apicheck.value(after, "vigil_ha_failover_seconds_sum") / apicheck.value(
        after, "vigil_ha_failover_seconds_count") < FAILOVER_TIMEOUT
    assert {v["host"] for v in got.values()} <= {"host1", "host3"}
    assert {h["name"]: h["state"] for h in observe.cluster()["hosts"]}["host2"] == "failed"
    assert all(len(p) == 1 for p in qemu_pids(names).values())
    for n in names:
        # The restarted guest goes on writing after the last record on its disk...
        observe.wait_for(f"{n} writing again", lambda: observe.acked_by_guest(got[n]["host"], n) > acked[n], 60)
        # ...and every record acknowledged before the power cut is there.
        on_disk = set(observe.records_on_disk(n))
        missing = [r for r in range(acked[n] + 1) if r not in on_disk]
        assert not missing, f"{n}: acknowledged records lost: {missing[:10]}"


def test_datastore_lost_on_one_host_restarts_its_vms_where_the_datastore_is_reachable(lab):
    """VM component protection: host2 loses ds1 (the other hosts still see it)."""
    names = ["p1"]
    start_vms(names, "host2", workload=True)
    observe.wait_for("records acked", lambda: observe.acked_by_guest("host2", "p1") >= 10, 60)
    t0 = observe.events()[-1].time
    try:
        with observe.DuplicateWatch() as watch:
            faults.datastore_loss(lab, "host2", "ds1")
            got = observe.wait_for("p1 restarted elsewhere",
                                   lambda: observe.running_vms_ok(names, exclude_hosts={"host2"}), FAILOVER_TIMEOUT,
                                   explain=observe.recent_history)
        watch.check()
    finally:
        faults.datastore_restore(lab, "host2", "ds1")
    assert kinds_since(t0, "vm-component-protection")
    assert {h["name"]: h["state"] for h in observe.cluster()["hosts"]}["host2"] == "running"
    acked = observe.acked_by_guest("host2", "p1")
    new = got["p1"]["host"]
    observe.wait_for("p1 writing again", lambda: observe.acked_by_guest(new, "p1") > acked, 60)
    on_disk = set(observe.records_on_disk("p1"))
    assert not [r for r in range(acked + 1) if r not in on_disk]


def test_hang_restarts_only_after_the_watchdog_fenced_the_host(lab):
    names = ["b1", "b2"]
    start_vms(names, "host2")
    old = {n: p[0] for n, p in qemu_pids(names).items()}
    t0 = time.time()
    with observe.DuplicateWatch() as watch:
        faults.hang(lab, "host2")
        observe.wait_for("VMs restarted elsewhere",
                         lambda: observe.running_vms_ok(names, exclude_hosts={"host2"}), FAILOVER_TIMEOUT)
    watch.check()  # the hung QEMUs were gone before any new one started
    assert not any(observe.pid_alive(p) for p in old.values())
    status = lab.supervisor_status("host2")
    assert status.get("resets", 0) >= 1 and status["watchdog_realtime"], status
    # The stand-in confirms its reset: every restart was ordered after the last hung
    # process was killed (the margin the controller adds covered the stand-in's lateness).
    reset = status["reset_log"][0]
    restarts = [e for e in kinds_since(t0, "vm-restart") if e.vm in names]
    assert restarts and min(e.time for e in restarts) > reset["done"], (reset, restarts)
    print(f"watchdog stand-in: reset complete {reset['late_s']:.3f} s after expiry; first restart "
          f"{min(e.time for e in restarts) - reset['done']:.2f} s after it")


def test_a_watchdog_that_fires_late_still_never_lets_two_copies_run(lab):
    """The device fires 8 s late (a broken or slow watchdog): the controller, which cannot
    know, orders the restarts at its bound while the hung QEMUs still hold their disks.
    QEMU's disk locks refuse the new copies until the late reset frees them; then every VM
    runs again, and no acknowledged guest write is lost."""
    names = ["w1"]
    start_vms(names, "host2", workload=True)
    observe.wait_for("the guest acknowledging records", lambda: observe.acked_by_guest("host2", "w1") > 0, 60)
    faults.watchdog_late(lab, "host2", 8.0)
    t0 = time.time()
    faults.hang(lab, "host2")
    acked = observe.acked_by_guest("host2", "w1")
    observe.wait_for("w1 running elsewhere",
                     lambda: observe.running_vms_ok(names, exclude_hosts={"host2"}), FAILOVER_TIMEOUT)
    reset = lab.supervisor_status("host2")["reset_log"][0]
    assert reset["injected_s"] == 8.0
    # Only one copy ever ran guest code: the new one started only once the reset was done.
    started = [e for e in kinds_since(t0, "vm-started") if e.vm == "w1"]
    assert started and all(e.time > reset["done"] for e in started), (reset, started)
    refused = [e for e in kinds_since(t0, "vm-start-failed") if e.vm == "w1"]
    new = next(v["owner"] for v in observe.cluster()["vms"] if v["name"] == "w1")
    observe.wait_for("w1 writing again", lambda: observe.acked_by_guest(new, "w1") > acked, 60)
    on_disk = set(observe.records_on_disk("w1"))
    assert not [r for r in range(acked + 1) if r not in on_disk]
    print(f"late watchdog: reset {reset['done'] - t0:.1f} s after the hang; {len(refused)} start(s) refused before it")


def test_hung_and_partitioned_host_that_resumes_gives_its_vms_up_at_once(lab):
    """host2 hangs and is cut off from host1 and host3 (it still reaches the isolation
    address). Silent and unpingable, it is declared failed and its VM restarted, which the
    disk lock refuses while host2's copy lives. host2 resumes inside its watchdog window,
    still partitioned: having stood still past hb_grace with its lease unconfirmed, it
    gives its VM up, so the restart succeeds during the partition (not only once it heals),
    without a watchdog reset and without two copies running guest code."""
    hang_partitioned_then_resume(lab)


def test_hung_and_partitioned_host_whose_etcd_member_leads_raft_gives_its_vms_up_at_once(lab):
    """The same with host2's own etcd member the raft leader when host2 hangs (it was so in
    about a third of the runs above, which then failed): stopped with host2, the member
    out of the hang still takes itself for the leader for a moment and renews host2's
    lease, which the other side revoked; that answer must not count as etcd confirming
    the lease after the stall (vigil.policy.isolation.keepalive_confirms)."""
    hang_partitioned_then_resume(lab, raft_leader_on_host2=True)


def hang_partitioned_then_resume(lab, raft_leader_on_host2: bool = False) -> None:  # type: ignore[no-untyped-def]
    from vigil.config import cluster_endpoints
    from vigil.config.etcd_client import cluster_tls
    from vigil.lab.layout import AGENT_LOG, host_dir
    from vigil.lab.raft_leader import move_raft_leader

    names = ["s1"]
    start_vms(names, "host2", workload=True, isolation="power-off")
    observe.wait_for("the guest acknowledging records", lambda: observe.acked_by_guest("host2", "s1") > 0, 60)
    if raft_leader_on_host2:
        move_raft_leader(cluster_endpoints(), lab.address("host2"), cluster_tls())
    log_at = (host_dir("host2") / AGENT_LOG).stat().st_size
    faults.partition(lab, ["host1", "host3"], ["host2"])
    faults.hang(lab, "host2")
    acked = observe.acked_by_guest("host2", "s1")
    # resume once it is declared failed, or after 4 s at most (inside the 5 s watchdog
    # window either way: a lease lost while standing still past hb_grace is what counts)
    deadline = time.monotonic() + 4.0
    try:
        while time.monotonic() < deadline and not any(
                h["name"] == "host2" and h["state"] == "failed" for h in observe.cluster()["hosts"]):
            time.sleep(0.1)
    finally:
        faults.unhang(lab, "host2")
    got = observe.wait_for("s1 running elsewhere during the partition",
                           lambda: observe.running_vms_ok(names, exclude_hosts={"host2"}), FAILOVER_TIMEOUT)
    with open(host_dir("host2") / AGENT_LOG, errors="replace") as f:
        f.seek(log_at)
        said = f.read()
    assert "stood still" in said, said[-2000:]
    assert not lab.supervisor_status("host2").get("reset_log"), "the watchdog reset host2"
    assert all(len(p) == 1 for p in qemu_pids(names).values())
    new = got["s1"]["host"]
    observe.wait_for("s1 writing again", lambda: observe.acked_by_guest(new, "s1") > acked, 60)
    on_disk = set(observe.records_on_disk("s1"))
    assert not [r for r in range(acked + 1) if r not in on_disk]
    faults.heal(lab)


def test_isolation_power_off_restarts_elsewhere_and_heal_leaves_no_duplicate(lab):
    names = ["c1", "c2"]
    start_vms(names, "host2", isolation="power-off")
    with observe.DuplicateWatch() as watch:
        faults.isolate(lab, "host2")
        observe.wait_for("VMs restarted elsewhere",
                         lambda: observe.running_vms_ok(names, exclude_hosts={"host2"}), FAILOVER_TIMEOUT)
        faults.heal(lab, "host2")
        observe.wait_for("host2 back", lambda: any(
            h["name"] == "host2" and h["lease"] for h in observe.cluster()["hosts"]), 60)
        time.sleep(3)
    watch.check()
    assert observe.running_vms_ok(names, exclude_hosts={"host2"})
    assert all(len(p) == 1 for p in qemu_pids(names).values())


def test_isolation_shutdown_response_shuts_guests_down_then_restarts_them(lab):
    names = ["s1"]
    start_vms(names, "host2", isolation="shutdown")
    with observe.DuplicateWatch() as watch:
        faults.isolate(lab, "host2")
        observe.wait_for("s1 restarted elsewhere",
                         lambda: observe.running_vms_ok(names, exclude_hosts={"host2"}), FAILOVER_TIMEOUT)
    watch.check()
    # host2 was cut off, so its events could not reach etcd; its agent's log has them
    from vigil.lab.layout import HOSTS_DIR

    log = (HOSTS_DIR / "host2" / "agent.log").read_text()
    assert "s1 shut down on host2: isolation response" in log  # ACPI, not a power-off


def test_isolation_leave_powered_on_keeps_vms_and_heal_reclaims_them(lab):
    names = ["d1", "d2"]
    start_vms(names, "host2", isolation="leave-powered-on")
    old = qemu_pids(names)
    t0 = time.time()
    with observe.DuplicateWatch() as watch:
        faults.isolate(lab, "host2")
        observe.wait_for("host2 seen isolated", lambda: any(
            h["name"] == "host2" and h["state"] == "isolated" for h in observe.cluster()["hosts"]), 60)
        time.sleep(5)
        assert qemu_pids(names) == old, "left powered on: the VMs must still run on host2"
        assert not kinds_since(t0, "vm-restart")
        faults.heal(lab, "host2")
        observe.wait_for("host2 owns its VMs again", lambda: vms_on("host2") == names, 60)
    watch.check()
    assert qemu_pids(names) == old
    assert not kinds_since(t0, "vm-restart")


def test_killed_agent_is_restarted_and_adopts_running_vms(lab):
    names = ["e1", "e2"]
    start_vms(names, "host2")
    old = qemu_pids(names)
    old_agent = lab.agent_pid("host2")
    t0 = time.time()
    faults.kill_agent(lab, "host2")
    observe.wait_for("a new agent", lambda: lab.agent_pid("host2") not in (None, old_agent), 30)
    observe.wait_for("VMs adopted", lambda: observe.running_vms_ok(names) and vms_on("host2") == names, 30)
    time.sleep(8)  # past the lease TTL and the heartbeat grace: still nothing may move
    assert qemu_pids(names) == old
    assert not kinds_since(t0, "vm-restart") and not kinds_since(t0, "vm-starting")


def test_leader_host_power_off_new_leader_finishes_restarts(lab):
    leader = observe.cluster()["leader"]
    names = ["f1", "f2"]
    start_vms(names, leader)
    with observe.DuplicateWatch() as watch:
        faults.power_off(lab, leader)
        observe.wait_for("a new leader", lambda: observe.cluster()["leader"] not in (None, leader), 60)
        observe.wait_for("VMs restarted", lambda: observe.running_vms_ok(names, exclude_hosts={leader}),
                         FAILOVER_TIMEOUT)
    watch.check()


def test_losing_one_etcd_member_changes_nothing(lab):
    names = ["g1", "g2"]
    start_vms(names, "host3")
    old = qemu_pids(names)
    t0 = time.time()
    faults.kill_etcd(lab, "host3")
    time.sleep(12)
    assert qemu_pids(names) == old
    assert observe.running_vms_ok(names)
    assert not kinds_since(t0, "vm-restart") and not kinds_since(t0, "vm-powered-off")
    faults.heal(lab, "host3")


def test_network_blip_causes_no_failover(lab):
    names = ["h1"]
    start_vms(names, "host2")
    old = qemu_pids(names)
    t0 = time.time()
    faults.blip(lab, "host2", 1.5)
    time.sleep(10)
    assert qemu_pids(names) == old
    assert not kinds_since(t0, "vm-restart") and not kinds_since(t0, "host-failed")


BAD = [
    (["vm", "create", "x0", "--memory", "0"], "memory_mb"),
    (["vm", "create", "x1", "--disk", "nosuch:64"], "unknown datastore"),
    (["vm", "create", "x2", "--disk", "ds1:64:/etc/passwd"], "relative path"),
    (["vm", "create", "x3", "--disk", "ds1:64:../../x"], "relative path"),
    (["vm", "create", "x4", "--host", "host9"], "unknown host"),
    (["vm", "create", "Bad Name"], "invalid VM name"),
    (["vm", "create", "dup"], "already exists"),
    (["vm", "start", "nosuch"], "no VM named"),
]


def test_bad_input_is_refused_and_changes_nothing(lab):
    vigil = vigil_cmd()
    ok = subprocess.run(vigil + ["vm", "create", "dup", "--stopped"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr

    def desired() -> dict:
        from vigil.store import keys as K

        snap = observe.call(lambda s: s.snapshot())
        return {k: (e.value, e.mod_revision) for k, e in snap.items()
                if k.startswith((K.VMS, K.ASSIGN, K.OWN, K.DATASTORES))}

    assert_refused(BAD, desired)
    r = subprocess.run(vigil + ["lab", "up"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "already up" in r.stderr
