"""DRS on the real lab: six VMs all started on host1, three of them burning CPU in the
guest (vigil.dirty_mb: a loop rewriting guest memory, one vCPU busy). With DRS manual the
recommendations appear and `vigil drs apply --all` carries them out; with automatic the
controller balances the rest itself. Every guest keeps one life (one boot id, no
heartbeat twice), no VM is moved twice, and the cluster ends within the threshold.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from vigil.lab import observe
from vigil.lab.scenario import create_lab_vms
from vigil.model import TASK_ACTIVE
from vigil.service import drs
from vigil.store import keys as K

from labcheck import LAB_MARKS, running_lab, vigil_cmd

pytestmark = LAB_MARKS

HOT, COOL = ["hot1", "hot2", "hot3"], ["cool1", "cool2", "cool3"]


def assert_one_life(vm: str) -> None:
    hbs = observe.guest_heartbeats(vm)
    assert len({b for *_, b in hbs}) == 1, f"{vm}: the guest rebooted"
    seqs = [s for _, _, s, _ in hbs]
    assert len(seqs) == len(set(seqs)), f"{vm}: two copies of the guest sent heartbeats"


def rec() -> dict:
    return observe.call(drs.recommendations)


def drs_tasks_busy() -> bool:
    snap = observe.call(lambda s: s.snapshot())
    return any(e.value.get("reason") == "drs" and e.value.get("state") in TASK_ACTIVE
               for k, e in snap.items() if k.startswith(K.TASKS))


@pytest.fixture
def lab():
    with running_lab(hosts=3, datastores=1, memory_mb=1536, reboot_delay_s=60.0) as lab:
        yield lab


def test_drs_manual_then_automatic_balances_vms_started_on_one_host(lab):
    create_lab_vms(HOT, hosts=["host1"], stagger_s=1.0, workload=True, dirty_mb=4)
    create_lab_vms(COOL, hosts=["host1"], stagger_s=1.0, workload=True)
    observe.wait_for("six VMs running", lambda: observe.running_vms_ok(HOT + COOL), timeout=240)
    observe.wait_for("their load measured", lambda: all(v.get("load") for v in observe.cluster()["vms"]), timeout=60)
    t0 = time.time()
    observe.call(lambda s: drs.set_drs(s, {"mode": "manual", "interval_s": 5.0, "hold_rounds": 2, "max_moves": 2}))
    observe.wait_for("recommendations", lambda: rec().get("moves"), timeout=90)
    shown = subprocess.run(vigil_cmd() + ["drs", "recommendations"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "recommended moves" in shown.stdout, shown.stderr
    applied = subprocess.run(vigil_cmd() + ["drs", "apply", "--all"], capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0 and "started" in applied.stdout, (applied.stdout, applied.stderr)
    observe.wait_for("the applied moves done", lambda: not drs_tasks_busy(), timeout=240, interval=1.0)
    observe.call(lambda s: drs.set_drs(s, {"mode": "automatic"}))

    def balanced():
        r = rec()
        return (r.get("mode") == "automatic" and r.get("imbalance") is not None
                and r["imbalance"] <= r["tolerated"] and not drs_tasks_busy()) and r
    final = observe.wait_for("the cluster balanced", balanced, timeout=420, interval=2.0)
    took = time.time() - t0
    moved = [e for e in observe.events() if e.time >= t0 and e.kind in ("task-migrate", "vm-migrated")]
    migrated = [e.vm for e in moved if e.kind == "vm-migrated"]
    assert migrated and len(migrated) == len(set(migrated)), f"a VM moved twice: {migrated}"
    running = observe.wait_for("every VM running", lambda: observe.running_vms_ok(HOT + COOL), timeout=120)
    hosts = {v["name"]: v["host"] for v in running.values()}
    assert len(set(hosts.values())) >= 2, hosts
    for v in HOT + COOL:
        assert_one_life(v)
    print(f"DRS lab: balanced in {took:.0f} s, imbalance {final['imbalance']} (tolerated {final['tolerated']}), "
          f"moves {migrated}, placement {hosts}")
