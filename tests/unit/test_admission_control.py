"""Admission control (policy/admission_control.py) through the service on the simulator's
in-memory etcd: each policy's figures, its refusals in numbers, and the property that no
admitted user action leaves the cluster below its policy."""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from vigil import service
from vigil.model import DatastoreSpec, DiskSpec, HostInfo, SpecError, VMSpec
from vigil.policy.admission_control import AdmissionSetting, admission_setting, capacity
from vigil.policy.plan import classify_all
from vigil.service import Conflict, Invalid
from vigil.service.admission import cluster_capacity, cluster_what_if, set_admission, set_retries
from vigil.service.view import cluster_view
from vigil.sim.store import MemoryStore
from vigil.store import keys as K


async def mk(hosts: dict[str, int] | None = None, cpus: int = 2) -> MemoryStore:
    s = MemoryStore(now=lambda: 0.0)
    await s.put(K.DATASTORES + "ds1", asdict(DatastoreSpec(name="ds1", path="/srv/ds1")))
    for h, mem in (hosts or {"h1": 2048, "h2": 2048, "h3": 2048}).items():
        await s.put(K.HOSTS + h, asdict(HostInfo(name=h, address="10.0.0.1", memory_mb=mem, cpus=cpus,
                                                 datastores=("ds1",))))
        await s.put(K.ALIVE + h, {"since": 0})
    return s


def spec(name: str, mem: int = 512, vcpus: int = 1, power: str = "on") -> VMSpec:
    return VMSpec(name=name, memory_mb=mem, vcpus=vcpus, power=power,
                  disks=(DiskSpec(name="disk0", datastore="ds1", path=f"{name}/disk0.qcow2"),))


async def on(s: MemoryStore, name: str, host: str, mem: int = 512, vcpus: int = 1) -> None:
    await service.create_vm(s, spec(name, mem, vcpus), host)
    await s.put(K.OWN + name, host)
    await s.put(K.VMSTATUS + name, {"host": host, "state": "running"})


async def refused(s: MemoryStore, call) -> str:  # type: ignore[no-untyped-def]
    before, rev = await s.snapshot(), s.revision
    with pytest.raises(Conflict) as e:
        await call()
    assert await s.snapshot() == before and s.revision == rev
    return str(e.value)


async def test_off_by_default_admits_as_before() -> None:
    s = await mk({"h1": 1024})
    for i in range(6):
        await service.create_vm(s, spec(f"v{i}", 512))
    c = await cluster_capacity(s)
    assert c["policy"] == "off" and c["ok"]


async def test_slots_refuse_a_power_on_with_the_numbers() -> None:
    s = await mk()  # 3 x 2048 MiB: slot 512 MiB -> 4 slots each, 12 in all, 4 reserved
    await set_admission(s, {"policy": "slots", "failures": 1})
    for i in range(8):
        await on(s, f"v{i}", f"h{i % 3 + 1}")
    c = await cluster_capacity(s)
    assert (c["slots"], c["slots_reserved"], c["slots_used"], c["slots_free"], c["tolerates"]) == (12, 4, 8, 0, 1)
    await service.create_vm(s, spec("off", power="off"))
    msg = await refused(s, lambda: service.set_power(s, "off", "on"))
    assert msg == ("admission control (slots, 1 host failure to tolerate) refuses powering on off (512 MiB, 1 vCPU): "
                   "it needs 1 slot of 512 MiB / 1 vCPU; 0 of 12 are free (4 reserved for 1 host failure, 8 used, "
                   "on 3 running hosts)")
    # a bigger VM makes the slot bigger: 1024 MiB slots -> 6 in all, 2 reserved
    await refused(s, lambda: service.create_vm(s, spec("big", 1024)))


async def test_slot_override_counts_a_big_vm_as_several_slots() -> None:
    s = await mk()
    await set_admission(s, {"policy": "slots", "failures": 1, "slot_memory_mb": 256, "slot_vcpus": 1})
    await on(s, "big", "h1", 1024)
    c = await cluster_capacity(s)
    assert (c["slot_memory_mb"], c["slots"], c["slots_used"], c["slots_reserved"]) == (256, 24, 4, 8)


