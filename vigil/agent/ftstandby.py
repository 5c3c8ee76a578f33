"""An FT secondary's standbys: the QEMUs a protected VM's checkpoints go into.

For one VM and one FT epoch, the secondary keeps three standby QEMUs: the committed one
(the last complete checkpoint, which a failover runs), the one receiving the next
checkpoint, and a spare being started. It publishes where the next checkpoint goes
(``ftrx/``) and which one it holds complete (``ftack/``), both bound to its lease and only
while ``ft/`` still names it in this epoch. The primary's side is vigil.agent.ft.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vigil.agent.context import HostContext
from vigil.hypervisor import ft as FT
from vigil.hypervisor import migration as MG
from vigil.hypervisor import qemu as Q
from vigil.model import VMSpec
from vigil.store import keys as K
from vigil.store.etcd import StoreError

log = logging.getLogger("vigil.agent.ft")

RECEIVE_TIMEOUT_S = 30.0  # a checkpoint still coming in after this long has stalled
POLL_S = 0.01


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def kill_qemus(pidfiles: list[Path], keep: Path | None = None) -> None:
    """Kill the standby QEMUs whose pidfiles are given (by pid, checked to be that QEMU),
    except the one living in dir ``keep``."""
    for pidfile in pidfiles:
        if keep is not None and pidfile.parent == keep:
            continue
        pid = Q.read_pid(pidfile)
        if pid and Q.is_vm_process(pid, Q.VMPaths(pidfile.parent)):
            Q.kill_pid(pid)


@dataclass
class Standby:
    seq: int
    pid: int
    paths: Q.VMPaths
    conn: Q.QMPConn
    uri: str


class Secondary:
    """The standbys of one VM on this host, for one FT epoch."""

    def __init__(self, host: HostContext, root: Path, policy: Callable[[], MG.MigrationPolicy], vm: str, epoch: int,
                 spec: VMSpec, committed: Standby | None = None) -> None:
        """``root``: where the standbys live (one dir per VM); ``policy``: the checkpoints'
        migration settings."""
        self.host = host
        self.clock = host.env.clock
        self.policy = policy
        self.vm = vm
        self.epoch = epoch
        self.spec = spec
        self.dir = root / vm
        self.committed: Standby | None = committed
        self.standbys: list[Standby] = [committed] if committed else []
        self.task: asyncio.Task | None = None
        self.spare: asyncio.Task | None = None
        self.stopped = False  # checked by the loop too: a cancel lost in a race must not keep it spawning
        self._asked = 0.0

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def _spawn(self, seq: int) -> Standby:
        a = self.host
        paths = Q.VMPaths(self.dir / str(seq))
        shutil.rmtree(paths.dir, ignore_errors=True)
        pid = await FT.start_standby(self.spec, paths, a.accel, dict(a.cfg.datastores), a.cfg.tls_dir or None)
        sb = Standby(seq, pid, paths, Q.QMPConn(paths, pid=pid, name=self.vm), "")
        self.standbys.append(sb)
        await sb.conn.connect()
        sb.uri = f"tcp:{a.cfg.address}:{_free_port(a.cfg.address)}"
        await FT.prepare_standby(sb.conn, sb.uri, self.policy())
        return sb

    async def _quit(self, sb: Standby | None) -> None:
        if sb is None:
            return
        with contextlib.suppress(Exception):
            await sb.conn.close()
        Q.kill_pid(sb.pid)
        if sb in self.standbys:
            self.standbys.remove(sb)
        shutil.rmtree(sb.paths.dir, ignore_errors=True)

    async def _publish(self, key: str, seq: int, **extra: object) -> None:
        """Write ``ftrx/`` or ``ftack/``; etcd out of reach (a partition) is waited out:
        the primary waits for exactly this word."""
        a = self.host
        st = a.store
        while not self.stopped:
            try:
                # only while the ft key still names us, in this epoch: once the VM was handed
                # over (epoch + 1), no late acknowledgement may let the old primary release output
                await st.txn([st.equals(K.FT + self.vm, {"secondary": a.me, "epoch": self.epoch})],
                             [st.put_op(key + self.vm, {"host": a.me, "epoch": self.epoch, "seq": seq,
                                                        "time": self.clock.time(), **extra}, lease=a.lease_id)])
                return
            except StoreError as e:
                log.warning("%s: cannot publish %s%d: %s", self.vm, key, seq, e)
                await self.clock.sleep(0.3)

    async def run(self) -> None:
        a = self.host
        try:
            for d in self.dir.glob("*"):
                if self.committed is None or d != self.committed.paths.dir:
                    shutil.rmtree(d, ignore_errors=True)
            # numbered from the clock, so a restarted agent never reuses a number
            rx = await self._spawn(int(self.clock.time() * 1000))
            await self._publish(K.FTRX, rx.seq, uri=rx.uri)
            self.spare = asyncio.create_task(self._spawn(rx.seq + 1))
            await a.event("ft-secondary", f"{self.vm}: standby ready on {a.me} (epoch {self.epoch})", vm=self.vm)
            active_since = 0.0
            while not self.stopped:
                try:
                    state = await FT.standby_state(rx.conn)
                except Q.QemuError as e:  # this receiver is unusable; the committed one is not
                    log.warning("%s: standby %d does not answer: %s", self.vm, rx.seq, e)
                    state = "failed"
                if state == "receiving" and not active_since:
                    active_since = self.clock.monotonic()
                if state in ("listening", "receiving"):
                    # a checkpoint whose stream stopped (the primary cancels it after a stall
                    # and goes on) leaves its receiver waiting for ever: give up on it
                    # (one the primary gave up on may never have seen a byte: a dropped connection)
                    stuck = (active_since and self.clock.monotonic() - active_since > RECEIVE_TIMEOUT_S
                             or await self._abandoned(rx.seq))
                    if not Q.pid_alive(rx.pid) or stuck:
                        state = "failed"
                    else:
                        await self.clock.sleep(POLL_S)
                        continue
                active_since = 0.0
                if state == "committed":
                    old, self.committed = self.committed, rx
                    await self._publish(K.FTACK, rx.seq)
                    await self._quit(old)
                else:
                    log.warning("%s: standby %d failed to receive its checkpoint", self.vm, rx.seq)
                    await self._quit(rx)
                rx = await self.spare
                await self._publish(K.FTRX, rx.seq, uri=rx.uri)
                self.spare = asyncio.create_task(self._spawn(rx.seq + 1))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: FT secondary loop", self.vm)

    async def _abandoned(self, seq: int) -> bool:
        """The primary gave up on checkpoint ``seq`` (asked at most twice a second)."""
        now = self.clock.monotonic()
        if now - self._asked < 0.5:
            return False
        self._asked = now
        with contextlib.suppress(StoreError):
            e = await self.host.store.get(K.FTSTAT + self.vm)
            return e is not None and int(e.value.get("abandoned", 0)) >= seq
        return False

    async def stop(self, keep: Standby | None = None) -> None:
        """Quit every standby of this VM here (a committed one taken for a failover, or
        ``keep``, handed to a restarted loop, is no longer in the list)."""
        self.stopped = True
        for t in (self.task, self.spare):
            if t is not None:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
        for sb in list(self.standbys):
            await self._quit(sb)
        # one started while we were cancelled
        kill_qemus(list(self.dir.glob("*/qemu.pid")), keep.paths.dir if keep else None)
        if keep is None:
            shutil.rmtree(self.dir, ignore_errors=True)
