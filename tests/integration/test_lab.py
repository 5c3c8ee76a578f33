"""The lab itself: namespaces, etcd, datastores, supervisors and every fault, for real.

Needs root and etcd (scripts/install-deps.sh). Uses a dummy agent that only pets the
watchdog. About 50 s.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import subprocess
import sys
import time

import pytest

from vigil.lab import datastores as dsmod
from vigil.lab import etcd as etcdmod
from vigil.lab import faults as F
from vigil.lab.__main__ import main as lab_cli
from vigil.lab.lab import Lab, LabConfig, LabError, dummy_agent_command
from vigil.lab.layout import (BRIDGE, DATA_DIR, DATASTORE_MARKER, NFT_FAMILY, NFT_TABLE,
                              RUN_DIR, pid_state, read_mounts, run)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed"),
    pytest.mark.timeout(120),
]

WATCHDOG_S = 2.0
REBOOT_S = 2.0


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def leftovers() -> dict:
    """Anything of a lab still on the machine."""
    links = run(["ip", "-o", "link", "show"]).stdout
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(s in cmd for s in ("vigil.lab.supervisor", "vigil.lab.dummy_agent",
                                  "/var/lib/vigil-lab/etcd")):
            procs.append((pid, cmd))
    found = {
        "netns": [n for n in os.listdir("/run/netns")] if os.path.isdir("/run/netns") else [],
        "links": [line.split(":")[1].strip() for line in links.splitlines()
                  if "vgl-h" in line or BRIDGE in line],
        "mounts": [m for m in read_mounts() if "vigil-lab" in m or m.startswith("/run/netns")],
        "nft": run(["nft", "list", "table", NFT_FAMILY, NFT_TABLE], check=False).returncode == 0,
        "processes": procs,
        "dirs": [str(d) for d in (RUN_DIR, DATA_DIR) if d.exists()],
        "loops": lab_loops(),
    }
    return {k: v for k, v in found.items() if v}


def lab_loops() -> list[str]:
    """Loop devices on a file of the lab (images deleted while attached included)."""
    out = run(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"]).stdout
    devs = json.loads(out)["loopdevices"] if out.strip() else []
    return [d["name"] for d in devs if "/var/lib/vigil-lab/" in (d["back-file"] or "")]


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    if lab.is_up():
        pytest.skip("a lab is already up on this machine")
    try:
        lab.up(LabConfig(hosts=3, datastores=2, agent_command=dummy_agent_command(),
                         watchdog_timeout_s=WATCHDOG_S, reboot_delay_s=REBOOT_S))
        yield lab
    finally:
        lab.down()


@pytest.fixture
def healed(lab):
    """Undo whatever a test did, and wait for a whole cluster again."""
    yield lab
    F.heal(lab)
    lab.wait_etcd_healthy(timeout=20)
    for h in lab.hosts:
        wait(lambda: lab.agent_pid(h), 10, f"{h}'s agent")


def healthy(lab) -> int:
    return sum(etcdmod.health(lab.etcd_endpoints, tls=lab.etcd_tls).values())


def marker(lab, host, ds="ds1") -> str:
    return lab.exec(host, ["cat", f"/var/lib/vigil-lab/ds/{ds}/{DATASTORE_MARKER}"],
                    check=False).stdout.strip()


HOLDER = """
import ctypes, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
if sys.argv[2] == "mmap":   # held by a mapping only, no fd (python's mmap would keep one)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    assert libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0) not in (None, 2**64 - 1)
    os.close(fd)
print("open", flush=True)
sys.stdin.readline()
try:
    os.write(fd, b"more")
    print("written", flush=True)
except OSError as e:
    print(f"errno {e.errno}", flush=True)
sys.stdin.readline()
"""


class Holder:
    """A process on a host holding a datastore file (open, or mapped), that writes to it
    when told. Killed by pid on close."""

    def __init__(self, lab, host: str, path: str, how: str = "fd"):
        self.proc = subprocess.Popen(
            lab.host_exec_argv(host, [sys.executable, "-c", HOLDER, path, how]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.pid = self.proc.pid   # nsenter execs python: the same pid
        assert self.line() == "open"

    def line(self, timeout: float = 10) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the holder process does not answer"
        return self.proc.stdout.readline().strip()

    def write(self) -> str:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return self.line()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdin.close()
        self.proc.stdout.close()


def loop_mounted(host: str, ds: str) -> list[str]:
    """Sources of the mounts on the datastore path in the host's namespace, bottom first."""
    return [src for p, _, src in dsmod.host_mounts(host) if p == f"/var/lib/vigil-lab/ds/{ds}"]


