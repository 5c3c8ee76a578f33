"""vMotion, Storage vMotion and maintenance mode on the real lab (TLS migration streams).

Invariants: the guest never reboots across a move (same boot id, its heartbeat counter
goes on with no value seen twice: never two running copies), every acknowledged record is
on disk afterwards, a failed or cancelled move leaves the VM running where it was.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time


from vigil import service
from vigil.lab import faults, observe
from vigil.lab.scenario import create_lab_vms
from vigil.model import MonitoringSpec, Rule
from vigil.service import monitoring as SM
from vigil.store import keys as K

import apicheck
from labcheck import LAB_MARKS, assert_refused, vigil_cmd
from labpool import shared_lab

pytestmark = LAB_MARKS


# one lab for the module while each test leaves it as fresh (labpool)
lab_pool, lab = shared_lab(hosts=3, datastores=2, memory_mb=1536, reboot_delay_s=60.0)


def start(names: list[str], host: str, **kw) -> None:
    create_lab_vms(names, hosts=[host], stagger_s=0.5, **kw)
    observe.wait_for(f"{names} running", lambda: observe.running_vms_ok(names), timeout=180)


def task_of(vm: str):
    return observe.call(lambda s: service.get_task(s, vm))


def wait_task(vm: str, timeout: float = 180):
    return observe.wait_for(f"{vm}'s task to end", lambda: (
        t if (t := task_of(vm)) and t.state in ("done", "failed", "cancelled") else None), timeout, 0.2)


def assert_one_life(vm: str) -> None:
    """One boot id, and no heartbeat number twice: the guest ran as one copy throughout."""
    hbs = observe.guest_heartbeats(vm)
    assert len({b for *_, b in hbs}) == 1, f"the guest rebooted:\n{life_story(vm, hbs)}"
    seqs = [s for _, _, s, _ in hbs]
    assert len(seqs) == len(set(seqs)), f"two copies of the guest sent heartbeats:\n{life_story(vm, hbs)}"


def life_story(vm: str, hbs: list) -> str:
    """Where each boot of ``vm`` sent its first and last heartbeat, and what the cluster
    said of it: what a failed one-life check should show."""
    boots: dict[str, list] = {}
    for t, host, seq, boot in hbs:
        boots.setdefault(boot, []).append((t, host, seq))
    lines = [f"boot {b[:8]}: first {v[0]}, last {v[-1]}, {len(v)} heartbeats" for b, v in boots.items()]
    lines += [f"{e.time:.2f} {e.kind} {e.message}" for e in observe.events() if vm in e.message]
    return "\n".join(lines)


def test_migration_keeps_the_guest_running_and_its_writes(lab):
    start(["m1"], "host1", workload=True)
    observe.wait_for("records acked", lambda: observe.acked_by_guest("host1", "m1") >= 10, 60)
    before = apicheck.scrape()
    t = observe.call(lambda s: service.migrate_vm(s, "m1", "host2"))
    assert wait_task("m1").state == "done", task_of("m1").error
    # its downtime lands in /metrics' histogram
    observe.wait_for("the migration in /metrics",
                     lambda: apicheck.grown(before, "vigil_migration_downtime_seconds_count", 1), 30)
    observe.wait_for("m1 on host2", lambda: observe.running_vms_ok(["m1"], exclude_hosts={"host1", "host3"}), 30)
    acked = observe.acked_by_guest("host1", "m1")
    observe.wait_for("m1 writing on host2", lambda: observe.acked_by_guest("host2", "m1") > acked + 5, 60)
    assert_one_life("m1")
    on_disk = set(observe.records_on_disk("m1"))
    assert all(r in on_disk for r in range(observe.acked_by_guest("host2", "m1") + 1))
    assert list(observe.qemu_processes().get("m1", [])) and len(observe.qemu_processes()["m1"]) == 1
    done = task_of("m1")
    assert done.id == t.id and done.progress.get("downtime_ms") is not None
    # every host's API server answers from inside another host's namespace too
    probe = ("import httpx, ssl, sys; api = sys.argv[1]; ca = ssl.create_default_context(cafile=sys.argv[2]); "
             "sys.exit(0 if httpx.get(api + '/healthz', verify=ca, timeout=5).json()['etcd'] else 1)")
    for u in apicheck.api_servers.read()["urls"]:
        r = lab.exec("host3", [sys.executable, "-c", probe, u, apicheck.api_servers.read()["ca"]], check=False)
        assert r.returncode == 0, (u, r.stderr)
    # host2's agent serves its own QEMU's figures, and the heartbeat ages it sees
    own = apicheck.scrape_agent(lab.address("host2"))
    assert apicheck.value(own, "vigil_vm_rss_bytes", vm="m1", host="host2") > 16 * 2**20
    assert apicheck.value(own, "vigil_vm_cpu_seconds_total", vm="m1", host="host2") > 0
    assert 0 <= apicheck.value(own, "vigil_datastore_heartbeat_age_seconds", datastore="ds1", host="host1",
                               observer="host2") < 5


def test_busy_guest_still_migrates(lab):
    start(["busy"], "host1", memory_mb=384, dirty_mb=64)
    time.sleep(3)
    observe.call(lambda s: service.migrate_vm(s, "busy", "host3"))
    done = wait_task("busy", 240)
    assert done.state == "done", done.error
    observe.wait_for("busy on host3", lambda: observe.running_vms_ok(["busy"], exclude_hosts={"host1"}), 30)
    assert_one_life("busy")


def test_cancel_leaves_the_vm_running_on_the_source(lab):
    start(["c1"], "host1", memory_mb=384, dirty_mb=64)
    time.sleep(3)
    observe.call(lambda s: service.migrate_vm(s, "c1", "host2"))
    observe.wait_for("migration running", lambda: task_of("c1").state == "running", 60, 0.1)
    observe.call(lambda s: service.cancel_task(s, "c1"))
    t = wait_task("c1")
    assert t.state in ("cancelled", "done")  # a fast guest may finish before the cancel lands
    if t.state == "cancelled":
        time.sleep(2)
        assert observe.running_vms_ok(["c1"], exclude_hosts={"host2", "host3"})
        assert len(observe.qemu_processes()["c1"]) == 1
    assert_one_life("c1")


def test_destination_power_loss_mid_migration_keeps_the_vm_on_the_source(lab):
    start(["d1"], "host1", memory_mb=384, dirty_mb=64)
    time.sleep(3)
    observe.call(lambda s: service.migrate_vm(s, "d1", "host2"))
    observe.wait_for("migration running", lambda: task_of("d1").state == "running", 60, 0.1)
    faults.power_off(lab, "host2")
    t = wait_task("d1", 120)
    if t.state != "done":
        assert observe.wait_for("d1 still on host1", lambda: observe.running_vms_ok(["d1"], {"host2", "host3"}), 60)
    else:  # it finished before the power cut: HA restarts it, once
        observe.wait_for("d1 running again", lambda: observe.running_vms_ok(["d1"], {"host2"}), 120)
    assert len(observe.qemu_processes()["d1"]) == 1


def test_source_power_loss_mid_migration_restarts_the_vm_exactly_once(lab):
    start(["s1"], "host1", memory_mb=384, dirty_mb=64)
    time.sleep(3)
    t0 = time.time()
    observe.call(lambda s: service.migrate_vm(s, "s1", "host2"))
    observe.wait_for("migration running", lambda: task_of("s1").state == "running", 60, 0.1)
    with observe.DuplicateWatch() as watch:
        faults.power_off(lab, "host1")
        observe.wait_for("s1 running again", lambda: observe.running_vms_ok(["s1"], {"host1"}), 120)
        time.sleep(3)
    watch.check()
    restarts = [e for e in observe.events() if e.time >= t0 and e.vm == "s1" and e.kind == "vm-restart"]
    migrated = [e for e in observe.events() if e.time >= t0 and e.vm == "s1" and e.kind == "vm-migrated"]
    assert len(restarts) + len(migrated) == 1
    assert len(observe.qemu_processes()["s1"]) == 1


def test_storage_vmotion_while_the_guest_writes(lab):
    start(["sv"], "host1", workload=True)
    observe.wait_for("records acked", lambda: observe.acked_by_guest("host1", "sv") >= 10, 60)
    from vigil.lab.layout import DS_DIR

    # First a copy capped at 32 KiB/s, cancelled mid-mirror: the old image stays in use.
    observe.call(lambda s: service.move_disk(s, "sv", "disk0", "ds2", bwlimit_mib_s=1 / 32))
    observe.wait_for("the mirror under way", lambda: (
        (t := task_of("sv")) is not None and t.state == "running" and 0 < t.progress.get("offset", 0)), 60)
    assert (DS_DIR / "ds2" / "sv" / "disk0.qcow2").exists()
    observe.call(lambda s: service.cancel_task(s, "sv"))
    assert wait_task("sv").state == "cancelled"
    assert observe.call(lambda s: service.get_vm(s, "sv"))[0].disks[0].datastore == "ds1"
    assert not (DS_DIR / "ds2" / "sv" / "disk0.qcow2").exists()
    acked = observe.acked_by_guest("host1", "sv")
    observe.wait_for("sv writing on its old image", lambda: observe.acked_by_guest("host1", "sv") > acked + 5, 60)
    assert all(r in set(observe.records_on_disk("sv", "ds1")) for r in range(observe.acked_by_guest("host1", "sv") + 1))
    # Then the whole move.
    observe.call(lambda s: service.move_disk(s, "sv", "disk0", "ds2"))
    t = wait_task("sv")
    assert t.state == "done", t.error
    acked = observe.acked_by_guest("host1", "sv")
    observe.wait_for("sv still writing", lambda: observe.acked_by_guest("host1", "sv") > acked + 5, 60)
    spec = observe.call(lambda s: service.get_vm(s, "sv"))[0]
    assert spec.disks[0].datastore == "ds2"
    assert not (DS_DIR / "ds1" / "sv" / "disk0.qcow2").exists()
    on_disk = set(observe.records_on_disk("sv", "ds2"))
    assert all(r in on_disk for r in range(observe.acked_by_guest("host1", "sv") + 1))
    assert_one_life("sv")


def test_shared_nothing_migration_copies_disks_and_memory(lab):
    start(["sn"], "host1", workload=True)
    observe.wait_for("records acked", lambda: observe.acked_by_guest("host1", "sn") >= 10, 60)
    observe.call(lambda s: service.migrate_vm(s, "sn", "host3", datastore="ds2"))
    t = wait_task("sn")
    assert t.state == "done", t.error
    observe.wait_for("sn on host3", lambda: observe.running_vms_ok(["sn"], {"host1", "host2"}), 30)
    acked = observe.acked_by_guest("host1", "sn")
    observe.wait_for("sn writing on host3", lambda: observe.acked_by_guest("host3", "sn") > acked + 5, 60)
    assert observe.call(lambda s: service.get_vm(s, "sn"))[0].disks[0].datastore == "ds2"
    on_disk = set(observe.records_on_disk("sn", "ds2"))
    assert all(r in on_disk for r in range(observe.acked_by_guest("host3", "sn") + 1))
    assert_one_life("sn")


def test_a_migration_ends_on_its_destination_while_the_vm_is_edited_all_along(lab):
    """Settings edits land all through the move, so that one falls between the destination's
    last read and its take-over: the take-over must not lose to an edit that changed
    nothing of who runs the VM (a lost take-over ends the destination's copy, the only
    running one once the source's is paused)."""
    start(["ed1"], "host1")
    stop, edits = threading.Event(), [0]

    def edit() -> None:
        deadline = time.monotonic() + 120
        own = [None, MonitoringSpec(preset="low")]
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                observe.call(lambda s: SM.set_vm_monitoring(s, "ed1", own[edits[0] % 2]))
                edits[0] += 1
            except Exception:  # noqa: BLE001 - a conflict with the move's own writes: edit again
                pass
            time.sleep(0.02)

    editor = threading.Thread(target=edit, daemon=True)
    editor.start()
    try:
        # the request itself is refused when an edit lands between its read and its write
        observe.wait_for("the migration queued", lambda: _queued(lambda s: service.migrate_vm(s, "ed1", "host2")), 30)
        assert wait_task("ed1").state == "done", task_of("ed1").error
    finally:
        stop.set()
        editor.join(10)
    observe.wait_for("ed1 on host2", lambda: observe.running_vms_ok(["ed1"], exclude_hosts={"host1", "host3"}), 30)
    assert edits[0] > 10, edits
    assert_one_life("ed1")


def _queued(request) -> bool:  # type: ignore[no-untyped-def]
    try:
        observe.call(request)
        return True
    except service.Conflict:
        return False


def test_maintenance_mode_empties_a_host_and_respects_anti_affinity(lab):
    names = ["w1", "w2", "w3", "w4"]
    start(names, "host1")
    observe.call(lambda s: service.create_rule(s, Rule("apart", "anti-affinity", ("w1", "w2"))))
    observe.call(lambda s: service.set_maintenance(s, "host1", True))
    got = observe.wait_for("host1 empty", lambda: observe.running_vms_ok(names, exclude_hosts={"host1"}), 240,
                           explain=observe.recent_history)
    assert got["w1"]["host"] != got["w2"]["host"]
    observe.wait_for("host1 in maintenance", lambda: {h["name"]: h["state"] for h in observe.cluster()["hosts"]}
                     ["host1"] == "maintenance", 30)
    for n in names:
        assert_one_life(n)
    # new VMs are not placed there while in maintenance
    create_lab_vms(["new1"], hosts=["host2"], stagger_s=0)
    observe.call(lambda s: service.set_maintenance(s, "host1", False))


BAD = [
    (["vm", "migrate", "b1", "--to", "host1"], "already runs on host1"),
    (["vm", "migrate", "b1", "--to", "host9"], "unknown host"),
    (["vm", "migrate", "b1", "--to", "host3"], "does not reach datastore ds1"),
    (["vm", "migrate", "b1", "--to", "host2"], "no room"),
    (["vm", "migrate", "off1", "--to", "host2"], "is not running"),
    (["vm", "migrate", "b1", "--to", "host2", "--datastore", "nope"], "unknown datastore"),
    (["vm", "move-disk", "b1", "disk0", "--to", "nope"], "unknown datastore"),
    (["vm", "move-disk", "b1", "disk0", "--to", "ds1"], "already on ds1"),
    (["vm", "move-disk", "b1", "disk9", "--to", "ds2"], "has no disk"),
]


def test_bad_mobility_requests_are_refused_and_change_nothing(lab):
    start(["b1"], "host1")
    start(["fat"], "host2", memory_mb=1450)
    vigil = vigil_cmd()
    assert subprocess.run(vigil + ["vm", "create", "off1", "--stopped", "--disk", "ds1:16"],
                          capture_output=True, timeout=60).returncode == 0
    faults.datastore_loss(lab, "host3", "ds1")
    observe.wait_for("host3 without ds1", lambda: "ds1" not in next(
        h for h in observe.cluster()["hosts"] if h["name"] == "host3")["datastores"], 30)

    def desired() -> dict:
        snap = observe.call(lambda s: s.snapshot())
        return {k: (e.value, e.mod_revision) for k, e in snap.items()
                if k.startswith((K.VMS, K.ASSIGN, K.OWN, K.TASKS))}

    assert_refused(BAD, desired)


def test_datastore_evacuate_moves_every_running_disk(lab):
    names = ["e1", "e2", "e3"]
    start(names, "host1", workload=True)
    vigil = vigil_cmd()
    r = subprocess.run(vigil + ["datastore", "evacuate", "ds1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for n in names:
        assert observe.call(lambda s: service.get_vm(s, n))[0].disks[0].datastore == "ds2"
        assert_one_life(n)
    assert observe.running_vms_ok(names)
