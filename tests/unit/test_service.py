"""The service layer against the simulator's in-memory etcd: what each operation writes,
and that a refused request leaves etcd exactly as it was (same keys, values, revisions)."""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Awaitable, Callable

import pytest

from vigil import service
from vigil.model import DatastoreSpec, DiskSpec, HostGroup, HostInfo, Rule, SpecError, VMSpec
from vigil.service import Conflict, Invalid, NotFound
from vigil.sim.store import MemoryStore
from vigil.store import keys as K


async def mk(hosts: dict[str, int] | None = None) -> MemoryStore:
    """Two running hosts of 1024 MiB reaching ds1, as their agents would have written them."""
    s = MemoryStore(now=lambda: 0.0)
    await s.put(K.DATASTORES + "ds1", asdict(DatastoreSpec(name="ds1", path="/srv/ds1")))
    for h, mem in (hosts or {"h1": 1024, "h2": 1024}).items():
        await s.put(K.HOSTS + h, asdict(HostInfo(name=h, address="10.0.0.1", memory_mb=mem, cpus=2,
                                                 datastores=("ds1",), networks=("lan",))))
        await s.put(K.ALIVE + h, {"since": 0})
    return s


def spec(name: str, mem: int = 128, power: str = "on") -> VMSpec:
    return VMSpec(name=name, memory_mb=mem, power=power,
                  disks=(DiskSpec(name="disk0", datastore="ds1", path=f"{name}/disk0.qcow2"),))


async def running(s: MemoryStore, name: str, host: str, mem: int = 128) -> None:
    """A VM the controller placed on ``host`` and whose agent runs it."""
    await service.create_vm(s, spec(name, mem), host)
    await s.put(K.OWN + name, host)
    await s.put(K.VMSTATUS + name, {"host": host, "state": "running"})


async def refused(s: MemoryStore, kind: type[SpecError], call: Callable[[], Awaitable[Any]]) -> str:
    """Run ``call``; it must raise ``kind`` and leave every key and the revision as they were."""
    before, rev = await s.snapshot(), s.revision
    with pytest.raises(kind) as e:
        await call()
    assert isinstance(e.value, SpecError)  # the CLI shows any SpecError as one line
    assert await s.snapshot() == before and s.revision == rev
    return str(e.value)


def events(snap: dict, kind: str) -> list:
    return [e for k, e in snap.items() if k.startswith(K.EVENTS) and e.value.get("kind") == kind]


async def test_create_vm_writes_the_spec_and_an_event_and_a_duplicate_is_a_conflict() -> None:
    s = await mk()
    await service.create_vm(s, spec("a"), "h1")
    snap = await s.snapshot()
    assert VMSpec.from_json(snap[K.VMS + "a"].value) == spec("a")
    assert snap[K.ASSIGN + "a"].value["host"] == "h1"
    assert len(events(snap, "vm-created")) == 1
    msg = await refused(s, Conflict, lambda: service.create_vm(s, spec("a")))
    assert msg == "a VM named 'a' already exists"


async def test_create_vm_refuses_bad_input_as_invalid() -> None:
    s = await mk()
    await refused(s, Invalid, lambda: service.create_vm(s, spec("a", mem=1)))
    bad_ds = VMSpec(name="b", disks=(DiskSpec(name="disk0", datastore="nope", path="b/d.qcow2"),))
    assert await refused(s, Invalid, lambda: service.create_vm(s, bad_ds)) == \
        "disk disk0: unknown datastore 'nope' (known: ds1)"
    assert await refused(s, Invalid, lambda: service.create_vm(s, spec("c"), "h9")) == \
        "unknown host 'h9' (known: h1, h2)"
    await s.delete(K.ALIVE + "h2")
    assert await refused(s, Conflict, lambda: service.create_vm(s, spec("c"), "h2")) == "host h2 is not running"


async def test_get_vm_of_an_unknown_name_is_not_found() -> None:
    s = await mk()
    assert await refused(s, NotFound, lambda: service.get_vm(s, "x")) == "no VM named 'x'"


async def test_power_off_and_on_change_the_spec_once() -> None:
    s = await mk()
    await service.create_vm(s, spec("a"))
    assert await service.set_power(s, "a", "off") is True
    assert (await service.get_vm(s, "a"))[0].power == "off"
    rev = s.revision
    assert await service.set_power(s, "a", "off") is False and s.revision == rev
    assert await service.set_power(s, "a", "on") is True
    assert (await service.get_vm(s, "a"))[0].power == "on"
    assert len(events(await s.snapshot(), "vm-power-off")) == 1
    await refused(s, NotFound, lambda: service.set_power(s, "x", "on"))


