"""QEMUs outside the lab, on loopback in a temp dir: for QEMU-level tests and benchmarks.

The driver, migration and mirror code is tested and measured against real QEMUs running
the lab guest image, but without the lab's hosts, namespaces and etcd: QEMUs started
directly (``vigil.hypervisor.qemu.start``) with their run dirs and datastores under one
temp dir, migrating over 127.0.0.1. Several of these can run beside a lab.

:func:`standalone` gives a :class:`Standalone` and always cleans up after it, whatever
happened: it kills by pid only the QEMUs it started (never by name: other QEMUs on the
machine, a lab's among them, are not its business) and removes the temp dir it made.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from vigil.config import cache_dir
from vigil.hypervisor import accel
from vigil.hypervisor import migration as MG
from vigil.hypervisor import qemu as Q
from vigil.hypervisor.guest_image import BUSYBOX, GuestImage
from vigil.model import BootSpec, DiskSpec, VMSpec



def unavailable() -> str | None:
    """Why standalone QEMUs cannot run here (for a skip or a refusal), or None if they can."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which(Q.QEMU_BIN) is None:
        return f"{Q.QEMU_BIN} not installed"
    if not BUSYBOX.exists():
        return "busybox-static not installed"  # the guest image is built from it
    return None


def probe_accel(image: GuestImage) -> str:
    """"kvm" or "tcg" for this machine, from the cache the agents share (one probe per boot)."""
    return accel.probe_accel(cache_dir(), image)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a migration or NBD listener)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_uri() -> str:
    """A migration URI on a free loopback port."""
    return f"tcp:127.0.0.1:{free_port()}"


async def heartbeats(paths: Q.VMPaths, count: int, timeout: float = 60.0) -> list[Q.Heartbeat]:
    """Collect ``count`` guest heartbeats (the guest runs and writes); timeout is a hang guard."""
    out: list[Q.Heartbeat] = []

    async def collect() -> None:
        async with Q.GuestChannel(paths) as chan:
            async for hb in chan:
                out.append(hb)
                if len(out) >= count:
                    return

    await asyncio.wait_for(collect(), timeout)
    return out