async def test_percentage_derived_from_failures_and_given() -> None:
    s = await mk()
    await set_admission(s, {"policy": "percentage", "failures": 1})
    c = await cluster_capacity(s)
    assert (c["memory_reserved_mb"], c["vcpus_reserved"]) == (2048, 16)  # a third, rounded up: 34% of 6144
    for i in range(8):
        await on(s, f"v{i}", f"h{i % 3 + 1}")
    msg = await refused(s, lambda: service.create_vm(s, spec("x", 512)))
    assert msg.endswith("refuses creating x powered on (512 MiB, 1 vCPU): VMs would reserve 4608 of 6144 MiB and 9 "
                        "of 48 vCPUs on 3 running hosts; at most 4096 MiB and 32 vCPUs may be (33% of memory and "
                        "33% of CPU kept for failover)")
    await set_admission(s, {"policy": "percentage", "memory_percent": 20, "cpu_percent": 20})
    await service.create_vm(s, spec("x", 512))


async def test_ft_enable_and_maintenance_are_checked_too() -> None:
    s = await mk()
    await set_admission(s, {"policy": "slots", "failures": 1})
    for i in range(7):
        await on(s, f"v{i}", f"h{i % 3 + 1}")
    # 7 of 8 usable slots: an FT secondary takes the last one, a second is refused
    assert await service.ft_enable(s, "v0")
    msg = await refused(s, lambda: service.ft_enable(s, "v1"))
    assert msg.startswith("admission control (slots, 1 host failure to tolerate) refuses turning FT on for v1")
    msg = await refused(s, lambda: service.set_maintenance(s, "h3", True))
    assert msg.endswith("refuses putting h3 in maintenance mode: without h3, 8 slots would remain on 2 running hosts, "
                        "4 reserved for 1 host failure and 8 used: 4 short")


async def test_failover_hosts_are_kept_empty_and_their_room_does_not_count() -> None:
    s = await mk()
    with pytest.raises(Invalid):
        await set_admission(s, {"policy": "failover-hosts", "hosts": ["h9"]})
    with pytest.raises(Invalid):
        await set_admission(s, {"policy": "failover-hosts", "hosts": ["h1", "h2", "h3"]})
    await set_admission(s, {"policy": "failover-hosts", "hosts": ["h3"]})
    assert "failover host" in await refused(s, lambda: service.create_vm(s, spec("a"), "h3"))
    for i in range(8):
        await on(s, f"v{i}", f"h{i % 2 + 1}")
    c = await cluster_capacity(s)
    assert (c["memory_mb"], c["memory_used_mb"], c["tolerates"], c["failover"]) == (4096, 4096, 1, ["h3"])
    msg = await refused(s, lambda: service.create_vm(s, spec("x", 128)))
    assert msg.endswith("VMs would reserve 4224 MiB and 9 vCPUs; the running hosts other than the failover hosts "
                        "(h1, h2) have 4096 MiB and 32 vCPUs")


async def test_bad_settings_are_invalid() -> None:
    s = await mk()
    for bad in ({"policy": "nope"}, {"policy": "slots", "failures": -1}, {"policy": "percentage", "cpu_percent": 150},
                {"policy": "slots", "hosts": ["h1"]}, {"policy": "slots", "slot_memory_mb": 0}, {"colour": 1}):
        with pytest.raises(Invalid):
            await set_admission(s, bad)
    for bad in ({"delays": []}, {"delays": [0]}, {"max_attempts": -1}, {"delays": "5"}):
        with pytest.raises(Invalid):
            await set_retries(s, bad)
    assert admission_setting({"admission": {"policy": "nope"}}) == AdmissionSetting()


