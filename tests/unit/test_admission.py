"""Migration admission (policy/admission.py) on plain views: it counts load as plan() does."""
from __future__ import annotations

from vigil.model import Assignment, DiskSpec, HostInfo, HostState, Rule, Task, VMSpec, VMStatus
from vigil.policy.admission import migration_admission
from vigil.policy.plan import classify_all, commitments
from vigil.policy.view import ClusterView, FtView, HostView, VMView


def host(name: str, mem: int = 1024, ds: tuple[str, ...] = ("ds1",), alive: bool = True) -> HostView:
    return HostView(name=name, info=HostInfo(name=name, address="10.0.0.1", memory_mb=mem, cpus=2, datastores=ds),
                    alive=alive, hb_age=None)


def vm(name: str, on: str, mem: int = 128, power: str = "on", state: str = "running", ft_on: str | None = None,
       ds: str = "ds1") -> VMView:
    spec = VMSpec(name=name, memory_mb=mem, power=power,
                  disks=(DiskSpec(name="disk0", datastore=ds, path=f"{name}/d.qcow2"),))
    return VMView(spec=spec, assignment=Assignment(host=on, gen=1), assign_rev=5, owner=on,
                  status=VMStatus(host=on, state=state), ft=FtView(secondary=ft_on, epoch=1) if ft_on else None)


def view(vms: list[VMView], tasks: tuple[Task, ...] = (), rules: tuple[Rule, ...] = (),
         hosts: list[HostView] | None = None) -> ClusterView:
    hs = hosts or [host("h1"), host("h2"), host("h3")]
    return ClusterView(now=0.0, hosts={h.name: h for h in hs}, vms={v.spec.name: v for v in vms},
                       tasks=tasks, rules=rules)


def test_room_on_an_empty_destination_says_the_numbers() -> None:
    ok, why = migration_admission(view([vm("b", "h1", 512)]), "b", "h2")
    assert ok and why == "h2: 1024 MiB free, needs 512; 16 vCPUs free, needs 1"


def test_vms_assigned_to_the_destination_take_its_room() -> None:
    ok, why = migration_admission(view([vm("b", "h1", 512), vm("x", "h2", 768)]), "b", "h2")
    assert not ok and why == "no room for b on h2: 256 MiB free, needs 512"


def test_an_ft_standby_takes_room_on_its_secondary() -> None:
    # f runs on h3, its standby on h2: the old count (assignments only) saw h2 empty
    v = view([vm("b", "h1", 512), vm("f", "h3", 768, ft_on="h2")])
    ok, why = migration_admission(v, "b", "h2")
    assert not ok and why == "no room for b on h2: 256 MiB free, needs 512"
    assert migration_admission(v, "b", "h3")[1].startswith("no room for b on h3: 256 MiB free")


def test_a_migration_in_flight_takes_room_on_its_destination() -> None:
    t = Task(id="c-1", kind="migrate", vm="c", src="h3", dst="h2", state="running")
    v = view([vm("b", "h1", 512), vm("c", "h3", 768)], tasks=(t,))
    ok, why = migration_admission(v, "b", "h2")
    assert not ok and why == "no room for b on h2: 256 MiB free, needs 512"
    # until the move is done its source still holds it too, as plan() counts it
    assert not migration_admission(v, "b", "h3")[0]


def test_a_vm_powered_off_by_request_holds_its_memory_until_it_stopped() -> None:
    stopping = view([vm("b", "h1", 512), vm("x", "h2", 768, power="off", state="running")])
    assert not migration_admission(stopping, "b", "h2")[0]
    stopped = view([vm("b", "h1", 512), vm("x", "h2", 768, power="off", state="stopped")])
    assert migration_admission(stopped, "b", "h2")[0]


def test_the_vms_own_task_is_not_counted_twice() -> None:
    t = Task(id="b-1", kind="migrate", vm="b", src="h1", dst="h2", state="queued")
    assert migration_admission(view([vm("b", "h1", 768)], tasks=(t,)), "b", "h2")[0]


def test_anti_affinity_is_judged_on_where_vms_are_going() -> None:
    t = Task(id="c-1", kind="migrate", vm="c", src="h3", dst="h2", state="running")
    v = view([vm("b", "h1"), vm("c", "h3")], tasks=(t,), rules=(Rule("apart", "anti-affinity", ("b", "c")),))
    ok, why = migration_admission(v, "b", "h2")
    assert not ok and why == "moving b to h2 would break anti-affinity rule apart"
    assert migration_admission(v, "b", "h3")[0]


def test_a_shared_nothing_move_needs_the_target_datastore_only() -> None:
    hs = [host("h1"), host("h2", ds=("ds2",))]
    v = view([vm("b", "h1")], hosts=hs)
    assert migration_admission(v, "b", "h2")[1] == "no room for b on h2: does not reach datastore ds1"
    assert migration_admission(v, "b", "h2", datastore="ds2")[0]


def test_admission_sees_exactly_the_load_plan_counts() -> None:
    t = Task(id="c-1", kind="migrate", vm="c", src="h1", dst="h2", state="running")
    v = view([vm("b", "h1", 128), vm("c", "h1", 256), vm("f", "h3", 384, ft_on="h2"),
              vm("x", "h2", 128, power="off", state="running")], tasks=(t,))
    states: dict[str, HostState] = {n: s for n, (s, _) in classify_all(v).items()}
    load, _ = commitments(v, states)
    assert load["h2"].memory_mb == 256 + 384 + 128
    free = 1024 - load["h2"].memory_mb
    assert migration_admission(v, "b", "h2")[1].startswith(f"h2: {free} MiB free")
