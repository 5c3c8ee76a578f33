"""Fault Tolerance roles of a simulated host, at the protocol level of vigil.agent.ft.

Mirrored from vigil.agent.ft (FtRunner.sync, the primary's write_stat/invalidate, the
secondary's _publish, the agent's _promote): the keys, values and guards the controller
reads. *Primary*: while it owns the VM and ``ft/`` names a secondary, it writes
``ftstat/`` (``valid_from`` = the first checkpoint of its epoch) guarded by its ownership.
*Secondary*: holds a paused standby QEMU and, every ``CHECKPOINT_S`` while the primary's
host runs and reaches it, acknowledges one more checkpoint in ``ftack/`` (bound to its
lease, guarded by ``ft/`` still naming it in that epoch). A failover assignment makes the
secondary claim the VM and run its standby once no other copy holds the disk (the real
agent's disk settle waits out a dead primary's image locks). Not simulated: checkpoint
contents, held output, overlays, ``ftrx/``, the unprotected transition.
"""
from __future__ import annotations


from vigil.model import VMSpec
from vigil.sim.world import StartFailed
from vigil.store import keys as K
from vigil.store.etcd import StoreError
from vigil.sim.reads import EtcdWord
from vigil.sim.context import LocalVM, AgentContext


CHECKPOINT_S = 1.0
SETTLE_S = 0.2  # how often a promotion looks again at the disk locks


class SimFt:
    def __init__(self, agent: "AgentContext") -> None:
        self.a = agent
        self.enabled: set[str] = set()
        self.standby: dict[str, int] = {}  # vm -> the epoch its standby here belongs to
        self.acked: dict[str, int] = {}  # vm -> newest checkpoint acknowledged (this epoch)
        self.stat: dict[str, tuple[str, int]] = {}  # vm -> (secondary, epoch) ftstat was written for
        self.next_ckpt = 0.0

    async def sync(self, word: "EtcdWord") -> None:
        a, me = self.a, self.a.me
        ft, own, assign, specs = word.ft, word.owners, word.assign_values, word.specs
        self.enabled = set(ft)
        for name, vm in a.vms.items():  # primary: valid_from for this (secondary, epoch)
            f = ft.get(name)
            if f and own.get(name) == me and not vm.stopping and f.get("secondary") not in (None, me):
                key = (f["secondary"], int(f["epoch"]))
                if self.stat.get(name) != key:
                    ok = await a.store.txn([a.store.equals(K.OWN + name, me)], [a.store.put_op(K.FTSTAT + name, {
                        "host": me, "secondary": key[0], "epoch": key[1], "state": "protected",
                        "valid_from": [key[1], 1], "time": a.clock.time()})])
                    if ok:
                        self.stat[name] = key
                        await a.event("ft-starting", f"{name}: FT checkpoints from {me} to {key[0]} (epoch {key[1]})",
                                      vm=name)
        want: dict[str, int] = {}
        for name, f in ft.items():
            asg = assign.get(name) or {}
            if f.get("secondary") == me and name in specs and specs[name].power == "on" \
                    and asg.get("host") not in (None, "", me) and name not in a.vms:
                want[name] = int(f["epoch"])
        for name, epoch in list(self.standby.items()):
            if want.get(name) != epoch and not (assign.get(name) or {}).get("host") == me:
                self._drop(name)
        for name, epoch in want.items():
            if self.standby.get(name) != epoch:
                self._drop(name)
                try:
                    a.w.start_qemu(me, specs[name], incoming=True)
                except StartFailed:
                    continue
                self.standby[name], self.acked[name] = epoch, 0
        if a.clock.monotonic() >= self.next_ckpt:
            self.next_ckpt = a.clock.monotonic() + CHECKPOINT_S
            for name, epoch in self.standby.items():
                await self._checkpoint(name, epoch, (assign.get(name) or {}).get("host", ""))

    async def _checkpoint(self, vm: str, epoch: int, primary: str) -> None:
        """One more checkpoint arrives when the primary runs the VM and reaches us."""
        a, w = self.a, self.a.w
        p = w.hosts.get(primary)
        if p is None or p.hung or vm not in p.qemus or not w.answers(primary, a.cfg.address):
            return
        seq = self.acked.get(vm, 0) + 1
        st = a.store
        try:
            ok = await st.txn([st.equals(K.FT + vm, {"secondary": a.me, "epoch": epoch})],
                              [st.put_op(K.FTACK + vm, {"host": a.me, "epoch": epoch, "seq": seq,
                                                        "time": a.clock.time()}, lease=a.lease_id)])
        except StoreError:
            return
        if ok:
            self.acked[vm] = seq

    def take(self, vm: str) -> int | None:
        """A failover: the standby's checkpoint, if this host holds one (it stays put)."""
        return self.acked.get(vm) if vm in self.standby else None

    async def promote(self, spec: VMSpec, gen: int, seq: int) -> None:
        a, w = self.a, self.a.w
        name = spec.name
        a.starting.add(name)
        try:
            while any(q.vm == name and q.state == "running" for o in w.hosts.values()
                      if o.powered and o.name != a.me for q in o.qemus.values()):
                await a.clock.sleep(SETTLE_S)
            q = a.h.qemus.get(name)
            if q is None:
                return
            q.state = "running"
            w._check(name)
            self.standby.pop(name, None)
        finally:
            a.starting.discard(name)

        a.vms[name] = LocalVM(name, spec, gen)
        await a.event("ft-failover", f"{name}: live on {a.me} from checkpoint {seq}, without a restart", vm=name)
        await a._status(name, "running")

    def _drop(self, vm: str) -> None:
        self.standby.pop(vm, None)
        self.acked.pop(vm, None)
        q = self.a.h.qemus.get(vm)
        if q is not None and q.state == "incoming" and vm not in self.a.migrations.incoming:
            self.a.w.stop_qemu(self.a.me, vm)