async def test_what_if_lists_the_restarts_in_order_and_what_stays_down() -> None:
    s = await mk({"h1": 1024, "h2": 1024, "h3": 512})
    await on(s, "a", "h1", 512)
    await on(s, "b", "h1", 256)
    await s.put(K.VMS + "b", spec("b", 256).to_json() | {"restart_priority": "high"})
    await on(s, "c", "h2", 512)
    await on(s, "d", "h2", 512)
    await s.put(K.VMS + "d", spec("d", 512).to_json() | {"restart_priority": "disabled"})
    w = await cluster_what_if(s, ["h1", "h2"])
    assert w["failed"] == ["h1", "h2"] and w["affected"] == ["a", "b", "c", "d"]
    assert [(r["order"], r["vm"], r["host"]) for r in w["restarts"]] == [(1, "b", "h3")]
    left = {x["vm"]: x["reason"] for x in w["not_restarted"]}
    assert left["d"].endswith("restart priority is disabled")
    assert "no host can run it" in left["a"] and "256 MiB free, needs 512" in left["a"]
    with pytest.raises(Invalid):
        await cluster_what_if(s, ["h9"])


# -- the property ----------------------------------------------------------------------------
ACTIONS = st.lists(st.tuples(st.sampled_from(["create", "start", "stop", "ft", "enter", "exit"]),
                             st.integers(0, 7), st.sampled_from([256, 512, 768, 1024]), st.integers(1, 4)),
                   max_size=14)
POLICY = st.one_of(
    st.builds(lambda f, m, c: {"policy": "slots", "failures": f, "slot_memory_mb": m, "slot_vcpus": c},
              st.integers(0, 2), st.sampled_from([None, 256, 512]), st.sampled_from([None, 1, 2])),
    st.builds(lambda f, m, c: {"policy": "percentage", "failures": f, "memory_percent": m, "cpu_percent": c},
              st.integers(0, 2), st.sampled_from([None, 10, 40]), st.sampled_from([None, 25])),
    st.builds(lambda h: {"policy": "failover-hosts", "hosts": h}, st.sampled_from([["h1"], ["h3"], ["h2", "h4"]])))


def holds(snap: dict) -> bool:
    view = cluster_view(snap, time.time())
    setting = admission_setting(view.settings)
    return capacity(view, setting, {h: s for h, (s, _) in classify_all(view).items()}).ok


@hsettings(max_examples=120, deadline=None)
@given(st.lists(st.sampled_from([1024, 2048, 4096]), min_size=2, max_size=4), st.integers(1, 4), POLICY, ACTIONS)
def test_no_admitted_user_action_takes_the_cluster_below_its_policy(mems, cpus, policy, actions) -> None:
    async def go() -> None:
        s = await mk({f"h{i + 1}": m for i, m in enumerate(mems)}, cpus)
        try:
            await set_admission(s, policy)
        except Invalid:
            return  # a failover host this cluster does not have
        for kind, i, mem, vcpus in actions:
            name, host = f"v{i}", f"h{i % len(mems) + 1}"
            was = holds(await s.snapshot())
            try:
                if kind == "create":
                    await service.create_vm(s, spec(name, mem, vcpus))
                elif kind in ("start", "stop"):
                    await service.set_power(s, name, "on" if kind == "start" else "off")
                elif kind == "ft":
                    await service.ft_enable(s, name)
                else:
                    await service.set_maintenance(s, host, kind == "enter")
            except SpecError:
                continue
            if was and kind in ("create", "start", "ft", "enter"):
                assert holds(await s.snapshot()), (policy, kind, name)

    asyncio.run(go())


async def test_a_resize_of_a_powered_on_vm_is_checked_and_a_powered_off_one_is_not() -> None:
    s = await mk()
    await set_admission(s, {"policy": "percentage", "memory_percent": 50})
    await on(s, "a", "h1", 2048)
    await service.create_vm(s, spec("b", 512, power="off"))
    assert await service.resize_vm(s, "b", memory_mb=4096)  # off: reserves nothing
    msg = await refused(s, lambda: service.resize_vm(s, "a", memory_mb=3584))
    assert "refuses resizing a to 3584 MiB, 1 vCPU (from 2048 MiB, 1 vCPU): VMs would reserve 3584 of 6144" in msg
    assert await service.resize_vm(s, "a", memory_mb=3072)
    assert not await service.resize_vm(s, "a", memory_mb=3072)
    with pytest.raises(Invalid):
        await service.resize_vm(s, "a", vcpus=0)
