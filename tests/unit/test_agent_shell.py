"""The agent's shell carries out the host policy's actions: the claim is the guarded
transaction, a start follows only a won claim, a copy assigned elsewhere is powered off
and released. A recording store, environment and hypervisor stand in for the world."""
from __future__ import annotations

import asyncio
from typing import Any

from vigil.agent.agent import Agent
from vigil.agent.context import LocalVM
from vigil.config import AgentConfig
from vigil.model import VMSpec
from vigil.policy.crashes import LOCAL_RESTARTS
from vigil.store import keys as K
from vigil.store.etcd import Entry
from vigil.store.state import ClusterState, cluster_state


class Store:
    def __init__(self, claims_win: bool = True) -> None:
        self.log: list[tuple] = []
        self.claims_win = claims_win

    def equals(self, k: str, v: Any) -> tuple:
        return ("equals", k, v)

    def absent(self, k: str) -> tuple:
        return ("absent", k)

    def unchanged(self, k: str, rev: int) -> tuple:
        return ("unchanged", k, rev)

    def put_op(self, k: str, v: Any, lease: int = 0) -> tuple:
        return ("put", k, v, lease)

    def delete_op(self, k: str) -> tuple:
        return ("delete", k)

    async def txn(self, compare: list, success: list) -> bool:
        won = self.claims_win or not any(c[0] == "absent" for c in compare)
        self.log.append(("txn", tuple(compare), tuple(success), won))
        return won

    async def put(self, k: str, v: Any, lease: int = 0) -> None:
        self.log.append(("event", v["kind"], v["message"]) if k.startswith(K.EVENTS) else ("put", k, v.get("state")))


class Clock:
    def time(self) -> float:
        return 1000.0

    def monotonic(self) -> float:
        return 50.0

    async def sleep(self, s: float) -> None:
        await asyncio.sleep(0)


class Env:
    clock = Clock()
    datastores = None
    network = None


class Hypervisor:
    def __init__(self) -> None:
        self.log: list[tuple] = []

    def alive(self, pid: int) -> bool:
        return pid != 13

    async def power_off(self, vm: str, pid: int) -> None:
        self.log.append(("power_off", vm, pid))

    async def shutdown(self, vm: str, pid: int, timeout_s: float) -> bool:
        self.log.append(("shutdown", vm, pid))
        return True

    async def start(self, spec: VMSpec, accel: str, stale: dict[str, str] | None = None, ft: bool = False) -> int:
        self.log.append(("start", spec.name))
        return 4242

    def find_running(self) -> dict[str, int]:
        return {}

    async def probe_accel(self) -> str:
        return "tcg"


def agent(tmp_path, store: Store, hyp: Hypervisor) -> Agent:
    cfg = AgentConfig(host="h1", address="10.0.0.1", etcd_endpoints=("x:1",), run_dir=str(tmp_path), datastores={})
    a = Agent(cfg, env=Env(), store=store, hypervisor=hyp)  # type: ignore[arg-type]
    a.lease.id, a.lease.ok_until = 7, 100.0
    a.guests.adopt = lambda name, pid, spec, gen, held=False: a.vms.setdefault(  # no guest or NIC watchers
        name, LocalVM(name=name, pid=pid, gen=gen, spec=spec))
    return a


def snap(vm: str, host: str | None, owner: str | None = None, reason: str = "place") -> ClusterState:
    """The cluster state of a snapshot holding one VM, its assignment and maybe its owner."""
    out = {K.VMS + vm: Entry(K.VMS + vm, VMSpec(name=vm).to_json(), 3, 1, 0),
           K.ASSIGN + vm: Entry(K.ASSIGN + vm, {"host": host, "gen": 2, "reason": reason}, 5, 1, 0)}
    if owner is not None:
        out[K.OWN + vm] = Entry(K.OWN + vm, owner, 6, 1, 7)
    return cluster_state(out)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_an_assignment_here_is_claimed_in_a_guarded_transaction_then_started(tmp_path):
    store, hyp = Store(), Hypervisor()
    a = agent(tmp_path, store, hyp)
    await a.reconcile(snap("v", "h1"))
    await settle()
    claim = store.log[0]
    assert claim[0] == "txn" and claim[1] == (("absent", K.OWN + "v"), ("unchanged", K.ASSIGN + "v", 5))
    assert claim[2] == (("put", K.OWN + "v", "h1", 7),)
    assert hyp.log == [("start", "v")] and a.vms["v"].pid == 4242
    assert ("event", "vm-started", "v started on h1 (pid 4242)") in store.log


async def test_a_lost_claim_starts_nothing(tmp_path):
    store, hyp = Store(claims_win=False), Hypervisor()
    a = agent(tmp_path, store, hyp)
    await a.reconcile(snap("v", "h1"))
    await settle()
    assert hyp.log == [] and "v" not in a.vms


async def test_a_copy_migrated_away_is_powered_off_and_released(tmp_path):
    store, hyp = Store(), Hypervisor()
    a = agent(tmp_path, store, hyp)
    a.vms["v"] = LocalVM(name="v", pid=99, gen=1, spec=VMSpec(name="v"))
    await a.reconcile(snap("v", "h2", owner="h2", reason="migrate"))
    assert hyp.log == [("power_off", "v", 99)] and "v" not in a.vms
    assert ("event", "vm-powered-off", "v powered off on h1: migrated to h2") in store.log
    assert store.log[-1][0] == "txn" and store.log[-1][2] == (("delete", K.OWN + "v"),)


async def test_a_vm_crashing_past_its_local_restarts_is_reported_failed_and_released(tmp_path):
    store, hyp = Store(), Hypervisor()
    a = agent(tmp_path, store, hyp)
    for n in range(1, LOCAL_RESTARTS + 1):
        a.vms["v"] = LocalVM(name="v", pid=13, gen=2, spec=VMSpec(name="v"))  # pid 13 has exited
        await a._check_processes()
        assert a.guests.failed["v"].count == n
    assert ("put", K.VMSTATUS + "v", "failed") in store.log
    assert store.log[-1][2] == (("delete", K.OWN + "v"),)
    await a.reconcile(snap("v", "h1", owner="h1"))  # this generation is not restarted here again
    await settle()
    assert hyp.log == []