# --- the cluster ------------------------------------------------------------------------
def test_etcd_cluster_healthy_from_root_namespace(lab):
    assert lab.etcd_endpoints == ["10.77.0.1:2379", "10.77.0.2:2379", "10.77.0.3:2379"]
    assert healthy(lab) == 3
    members = etcdmod.member_list(lab.etcd_endpoints[0], tls=lab.etcd_tls)
    assert sorted(m["name"] for m in members) == ["host1", "host2", "host3"]
    assert all(u.startswith("https://") for m in members for u in m["peerURLs"] + m["clientURLs"])


def test_etcd_is_tls_only_with_client_certificates(lab):
    """The lab's etcd is a real cluster's: plain text and a client without a certificate
    are refused (gRPC and HTTP alike), a host's certificate from its bundle works."""
    import dataclasses

    from vigil.config import AgentConfig
    from vigil.config.etcd_client import etcd_tls
    from vigil.store.etcd import StoreError, run_with_store

    async def read(s):
        return await s.revision()

    eps = lab.etcd_endpoints
    cfg = AgentConfig.load(lab.host("host3")["agent_config"])
    tls = etcd_tls(cfg)
    assert tls is not None and tls.cert.endswith("/etc/vigil/tls/etcd/client-cert.pem")
    assert run_with_store(eps, read, tls=tls) > 0
    with pytest.raises(StoreError):
        run_with_store(eps, read, timeout=1.5)  # plain text
    with pytest.raises(StoreError):
        run_with_store(eps, read, timeout=1.5, tls=dataclasses.replace(tls, cert="", key=""))  # no certificate
    assert not etcdmod.endpoint_healthy(eps[0])  # plain HTTP
    assert not etcdmod.endpoint_healthy(eps[0], tls=dataclasses.replace(tls, cert="", key=""))
    assert etcdmod.endpoint_healthy(eps[0], tls=tls)


def test_hosts_ping_each_other_and_the_isolation_address(lab):
    for a in lab.hosts:
        for b in lab.hosts:
            if a != b:
                assert lab.ping(a, b), f"{a} -> {b}"
        assert lab.ping(a, "10.77.0.254")


def test_status_and_agent_config(lab):
    from vigil.config import AgentConfig
    st = lab.status()
    assert st["up"] and st["bridge"]["exists"]
    for h, hs in st["hosts"].items():
        assert hs["netns_alive"] and hs["link_up"]
        assert hs["supervisor_pid"] and hs["agent_pid"] and hs["etcd_pid"], hs
        assert hs["faults"] == []
    assert lab.host("host2")["agent_config"].endswith("/vigil.toml")
    cfg = AgentConfig.load(lab.host("host2")["agent_config"])
    assert cfg.host == "host2" and cfg.address == "10.77.0.2"
    assert cfg.peers == {"host1": "10.77.0.1", "host3": "10.77.0.3"}
    assert cfg.isolation_addresses == ("10.77.0.254",)
    assert cfg.datastores == {"ds1": "/var/lib/vigil-lab/ds/ds1",
                              "ds2": "/var/lib/vigil-lab/ds/ds2"}
    # the dummy agent pets the watchdog file named in its config
    wait(lambda: time.time() - os.stat(cfg.watchdog_file).st_mtime < 1, 5, "a pet")


def test_datastores_shared_by_every_host(lab):
    for h in lab.hosts:
        assert marker(lab, h, "ds1") == "ds1"
        assert marker(lab, h, "ds2") == "ds2"
    lab.exec("host1", ["sh", "-c", "echo hello > /var/lib/vigil-lab/ds/ds2/f"])
    assert lab.exec("host3", ["cat", "/var/lib/vigil-lab/ds/ds2/f"]).stdout == "hello\n"
    assert open("/var/lib/vigil-lab/ds/ds2/f").read() == "hello\n"   # root namespace too


def test_up_twice_raises(lab):
    with pytest.raises(LabError, match="already up"):
        Lab().up(LabConfig(hosts=1, datastores=0))
    assert lab.status()["up"]


# --- faults -----------------------------------------------------------------------------
def test_isolate(healed):
    lab = healed
    F.isolate(lab, "host2")
    assert not lab.ping("host1", "host2")
    assert not lab.ping("host2", "10.77.0.254")
    assert lab.ping("host1", "host3")
    assert [f["kind"] for f in lab.status()["hosts"]["host2"]["faults"]] == ["isolate"]
    F.heal(lab, "host2")
    assert lab.ping("host1", "host2")
    assert lab.status()["faults"] == []


def test_partition(healed):
    lab = healed
    F.partition(lab, ["host1"], ["host2"])
    assert not lab.ping("host1", "host2")
    assert not lab.ping("host2", "host1")
    assert lab.ping("host1", "host3") and lab.ping("host2", "host3")
    assert lab.ping("host1", "10.77.0.254") and lab.ping("host2", "10.77.0.254")
    F.heal(lab)
    assert lab.ping("host1", "host2")
    assert run(["nft", "list", "table", NFT_FAMILY, NFT_TABLE], check=False).returncode != 0


