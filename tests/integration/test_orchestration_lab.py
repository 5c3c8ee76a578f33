"""Restart orchestration and VM-host rules on the real lab (etcd, QEMU guests, a real power
cut): a depends-on chain is restarted in its order, each VM once the one it depends on
heartbeats; a VM that must run on a host group waits for it rather than run elsewhere.
The same behaviours run in the simulator: tests/scenarios/dep-* and must-run-on-*."""
from __future__ import annotations

import time


from vigil import service
from vigil.lab import faults, observe
from vigil.lab.scenario import create_lab_vms
from vigil.model import HostGroup, Rule
from vigil.service.settings import put_setting

from labcheck import LAB_MARKS, kinds_since
from labpool import shared_lab

pytestmark = LAB_MARKS

FAILOVER_TIMEOUT = 150


# the lab shared with the other modules of this config while each test leaves it as fresh (labpool)
lab_pool, lab = shared_lab(hosts=3, datastores=1, reboot_delay_s=60.0)


def start_on(names: list[str], host: str) -> None:
    create_lab_vms(names, hosts=[host], stagger_s=0.5)
    observe.wait_for(f"{names} running on {host}", lambda: observe.running_vms_ok(names), timeout=180)


def test_dependency_chain_restarts_in_order_each_once_the_one_before_heartbeats(lab):
    names = ["db", "app", "web"]
    start_on(names, "host2")
    observe.call(lambda s: put_setting(s, "orchestration", {"ready": "guest", "timeout_s": 90}))
    observe.call(lambda s: service.create_rule(s, Rule("app-on-db", "depends-on", ("app",), on=("db",))))
    observe.call(lambda s: service.create_rule(s, Rule("web-on-app", "depends-on", ("web",), on=("app",))))
    t0 = time.time()
    with observe.DuplicateWatch() as watch:
        faults.power_off(lab, "host2")
        got = observe.wait_for("the chain running on survivors",
                               lambda: observe.running_vms_ok(names, exclude_hosts={"host2"}), FAILOVER_TIMEOUT)
    watch.check()
    assert {v["host"] for v in got.values()} <= {"host1", "host3"}
    restarts = {e.vm: e.time for e in kinds_since(t0, "vm-restart")}
    assert set(restarts) == set(names), observe.recent_history()
    print("restart issued after the power cut:", {n: round(restarts[n] - t0, 2) for n in names})
    assert restarts["db"] < restarts["app"] < restarts["web"], restarts
    waits = {e.vm: e.message for e in kinds_since(t0, "vm-waiting")}
    assert "restart waits for db (depends on; ready: guest heartbeat seen" in waits["app"], waits
    assert "restart waits for app" in waits["web"], waits
    # each waited for a guest heartbeat, not just a QEMU: well past a QEMU start apart
    assert restarts["app"] - restarts["db"] > 1.0 and restarts["web"] - restarts["app"] > 1.0, restarts
    assert not any("timeout" in e.message for e in kinds_since(t0, "vm-restart")), "a wait ran out"


def test_must_run_on_rule_vm_waits_for_its_host_group_rather_than_run_elsewhere(lab):
    start_on(["pinned"], "host2")
    observe.call(lambda s: service.create_host_group(s, HostGroup("only2", ("host2",))))
    assert observe.call(lambda s: service.create_rule(s, Rule("pin", "must-run-on", ("pinned",), group="only2"))) == []
    t0 = time.time()
    with observe.DuplicateWatch() as watch:
        faults.power_off(lab, "host2")
        observe.wait_for("host2 failed", lambda: {h["name"]: h["state"] for h in observe.cluster()["hosts"]}
                         .get("host2") == "failed", 60)
        wait = observe.wait_for("the wait's event", lambda: [
            e for e in kinds_since(t0, "vm-waiting") if e.vm == "pinned"], 30)
        assert "must-run-on rule pin (group only2: host2)" in wait[0].message, wait[0].message
        time.sleep(8)  # several controller cycles: still nowhere
        assert not observe.qemu_processes().get("pinned"), observe.recent_history()
        assert not kinds_since(t0, "vm-restart"), observe.recent_history()
        faults.power_on(lab, "host2")
        got = observe.wait_for("pinned running on host2 again", lambda: observe.running_vms_ok(["pinned"]),
                               FAILOVER_TIMEOUT)
    watch.check()
    assert got["pinned"]["host"] == "host2"
