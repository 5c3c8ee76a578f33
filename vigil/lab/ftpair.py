"""An FT primary and secondary host in one process, on loopback, around a real etcd:
vigil.agent.ft and vigil.agent.ftstandby as the agents run them, without the rest of an
Agent (for bench/ft.py and its smoke test).

Each host is a :class:`PairHost`: the agent's helper surface (vigil.agent.context.HostContext)
with the real environment (vigil.env.real), its own etcd client and the agent's lease
(vigil.agent.lease). Each runs an :class:`~vigil.agent.ft.FtRunner` that a tick syncs from
an etcd snapshot, as the agent's reconcile does, so the roles come from vigil.policy.ftroles
and every ``ftrx/``, ``ftack/`` and ``ftstat/`` goes through etcd. Not here: the controller's
failure detection and the agent's guest monitor (the caller reads the guest's heartbeats
through the VM's OutputGate). A failover (:meth:`FtPair.hand_over`) writes the controller's
own ``ft-failover`` transaction (vigil.controller.loop) once the primary's host is dead,
and the secondary then does what its reconcile does (vigil.policy.host.take_standby, the
claim, FtRunner.promote).

QEMUs: the primary is the caller's (started in run dir ``p`` of a Standalone rig); the
standbys are started by the secondary's FtRunner under run dir ``s``; :meth:`FtPair.close`
ends them all.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from vigil.agent.context import LocalVM
from vigil.agent.ft import CheckpointDone, FtRunner
from vigil.agent.ftstandby import Standby, kill_qemus
from vigil.agent.lease import HostLease
from vigil.config import AgentConfig
from vigil.controller.loop import Controller, ft_view
from vigil.env.hypervisor import QemuHypervisor
from vigil.env.real import RealEnv
from vigil.hypervisor import qemu as Q
from vigil.lab.standalone import Standalone
from vigil.model import Assignment, VMSpec
from vigil.policy import host as HP
from vigil.policy.plan import AssignVM
from vigil.store import keys as K
from vigil.config.etcd_client import etcd_tls
from vigil.store.etcd import Store, StoreError
from vigil.store.tls import EtcdTLS
from vigil.store.events import make_event, record
from vigil.store.state import ClusterState, cluster_state

log = logging.getLogger("vigil.lab.ftpair")

PRIMARY, SECONDARY = "host1", "host2"


class PairHost:
    """One host as the FT helpers see it (vigil.agent.context.HostContext)."""

    def __init__(self, me: str, cfg: AgentConfig, accel: str) -> None:
        self.me = me
        self.cfg = cfg
        self.env = RealEnv()
        self.hypervisor = QemuHypervisor(cfg)
        self.store = Store(cfg.etcd_endpoints, timeout=min(2.0, cfg.lease_ttl / 2), prefer_first=True,
                           tls=etcd_tls(cfg))  # as the agent's
        self.vms: dict[str, LocalVM] = {}
        self.accel = accel
        self.ds_ok = {name: True for name in cfg.datastores}
        self.stopped = asyncio.Event()
        self.lease = HostLease(self, uuid.uuid4().hex[:12])
        self.events: list[tuple[float, str, str]] = []  # (wall time, kind, message)

    @property
    def lease_id(self) -> int:
        return self.lease.id

    def lease_ok(self) -> bool:
        return self.lease.ok()

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), seconds)

    async def event(self, kind: str, message: str, vm: str = "", **data: object) -> None:
        """As the agent's: logged and recorded in etcd."""
        self.events.append((self.env.clock.time(), kind, message))
        log.info("%s: %s: %s", self.me, kind, message)
        ev = make_event(kind, message, host=self.me, vm=vm, source=self.me, at=self.env.clock.time(), **data)
        with contextlib.suppress(StoreError):
            await record(self.store, ev)

    async def power_off(self, name: str, why: str, report: bool = True) -> None:
        raise RuntimeError(f"{self.me}: no power-off in an FT pair ({name}: {why})")


