"""`vigil vm repair-disk` of a powered-off VM: a repair-disk task that one host carries out.

The pure choices (vigil.policy.repair, the task steps), the service's guarded write (a
refused request leaves etcd as it was), the power-on guard, and the agent's copy against
the in-memory etcd and real (small) files."""
from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable

import pytest

from vigil import service
from vigil.agent.task_repair import repair_disks
from vigil.model import DatastoreSpec, DiskSpec, HostInfo, SpecError, Task, VMSpec
from vigil.policy import repair as RP
from vigil.policy import tasks as TP
from vigil.policy.replicas import mark_stale, stale_map
from vigil.service import Conflict, Invalid, NotFound
from vigil.sim.clock import VirtualClock
from vigil.sim.store import MemoryStore
from vigil.store import keys as K


def rspec(name: str = "v", power: str = "off", disks: int = 1) -> VMSpec:
    return VMSpec(name=name, memory_mb=128, power=power,
                  disks=tuple(DiskSpec(name=f"disk{i}", datastore="ds1", replica="ds2", path=f"{name}/disk{i}.qcow2")
                              for i in range(disks)))


# -- vigil.policy.repair --------------------------------------------------------------------
def test_offline_copies_names_good_and_stale_copies_of_replicated_disks_only() -> None:
    spec = VMSpec(name="v", disks=(DiskSpec(name="disk0", datastore="ds1", replica="ds2", path="v/0.qcow2"),
                                   DiskSpec(name="disk1", datastore="ds1", path="v/1.qcow2"),
                                   DiskSpec(name="disk2", datastore="ds1", replica="ds2", path="v/2.qcow2")))
    stale = {"disk0": "ds1", "disk1": "ds1", "disk2": "ds2"}
    assert RP.offline_copies(spec, stale) == [("disk0", "ds2", "ds1"), ("disk2", "ds1", "ds2")]
    assert RP.offline_copies(spec, stale, ["disk2"]) == [("disk2", "ds1", "ds2")]
    assert RP.offline_copies(spec, {}) == []


def test_repair_host_is_the_first_live_host_reaching_every_datastore() -> None:
    copies = [("disk0", "ds2", "ds1")]
    assert RP.repair_host(copies, {"h2": ["ds1", "ds2"], "h1": ["ds1", "ds2", "ds3"]})[0] == "h1"
    assert RP.repair_host(copies, {"h1": ["ds1"], "h2": ["ds2", "ds1"]})[0] == "h2"
    host, why = RP.repair_host(copies, {"h1": ["ds1"], "h2": ["ds2"]})
    assert host is None and why == "no live host reaches all of ds1, ds2"
    assert RP.repair_host(copies, {}) == (None, "no host is alive to copy the disks")


def test_repair_refusal_before_each_disk() -> None:
    copies = [("disk0", "ds2", "ds1")]
    both = {"ds1": True, "ds2": True}
    assert RP.repair_refusal("off", None, copies, both, "h1") is None
    assert RP.repair_refusal("on", None, copies, both, "h1") == "the VM was powered on"
    assert RP.repair_refusal("off", "h2", copies, both, "h1") == "the VM is owned by h2"
    assert RP.repair_refusal("off", None, copies, {"ds2": True}, "h1") == "h1 does not reach datastore ds1"


# -- the task's steps (vigil.policy.tasks) ---------------------------------------------------
def task(state: str = "queued", tid: str = "t1", vm: str = "v", disk: str = "disk0", **kw: Any) -> Task:
    return Task(id=tid, kind="repair-disk", vm=vm, src="h1", disk=disk, state=state, **kw)


def test_repair_tasks_are_admitted_within_their_own_limit() -> None:
    running = [task("running", f"r{i}", f"v{i}") for i in range(TP.MAX_DISK_REPAIRS_PER_HOST)]
    t = task()
    assert TP.source_step(t, [t], "h1", 0.0, False, False)[0] == "admit"
    step, why = TP.source_step(t, [t, *running], "h1", 0.0, False, False)
    assert step == "none" and why == "queued: 2 of 2 repair-disk tasks run on h1"
    moves = [Task(id=f"m{i}", kind="move-disk", vm=f"m{i}", src="h1", state="running") for i in range(3)]
    assert TP.source_step(t, [t, *moves], "h1", 0.0, False, False)[0] == "admit"


def test_a_repair_task_is_cancelled_or_signalled_and_orphaned_after_a_restart() -> None:
    t = task(cancel=True)
    assert TP.source_step(t, [t], "h1", 0.0, False, False)[0] == "cancel"
    r = task("running", cancel=True)
    assert TP.source_step(r, [r], "h1", 0.0, True, False)[0] == "signal-cancel"
    r = task("running")
    assert TP.source_step(r, [r], "h1", 0.0, True, False)[0] == "none"
    # the VM never runs on the repairing host: a running repair nobody drives is orphaned
    assert TP.source_step(r, [r], "h1", 0.0, False, False)[0] == "orphaned"


