"""QEMU driver: build the command line, start QEMU daemonized, adopt it, talk QMP.

This module starts QEMU (disks first) and is the driver's one front: its parts live in
``processes`` (paths, pids, adoption), ``argv`` (the command line), ``qmp`` (the QMP
session), ``guest`` (heartbeat channel, output gate), and are re-exported here.

QEMU runs with ``-daemonize`` so that an agent restart never stops a VM; everything the
agent needs to find a VM again lives under ``run_dir/<vm>/`` (see :class:`VMPaths`).
Disks are opened with QEMU's image locking on (the default), so a second QEMU that tries to
write the same qcow2 fails to start: the last of vigil's "never two running copies" layers.

Choices worth knowing:

- ``-machine q35``: boots the lab guest as fast as ``pc`` under TCG (about 2.5 s) and is the
  modern machine type for live migration.
- no ``-no-reboot``: a guest that reboots itself is not a failure; the process, its disk
  locks and its ownership key stay, the agent sees a RESET event and a new guest boot_id.
- ``-action panic=pause`` with ``-device pvpanic``: a guest kernel panic becomes
  GUEST_PANICKED and the guest stays stopped in run state "guest-panicked" (not rebooted
  by the guest's ``panic=`` timer), so the agent decides what happens next: VM monitoring
  resets it where it watches the VM (vigil.agent.panics), else the QEMU is ended and
  the host's crash restarts take it, as for any VM death. The agent's event watch has a
  QMP monitor of its own (``events.sock``).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vigil.hypervisor.base import HB_PORT_NAME, MACHINE, QEMU_BIN, QEMU_IMG, QemuError, _opt  # noqa: F401
from vigil.hypervisor.argv import (  # noqa: F401  (re-exported)
    TLS_CLIENT_ID, TLS_SERVER_ID, build_argv, copy_node_name, disk_device_id, disk_node_name,
    disk_path, live_copies, quorum_blockdev, quorum_node_name, tap_name, tls_argv, vhost_for)
from vigil.hypervisor.guest import (  # noqa: F401  (re-exported)
    GuestChannel, HB_RE, Heartbeat, OutputGate)
from vigil.hypervisor.processes import (  # noqa: F401  (re-exported)
    VMPaths, cmdline, find_running, is_vm_process, kill_pid, pid_alive, read_pid, wait_pid_exit)
from vigil.hypervisor.qmp import (  # noqa: F401  (re-exported)
    QMPConn, QMPEvent)
from vigil.hypervisor import start_timing
from vigil.hypervisor.dhparams import ensure_dh_params
from vigil.hypervisor.start_boost import StartBoost
from vigil.model import VMSpec


async def _run(argv: list[str], timeout: float = 60.0, spawned: Callable[[int], None] | None = None,
               new_session: bool = False) -> tuple[int, str]:
    """``spawned``: called with the pid once the process is made. ``new_session``: the
    process runs in a session of its own (see :func:`start`)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=new_session,
    )
    if spawned is not None:
        spawned(proc.pid)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        kill_pid(proc.pid)
        await proc.wait()
        raise QemuError(f"{argv[0]} did not finish within {timeout:.0f}s") from None
    return proc.returncode or 0, (err or b"").decode(errors="replace").strip() or (out or b"").decode(
        errors="replace"
    ).strip()


async def ensure_disks(spec: VMSpec, datastore_paths: Mapping[str, str],
                       stale: Mapping[str, str] | None = None) -> list[Path]:
    """Create the VM's missing qcow2 disks (never touches an existing one).

    A replicated disk is made once, with its metadata preallocated (the quorum under it
    needs copies of one fixed length), and copied byte for byte to its other datastore;
    it is made only when none of its copies exists: a missing copy beside an existing one
    would be an empty image read as if it held the data."""
    created = []
    for disk in spec.disks:
        copies = [(ds, disk_path(disk, datastore_paths, ds)) for _, ds in live_copies(disk, stale or {})]
        missing = [(ds, p) for ds, p in copies if not p.exists()]
        if not missing:
            continue
        if len(missing) < len(copies):
            raise QemuError(f"disk {disk.name}: its copy on {', '.join(ds for ds, _ in missing)} is missing "
                            f"while another copy exists; resync it with `vigil vm repair-disk {spec.name}`")
        for ds, _ in missing:
            if not Path(datastore_paths[ds]).is_dir():
                raise QemuError(f"disk {disk.name}: datastore path {datastore_paths[ds]} is not there")
        paths = [p for _, p in missing]
        await create_copies(paths, f"{disk.size_mb}M", preallocate=bool(disk.replica))
        created += paths
    return created


