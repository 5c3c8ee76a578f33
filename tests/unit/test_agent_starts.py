"""The VMs assigned to one host start side by side: each start claims its ownership key in
a task of its own, so that no QEMU waits for the claims of the VMs before it, and the
"starting" status and event are written while QEMU starts."""
from __future__ import annotations

import asyncio

from vigil.model import VMSpec
from vigil.store import keys as K
from vigil.store.etcd import Entry
from vigil.store.state import cluster_state

from test_agent_shell import Hypervisor, Store, agent, settle


class SlowStore(Store):
    """Claims (and only they) wait until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.waiting = 0

    async def txn(self, compare: list, success: list) -> bool:
        if any(c[0] == "absent" for c in compare):
            self.waiting += 1
            await self.go.wait()
        return await super().txn(compare, success)


def two_vms():
    out = {}
    for vm in ("a", "b"):
        out[K.VMS + vm] = Entry(K.VMS + vm, VMSpec(name=vm).to_json(), 3, 1, 0)
        out[K.ASSIGN + vm] = Entry(K.ASSIGN + vm, {"host": "h1", "gen": 2, "reason": "restart"}, 5, 1, 0)
    return cluster_state(out)


async def test_two_vms_of_one_host_claim_at_once_and_reconcile_does_not_wait(tmp_path):
    store, hyp = SlowStore(), Hypervisor()
    a = agent(tmp_path, store, hyp)
    await asyncio.wait_for(a.reconcile(two_vms()), 30.0)  # returns with both claims still in flight (a hang guard)
    await settle()
    assert store.waiting == 2 and hyp.log == [] and a.guests.starting == {"a", "b"}
    await a.reconcile(two_vms())  # a second look while they start: no second claim, no second start
    await settle()
    assert store.waiting == 2
    store.go.set()
    await settle()
    assert sorted(hyp.log) == [("start", "a"), ("start", "b")] and set(a.vms) == {"a", "b"}
    assert a.guests.starting == set()
    puts = [e for e in store.log if e[0] == "put" and e[1] == K.VMSTATUS + "a"]
    assert [p[2] for p in puts] == ["starting", "running"]


def test_a_vm_deleted_and_created_again_under_its_name_starts_from_nothing():
    """A host remembers a failed start by VM name and generation; a VM created again under
    the name counts its generations from 1 again, so that memory must go with the VM."""
    from vigil.agent.reconcile import forget_deleted

    failed = {"web": ("gen 2 failed",), "db": ("gen 1 failed",), "up": ("gen 1",)}
    published = {"web": ("stopped",), "up": ("running",)}
    forget_deleted({"db": object()}, {"up": object()}, failed, published)
    assert failed == {"db": ("gen 1 failed",), "up": ("gen 1",)}  # db still exists, up still runs here
    assert published == {"up": ("running",)}