def test_task_summary_of_a_repair() -> None:
    assert service.task_summary(task(disk="disk0,disk1")) == "stale copies of disk0, disk1 copied on h1"


# -- the service ----------------------------------------------------------------------------
async def mk(reach: dict[str, tuple[str, ...]] | None = None) -> MemoryStore:
    s = MemoryStore(now=lambda: 0.0)
    for ds in ("ds1", "ds2"):
        await s.put(K.DATASTORES + ds, asdict(DatastoreSpec(name=ds, path=f"/srv/{ds}")))
    for h, dss in (reach or {"h1": ("ds1",), "h2": ("ds1", "ds2")}).items():
        await s.put(K.HOSTS + h, asdict(HostInfo(name=h, address="10.0.0.1", memory_mb=1024, cpus=2,
                                                 datastores=dss, networks=("lan",))))
        await s.put(K.ALIVE + h, {"since": 0})
    return s


async def stale_vm(s: MemoryStore, name: str = "v", power: str = "off", disks: int = 1) -> None:
    await service.create_vm(s, rspec(name, power, disks))
    st: dict[str, Any] | None = None
    for i in range(disks):
        st = mark_stale(st, f"disk{i}", "ds2", 0.0, "lost")
    await s.put(K.DISKSTATE + name, st)


async def refused(s: MemoryStore, kind: type[SpecError], call: Callable[[], Awaitable[Any]]) -> str:
    before, rev = await s.snapshot(), s.revision
    with pytest.raises(kind) as e:
        await call()
    assert await s.snapshot() == before and s.revision == rev
    return str(e.value)


async def test_repair_of_a_powered_off_vm_queues_a_task_on_a_host_reaching_both_datastores() -> None:
    s = await mk()
    await stale_vm(s, disks=2)
    msg, t = await service.repair_disk(s, "v")
    assert t is not None and (t.kind, t.src, t.disk, t.state) == ("repair-disk", "h2", "disk0,disk1", "queued")
    assert msg == "v: h2 copies the good copies over the stale ones (h2 reaches ds1, ds2)"
    snap = await s.snapshot()
    assert Task.from_json(snap[K.TASKS + "v"].value) == t
    assert [e for k, e in snap.items() if k.startswith(K.EVENTS) and e.value.get("kind") == "task-repair-disk"]
    # one under way: a second request is refused and changes nothing
    assert "is busy: repair-disk task" in await refused(s, Conflict, lambda: service.repair_disk(s, "v"))


async def test_repair_refusals_leave_etcd_unchanged() -> None:
    s = await mk({"h1": ("ds1",), "h2": ("ds2",)})
    await refused(s, NotFound, lambda: service.repair_disk(s, "x"))
    await service.create_vm(s, VMSpec(name="plain", power="off",
                                      disks=(DiskSpec(name="disk0", datastore="ds1", path="p/d.qcow2"),)))
    await refused(s, Invalid, lambda: service.repair_disk(s, "plain"))
    await stale_vm(s)
    assert await refused(s, Conflict, lambda: service.repair_disk(s, "v")) == \
        "cannot repair v's disks: no live host reaches all of ds1, ds2"
    await stale_vm(s, "on", power="on")
    assert "being started" in await refused(s, Conflict, lambda: service.repair_disk(s, "on"))


async def test_repair_of_a_running_vm_asks_its_agent_and_queues_nothing() -> None:
    s = await mk()
    await stale_vm(s, power="on")
    await s.put(K.OWN + "v", "h2")
    msg, t = await service.repair_disk(s, "v")
    assert t is None and msg == "h2 resyncs disk0 of v now"
    assert K.TASKS + "v" not in await s.snapshot()


async def test_a_repair_task_whose_host_died_is_replaced() -> None:
    s = await mk({"h1": ("ds1", "ds2"), "h2": ("ds1", "ds2")})
    await stale_vm(s)
    _, t = await service.repair_disk(s, "v")
    assert t is not None and t.src == "h1"
    await s.delete(K.ALIVE + "h1")
    _, t2 = await service.repair_disk(s, "v")
    assert t2 is not None and t2.src == "h2"
    assert Task.from_json((await s.get(K.TASKS + "v")).value).src == "h2"


async def test_no_power_on_while_a_live_host_repairs_the_disks() -> None:
    s = await mk()
    await stale_vm(s)
    await service.repair_disk(s, "v")
    assert "h2 is repairing v's disks" in await refused(s, Conflict, lambda: service.set_power(s, "v", "on"))
    await s.delete(K.ALIVE + "h2")  # the copy died with its host
    assert await service.set_power(s, "v", "on") is True


# -- the agent's copy -----------------------------------------------------------------------
def host(s: MemoryStore, tmp: Path, reach: dict[str, bool] | None = None) -> Any:
    events: list[tuple[str, str]] = []

    async def event(kind: str, message: str, vm: str = "", **data: object) -> None:
        events.append((kind, message))

    return SimpleNamespace(me="h2", store=s, env=SimpleNamespace(clock=VirtualClock()),
                           cfg=SimpleNamespace(datastores={ds: str(tmp / ds) for ds in ("ds1", "ds2")}),
                           ds_ok=reach or {"ds1": True, "ds2": True}, event=event, events=events)


