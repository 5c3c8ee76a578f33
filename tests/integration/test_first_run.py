"""The first run on a machine that never ran vigil: no guest image, no accelerator answer.

Once, every host of a new machine rebooted forever: each agent armed the lab watchdog,
then spent longer than its timeout probing KVM (a KVM guest hangs on these machines), and
the probe's answer was never cached. These tests start from an empty cache directory
(``VIGIL_CACHE_DIR``) so that they go through that first run every time, and check the
rule behind the fix (vigil.policy.watchdog): slow start-up work never lets a watchdog
expire, whether it runs unarmed (a fresh boot) or armed by an earlier agent run.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from vigil.lab import faults, observe
from vigil.lab.scenario import wait_cluster_ready

from labcheck import LAB_MARKS, vigil_cmd

pytestmark = LAB_MARKS

HOSTS = ["host1", "host2", "host3"]


@pytest.fixture(scope="module")
def fresh_lab(tmp_path_factory):
    from vigil.lab.lab import Lab, LabConfig

    cache = tmp_path_factory.mktemp("vigil-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("VIGIL_CACHE_DIR", str(cache))  # the lab, its supervisors and agents inherit it
    lab = Lab()
    try:
        lab.up(LabConfig(hosts=3, datastores=1))
        yield lab, cache
    finally:
        lab.down()
        mp.undo()


def resets() -> dict[str, int]:
    from vigil.lab.lab import Lab

    return {h: Lab().supervisor_status(h).get("resets", 0) for h in HOSTS}


def test_a_first_boot_with_no_cache_gets_leases_a_leader_and_no_reset(fresh_lab):
    lab, cache = fresh_lab
    c = wait_cluster_ready(3, timeout=120)
    assert sorted(h["name"] for h in c["hosts"] if h["lease"]) == HOSTS and c["leader"] in HOSTS
    # the lab built the image and probed once, before any host booted
    assert (cache / "guest" / "vmlinuz").exists()
    assert json.loads((cache / "accel.json").read_text())["accel"] in ("kvm", "tcg")
    time.sleep(6)  # past the lab watchdog's 5 s: a wrongly armed, unfed watchdog would fire
    assert resets() == {h: 0 for h in HOSTS}
    assert all(lab.supervisor_status(h).get("watchdog_armed") for h in HOSTS)  # armed with the lease


def test_an_agent_restarted_without_the_probe_answer_keeps_its_watchdog_fed(fresh_lab):
    """The new agent finds the watchdog armed by the one that died and must probe KVM
    again (several seconds where KVM hangs): its tick feeds the watchdog meanwhile."""
    lab, cache = fresh_lab
    wait_cluster_ready(3, timeout=120)
    (cache / "accel.json").unlink()
    old = faults.kill_agent(lab, "host2")
    observe.wait_for("a new agent on host2", lambda: lab.agent_pid("host2") not in (None, old), 30)
    observe.wait_for("the probe answered again", lambda: (cache / "accel.json").exists(), 60)
    wait_cluster_ready(3, timeout=60)
    time.sleep(6)
    assert resets() == {h: 0 for h in HOSTS}
    assert lab.supervisor_status("host2").get("boots") == 1


def test_lab_clean_refuses_while_a_lab_runs_and_removes_nothing(fresh_lab):
    """What CI runs first: it must never take down a lab that someone is using."""
    lab, cache = fresh_lab
    r = subprocess.run(vigil_cmd() + ["lab", "clean"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "a lab is up" in r.stderr, (r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    assert (cache / "accel.json").exists() and lab.is_up()
    wait_cluster_ready(3, timeout=30)