async def test_delete_needs_the_vm_off_and_stopped_then_removes_its_keys() -> None:
    s = await mk()
    await running(s, "a", "h1")
    await refused(s, Conflict, lambda: service.delete_vm(s, "a"))
    await service.set_power(s, "a", "off")
    assert "still running somewhere" in await refused(s, Conflict, lambda: service.delete_vm(s, "a"))
    await s.delete(K.OWN + "a")
    await service.delete_vm(s, "a")
    snap = await s.snapshot()
    assert not any(k in snap for k in (K.VMS + "a", K.ASSIGN + "a", K.VMSTATUS + "a"))
    await refused(s, NotFound, lambda: service.delete_vm(s, "a"))


async def test_maintenance_enter_and_exit() -> None:
    s = await mk()
    assert await service.set_maintenance(s, "h1", True) is True
    assert K.MAINTENANCE + "h1" in await s.snapshot()
    assert await service.set_maintenance(s, "h1", True) is False
    assert await service.set_maintenance(s, "h1", False) is True
    assert K.MAINTENANCE + "h1" not in await s.snapshot()
    assert await service.set_maintenance(s, "h1", False) is False
    assert await refused(s, NotFound, lambda: service.set_maintenance(s, "h9", True)) == \
        "unknown host 'h9' (known: h1, h2)"


async def test_rules_bad_ones_are_invalid_and_change_nothing() -> None:
    s = await mk()
    await service.create_vm(s, spec("a"))
    await service.create_vm(s, spec("b"))
    await refused(s, Invalid, lambda: service.create_rule(s, Rule("r", "nope", ("a", "b"))))
    await refused(s, Invalid, lambda: service.create_rule(s, Rule("r", "anti-affinity", ("a", "a"))))
    assert await refused(s, Invalid, lambda: service.create_rule(s, Rule("r", "anti-affinity", ("a", "z")))) == \
        "rule r: no VM named z"
    await service.create_rule(s, Rule("r", "anti-affinity", ("a", "b")))
    assert [r.name for r in service.rules(await s.snapshot())] == ["r"]
    await refused(s, Conflict, lambda: service.create_rule(s, Rule("r", "affinity", ("a", "b"))))
    await service.delete_rule(s, "r")
    await refused(s, NotFound, lambda: service.delete_rule(s, "r"))


async def test_migrate_refuses_an_unknown_vm_and_a_destination_without_room() -> None:
    s = await mk()
    await refused(s, NotFound, lambda: service.migrate_vm(s, "x", "h2"))
    await running(s, "a", "h1", mem=512)
    await running(s, "big", "h2", mem=768)
    assert await refused(s, Conflict, lambda: service.migrate_vm(s, "a", "h2")) == \
        "no room for a on h2: 256 MiB free, needs 512"
    assert await refused(s, Conflict, lambda: service.migrate_vm(s, "a", "h1")) == "VM a already runs on h1"
    assert (await refused(s, Invalid, lambda: service.migrate_vm(s, "a", "h9"))).startswith("unknown host 'h9'")


async def test_migrate_counts_an_ft_standby_on_its_secondary_and_queues_when_there_is_room() -> None:
    s = await mk({"h1": 1024, "h2": 1024, "h3": 1024})
    await running(s, "a", "h1", mem=512)
    await running(s, "f", "h3", mem=768)
    await s.put(K.FT + "f", {"secondary": "h2", "epoch": 3})  # f's standby lives on h2
    assert await refused(s, Conflict, lambda: service.migrate_vm(s, "a", "h2")) == \
        "no room for a on h2: 256 MiB free, needs 512"
    await s.put(K.FT + "f", {"secondary": "h3", "epoch": 4})  # its own host: counts nowhere else
    t = await service.migrate_vm(s, "a", "h2")
    assert (t.kind, t.src, t.dst, t.state) == ("migrate", "h1", "h2", "queued")
    assert (await service.get_task(s, "a")) == t
    # asked again: its own task is not counted against it; the task under way refuses it
    assert "is busy: migrate task" in await refused(s, Conflict, lambda: service.migrate_vm(s, "a", "h2"))
    assert (await service.cancel_task(s, "a")).id == t.id
    await refused(s, NotFound, lambda: service.cancel_task(s, "zz"))


async def test_ft_enable_and_disable() -> None:
    s = await mk()
    await service.create_vm(s, spec("a"))
    assert await service.ft_enable(s, "a") is True
    snap = await s.snapshot()
    assert snap[K.FT + "a"].value == {"secondary": None, "epoch": 1}
    assert service.ft_state(snap, "a")["state"] == "needs-secondary"
    assert await service.ft_enable(s, "a") is False
    assert "Fault Tolerance on" in await refused(s, Conflict, lambda: service.migrate_vm(s, "a", "h2"))
    await s.put(K.FTSTAT + "a", {"epoch": 1, "secondary": None})
    assert await service.ft_disable(s, "a") is True
    snap = await s.snapshot()
    assert K.FT + "a" not in snap and K.FTSTAT + "a" not in snap
    assert service.ft_state(snap, "a") == {"state": "disabled"}
    assert await service.ft_disable(s, "a") is False
    await refused(s, NotFound, lambda: service.ft_enable(s, "x"))
    await s.put(K.VMS + "huge", spec("huge", mem=1 << 19).to_json())
    assert (await refused(s, Invalid, lambda: service.ft_enable(s, "huge"))).startswith("FT supports VMs of up to")


