"""Guest panics (QMP GUEST_PANICKED) as VM monitoring failures: the pure decision, and the
monitor the agents share (against the in-memory etcd)."""
from __future__ import annotations

from vigil.agent.vm_monitor import VmMonitor, Watched
from vigil.model import MonitoringSpec, VMSpec
from vigil.policy import vm_monitoring as VM
from vigil.sim.store import MemoryStore
from vigil.store import keys as K

HIGH = VM.PRESETS["high"]


def facts(**kw) -> VM.GuestFacts:
    base = dict(uptime_s=1000.0, hb_seen=True, hb_age_s=0.5, io=(), now=1000.0, panicked=True)
    return VM.GuestFacts(**(base | kw))


def test_a_panic_is_reset_at_once_even_under_the_minimum_uptime() -> None:
    v = VM.decide(facts(uptime_s=5.0, hb_age_s=0.0), HIGH)
    assert isinstance(v, VM.Reset) and v.cause == "panic" and "panicked" in v.reason


def test_a_panic_counts_against_the_same_limit() -> None:
    v = VM.decide(facts(resets=(100.0, 200.0, 900.0), now=1000.0), HIGH)  # 3 in the last hour
    assert isinstance(v, VM.LimitReached) and "panicked" in v.reason
    assert isinstance(VM.decide(facts(resets=(100.0, 200.0, 300.0), now=5000.0), HIGH), VM.Reset)


def test_a_panic_unwatched_ends_the_qemu_and_no_panic_changes_nothing() -> None:
    assert isinstance(VM.decide(facts(), VM.DEFAULT), VM.EndQemu)
    assert isinstance(VM.decide(facts(panicked=False), VM.DEFAULT), VM.Healthy)
    assert isinstance(VM.decide(facts(panicked=False), HIGH), VM.Healthy)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def time(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.t += s


class Hv:
    def __init__(self) -> None:
        self.resets: list[str] = []
        self.offs: list[str] = []

    async def io_counters(self, vm, pid, spec):
        return None  # a panicked guest is stopped: no I/O figures

    async def reset(self, vm, pid):
        self.resets.append(vm)

    async def power_off(self, vm, pid):
        self.offs.append(vm)


class Host:
    me = "h1"

    def __init__(self, store) -> None:
        self.store = store

    def lease_ok(self) -> bool:
        return True


async def rig(monitoring: MonitoringSpec | None):
    store = MemoryStore(now=lambda: 0.0)
    await store.put(K.OWN + "web", "h1")
    clock, hv = Clock(), Hv()
    spec = VMSpec(name="web", monitoring=monitoring)
    mon = VmMonitor(Host(store), clock, hv, lambda now: [Watched("web", 42, spec, 990.0, clock.t)], lambda: [spec])
    return store, clock, hv, mon


def kinds(store) -> list[str]:
    return [e.value["kind"] for k, e in store._kv.items() if k.startswith(K.EVENTS)]


async def test_the_monitor_resets_a_panicked_guest_counted_then_holds_the_limit() -> None:
    own = MonitoringSpec(preset="custom", interval_s=30.0, min_uptime_s=60.0, max_resets=1, window_s=1000.0)
    store, clock, hv, mon = await rig(own)
    await mon.round()
    assert hv.resets == []
    mon.note_panic("web", 41)  # another QEMU's: not this one
    await mon.round()
    assert hv.resets == [] and mon.panics == {}
    mon.note_panic("web", 42)
    await mon.round()
    assert hv.resets == ["web"] and mon.panics == {}
    rec = (await store.get(K.MONITORING + "web")).value
    assert rec["last"]["cause"] == "panic" and len(rec["resets"]) == 1
    clock.t += 5
    mon.note_panic("web", 42)
    await mon.round()
    await mon.round()
    assert hv.resets == ["web"] and hv.offs == []
    assert kinds(store) == ["vm-monitoring-reset", "vm-monitoring-limit"]  # said once; it stays stopped


async def test_monitoring_off_a_panicked_guests_qemu_is_ended() -> None:
    store, clock, hv, mon = await rig(None)
    await mon.round()
    assert hv.offs == [] and mon.tracks == {}
    mon.note_panic("web", 42)
    await mon.round()
    assert hv.offs == ["web"] and hv.resets == [] and kinds(store) == ["guest-panicked"]
    await mon.round()
    assert hv.offs == ["web"]
