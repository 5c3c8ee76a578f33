"""QEMU command line building (no QEMU is run)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vigil.hypervisor.qemu import (
    HB_PORT_NAME,
    Heartbeat,
    QemuError,
    VMPaths,
    build_argv,
    find_running,
)
from vigil.model import BootSpec, DiskSpec, VMSpec


def _spec(**kw) -> VMSpec:
    base = dict(
        name="web1",
        memory_mb=256,
        vcpus=2,
        disks=(DiskSpec("root", "ds1", "vms/web1/root.qcow2"), DiskSpec("data", "ds2", "web1-data.qcow2")),
        boot=BootSpec("/cache/vmlinuz", "/cache/initrd.gz", "console=ttyS0 no_timer_check vigil.workload=1"),
    )
    base.update(kw)
    return VMSpec(**base)


DS = {"ds1": "/srv/ds1", "ds2": "/srv/ds2"}


def _after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_basic_argv() -> None:
    paths = VMPaths.for_vm(Path("/run/vigil"), "web1")
    argv = build_argv(_spec(), paths, "tcg", DS)
    assert argv[0] == "qemu-system-x86_64"
    assert "-daemonize" in argv
    assert _after(argv, "-name") == ["web1,debug-threads=on"]
    assert _after(argv, "-pidfile") == ["/run/vigil/web1/qemu.pid"]
    assert _after(argv, "-qmp") == ["unix:/run/vigil/web1/qmp.sock,server=on,wait=off",
                                    "unix:/run/vigil/web1/events.sock,server=on,wait=off"]  # the panic watch's
    assert _after(argv, "-accel") == ["tcg"]
    assert _after(argv, "-m") == ["256"]
    assert _after(argv, "-smp") == ["2"]
    assert "-nodefaults" in argv
    assert _after(argv, "-display") == ["none"]
    assert _after(argv, "-kernel") == ["/cache/vmlinuz"]
    assert _after(argv, "-initrd") == ["/cache/initrd.gz"]
    assert _after(argv, "-append") == ["console=ttyS0 no_timer_check vigil.workload=1"]
    chardevs = _after(argv, "-chardev")
    assert "socket,id=hb,path=/run/vigil/web1/hb.sock,server=on,wait=off" in chardevs
    assert any(c.startswith("file,") and "/run/vigil/web1/serial.log" in c for c in chardevs)
    devices = _after(argv, "-device")
    assert f"virtserialport,bus=vser0.0,chardev=hb,name={HB_PORT_NAME}" in devices
    assert "pvpanic" in devices
    assert "-no-reboot" not in argv
    assert _after(argv, "-action") == ["panic=pause"]  # VM monitoring decides (vigil.agent.panics)


def test_disks_blockdev_with_locking_default() -> None:
    argv = build_argv(_spec(), VMPaths.for_vm(Path("/r"), "web1"), "kvm", DS)
    bds = [json.loads(b) for b in _after(argv, "-blockdev")]
    assert [b["file"]["filename"] for b in bds] == ["/srv/ds1/vms/web1/root.qcow2", "/srv/ds2/web1-data.qcow2"]
    assert all(b["driver"] == "qcow2" and b["file"]["driver"] == "file" for b in bds)
    # image locking must stay on (the default): never switched off
    assert all("locking" not in b["file"] and "force-share" not in b for b in bds)
    nodes = [b["node-name"] for b in bds]
    assert len(set(nodes)) == 2
    devs = [d for d in _after(argv, "-device") if d.startswith("virtio-blk-pci")]
    assert [d.split("drive=")[1].split(",")[0] for d in devs] == nodes
    assert _after(argv, "-accel") == ["kvm"]


def test_disk_boot_without_kernel() -> None:
    argv = build_argv(_spec(boot=None), VMPaths.for_vm(Path("/r"), "web1"), "tcg", DS)
    assert "-kernel" not in argv and "-append" not in argv
    devs = [d for d in _after(argv, "-device") if d.startswith("virtio-blk-pci")]
    assert devs[0].endswith("bootindex=0")


def test_commas_in_paths_escaped() -> None:
    argv = build_argv(_spec(disks=()), VMPaths.for_vm(Path("/r,x"), "web1"), "tcg", DS)
    assert _after(argv, "-qmp") == ["unix:/r,,x/web1/qmp.sock,server=on,wait=off",
                                    "unix:/r,,x/web1/events.sock,server=on,wait=off"]


def test_unknown_datastore_and_accel() -> None:
    with pytest.raises(QemuError, match="datastore 'ds2'"):
        build_argv(_spec(), VMPaths.for_vm(Path("/r"), "web1"), "tcg", {"ds1": "/srv/ds1"})
    with pytest.raises(QemuError, match="accelerator"):
        build_argv(_spec(), VMPaths.for_vm(Path("/r"), "web1"), "hvf", DS)


def test_no_disks() -> None:
    argv = build_argv(_spec(disks=()), VMPaths.for_vm(Path("/r"), "web1"), "tcg", {})
    assert "-blockdev" not in argv


def test_heartbeat_parse() -> None:
    hb = Heartbeat.parse("hb 12 3456 -1 6d73c3ce-23d8-47af-84e0-51e9bc3031e9\n", 1.0)
    assert hb == Heartbeat(12, 3456, -1, "6d73c3ce-23d8-47af-84e0-51e9bc3031e9", 1.0)
    assert Heartbeat.parse("vigil-guest: up") is None
    assert Heartbeat.parse("hb x 1 2 abc") is None


def test_find_running_ignores_dead_and_foreign(tmp_path: Path) -> None:
    import os

    (tmp_path / "dead").mkdir()
    (tmp_path / "dead" / "qemu.pid").write_text("999999999\n")
    # a live pid that is not this VM's QEMU (pid reuse): our own test process
    (tmp_path / "reused").mkdir()
    (tmp_path / "reused" / "qemu.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "nopid").mkdir()
    assert find_running(tmp_path) == {}
    assert find_running(tmp_path / "missing") == {}


def test_abort_connection_destroys_only_the_migration_peers_tcp_connections(monkeypatch):
    from vigil.hypervisor import migration as MG

    calls: list[list[str]] = []
    monkeypatch.setattr(MG.subprocess, "run", lambda argv, **kw: calls.append(argv))
    MG.abort_connection("tcp:10.77.0.2:49152")
    MG.abort_connection("unix:/run/x.sock")  # not TCP: nothing to destroy
    MG.abort_connection("tcp:[fd00::2]:4444")
    assert calls == [["ss", "-K", "dst", "10.77.0.2", "dport", "=", "49152"],
                     ["ss", "-K", "dst", "fd00::2", "dport", "=", "4444"]]
