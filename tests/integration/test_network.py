"""VM networking on the real lab: a TCP connection to a guest survives its live
migration and a restart of its host's agent; after a host failure the restarted guest
answers on the same address; a TCP stream between two guests goes on while their hosts'
agents are killed and restarted (no agent carries their frames: a NIC is a tap on the
host's bridge).

The client runs in the root namespace on the lab's VM network (10.78.0.0/24, made by the
lab), or inside a guest (vigil.lab.guestshell). Timeouts only catch hangs.
"""
from __future__ import annotations

import re
import subprocess
import time


from vigil.lab import faults, observe
from vigil.lab.guestshell import guest_sh, with_shell
from vigil.lab.net import vm_address
from vigil.lab.netcheck import EchoClient
from vigil.lab.scenario import lab_vm_spec
from vigil import service

from labcheck import LAB_MARKS, vigil_cmd
from labpool import shared_lab

pytestmark = LAB_MARKS


# the lab shared with the other modules of this config while each test leaves it as fresh (labpool)
lab_pool, lab = shared_lab(hosts=3, datastores=1, reboot_delay_s=60.0)


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
        # the frames go QEMU -> tap -> bridge: the agent's death changes nothing for them
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


STREAM = ("rm -f /tmp/stream.out; (i=0; while :; do i=$((i+1)); echo \"req $i\"; sleep 0.1; done "
          "| nc {peer} 7000 >/tmp/stream.out 2>&1 &)")
ACK_RE = re.compile(r"ack (\d+) (\d+)\s*$")


def stream_last(address: str) -> int:
    """The last request of the guest's stream that was answered, checked to be on one
    connection (the echo counts that connection's requests: it must be the request number)."""
    out = guest_sh(address, "tail -n 1 /tmp/stream.out", timeout=20, connect_s=20)
    m = ACK_RE.search(out)
    if m is None:  # no answer yet (the stream just started): the callers wait for more
        return 0
    n, c = int(m.group(1)), int(m.group(2))
    assert n == c, f"request {n} was the connection's {c}th: the stream reconnected"
    return n


def test_a_tcp_stream_between_two_guests_goes_on_while_their_agents_are_killed_and_restarted(lab):
    """Guest g1 (host1) streams numbered requests to guest g2 (host2) over the VM network.
    Both hosts' agents are SIGKILLed: the stream goes on while they are dead and after
    the supervisor restarted them, on the same connection, with the same QEMUs."""
    a, b = vm_address(31), vm_address(32)
    for name, ip, host in (("g1", a, "host1"), ("g2", b, "host2")):
        spec = with_shell(lab_vm_spec(name, ip=ip))
        observe.call(lambda s: service.create_vm(s, spec, host))
    observe.wait_for("g1 and g2 running", lambda: observe.running_vms_ok(["g1", "g2"]), 180)
    g1, g2 = a.split("/")[0], b.split("/")[0]
    guest_sh(g2, "true")
    guest_sh(g1, STREAM.format(peer=g2))
    observe.wait_for("the stream going", lambda: stream_last(g1) >= 20, 60)
    pids = dict(observe.qemu_processes())
    old = {h: lab.agent_pid(h) for h in ("host1", "host2")}
    for h in old:
        faults.kill_agent(lab, h)
    t_dead = time.monotonic()
    dead_from = stream_last(g1)
    time.sleep(0.5)
    dead_to = stream_last(g1)
    agents_back = all(lab.agent_pid(h) not in (None, old[h]) for h in old)
    print(f"agents dead: requests {dead_from} -> {dead_to} answered within "
          f"{time.monotonic() - t_dead:.1f}s of the kill (agents restarted by then: {agents_back})")
    assert dead_to > dead_from, "the stream stopped with the agents"
    observe.wait_for("the agents back", lambda: all(lab.agent_pid(h) not in (None, old[h]) for h in old), 30)
    observe.wait_for("g1 and g2 running", lambda: observe.running_vms_ok(["g1", "g2"]), 60)
    before = stream_last(g1)
    observe.wait_for("the stream going on", lambda: stream_last(g1) >= before + 20, 60)
    assert {k: pids[k] for k in ("g1", "g2")} == {k: observe.qemu_processes()[k] for k in ("g1", "g2")}