def test_blip(healed):
    lab = healed
    t = time.monotonic()
    F.blip(lab, "host3", 0.5, wait=False)
    assert not lab.ping("host1", "host3", timeout_s=0.3) or time.monotonic() - t > 0.5
    time.sleep(0.7)
    assert lab.ping("host1", "host3")


def test_datastore_loss_in_one_host_only(healed):
    lab = healed
    F.datastore_loss(lab, "host2", "ds1")
    assert marker(lab, "host2", "ds1") == ""
    assert marker(lab, "host2", "ds2") == "ds2"
    assert marker(lab, "host1", "ds1") == "ds1" and marker(lab, "host3", "ds1") == "ds1"
    assert lab.exec("host2", ["touch", "/var/lib/vigil-lab/ds/ds1/x"], check=False).returncode != 0
    assert lab.status()["datastores"]["ds1"]["lost_on"] == ["host2"]
    F.heal(lab, "host2")
    assert marker(lab, "host2", "ds1") == "ds1"


def test_datastore_fail_gives_eio_everywhere_until_returned(healed):
    lab = healed
    d = "/var/lib/vigil-lab/ds/ds2"
    lab.exec("host1", ["sh", "-c", f"echo before > {d}/before && sync -f {d}/before"])
    holder = Holder(lab, "host2", f"{d}/before")
    try:
        F.datastore_fail(lab, "ds2")
        for h in lab.hosts:
            r = lab.exec(h, ["cat", f"{d}/{DATASTORE_MARKER}"], check=False)
            assert r.returncode != 0 and "Input/output error" in r.stderr, (h, r.stderr)
            assert marker(lab, h, "ds1") == "ds1"   # the other datastore lives on
        with pytest.raises(OSError) as e:
            open(f"{d}/{DATASTORE_MARKER}").read()
        assert e.value.errno == errno.EIO          # root namespace too
        assert holder.write() == f"errno {errno.EIO}"   # a file open before the failure
        st = lab.status()
        assert st["datastores"]["ds2"]["failed"] and not st["datastores"]["ds1"]["failed"]
        assert [f["kind"] for f in st["faults"]] == ["datastore_fail"]
        assert all(hs["faults"] == [] for hs in st["hosts"].values())
        # held open on host2: no return, and it says who holds it
        with pytest.raises(LabError, match=rf"ds2 is busy \(host2: pids (.*, )?{holder.pid}\b"):
            F.datastore_return(lab, "ds2")
        assert F.heal(lab) == []                    # heal neither crashes nor returns it
        assert lab.status()["datastores"]["ds2"]["failed"]
        for h in lab.hosts:
            assert lab.exec(h, ["cat", f"{d}/before"], check=False).returncode != 0
    finally:
        holder.close()
    F.datastore_return(lab, "ds2")
    for h in lab.hosts:
        assert lab.exec(h, ["cat", f"{d}/before"]).stdout == "before\n"
        assert marker(lab, h, "ds2") == "ds2"
    assert open(f"{d}/before").read() == "before\n"
    lab.exec("host3", ["sh", "-c", f"echo after > {d}/after"])
    assert lab.exec("host1", ["cat", f"{d}/after"]).stdout == "after\n"
    st = lab.status()
    assert not st["datastores"]["ds2"]["failed"] and st["faults"] == []


def test_datastore_return_rolls_back_when_busy_and_keeps_a_loss(healed, capsys):
    lab = healed
    d = "/var/lib/vigil-lab/ds/ds1"
    lab.exec("host3", ["sh", "-c", f"echo mapped > {d}/mapped && sync -f {d}/mapped"])
    holder = Holder(lab, "host3", f"{d}/mapped", how="mmap")
    try:
        F.datastore_loss(lab, "host3", "ds1")
        assert lab_cli(["fault", "datastore_fail", "ds1"]) == 0
        device = lab.state["datastores"]["ds1"]["device"]
        # a mapping is not found by the scan: host1 and host2 get unmounted, host3 is busy
        with pytest.raises(LabError, match="ds1 is busy on host3"):
            F.datastore_return(lab, "ds1")
        # ... and all is put back as it was: the dead filesystem, host3's loss on top
        assert loop_mounted("host1", "ds1") == [device] == loop_mounted("host2", "ds1")
        assert loop_mounted("host3", "ds1") == [device, dsmod.LOSS_FSNAME]
        assert lab.exec("host1", ["cat", f"{d}/mapped"], check=False).returncode != 0
        assert lab.status()["datastores"]["ds1"]["failed"]
    finally:
        holder.close()
    assert lab_cli(["fault", "datastore_return", "ds1"]) == 0
    assert "error" not in capsys.readouterr().err
    assert marker(lab, "host1", "ds1") == "ds1" and marker(lab, "host2", "ds1") == "ds1"
    assert marker(lab, "host3", "ds1") == ""      # its datastore_loss still holds
    assert [f["kind"] for f in lab.status()["faults"]] == ["datastore_loss"]
    assert lab.status()["datastores"]["ds1"]["lost_on"] == ["host3"]
    F.heal(lab, "host3")
    assert lab.exec("host3", ["cat", f"{d}/mapped"]).stdout == "mapped\n"


