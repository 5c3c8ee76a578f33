"""Storage DRS on the real lab: a VM writing records from ds1; the agents report its
disk's latency from QEMU's block statistics (and its memory from its guest's balloon); ds1 is then filled past the space threshold
(80 %) by a file beside it, and with DRS automatic the controller moves the disk live to
ds2. The guest keeps one life and every record it acknowledged is on ds2 afterwards.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest

from vigil import service
from vigil.lab import observe
from vigil.lab.layout import DS_DIR
from vigil.lab.scenario import lab_vm_spec
from vigil.model import TASK_ACTIVE
from vigil.service import drs
from vigil.store import keys as K

from labcheck import LAB_MARKS, kinds_since, running_lab
from test_drs_lab import assert_one_life

pytestmark = LAB_MARKS

FILLER = DS_DIR / "ds1" / "sdrs-filler"


@pytest.fixture
def lab():
    with running_lab(hosts=2, datastores=2, memory_mb=1024, reboot_delay_s=60.0) as lab:
        try:
            yield lab
        finally:
            FILLER.unlink(missing_ok=True)  # the datastore images outlive the lab


def vm_load(host: str, vm: str) -> dict:
    e = observe.call(lambda s: s.get(K.LOAD + host))
    return (e.value if e else {}).get("vms", {}).get(vm, {})


def disk_figures(host: str, vm: str) -> dict:
    return (vm_load(host, vm).get("disks") or {}).get("0") or {}


def fill(path, share: float) -> int:
    """A file that brings its file system to ``share`` used (allocated, not written)."""
    st = os.statvfs(path.parent)
    size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    want = int(share * size) - (size - free)
    with open(path, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, want)
    return want


def test_a_datastore_filled_past_the_threshold_gets_a_disk_moved_off_live(lab):
    spec = replace(lab_vm_spec("sd1", workload=True, memory_mb=256), balloon=True)
    observe.call(lambda s: service.create_vm(s, spec, "host1"))
    observe.wait_for("sd1 running", lambda: observe.running_vms_ok(["sd1"]), timeout=180)
    observe.wait_for("records acked", lambda: observe.acked_by_guest("host1", "sd1") >= 10, 60)
    figs = observe.wait_for("sd1's disk latency reported", lambda: disk_figures("host1", "sd1").get("iops") and
                            disk_figures("host1", "sd1"), timeout=90, interval=2.0)
    print(f"SDRS lab: sd1 disk0 {figs}")
    assert 0 < figs["latency_ms"] < 1000
    mem = observe.wait_for("sd1's memory from its balloon", lambda: (v := vm_load("host1", "sd1")).get(
        "memory_from") == "balloon" and v, timeout=60, interval=2.0)
    print(f"SDRS lab: sd1 memory used {mem['memory_mb']} MiB as its guest reports it (balloon)")
    t0 = time.time()
    filled = fill(FILLER, 0.85)
    # no load moves (hold never reached): this is about the datastore
    observe.call(lambda s: drs.set_drs(s, {"mode": "automatic", "interval_s": 5.0, "hold_rounds": 100000}))
    observe.wait_for("the disk move queued", lambda: kinds_since(t0, "task-move-disk"), timeout=120, interval=1.0)

    def done():
        t = observe.call(lambda s: service.get_task(s, "sd1"))
        return t is not None and t.kind == "move-disk" and t.state not in TASK_ACTIVE and t
    t = observe.wait_for("the disk move done", done, timeout=240, interval=1.0)
    took = time.time() - t0
    assert t.state == "done", t.error
    assert observe.call(lambda s: service.get_vm(s, "sd1"))[0].disks[0].datastore == "ds2"
    acked = observe.acked_by_guest("host1", "sd1")
    observe.wait_for("sd1 still writing", lambda: observe.acked_by_guest("host1", "sd1") > acked + 5, 60)
    on_disk = set(observe.records_on_disk("sd1", "ds2"))
    assert all(r in on_disk for r in range(observe.acked_by_guest("host1", "sd1") + 1))
    assert not (DS_DIR / "ds1" / "sd1" / "disk0.qcow2").exists()
    assert_one_life("sd1")
    moves = kinds_since(t0, "task-move-disk")
    assert len(moves) == 1, [m.message for m in moves]
    after = observe.wait_for("latency on ds2 reported", lambda: disk_figures("host1", "sd1").get("iops") and
                             disk_figures("host1", "sd1"), timeout=60, interval=2.0)
    print(f"SDRS lab: filled ds1 with {filled >> 20} MiB, disk moved to ds2 in {took:.0f} s "
          f"({moves[0].message}); after: {after}")