async def retry_while_locked(attempt: Callable[[], Awaitable[Any]], wait_s: float) -> None:
    """Run ``attempt`` until it succeeds; a refusal over image locks (a QemuError that says
    "lock": another QEMU, going away, still holds the disk) is retried for ``wait_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            await attempt()
            return
        except QemuError as e:
            if "lock" not in str(e) or loop.time() > deadline:
                raise
        await asyncio.sleep(0.1)


async def create_copies(paths: Sequence[Path], size: str, preallocate: bool) -> None:
    """One new qcow2 image of ``size`` (qemu-img's syntax), copied byte for byte to every
    path: the copies of a replicated disk must be the same file. ``preallocate``: its
    metadata preallocated, so that it keeps one fixed length (a quorum needs that)."""
    first = paths[0]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    opts = ["-o", "preallocation=metadata"] if preallocate else []
    rc, msg = await _run([QEMU_IMG, "create", "-q", "-f", "qcow2", *opts, str(first), size])
    if rc != 0:
        raise QemuError(f"qemu-img create {first}: {msg}")
    for p in paths[1:]:
        rc, msg = await _run(["cp", "--sparse=always", str(first), str(p)])
        if rc != 0:
            raise QemuError(f"copying {first} to {p}: {msg}")


async def start(
    spec: VMSpec,
    paths: VMPaths,
    accel: str,
    datastore_paths: dict[str, str],
    *,
    incoming: bool = False,
    tls_dir: str | Path | None = None,
    standby: bool = False,
    stale: Mapping[str, str] | None = None,
    ft: bool = False,
    timing: dict[str, object] | None = None,
) -> int:
    """Start the VM's QEMU daemonized and return its pid; QemuError with QEMU's message if not.

    With ``ft`` (FT is on for the VM) its NICs never get vhost-net, even where it is usable:
    an FT primary's output is held by QEMU's net filters, which vhost-net would bypass.

    With ``incoming`` the QEMU waits for a live migration (see :func:`build_argv`); its
    missing disks are still created (empty, for a shared-nothing migration to fill).
    ``timing``: filled with where the start's time went (:mod:`start_timing`).

    QEMU runs in a session of its own from its first instruction, not only its daemon: with
    the kernel's autogroups (a CPU share per session) its first process otherwise shares
    the agent's share, which is busy exactly when VMs restart (claims, events, other
    starts), and the QEMU start waits behind it. Its sessions' share is raised while it
    starts, and normal once it is up (:mod:`start_boost`).
    """
    if tls_dir is not None:
        ensure_dh_params(tls_dir)  # else its TLS server object makes DH parameters: ~0.5 s of CPU
    argv = build_argv(spec, paths, accel, datastore_paths, incoming=incoming, tls_dir=tls_dir, standby=standby,
                      stale=stale, vhost=vhost_for(accel, ft))
    paths.dir.mkdir(parents=True, exist_ok=True)
    old = read_pid(paths.pidfile)
    if old and is_vm_process(old, paths):
        raise QemuError(f"VM {spec.name} already runs here (pid {old})")
    for leftover in (paths.pidfile, paths.qmp_sock, paths.events_sock, paths.hb_sock, *map(paths.net_sock, range(len(spec.networks)))):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    await ensure_disks(spec, datastore_paths, stale)
    began = time.time()
    marks: dict[str, float] = {}
    boost = StartBoost(paths.pidfile)

    def spawned(first: int) -> None:
        marks["spawned"] = time.time()
        boost.began(first)

    try:
        rc, msg = await _run(argv, spawned=spawned, new_session=True)
    finally:
        up = time.time()
        await boost.end()
    if rc != 0:
        raise QemuError(f"QEMU for VM {spec.name} failed to start: {msg}")
    pid = read_pid(paths.pidfile)
    if pid is None:
        raise QemuError(f"QEMU for VM {spec.name} started but wrote no pidfile {paths.pidfile}: {msg}")
    if timing is not None:
        timing.update(start_timing.phases(began, marks.get("spawned", began), up, paths.pidfile, pid))
    return pid