def test_kill_agent_is_restarted(healed):
    lab = healed
    old = F.kill_agent(lab, "host1")
    assert lab.agent_pid("host1") is None
    new = wait(lambda: lab.agent_pid("host1"), 5, "the agent's restart")
    assert new != old


def test_kill_etcd_stays_down_until_heal(healed):
    lab = healed
    F.kill_etcd(lab, "host3")
    assert lab.etcd_pid("host3") is None
    wait(lambda: healthy(lab) == 2, 10, "2 healthy members")
    time.sleep(1.5)   # longer than the restart delay: still down
    assert lab.etcd_pid("host3") is None
    F.heal(lab, "host3")
    wait(lambda: lab.etcd_pid("host3"), 5, "etcd's restart")
    lab.wait_etcd_healthy(timeout=15)


def test_hang_fires_the_watchdog_and_the_host_reboots(healed):
    lab = healed
    sup = lab.supervisor_pid("host3")
    old_agent = lab.agent_pid("host3")
    stopped = F.hang(lab, "host3")
    assert old_agent in stopped and sup not in stopped
    assert all(pid_state(p) == "T" for p in stopped)
    # the watchdog fires: every process but the supervisor is killed
    wait(lambda: lab.supervisor_status("host3").get("resets") == 1,
         WATCHDOG_S + 3, "the watchdog reset")
    assert lab.host_pids("host3") == [sup] or lab.supervisor_status("host3")["state"] == "running"
    # and the host boots again after the reboot delay
    new_agent = wait(lambda: lab.agent_pid("host3"), REBOOT_S + 5, "the reboot")
    assert new_agent != old_agent and lab.supervisor_pid("host3") == sup
    assert lab.supervisor_status("host3")["boots"] == 2


def test_power_off_and_on(healed):
    lab = healed
    F.power_off(lab, "host2")
    assert lab.host_pids("host2") == []
    assert not lab.ping("host1", "host2")
    st = lab.status()["hosts"]["host2"]
    assert st["supervisor_pid"] is None and st["state"] == "off"
    assert [f["kind"] for f in st["faults"]] == ["power_off"]
    wait(lambda: healthy(lab) == 2, 10, "2 healthy members")
    F.power_on(lab, "host2")
    assert lab.ping("host1", "host2")
    wait(lambda: lab.agent_pid("host2") and lab.etcd_pid("host2"), 10, "host2's boot")
    lab.wait_etcd_healthy(timeout=15)


# --- teardown ---------------------------------------------------------------------------
def test_down_leaves_nothing(lab):
    images = [d["image"] for d in lab.state["datastores"].values()]
    F.partition(lab, ["host1"], ["host3"])
    F.datastore_loss(lab, "host1", "ds2")
    F.datastore_fail(lab, "ds1")
    F.hang(lab, "host2")
    lab.down()
    assert leftovers() == {}
    assert not lab.is_up()
    lab.down()   # idempotent
    assert leftovers() == {}
    assert not any(os.path.exists(i) for i in images)


def test_down_keep_data_detaches_and_up_finds_the_data_again():
    lab = Lab()
    img = "/var/lib/vigil-lab/arrays/ds1.img"
    cfg = LabConfig(hosts=1, datastores=1, agent_command=dummy_agent_command())
    try:
        lab.up(cfg)
        lab.exec("host1", ["sh", "-c", "echo kept > /var/lib/vigil-lab/ds/ds1/kept"])
        lab.down(keep_data=True)
        assert run(["losetup", "-j", img]).stdout == ""
        assert os.stat(img).st_size == 8 << 30 and os.stat(img).st_blocks * 512 < 512 << 20
        lab.up(cfg)
        assert lab.exec("host1", ["cat", "/var/lib/vigil-lab/ds/ds1/kept"]).stdout == "kept\n"
    finally:
        lab.down()
    assert leftovers() == {}


def test_failed_up_cleans_up(monkeypatch):
    from vigil.lab import lab as labmod

    def boom(ds):
        raise RuntimeError("injected failure")
    monkeypatch.setattr(labmod.dsmod, "mount_datastore_in_root", boom)
    lab = Lab()
    try:
        with pytest.raises(LabError, match="injected failure"):
            lab.up(LabConfig(hosts=2, datastores=1, agent_command=dummy_agent_command()))
        assert leftovers() == {}
    finally:
        lab.down()