async def test_ft_needs_two_hosts_that_reach_the_vms_datastores() -> None:
    s = await mk({"h1": 1024})
    await service.create_vm(s, spec("a"))
    assert await refused(s, Conflict, lambda: service.ft_enable(s, "a")) == "FT needs two hosts that reach ds1; only h1 do"


async def test_migrate_counts_a_migration_in_flight_on_its_destination() -> None:
    s = await mk({"h1": 1024, "h2": 1024, "h3": 1024})
    await running(s, "a", "h1", mem=512)
    await running(s, "c", "h3", mem=768)
    await service.migrate_vm(s, "c", "h2")  # on its way to h2: its room there is taken
    assert await refused(s, Conflict, lambda: service.migrate_vm(s, "a", "h2")) == \
        "no room for a on h2: 256 MiB free, needs 512"


async def test_evacuating_an_unknown_datastore_is_not_found() -> None:
    s = await mk()
    await refused(s, NotFound, lambda: service.evacuation_step(s, "nope"))
    await refused(s, Invalid, lambda: service.evacuation_step(s, "ds1", "nope"))
    await refused(s, Invalid, lambda: service.evacuation_step(s, "ds1", "ds1"))


async def test_dependency_rules_refuse_cycles_and_lower_priorities() -> None:
    s = await mk()
    for n, p in (("db", "high"), ("app", "medium"), ("web", "medium")):
        await service.create_vm(s, replace(spec(n), restart_priority=p))
    await service.create_rule(s, Rule("app-db", "depends-on", ("app",), on=("db",)))
    await service.create_rule(s, Rule("web-app", "depends-on", ("web",), on=("app",)))
    assert "dependency cycle: app -> web -> app" in await refused(
        s, Invalid, lambda: service.create_rule(s, Rule("loop", "depends-on", ("app",), on=("web",))))
    assert "db (high) cannot depend on web of lower restart priority (medium)" in await refused(
        s, Invalid, lambda: service.create_rule(s, Rule("up", "depends-on", ("db",), on=("web",))))
    assert await refused(s, Invalid, lambda: service.create_rule(
        s, Rule("x", "depends-on", ("app",), on=("ghost",)))) == "rule x: no VM named ghost"
    assert {r.name: r.on for r in service.rules(await s.snapshot())} == {"app-db": ("db",), "web-app": ("app",)}


async def test_host_groups_and_vm_host_rules_with_their_conflicts() -> None:
    s = await mk({"h1": 1024, "h2": 1024})
    await running(s, "a", "h1")
    await service.create_host_group(s, HostGroup("one", ("h1",)))
    await service.create_host_group(s, HostGroup("two", ("h2", "h9")))
    await refused(s, Conflict, lambda: service.create_host_group(s, HostGroup("one", ("h2",))))
    await refused(s, Invalid, lambda: service.create_host_group(s, HostGroup("bad", ())))
    assert await refused(s, Invalid, lambda: service.create_rule(
        s, Rule("r", "must-run-on", ("a",), group="none"))) == "rule r: no host group named none"
    assert await service.create_rule(s, Rule("on-one", "must-run-on", ("a",), group="one")) == []
    # a second must rule that leaves "a" no host at all is refused
    assert "leave it no host" in await refused(
        s, Invalid, lambda: service.create_rule(s, Rule("not-one", "must-not-run-on", ("a",), group="one")))
    # a should rule the must rule never lets be kept is created, and reported
    warn = await service.create_rule(s, Rule("pref-two", "should-run-on", ("a",), group="two"))
    assert warn and "should rule pref-two can never be kept" in warn[0]
    out = service.conflicts(await s.snapshot())
    assert "host group two: no host named h9 (yet)" in out and any("pref-two" in x for x in out)
    await refused(s, Conflict, lambda: service.delete_host_group(s, "one"))
    await service.delete_rule(s, "on-one")
    await service.create_rule(s, Rule("off-one", "must-not-run-on", ("a",), group="one"))
    assert "a runs on h1, against must-not-run-on rule off-one (group one: h1)" in service.conflicts(await s.snapshot())
    # a user's migration keeps the must rules too
    await service.delete_rule(s, "off-one")
    await service.delete_rule(s, "pref-two")
    await service.create_rule(s, Rule("stay", "must-run-on", ("a",), group="one"))
    assert "must-run-on rule stay" in await refused(s, Conflict, lambda: service.migrate_vm(s, "a", "h2"))
    await service.delete_rule(s, "stay")
    await service.delete_host_group(s, "one")
    assert [g.name for g in service.host_groups(await s.snapshot())] == ["two"]