class FtPair:
    """Two hosts protecting one VM: ``primary`` runs it, ``secondary`` keeps its standbys."""

    def __init__(self, rig: Standalone, endpoint: str,
                 on_checkpoint: Callable[[CheckpointDone], None] | None = None, tls: EtcdTLS | None = None) -> None:
        self.rig, self.tls = rig, tls
        self.primary = PairHost(PRIMARY, self._cfg(PRIMARY, "p", endpoint), rig.accel)
        self.secondary = PairHost(SECONDARY, self._cfg(SECONDARY, "s", endpoint), rig.accel)
        self.runners = {PRIMARY: FtRunner(self.primary, on_checkpoint), SECONDARY: FtRunner(self.secondary)}
        self.tasks: dict[str, list[asyncio.Task]] = {PRIMARY: [], SECONDARY: []}
        self.specs: dict[str, VMSpec] = {}

    def _cfg(self, me: str, run: str, endpoint: str) -> AgentConfig:
        peer = SECONDARY if me == PRIMARY else PRIMARY
        return AgentConfig(host=me, address="127.0.0.1", etcd_endpoints=(endpoint,), run_dir=str(self.rig.root / run),
                           datastores=dict(self.rig.ds), peers={peer: "127.0.0.1"},
                           **({"etcd_ca": self.tls.ca, "etcd_cert": self.tls.cert, "etcd_key": self.tls.key}
                              if self.tls else {}))

    def run_dir(self, host: str) -> Path:
        return Path((self.primary if host == PRIMARY else self.secondary).cfg.run_dir)

    def host(self, name: str) -> PairHost:
        return self.primary if name == PRIMARY else self.secondary

    async def start(self) -> None:
        """Connect both hosts to etcd and take their leases."""
        for h in (self.primary, self.secondary):
            Path(h.cfg.run_dir).mkdir(parents=True, exist_ok=True)
            await h.store.connect()
        for h in (self.primary, self.secondary):
            await h.lease.obtain()
            self.tasks[h.me].append(asyncio.create_task(h.lease.loop(), name=f"{h.me}-lease"))

    async def protect(self, spec: VMSpec, pid: int, gate: Q.OutputGate) -> None:
        """The VM runs on the primary (pid, gate): write what the controller and the
        primary's agent would (spec, assignment, ownership, ``ft/`` naming the secondary),
        then let both hosts' ticks take their roles."""
        p, st = self.primary, self.primary.store
        self.specs[spec.name] = spec
        for prefix in (K.VMS, K.ASSIGN, K.OWN, K.FT, K.FTRX, K.FTACK, K.FTSTAT, K.VMSTATUS):
            await st.delete(prefix + spec.name)  # what a previous pair left of this VM
        self.primary.vms[spec.name] = LocalVM(spec.name, pid, gen=1, spec=spec, started=time.time(), gate=gate)
        await st.put(K.VMS + spec.name, spec.to_json())
        await st.put(K.ASSIGN + spec.name, Assignment(host=p.me, gen=1, reason="place").__dict__)
        await st.put(K.OWN + spec.name, p.me, lease=p.lease_id)
        await st.put(K.FT + spec.name, {"secondary": SECONDARY, "epoch": 1})
        for h in (self.primary, self.secondary):
            self.tasks[h.me].append(asyncio.create_task(self._tick(h), name=f"{h.me}-tick"))

    async def ft_off(self, vm: str) -> None:
        """FT turned off (its ``ft/`` key gone): the primary opens the output and merges
        its disk overlays back, the secondary quits its standbys."""
        await self.primary.store.delete(K.FT + vm)

    async def _tick(self, h: PairHost) -> None:
        """The agent's reconcile, for the FT roles only: sync them from etcd's state."""
        runner = self.runners[h.me]
        while not h.stopped.is_set():
            try:
                state = cluster_state(await h.store.snapshot())
                runner.sync(state, {name: r.spec for name, r in state.vms.items()})
            except StoreError as e:
                log.warning("%s: reconcile: %s", h.me, e)
            await h.sleep(h.cfg.tick_s / 2)

    async def _stop_tasks(self, h: PairHost) -> None:
        for t in self.tasks[h.me]:
            t.cancel()
        for t in self.tasks[h.me]:
            with contextlib.suppress(BaseException):
                await t
        self.tasks[h.me] = []

    def merged(self, vm: str) -> bool:
        """The primary's disk overlays, after FT was turned off, are merged back (or none were)."""
        t = self.runners[PRIMARY].collapsing.get(vm)
        return t is None or t.done()

    async def kill_primary(self, vm: str) -> float:
        """The primary's host dies: its agent (tick, lease, FT loop) and the VM's QEMU at
        once. Returns the wall time of the kill."""
        p = self.primary
        p.stopped.set()
        for _, t in self.runners[PRIMARY].primaries.values():
            t.cancel()
        local = p.vms[vm]
        t_kill = time.time()
        os.kill(local.pid, signal.SIGKILL)
        await self._stop_tasks(p)
        return t_kill

    async def hand_over(self, vm: str) -> tuple[Standby, str]:
        """After :meth:`kill_primary`: the controller's FT failover (its transaction, once
        its failure detection, not run here, found the primary's host failed), then the
        secondary's reconcile up to its claim. Returns the committed standby taken (not yet
        running: :meth:`promote` it) and whether it was acknowledged to the primary."""
        s = self.secondary
        await self._stop_tasks(s)  # its reconcile from here on is this one
        state = cluster_state(await s.store.snapshot())
        action = self._failover_action(state, vm)
        ctl = Controller(s.store, s.me, s.cfg, is_leader=lambda: True)
        await s.store.put(K.LEADER, s.me, lease=s.lease_id)
        await ctl.apply(action)
        await s.store.revoke(self.primary.lease_id)  # as the controller does after the failover
        self.tasks[s.me].append(asyncio.create_task(s.lease.loop(), name=f"{s.me}-lease"))
        state = cluster_state(await s.store.snapshot())
        a = state.assignments.get(vm)
        if a is None or a.assignment.host != s.me:
            raise RuntimeError(f"{vm}: the failover to {s.me} was not written ({action.reason})")
        facts = HP.VMFacts(spec=state.vms[vm].spec, assignment=a.assignment,
                           owner=state.owners[vm].host if vm in state.owners else None)
        if HP.take_standby(s.me, vm, facts, HP.HereFacts()) is None:
            raise RuntimeError(f"{vm}: {s.me} does not take its standby")
        runner = self.runners[SECONDARY]
        sb = runner.take_committed(vm)
        if sb is None:
            raise RuntimeError(f"{vm}: no committed standby on {s.me}")
        runner.sync(state, {name: r.spec for name, r in state.vms.items()})
        ok = await s.store.txn([s.store.absent(K.OWN + vm), s.store.unchanged(K.ASSIGN + vm, a.rev)],
                               [s.store.put_op(K.OWN + vm, s.me, s.lease_id)])
        if not ok:
            raise RuntimeError(f"{vm}: {s.me} could not take the ownership key")
        return sb, action.reason

    def _failover_action(self, state: ClusterState, vm: str) -> AssignVM:
        """What vigil.policy.plan decides for an FT VM whose primary's host failed."""
        ft = state.ft.get(vm)
        a = state.assignments.get(vm)
        if ft is None or a is None:
            raise RuntimeError(f"{vm}: no ft/ or assign/ key")
        v = ft_view(ft, state.ft_acks.get(vm), state.ft_stats.get(vm))
        if not v.can_fail_over or v.secondary is None:
            raise RuntimeError(f"{vm}: the secondary holds no checkpoint it may run (ack {v.ack_seq}, "
                               f"valid from {v.valid_from})")
        return AssignVM(vm=vm, host=v.secondary, gen=a.assignment.gen + 1, expect_rev=a.rev, kind="ft-failover",
                        reason=f"{PRIMARY} failed; the FT secondary on {v.secondary} goes live from checkpoint "
                               f"{v.ack_seq}", expect_owner=PRIMARY, ft_epoch=v.epoch, ft_rev=v.rev,
                        ft_stat_rev=v.stat_rev)

    async def promote(self, vm: str, sb: Standby) -> int:
        """The secondary runs the standby as the VM (vigil.agent.ft.FtRunner.promote); its pid."""
        try:
            pid = await self.runners[SECONDARY].promote(vm, sb, self.specs[vm])
        except BaseException:
            Q.kill_pid(sb.pid)
            raise
        self.rig.pids.add(pid)  # the rig's close ends it
        return pid

    def committed_seq(self, vm: str) -> int | None:
        """The checkpoint the secondary holds complete now (None: none, or not its role)."""
        entry = self.runners[SECONDARY].secondaries.get(vm)
        sb = entry[1].committed if entry else None
        return sb.seq if sb else None

    async def close(self) -> None:
        """Stop both hosts' FT roles and loops, end every standby, drop the etcd clients."""
        for h in (self.primary, self.secondary):
            h.stopped.set()
            await self._stop_tasks(h)
        for name in (PRIMARY, SECONDARY):
            with contextlib.suppress(Exception):
                await self.runners[name].stop_all()
            for t in self.runners[name].collapsing.values():
                t.cancel()
        root = self.runners[SECONDARY].root
        kill_qemus([*root.glob("*/*/qemu.pid"), *root.glob("*/qemu.pid")])
        for h in (self.primary, self.secondary):
            with contextlib.suppress(Exception):
                if h.lease_id:
                    await h.store.revoke(h.lease_id)  # its leased keys go now, not in lease_ttl
            with contextlib.suppress(Exception):
                await h.store.close()