async def run_task(s: MemoryStore, h: Any, t: Task, cancel: asyncio.Event | None = None) -> Task:
    """The runner's part: admit (running), then the driver; returns the task as stored."""
    from vigil.agent.tasks import update_task
    from vigil.env.real import SystemClock

    clock = SystemClock()
    await update_task(s, t.vm, t.id, state="running", clock=clock)
    reports: list[dict[str, Any]] = []
    await repair_disks(h, t, lambda vm, tid, **kw: update_task(s, vm, tid, clock=clock, **kw), reports.append,
                       cancel or asyncio.Event())
    e = await s.get(K.TASKS + t.vm)
    return Task.from_json(e.value)


def images(tmp: Path, name: str = "v", disks: int = 1) -> None:
    for i in range(disks):
        for ds, data in (("ds1", b"good" * 4096), ("ds2", b"old")):
            p = tmp / ds / name / f"disk{i}.qcow2"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)


async def test_the_agent_copies_the_good_copy_and_marks_it_in_sync(tmp_path: Path) -> None:
    s = await mk()
    await stale_vm(s, disks=2)
    images(tmp_path, disks=2)
    _, t = await service.repair_disk(s, "v")
    assert t is not None
    h = host(s, tmp_path)
    done = await run_task(s, h, t)
    assert done.state == "done", done.error
    assert done.progress["offset"] == done.progress["total"] == 2 * 4 * 4096
    for i in range(2):
        assert (tmp_path / "ds2" / "v" / f"disk{i}.qcow2").read_bytes() == b"good" * 4096
    assert stale_map((await s.get(K.DISKSTATE + "v")).value) == {}
    assert [k for k, _ in h.events] == ["disk-resynced", "disk-resynced"]


async def test_the_agent_refuses_a_vm_powered_on_meanwhile_and_leaves_the_copy_stale(tmp_path: Path) -> None:
    s = await mk()
    await stale_vm(s)
    images(tmp_path)
    _, t = await service.repair_disk(s, "v")
    assert t is not None
    spec, e = await service.get_vm(s, "v")
    from dataclasses import replace
    await s.put(K.VMS + "v", replace(spec, power="on").to_json())  # as if the guard had been passed by
    done = await run_task(s, host(s, tmp_path), t)
    assert done.state == "failed" and done.error == "the VM was powered on"
    assert (tmp_path / "ds2" / "v" / "disk0.qcow2").read_bytes() == b"old"
    assert stale_map((await s.get(K.DISKSTATE + "v")).value) == {"disk0": "ds2"}


async def test_the_agent_needs_both_datastores(tmp_path: Path) -> None:
    s = await mk()
    await stale_vm(s)
    images(tmp_path)
    _, t = await service.repair_disk(s, "v")
    assert t is not None
    done = await run_task(s, host(s, tmp_path, {"ds1": True, "ds2": False}), t)
    assert done.state == "failed" and done.error == "h2 does not reach datastore ds2"


async def test_a_cancelled_repair_leaves_the_stale_copy_as_it_was(tmp_path: Path) -> None:
    s = await mk()
    await stale_vm(s)
    images(tmp_path)
    _, t = await service.repair_disk(s, "v")
    assert t is not None
    cancel = asyncio.Event()
    cancel.set()
    h = host(s, tmp_path)
    done = await run_task(s, h, t, cancel)
    assert done.state == "cancelled"
    assert [k for k, _ in h.events] == ["disk-repair-cancelled"]
    assert (tmp_path / "ds2" / "v" / "disk0.qcow2").read_bytes() == b"old"
    assert not (tmp_path / "ds2" / "v" / "disk0.qcow2.resync").exists()
    assert stale_map((await s.get(K.DISKSTATE + "v")).value) == {"disk0": "ds2"}


async def test_the_task_runner_admits_and_drives_a_repair(tmp_path: Path) -> None:
    from vigil.agent.tasks import TaskRunner
    from vigil.store.state import cluster_state

    s = await mk()
    await stale_vm(s)
    images(tmp_path)
    _, t = await service.repair_disk(s, "v")
    assert t is not None
    h = host(s, tmp_path)
    h.vms = {}
    runner = TaskRunner(h)
    state = cluster_state(await s.snapshot())
    await runner._as_source(t, [t], state)
    assert "v" in runner.driving
    await runner.driving["v"]
    done = Task.from_json((await s.get(K.TASKS + "v")).value)
    assert done.state == "done" and stale_map((await s.get(K.DISKSTATE + "v")).value) == {}
    # once driven to its end, a fresh look finds nothing to do
    assert TP.source_step(done, [done], "h2", 0.0, False, False)[0] == "none"