async def wait_serial(paths: Q.VMPaths, text: str, timeout: float = 60.0) -> None:
    """Wait for ``text`` on the guest's serial log (e.g. "vigil-guest: dirtying", which the
    heartbeat does not tell); TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if paths.serial_log.exists() and text in paths.serial_log.read_text(errors="replace"):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{text!r} not on {paths.serial_log} within {timeout:.0f}s")


def _is_qemu(pid: int) -> bool:
    """The pid still is a QEMU (not gone, not reused by another process since)."""
    return Q.pid_alive(pid) and "qemu" in " ".join(Q.cmdline(pid))


class Standalone:
    """Run dirs and datastores under ``root``; remembers every QEMU pid and QMP connection
    it started, so that :meth:`close` ends exactly those."""

    def __init__(self, root: Path, image: GuestImage, accel: str, datastores: Sequence[str] = ("ds1",)) -> None:
        self.root = Path(root)
        self.image = image
        self.accel = accel
        self.ds = {name: str(self.root / name) for name in datastores}
        for p in self.ds.values():
            Path(p).mkdir(parents=True, exist_ok=True)
        self.pids: set[int] = set()
        self.stopped: set[int] = set()  # pids SIGSTOP'd by sigstop()
        self.conns: list[Q.QMPConn] = []
        self._runs = 0

    def spec(
        self,
        name: str = "vm1",
        memory_mb: int = 128,
        extra: str = "vigil.workload=1",
        disk: str = "vm1/root.qcow2",
        ds: str = "ds1",
        size_mb: int = 64,
    ) -> VMSpec:
        """A VM booting the guest image from one qcow2 disk; ``extra`` is added to the
        kernel command line (the guest's ``vigil.*`` workload switches)."""
        return VMSpec(
            name=name,
            memory_mb=memory_mb,
            disks=(DiskSpec("root", ds, disk, size_mb=size_mb),),
            boot=BootSpec(str(self.image.kernel), str(self.image.initrd), f"{self.image.cmdline} {extra}"),
        )

    def paths(self, name: str = "vm1", run: str = "run") -> Q.VMPaths:
        """The VM's runtime files in run dir ``root/run`` (one run dir per QEMU of a VM)."""
        return Q.VMPaths.for_vm(self.root / run, name)

    def disk(self, spec: VMSpec, index: int = 0) -> Path:
        """The file of the VM's ``index``-th disk."""
        return Q.disk_path(spec.disks[index], self.ds)

    async def start_pid(self, spec: VMSpec, paths: Q.VMPaths, **kw: Any) -> int:
        """Start a QEMU (``kw``: ``incoming``, ``tls_dir``... of ``qemu.start``); its pid.

        The pidfile is read even when the start fails: a QEMU that daemonized and then
        failed must be killed at the end too.
        """
        try:
            pid = await Q.start(spec, paths, self.accel, self.ds, **kw)
        finally:
            p = Q.read_pid(paths.pidfile)
            if p:
                self.pids.add(p)
        self.pids.add(pid)
        return pid

    async def start(self, spec: VMSpec, run: str | None = None, **kw: Any) -> tuple[Q.VMPaths, Q.QMPConn]:
        """Start a QEMU in run dir ``run`` (a new ``runN`` if None) and connect QMP."""
        if run is None:
            self._runs += 1
            run = f"run{self._runs}"
        paths = self.paths(spec.name, run)
        pid = await self.start_pid(spec, paths, **kw)
        conn = await Q.QMPConn(paths, pid).connect()
        self.conns.append(conn)
        return paths, conn

    async def incoming(
        self, spec: VMSpec, policy: MG.MigrationPolicy, run: str | None = None, **kw: Any
    ) -> tuple[Q.VMPaths, Q.QMPConn, str]:
        """A migration destination listening on loopback: its paths, QMP and URI.

        ``prepare_incoming`` refuses a QEMU that is not in "inmigrate".
        """
        paths, conn = await self.start(spec, run, incoming=True, **kw)
        uri = loopback_uri()
        await MG.prepare_incoming(conn, uri, policy)
        return paths, conn, uri

    def sigstop(self, pid: int) -> None:
        """Freeze a QEMU (a hung host, a cut link); :meth:`close` wakes it before the kill."""
        self.stopped.add(pid)
        os.kill(pid, signal.SIGSTOP)

    def kill(self, wait_s: float = 10.0) -> None:
        """SIGCONT + SIGKILL each QEMU started here that still runs, by pid only, and wait
        until they are gone (their files closed: a test may unmount what they used)."""
        left = [pid for pid in self.pids if _is_qemu(pid)]
        for pid in left:
            Q.kill_pid(pid, signal.SIGCONT)
            Q.kill_pid(pid)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(_is_qemu(p) for p in left):
            time.sleep(0.05)

    async def close(self) -> None:
        """Close the QMP connections, then :meth:`kill`."""
        try:
            for c in self.conns:
                await c.close()
        finally:
            self.kill()


@contextlib.asynccontextmanager
async def standalone(
    image: GuestImage,
    accel: str,
    *,
    root: Path | None = None,
    datastores: Sequence[str] = ("ds1",),
    prefix: str = "vigil-standalone-",
) -> AsyncIterator[Standalone]:
    """A :class:`Standalone` that is closed at the end, even on failure.

    Without ``root`` it lives in a new temp dir under /var/tmp (guest disks and benchmark
    images can be large; /tmp is often a small tmpfs), removed at the end; with ``root``
    (e.g. pytest's tmp_path) the directory is the caller's and stays.
    """
    owned = root is None
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")) if root is None else Path(root)
    rig: Standalone | None = None
    try:
        rig = Standalone(base, image, accel, datastores)
        yield rig
    finally:
        try:
            if rig is not None:
                await rig.close()
        finally:
            if owned:
                shutil.rmtree(base, ignore_errors=True)
