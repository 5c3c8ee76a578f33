"""VM networking on the real lab: a TCP connection to a guest survives its live
migration and a restart of its host's agent; after a host failure the restarted guest
answers on the same address.

The client runs in the root namespace on the lab's VM network (10.78.0.0/24, made by the
lab). Timeouts only catch hangs.
"""
from __future__ import annotations

import subprocess

import pytest

from vigil.lab import faults, observe
from vigil.lab.net import vm_address
from vigil.lab.netcheck import EchoClient
from vigil.lab.scenario import lab_vm_spec
from vigil import service

from labcheck import LAB_MARKS, running_lab, vigil_cmd

pytestmark = LAB_MARKS


@pytest.fixture
def lab():
    with running_lab(hosts=3, datastores=1, reboot_delay_s=60.0) as lab:
        yield lab


def test_a_tcp_connection_survives_live_migration_and_an_agent_restart_and_the_address_follows_a_restart(lab):
    ip = vm_address(10)
    spec = lab_vm_spec("w1", ip=ip)
    observe.call(lambda s: service.create_vm(s, spec, "host1"))
    observe.wait_for("w1 running", lambda: observe.running_vms_ok(["w1"]), 180)
    addr = ip.split("/")[0]
    client = EchoClient(addr).start()
    try:
        observe.wait_for("answers", lambda: client.last >= 20 or client.error, 60)
        assert client.error is None, client.error
        r = subprocess.run(vigil_cmd() + ["vm", "migrate", "w1", "--to", "host2"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        before = client.last
        observe.wait_for("answers after the move", lambda: client.last >= before + 20 or client.error, 60)
        moved = client.last
        # the agent carries the frames: killed and restarted, it plugs the NIC in again
        pid = observe.qemu_processes()["w1"]
        faults.kill_agent(lab, "host2")
        before = client.last
        observe.wait_for("answers after the agent's restart", lambda: client.last >= before + 20 or client.error, 90)
        assert observe.qemu_processes()["w1"] == pid
    finally:
        client.stop()
    assert client.error is None, client.error
    assert {v["name"]: v["host"] for v in observe.cluster()["vms"]}["w1"] == "host2"
    print(f"one connection, {client.last} requests; longest wait across the vMotion "
          f"{client.longest_gap_s(0, moved) * 1000:.0f} ms, across the agent's restart "
          f"{client.longest_gap_s(moved) * 1000:.0f} ms")

    with observe.DuplicateWatch() as watch:
        faults.power_off(lab, "host2")
        got = observe.wait_for("w1 restarted", lambda: observe.running_vms_ok(["w1"], exclude_hosts={"host2"}), 120)
    watch.check()
    client = EchoClient(addr).start()
    try:
        observe.wait_for("the restarted guest answers", lambda: client.last >= 5 or client.error, 60)
    finally:
        client.stop()
    assert client.error is None, client.error
    print(f"restarted on {got['w1']['host']}: answering on {addr}")
