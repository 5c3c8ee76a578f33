"""The source's paused copy of a migrated VM outlives the migration's driver: the
reconcile (vigil.agent.reconcile.carry_out_in_order) waits while a task of the VM is
driven here, so the driver's last query-migrate reads the final figures instead of
finding its QMP connection gone ("QMPClient is disconnecting") and failing the migration."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from vigil.agent.reconcile import carry_out_in_order
from vigil.model import Assignment, VMSpec
from vigil.policy import host as HP


class Host:
    me = "h1"

    def __init__(self, driving: set[str]) -> None:
        self.vms = {"m1": SimpleNamespace(stopping=False)}
        self.driving = driving
        self.done: list[HP.HostAction] = []

    def _host_facts(self) -> HP.HostFacts:
        return HP.HostFacts(me="h1", lease_ok=True, isolated=False)

    def drives_task(self, name: str) -> bool:
        return name in self.driving

    async def _carry_out(self, act: HP.HostAction, facts: object, assign: object) -> None:
        self.done.append(act)


def reconcile_once(driving: set[str]) -> HP.HostAction:
    host = Host(driving)
    taken = HP.VMFacts(spec=VMSpec(name="m1"), assignment=Assignment(host="h2", gen=2, reason="migrate"), owner="h2")
    asyncio.run(carry_out_in_order(host, [], {"m1": taken}, {}, {}))
    (act,) = host.done
    return act


def test_the_migrated_copy_waits_while_its_driver_runs():
    assert isinstance(reconcile_once({"m1"}), HP.Wait)


def test_then_it_is_powered_off_and_released():
    assert reconcile_once(set()) == HP.PowerOff("m1", "migrated to h2", report=False, release=True)
