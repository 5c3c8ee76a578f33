"""Disks on two datastores, on the real lab: a whole datastore (an ext4 array on a loop
device) dies under a running VM, with real I/O errors on every host.

Checked: the VM runs on without a restart, never two copies of it, every record the
guest acknowledged is on both copies once they are resynced, and the copies are equal.
Timeouts only catch hangs.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from vigil.lab import faults, observe
from vigil.lab.layout import DS_DIR

from labcheck import LAB_MARKS, assert_refused, kinds_since, running_lab, vigil_cmd

pytestmark = LAB_MARKS

TIMEOUT = 120


@pytest.fixture
def lab():
    with running_lab(hosts=3, datastores=2, reboot_delay_s=60.0) as lab:
        yield lab


def vigil(*argv: str) -> str:
    r = subprocess.run(vigil_cmd() + list(argv), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (argv, r.stdout, r.stderr)
    return r.stdout


def copies(vm: str) -> dict[str, str]:
    """datastore -> state of each copy of the VM's first disk (from ``vm show --json``)."""
    show = json.loads(vigil("vm", "show", vm, "--json"))
    return {c["datastore"]: c["state"] for c in show["disks"][0]["copies"]}


def test_a_replicated_disk_survives_its_datastore_and_a_host_failure_then_resyncs(lab):
    assert_refused([
        (["vm", "create", "bad", "--disk", "ds1+ds1:64"], "the replica must be on another datastore"),
        (["vm", "create", "bad", "--disk", "ds1+ds9:64"], "unknown datastore 'ds9'"),
        (["vm", "create", "bad", "--disk", "ds1+ds2+ds3:64"], "expected DATASTORE[+REPLICA]:SIZE_MB[:PATH]"),
    ], lambda: [v["name"] for v in observe.cluster()["vms"]])
    vigil("vm", "create", "q1", "--disk", "ds1+ds2:64", "--workload", "--host", "host1")
    observe.wait_for("q1 running", lambda: observe.running_vms_ok(["q1"]), 180)
    observe.wait_for("records acked", lambda: observe.acked_by_guest("host1", "q1") >= 10, 60)
    assert copies("q1") == {"ds1": "in-sync", "ds2": "in-sync"}
    pids = observe.qemu_processes()["q1"]
    t0 = observe.events()[-1].time

    with observe.DuplicateWatch() as watch:
        # Its host alone loses the second copy's datastore: no restart (VM component
        # protection is for a disk with no copy left), the copy is dropped, then resynced.
        faults.datastore_loss(lab, "host1", "ds2")
        observe.wait_for("copy on ds2 stale", lambda: copies("q1")["ds2"] == "stale", TIMEOUT)
        faults.datastore_restore(lab, "host1", "ds2")
        observe.wait_for("copies in sync again", lambda: copies("q1") == {"ds1": "in-sync", "ds2": "in-sync"},
                         TIMEOUT, explain=observe.recent_history)
        assert observe.qemu_processes()["q1"] == pids
        assert not kinds_since(t0, "vm-component-protection")

        # The array under the first copy (the one reads go to) dies, for every host.
        faults.datastore_fail(lab, "ds1")
        observe.wait_for("copy on ds1 stale", lambda: copies("q1")["ds1"] == "stale", TIMEOUT)
        acked = observe.acked_by_guest("host1", "q1")
        observe.wait_for("q1 writing on", lambda: observe.acked_by_guest("host1", "q1") > acked + 5, 60)
        assert observe.qemu_processes()["q1"] == pids  # no restart
        assert kinds_since(t0, "disk-degraded") and not kinds_since(t0, "vm-component-protection")

        # Its host dies too: the VM restarts elsewhere on the good copy alone.
        faults.power_off(lab, "host1")
        acked = observe.acked_by_guest("host1", "q1")
        got = observe.wait_for("q1 restarted", lambda: observe.running_vms_ok(["q1"], exclude_hosts={"host1"}),
                               TIMEOUT, explain=observe.recent_history)
        new = got["q1"]["host"]
        observe.wait_for("q1 writing again", lambda: observe.acked_by_guest(new, "q1") > acked + 3, 60)
        assert set(observe.records_on_disk("q1", "ds2")) >= set(range(acked + 1))

        # The array comes back: the new host resyncs the copy while the guest writes.
        faults.datastore_return(lab, "ds1")
        observe.wait_for("copies in sync", lambda: copies("q1") == {"ds1": "in-sync", "ds2": "in-sync"},
                         TIMEOUT, explain=observe.recent_history)
        resynced = kinds_since(t0, "disk-resynced")
        assert resynced
        print(resynced[-1].message)
        acked = observe.acked_by_guest(new, "q1")
        observe.wait_for("q1 writing after the resync", lambda: observe.acked_by_guest(new, "q1") > acked + 3, 60)
    watch.check()

    # Degraded once more, then stopped: `vigil vm repair-disk` copies the good copy offline.
    faults.datastore_loss(lab, new, "ds2")
    observe.wait_for("copy on ds2 stale", lambda: copies("q1")["ds2"] == "stale", TIMEOUT)
    acked = observe.acked_by_guest(new, "q1")
    observe.wait_for("q1 writing on ds1 alone", lambda: observe.acked_by_guest(new, "q1") > acked + 3, 60)
    vigil("vm", "stop", "q1")
    observe.wait_for("q1 stopped", lambda: "q1" not in observe.qemu_processes(), 90)
    faults.datastore_restore(lab, new, "ds2")
    assert "whole again" in vigil("vm", "repair-disk", "q1")
    assert copies("q1") == {"ds1": "in-sync", "ds2": "in-sync"}
    acked = observe.acked_by_guest(new, "q1")
    for ds in ("ds1", "ds2"):
        on_disk = set(observe.records_on_disk("q1", ds))
        assert not [r for r in range(acked + 1) if r not in on_disk], ds
    r = subprocess.run(["qemu-img", "compare", str(DS_DIR / "ds1" / "q1" / "disk0.qcow2"),
                        str(DS_DIR / "ds2" / "q1" / "disk0.qcow2")], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
