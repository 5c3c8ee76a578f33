"""The agent's Fault Tolerance roles.

*Primary* (the host that runs an FT VM): sends checkpoints to the secondary's standby, one
after another, and holds the guest's output (its heartbeat lines in its :class:`OutputGate`,
its NICs' frames in QEMU's net filters, vigil.hypervisor.nichold) until the checkpoint that
produced it is acknowledged: the outside world never sees what a failover could undo.

*Secondary*: keeps standby QEMUs for the VM (the committed one, the one receiving, a spare
being started), publishes where the next checkpoint goes (``ftrx/``) and which one it
holds complete (``ftack/``), both bound to its lease. When the controller hands it the VM
(assignment kind ``ft-failover``), the agent takes the ownership key and runs the
committed standby: the guest carries on from its last checkpoint, without a reboot.

Which checkpoints may be run is the primary's word: ``ftstat/<vm>`` carries ``valid_from``,
the oldest (epoch, seq) consistent with everything the outside has seen. The primary
raises it before it lets output through unprotected (checkpoints failing, a fresh start);
the controller promotes only a standby at or past it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vigil.agent.context import HostContext
from vigil.agent.ftstandby import POLL_S, Secondary, Standby, kill_qemus
from vigil.hypervisor import ft as FT
from vigil.hypervisor import ftdisk as FTD
from vigil.hypervisor import migration as MG
from vigil.hypervisor import nichold as NH
from vigil.hypervisor import qemu as Q
from vigil.model import VMSpec
from vigil.policy import ftroles as FR
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.store.state import ClusterState

log = logging.getLogger("vigil.agent.ft")

FT_DIR = ".ft"  # standbys live in run_dir/.ft/<vm>/<seq>/
CHECKPOINT_GAP_S = 0.1  # the primary runs at least this long between checkpoints
UNPROTECTED_AFTER_S = 3.0  # no checkpoint acknowledged for this long: output flows again
ACK_TIMEOUT_S = 5.0
STAT_EVERY_S = 1.0


@dataclass
class PrimaryStats:
    """What ``vigil vm show`` tells about a protected VM (written to ``ftstat/``)."""

    checkpoints: int = 0
    failures: int = 0
    interval_ms: float = 0.0  # between the last two acknowledged checkpoints
    pause_ms: float = 0.0  # guest stopped for the last checkpoint
    bytes: int = 0  # sent by the last checkpoint
    lag_ms: float = 0.0  # output held: from the checkpoint's cut to its release
    last_error: str = ""
    abandoned: int = 0  # the last checkpoint the primary gave up on (its receiver may quit)


@dataclass(frozen=True)
class CheckpointDone:
    """One acknowledged checkpoint, as the primary saw it (for an observer: a benchmark).
    Times are ``host.env.clock.monotonic()``."""

    vm: str
    seq: int
    started: float  # the output held, the checkpoint begun
    cut: float  # the primary running again (the output cut taken, the disk writes switched)
    acked: float  # the acknowledgement seen, the output released (before the older disk writes are merged)
    result: MG.MigrationResult
    stopped_ms: float  # the migration's completion seen -> the primary running again


class FtRunner:
    def __init__(self, host: HostContext, on_checkpoint: Callable[[CheckpointDone], None] | None = None) -> None:
        """``on_checkpoint``: told of every acknowledged checkpoint (None: nobody)."""
        self.a = host
        self.on_checkpoint = on_checkpoint
        self.clock = host.env.clock
        self.primaries: dict[str, tuple[tuple[str, int], asyncio.Task]] = {}
        self.secondaries: dict[str, tuple[int, "Secondary"]] = {}
        self.root = Path(host.cfg.run_dir) / FT_DIR
        self.enabled: set[str] = set()  # VMs with FT on, as of the last sync
        self.collapsing: dict[str, asyncio.Task] = {}  # VMs whose FT disk overlays are being merged

    def policy(self) -> MG.MigrationPolicy:
        return MG.MigrationPolicy(**{**FT.FT_POLICY.__dict__, "tls": bool(self.a.cfg.tls_dir)})

    def clean_leftovers(self) -> None:
        """Standbys of a previous agent run: their checkpoints are unknown now, quit them."""
        kill_qemus([*self.root.glob("*/*/qemu.pid"), *self.root.glob("*/qemu.pid")])
        shutil.rmtree(self.root, ignore_errors=True)

    def is_primary(self, vm: str) -> bool:
        return vm in self.primaries

    # -- reconcile -------------------------------------------------------------------
    def sync(self, state: ClusterState, specs: dict[str, VMSpec]) -> None:
        """Start and stop the FT roles this host has in ``state``."""
        me = self.a.me
        ft = {name: FR.FtKey(secondary=r.secondary, epoch=r.epoch) for name, r in state.ft.items()}
        own = {name: r.host for name, r in state.owners.items()}
        assigned = {name: r.assignment.host for name, r in state.assignments.items()}
        self.enabled = set(ft)
        stopping = {name: vm.stopping for name, vm in self.a.vms.items()}
        want_p = FR.primary_roles(me, stopping, ft, own)
        for name in FR.gates_to_open(me, stopping, ft, own, assigned, frozenset(self.primaries)):
            gate = self.a.vms[name].gate
            if gate is not None and gate.held:
                gate.open()
                asyncio.create_task(self._open_nics(name))
        for name, vm in self.a.vms.items():
            busy = self.collapsing.get(name)
            if (name not in ft and vm.spec is not None and not vm.stopping and (busy is None or busy.done())
                    and FTD.has_overlays(vm.spec, self.a.cfg.datastores)):
                self.collapsing[name] = asyncio.create_task(self._collapse(name, vm.pid, vm.spec))
        for name, (key, task) in list(self.primaries.items()):
            if want_p.get(name) != key or task.done():
                task.cancel()
                del self.primaries[name]
        for name, key in want_p.items():
            if name not in self.primaries:
                self.primaries[name] = (key, asyncio.create_task(self._primary(name, *key)))
        want_s = FR.secondary_roles(me, ft, specs, assigned)
        for name, (epoch, sec) in list(self.secondaries.items()):
            if want_s.get(name) == epoch and sec.task is not None and sec.task.done():
                # its loop died: start it again, keeping the checkpoint it holds
                kept, sec.committed = sec.committed, None
                if kept is not None:
                    sec.standbys.remove(kept)
                del self.secondaries[name]
                asyncio.create_task(sec.stop(keep=kept))
                fresh = Secondary(self.a, self.root, self.policy, name, epoch, specs[name], committed=kept)
                fresh.start()
                self.secondaries[name] = (epoch, fresh)
            elif want_s.get(name) != epoch:
                del self.secondaries[name]
                asyncio.create_task(sec.stop())
        for name, epoch in want_s.items():
            if name not in self.secondaries:
                sec = Secondary(self.a, self.root, self.policy, name, epoch, specs[name])
                sec.start()
                self.secondaries[name] = (epoch, sec)

    def take_committed(self, vm: str) -> Standby | None:
        """For a failover: the committed standby, detached so that nothing quits it."""
        entry = self.secondaries.pop(vm, None)
        if entry is None:
            return None
        sec = entry[1]
        sb, sec.committed = sec.committed, None
        if sb is not None:
            sec.standbys.remove(sb)
            # out of the VM's standby dir, which stop() clears
            live = Q.VMPaths(self.root / f"{vm}.live-{sb.seq}")
            shutil.rmtree(live.dir, ignore_errors=True)
            os.rename(sb.paths.dir, live.dir)
            sb.paths = live
        asyncio.create_task(sec.stop())
        return sb

    async def promote(self, vm: str, sb: Standby, spec: VMSpec) -> int:
        """Run the standby ``sb`` as the VM (its ownership key is ours already) and move its
        files to the VM's run dir, where everything else finds a running VM. Returns the pid.
        The disks first go back to the moment of its checkpoint (vigil.hypervisor.ftdisk)."""
        try:
            merged = await FTD.settle(spec, self.a.cfg.datastores, upto=sb.seq)
            log.info("%s: disk overlays up to checkpoint %d merged (%d)", vm, sb.seq, merged)
            await FT.go_live(sb.conn)
        finally:
            await sb.conn.close()
        dest = Q.VMPaths.for_vm(Path(self.a.cfg.run_dir), vm)
        dest.dir.mkdir(parents=True, exist_ok=True)
        moved = [sb.paths.qmp_sock, sb.paths.events_sock, sb.paths.hb_sock, sb.paths.pidfile, sb.paths.serial_log]
        for f in moved:
            with contextlib.suppress(FileNotFoundError):
                os.replace(f, dest.dir / f.name)
        shutil.rmtree(sb.paths.dir, ignore_errors=True)
        return sb.pid

    async def _open_nics(self, vm: str) -> None:
        """Let out the frames an FT primary of ours held in the VM's QEMU (this agent's
        loop ended, or a previous agent left them): nothing protects them any more."""
        local = self.a.vms.get(vm)
        if local is None or local.spec is None or not local.spec.networks:
            return
        paths = Q.VMPaths.for_vm(Path(self.a.cfg.run_dir), vm)
        try:
            async with Q.QMPConn(paths, pid=local.pid, name=vm) as conn:
                n = await NH.NicHold(len(local.spec.networks)).open(conn)
            if n:
                log.info("%s: %d held NIC buffer generation(s) released", vm, n)
        except (Q.QemuError, OSError) as e:
            log.warning("%s: releasing its held NIC output: %s", vm, e)

    async def _collapse(self, vm: str, pid: int, spec: VMSpec) -> None:
        """FT is off for a VM running here on disk overlays: back onto its base images."""
        paths = Q.VMPaths.for_vm(Path(self.a.cfg.run_dir), vm)
        try:
            async with Q.QMPConn(paths, pid=pid, name=vm) as conn:
                n = await FTD.collapse(conn, spec, self.a.cfg.datastores)
            await self.a.event("ft-disk-merged", f"{vm}: FT off, {n} disk overlay(s) merged into its images", vm=vm)
        except (Q.QemuError, OSError) as e:
            log.warning("%s: merging its FT disk overlays: %s", vm, e)
            await self.clock.sleep(5)

    async def stop_all(self) -> None:
        for _, t in self.primaries.values():
            t.cancel()
        for _, sec in self.secondaries.values():
            await sec.stop()

    # -- primary ---------------------------------------------------------------------
    async def _get(self, key: str) -> dict[str, Any] | None:
        e = await self.a.store.get(key)
        return e.value if e is not None else None

    async def _primary(self, vm: str, secondary: str, epoch: int) -> None:
        a, store = self.a, self.a.store
        local = a.vms.get(vm)
        if local is None:
            return
        gate = local.gate
        spec = local.spec
        if spec is None:
            return
        paths = Q.VMPaths.for_vm(Path(a.cfg.run_dir), vm)
        nics = NH.NicHold(len(spec.networks))
        st = PrimaryStats()
        last_seq = 0
        last_ok = self.clock.monotonic()
        last_ack_t = 0.0
        last_stat = 0.0
        valid_from: tuple[int, int] | None = None
        protected = False

        async def write_stat(state: str) -> bool:
            """Written only while we own the VM (False otherwise)."""
            nonlocal last_stat
            last_stat = self.clock.monotonic()
            return await store.txn([store.equals(K.OWN + vm, a.me)], [store.put_op(K.FTSTAT + vm, {
                "host": a.me, "secondary": secondary, "epoch": epoch, "state": state,
                "valid_from": list(valid_from) if valid_from else None, "checkpoints": st.checkpoints,
                "failures": st.failures, "interval_ms": round(st.interval_ms, 1), "pause_ms": round(st.pause_ms, 1),
                "bytes": st.bytes, "lag_ms": round(st.lag_ms, 1), "last_error": st.last_error,
                "abandoned": st.abandoned, "time": self.clock.time(),
            })])

        async def invalidate() -> bool:
            """Bar every checkpoint the secondary holds so far (before output flows freely)."""
            nonlocal valid_from
            # Only checkpoints this primary sent can be complete on the secondary (and any
            # it acknowledged); a receiver still listening will hold a newer one, which is fine.
            ack = await self._get(K.FTACK + vm)
            seen = last_seq
            if ack and ack.get("epoch") == epoch and ack.get("host") == secondary:
                seen = max(seen, int(ack["seq"]))
            valid_from = (epoch, seen + 1)
            try:
                return await write_stat("unprotected")
            except StoreError:
                return False

        async def nics_do(op: Callable[[Q.QMPConn], Any]) -> None:
            async with Q.QMPConn(paths, pid=local.pid, name=vm) as conn:
                await op(conn)

        async def open_all() -> None:
            """Output flows freely: the gate, and the NICs' buffers in QEMU."""
            gate.open()
            while True:
                try:
                    return await nics_do(nics.open)
                except (Q.QemuError, OSError) as e:
                    log.warning("%s: releasing held NIC output: %s", vm, e)
                    if a.vms.get(vm) is not local or local.stopping:
                        return
                    await self.clock.sleep(0.5)

        try:
            gate.hold()  # (and NIC buffers a previous agent left stay in QEMU until open_all)
            while not await invalidate():
                await self.clock.sleep(0.5)
            await open_all()
            await a.event("ft-starting", f"{vm}: FT checkpoints from {a.me} to {secondary} (epoch {epoch})", vm=vm)
            while a.vms.get(vm) is local and not local.stopping:
                now = self.clock.monotonic()
                if protected and now - last_ok > UNPROTECTED_AFTER_S:
                    if await invalidate():
                        protected = False
                        await open_all()
                        await a.event("ft-unprotected", f"{vm}: no checkpoint acknowledged for "
                                      f"{UNPROTECTED_AFTER_S:.0f}s ({st.last_error or 'secondary silent'}); "
                                      "runs unprotected", vm=vm)
                try:
                    rx = await self._get(K.FTRX + vm)
                except StoreError:
                    await self.clock.sleep(0.2)
                    continue
                if not rx or rx.get("epoch") != epoch or rx.get("host") != secondary or int(rx["seq"]) <= last_seq \
                        or (valid_from and int(rx["seq"]) < valid_from[1]):
                    await self.clock.sleep(POLL_S * 5)
                    continue
                seq = int(rx["seq"])
                last_seq = seq
                gate.hold()
                t0 = self.clock.monotonic()
                async def one(uri: str) -> tuple[MG.MigrationResult, int, int, float]:
                    async with Q.QMPConn(paths, pid=local.pid, name=vm) as src:
                        await nics.hold(src)
                        res = await FT.checkpoint(src, uri, self.policy())
                        t_done = self.clock.monotonic()
                        cut = gate.received  # the guest is stopped: all of this precedes the checkpoint
                        try:  # and so does every frame and disk write so far: later ones go to new
                            ncut = await nics.cut(src)  # NIC buffers and new disk overlays
                            await FTD.hold_writes(src, spec, a.cfg.datastores, seq)
                        finally:
                            await FT.resume(src)
                        return res, cut, ncut, (self.clock.monotonic() - t_done) * 1000

                try:
                    # shielded: a role change mid-checkpoint must not leave the guest stopped
                    res, cut, ncut, stopped_ms = await asyncio.shield(asyncio.ensure_future(one(str(rx["uri"]))))
                except (Q.QemuError, OSError) as e:
                    st.failures += 1
                    st.last_error = str(e)[:200]
                    st.abandoned = seq
                    if not isinstance(e, FT.CheckpointFailed):
                        # the checkpoint may be complete on the secondary, but the disk writes
                        # were not split there: it must never run
                        while not await invalidate():
                            await self.clock.sleep(0.2)
                    log.warning("%s: checkpoint %d to %s failed: %s", vm, seq, secondary, e)
                    if isinstance(e, NH.NicHoldError):  # no checkpoint can protect its frames
                        if protected or not st.failures - 1:
                            await a.event("ft-unprotected", f"{vm}: {e}; runs unprotected until it is "
                                          "migrated or restarted (its next QEMU gets NICs QEMU can hold)", vm=vm)
                        protected = False
                        await open_all()
                    with contextlib.suppress(StoreError):
                        await write_stat("protected" if protected else "unprotected")
                    await self.clock.sleep(30 if isinstance(e, NH.NicHoldError) else 0.3)
                    continue
                t_cut = self.clock.monotonic()
                acked = await self._wait_ack(vm, secondary, epoch, seq)
                if not acked:
                    st.failures += 1
                    st.last_error = f"checkpoint {seq} not acknowledged within {ACK_TIMEOUT_S:.0f}s"
                    continue
                gate.release(cut)
                t_ack = self.clock.monotonic()
                try:  # no failover can go back before this checkpoint: let its frames out and
                    async with Q.QMPConn(paths, pid=local.pid, name=vm) as src:  # merge older disk writes
                        await nics.release(src, ncut)
                        t_ack = self.clock.monotonic()
                        await FTD.commit_before(src, spec, a.cfg.datastores, seq)
                except (Q.QemuError, OSError) as e:
                    st.last_error = f"releasing output or merging disk overlays: {e}"[:200]
                    log.warning("%s: %s", vm, st.last_error)
                now = self.clock.monotonic()
                st.checkpoints += 1
                st.pause_ms, st.bytes, st.lag_ms = res.downtime_ms, res.ram_transferred, (now - t_cut) * 1000
                if last_ack_t:
                    st.interval_ms = (now - last_ack_t) * 1000
                if self.on_checkpoint is not None:
                    self.on_checkpoint(CheckpointDone(vm, seq, t0, t_cut, t_ack, res, stopped_ms))
                last_ack_t = last_ok = now
                if not protected:
                    protected = True
                    await a.event("ft-protected", f"{vm}: protected by {secondary} (checkpoint {seq}, "
                                  f"{(now - t0) * 1000:.0f} ms, {res.ram_transferred // (1024 * 1024)} MiB)", vm=vm)
                if now - last_stat > STAT_EVERY_S:
                    with contextlib.suppress(StoreError):
                        await write_stat("protected")
                await self.clock.sleep(CHECKPOINT_GAP_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: FT primary loop", vm)

    async def _wait_ack(self, vm: str, secondary: str, epoch: int, seq: int) -> bool:
        deadline = self.clock.monotonic() + ACK_TIMEOUT_S
        while self.clock.monotonic() < deadline:
            with contextlib.suppress(StoreError):
                ack = await self._get(K.FTACK + vm)
                if ack and ack.get("host") == secondary and ack.get("epoch") == epoch and int(ack["seq"]) >= seq:
                    return True
            await self.clock.sleep(POLL_S)
        return False
