"""The agent's side of disks kept on two datastores (see vigil.policy.replicas).

For each VM running here with a replicated disk: a copy whose datastore this host lost is
marked stale in etcd and then taken out of the VM's quorum (the VM runs on, on the other
copy); once both datastores are reachable again, the disk is resynced while the VM runs,
and the copy is marked in sync again. Progress and errors go to ``diskstate/<vm>`` and to
events.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from vigil.hypervisor import qemu
from vigil.hypervisor import replica as R
from vigil.hypervisor.mirror import MirrorProgress
from vigil.model import VMSpec
from vigil.policy import replicas as P
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.store.state import ClusterState

from vigil.env import executor
from .context import HostContext

log = logging.getLogger("vigil.agent.disks")

RESYNC_RETRY_S = 30.0
PROGRESS_EVERY_S = 1.0


class DiskKeeper:
    def __init__(self, host: HostContext) -> None:
        self.a = host
        self.clock = host.env.clock
        self.state: dict[str, dict[str, Any]] = {}  # vm -> its diskstate value
        self.resyncing: dict[str, asyncio.Task] = {}
        self.retry_at: dict[str, float] = {}

    def stale(self, vm: str) -> dict[str, str]:
        return P.stale_map(self.state.get(vm))

    def update(self, state: ClusterState) -> None:
        """Take the diskstate values of the newest snapshot (mutable copies: _write keeps
        this host's own writes here until the next snapshot)."""
        self.state = {name: dict(r.value) for name, r in state.disk_states.items()}

    async def _write(self, vm: str, change: Any) -> dict[str, Any]:
        new = await self.a.store.update(K.DISKSTATE + vm, change)
        self.state[vm] = new
        return new

    def _running(self) -> list[tuple[str, int, VMSpec]]:
        return [(n, v.pid, v.spec) for n, v in self.a.vms.items()
                if v.spec is not None and not v.stopping and v.spec.replicated]

    # -- a datastore lost: drop its copies ---------------------------------------------
    async def degrade(self) -> None:
        """Drop the copies this host lost (stale in etcd first, then out of the quorum).
        Never raises: it runs in the loop that pets the watchdog."""
        try:
            await self._degrade()
        except Exception:
            log.exception("dropping lost disk copies")

    async def _degrade(self) -> None:
        for name, pid, spec in self._running():
            for disk, ds in P.copies_to_drop(spec, self.stale(name), self.a.ds_ok):
                why = f"datastore {ds} lost on {self.a.me}"
                try:
                    await self._write(name, lambda st, d=disk, s=ds: P.mark_stale(st, d, s, self.clock.time(), why))
                except StoreError as e:
                    log.warning("%s: cannot mark disk %s stale on %s yet: %s", name, disk, ds, e)
                    continue
                index = spec.disk_index(disk)
                d = spec.disks[index]
                try:
                    async with qemu.QMPConn(executor.paths(self.a.cfg, name), pid=pid, name=name) as conn:
                        await R.drop_copy(conn, index, qemu.disk_path(d, self.a.cfg.datastores, ds))
                except (qemu.QemuError, OSError) as e:
                    log.warning("%s: dropping the copy of disk %s on %s: %s", name, disk, ds, e)
                other = next(c for c in d.copies if c != ds)
                await self.a.event("disk-degraded", f"{name}: disk {disk} lost its copy on {ds} ({why}); "
                                   f"running on the copy on {other} alone until it is resynced",
                                   vm=name, disk=disk, datastore=ds)

    # -- datastores back: resync --------------------------------------------------------
    def sync(self) -> None:
        """Start a resync for each VM here with a stale copy it can reach again."""
        for name in list(self.resyncing):
            if self.resyncing[name].done():
                del self.resyncing[name]
        now = self.clock.monotonic()
        for name, pid, spec in self._running():
            st = self.state.get(name, {})
            if st.get("repair", 0) > st.get("resync_failed", 0):
                self.retry_at.pop(name, None)  # `vigil vm repair-disk` asked for a retry now
            disks = P.copies_to_resync(spec, self.stale(name), self.a.ds_ok)
            if not disks or name in self.resyncing or now < self.retry_at.get(name, 0.0):
                continue
            self.resyncing[name] = asyncio.create_task(self._resync(name, pid, spec, disks))

    async def _resync(self, name: str, pid: int, spec: VMSpec, disks: list[str]) -> None:
        stale = self.stale(name)
        for disk in disks:
            index = spec.disk_index(disk)
            d = spec.disks[index]
            copies = [(j, qemu.disk_path(d, self.a.cfg.datastores, ds), ds != stale[disk])
                      for j, ds in enumerate(d.copies)]
            latest: dict[str, Any] = {}
            t0 = self.clock.time()

            def progress(p: MirrorProgress, latest: dict[str, Any] = latest) -> None:
                latest.update(done=p.offset, total=p.len)

            async def publish(disk: str = disk, latest: dict[str, Any] = latest, t0: float = t0) -> None:
                while True:
                    info = {"disk": disk, "host": self.a.me, "started": t0, **latest}
                    with contextlib.suppress(StoreError):
                        await self._write(name, lambda st: {**(st or {}), "resync": info})
                    await self.clock.sleep(PROGRESS_EVERY_S)

            await self.a.event("disk-resync-started", f"{name}: resyncing disk {disk}'s copy on {stale[disk]}",
                               vm=name, disk=disk, datastore=stale[disk])
            reporter = asyncio.create_task(publish())
            try:
                async with qemu.QMPConn(executor.paths(self.a.cfg, name), pid=pid, name=name) as conn:
                    took = await R.resync_copy(conn, index, copies, progress=progress)
            except (qemu.QemuError, OSError) as e:
                err = str(e)
                self.retry_at[name] = self.clock.monotonic() + RESYNC_RETRY_S
                with contextlib.suppress(StoreError):
                    await self._write(name, lambda st: {k: v for k, v in (st or {}).items() if k != "resync"}
                                      | {"resync_failed": self.clock.time(), "last_error": err})
                await self.a.event("disk-resync-failed", f"{name}: resync of disk {disk} failed: {err}; "
                                   f"retrying in {RESYNC_RETRY_S:.0f}s", vm=name, disk=disk)
                return
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            mib = d.size_mb
            try:
                await self._write(name, lambda st, dd=disk: P.mark_in_sync(st, [dd]))
            except StoreError as e:
                log.warning("%s: disk %s resynced but not yet recorded: %s", name, disk, e)
                self.retry_at[name] = self.clock.monotonic() + RESYNC_RETRY_S
                return
            await self.a.event("disk-resynced", f"{name}: disk {disk} whole again, copy on {stale[disk]} "
                               f"resynced in {took:.1f}s ({mib / took if took > 0 else 0:.0f} MiB/s of "
                               f"{mib} MiB)", vm=name, disk=disk, datastore=stale[disk], seconds=round(took, 2))


__all__ = ["DiskKeeper"]
