"""VM and application monitoring: the pure decision, its settings, the carrier the agents
share (against the in-memory etcd), the service layer, the I/O counters' parsing."""
from __future__ import annotations

from dataclasses import replace

import pytest

from vigil.agent.vm_monitor import VmMonitor, Watched
from vigil.hypervisor.guest import Heartbeat
from vigil.hypervisor.iostats import block_bytes, nic_bytes, proc_net_dev
from vigil.model import MonitoringSpec, SpecError, VMSpec
from vigil.policy import vm_monitoring as VM
from vigil.service import Invalid
from vigil.service import monitoring as SM
from vigil.sim.store import MemoryStore
from vigil.store import keys as K

HIGH = VM.PRESETS["high"]


def facts(**kw) -> VM.GuestFacts:
    base = dict(uptime_s=1000.0, hb_seen=True, hb_age_s=40.0, io=((950.0, 5), (1000.0, 5)), now=1000.0)
    return VM.GuestFacts(**(base | kw))


# -- presets and settings ------------------------------------------------------------------
def test_presets_are_vspheres() -> None:
    assert [(p.interval_s, p.max_resets, p.window_s, p.min_uptime_s) for p in VM.PRESETS.values()] == [
        (30.0, 3, 3600.0, 120.0), (60.0, 3, 86400.0, 240.0), (120.0, 3, 7 * 86400.0, 480.0)]
    assert not VM.cluster_settings(None).enabled  # off until an operator turns it on


def test_custom_values_override_the_preset_and_values_alone_mean_custom() -> None:
    s = VM.parse({"preset": "high", "interval_s": 45})
    assert (s.preset, s.interval_s, s.max_resets, s.window_s) == ("high", 45, 3, 3600.0)
    assert VM.parse({"interval_s": 10}).preset == "custom"
    assert VM.normalized({"preset": "low"})["min_uptime_s"] == 480.0


@pytest.mark.parametrize("bad", [{"preset": "fast"}, {"interval_s": 0}, {"max_resets": -1}, {"window_s": "x"},
                                 {"colour": "red"}, {"application": "yes"}])
def test_bad_settings_are_refused(bad: dict) -> None:
    with pytest.raises(SpecError):
        VM.parse(bad)
    assert not VM.cluster_settings(bad).enabled  # a bad stored object counts as off


def test_a_vms_own_settings_win_over_the_clusters() -> None:
    assert VM.effective(HIGH, None) == HIGH
    assert not VM.effective(HIGH, MonitoringSpec(preset="off")).enabled
    on = VM.effective(VM.DEFAULT, MonitoringSpec(interval_s=10.0))
    assert (on.preset, on.enabled, on.interval_s, on.max_resets) == ("custom", True, 10.0, 3)
    low = VM.effective(HIGH, MonitoringSpec(preset="low", max_resets=1))
    assert (low.interval_s, low.max_resets) == (120.0, 1)
    assert not VM.effective(replace(HIGH, application=False), MonitoringSpec(preset="medium")).application


def test_the_vm_spec_carries_its_own_settings_validated_and_only_when_set() -> None:
    spec = VMSpec(name="web", monitoring=MonitoringSpec(preset="high", max_resets=5))
    spec.validate()
    assert VMSpec.from_json(spec.to_json()) == spec
    assert "monitoring" not in VMSpec(name="web").to_json()
    with pytest.raises(SpecError, match="monitoring"):
        VMSpec(name="web", monitoring=MonitoringSpec(interval_s=-1)).validate()


# -- the decision --------------------------------------------------------------------------
def test_silent_and_idle_is_reset() -> None:
    v = VM.decide(facts(), HIGH)
    assert isinstance(v, VM.Reset) and v.cause == "guest" and "reset 1 of 3 in 1h" in v.reason


def test_io_within_the_interval_keeps_it_from_a_reset() -> None:
    v = VM.decide(facts(io=((950.0, 5), (990.0, 9), (1000.0, 9))), HIGH)
    assert isinstance(v, VM.Healthy) and "I/O" in v.reason


def test_io_history_that_does_not_reach_back_the_interval_proves_nothing() -> None:
    assert isinstance(VM.decide(facts(io=((980.0, 5), (1000.0, 5))), HIGH), VM.Healthy)
    assert isinstance(VM.decide(facts(io=()), HIGH), VM.Healthy)


def test_not_before_the_minimum_uptime_nor_the_interval() -> None:
    assert isinstance(VM.decide(facts(uptime_s=119.0), HIGH), VM.Healthy)
    assert isinstance(VM.decide(facts(hb_age_s=29.0), HIGH), VM.Healthy)
    assert isinstance(VM.decide(facts(hb_seen=False), HIGH), VM.Healthy)  # never heartbeated: not watched
    assert isinstance(VM.decide(facts(), VM.DEFAULT), VM.Healthy)


def test_the_limit_counts_resets_in_the_window_only() -> None:
    v = VM.decide(facts(resets=(990.0, 995.0, 999.0)), HIGH)
    assert isinstance(v, VM.LimitReached) and "3 resets in 1h already" in v.reason
    assert isinstance(VM.decide(facts(resets=(100.0, 995.0, 999.0), now=4000.0,
                                      io=((3950.0, 5), (4000.0, 5))), HIGH), VM.Reset)
    unlimited = replace(HIGH, max_resets=0)
    assert isinstance(VM.decide(facts(resets=(999.0,) * 10), unlimited), VM.Reset)
    ever = replace(HIGH, window_s=0.0, max_resets=2)
    assert isinstance(VM.decide(facts(resets=(1.0, 2.0)), ever), VM.LimitReached)


def test_a_stopped_application_is_reset_even_with_io_and_heartbeat() -> None:
    busy = dict(hb_age_s=0.5, io=((950.0, 5), (1000.0, 500)))
    v = VM.decide(facts(app_age_s=31.0, **busy), HIGH)
    assert isinstance(v, VM.Reset) and v.cause == "application"
    assert isinstance(VM.decide(facts(app_age_s=31.0, **busy), replace(HIGH, application=False)), VM.Healthy)
    assert isinstance(VM.decide(facts(app_age_s=None, **busy), HIGH), VM.Healthy)
    # the whole channel silent: judged as a silent guest, whose I/O saves it
    assert isinstance(VM.decide(facts(app_age_s=40.0, hb_age_s=40.0, io=busy["io"]), HIGH), VM.Healthy)
    assert VM.decide(facts(app_age_s=40.0, hb_age_s=40.0), HIGH).cause == "guest"  # type: ignore[union-attr]


# -- the carrier, against the in-memory etcd -----------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def time(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.t += s


class Hv:
    def __init__(self) -> None:
        self.io, self.resets = 7, []

    async def io_counters(self, vm, pid, spec):
        return self.io

    async def reset(self, vm, pid):
        self.resets.append(vm)


class Host:
    me = "h1"

    def __init__(self, store) -> None:
        self.store = store

    def lease_ok(self) -> bool:
        return True


async def rig(own: str = "h1"):
    store = MemoryStore(now=lambda: 0.0)
    await store.put(K.OWN + "web", own)
    clock, hv = Clock(), Hv()
    spec = VMSpec(name="web", monitoring=MonitoringSpec(preset="custom", interval_s=10.0, min_uptime_s=0.0,
                                                        max_resets=1, window_s=1000.0))
    w = {"last_hb": 995.0}
    mon = VmMonitor(Host(store), clock, hv, lambda now: [Watched("web", 42, spec, 900.0, w["last_hb"])],
                    lambda: [spec])
    return store, clock, hv, mon


async def run_for(mon: VmMonitor, clock: Clock, seconds: float) -> None:
    end = clock.t + seconds
    while clock.t < end:
        await clock.sleep(1.0)
        await mon.round()


async def test_the_monitor_counts_in_etcd_then_resets_then_refuses_past_the_limit() -> None:
    store, clock, hv, mon = await rig()
    await run_for(mon, clock, 15)  # heartbeat silent since 995, I/O sampled from 997: reset at 1007
    assert hv.resets == ["web"]
    rec = (await store.get(K.MONITORING + "web")).value
    assert len(rec["resets"]) == 1 and rec["last"]["cause"] == "guest" and rec["last"]["host"] == "h1"
    kinds = [e.value["kind"] for k, e in store._kv.items() if k.startswith(K.EVENTS)]
    assert kinds == ["vm-monitoring-reset"]
    await run_for(mon, clock, 30)
    assert hv.resets == ["web"]
    kinds = [e.value["kind"] for k, e in store._kv.items() if k.startswith(K.EVENTS)]
    assert kinds == ["vm-monitoring-reset", "vm-monitoring-limit"]  # said once


async def test_a_new_monitor_finds_the_count_in_etcd() -> None:
    store, clock, hv, mon = await rig()
    await store.put(K.MONITORING + "web", {"resets": [995.0]})
    await run_for(mon, clock, 30)
    assert hv.resets == []


async def test_no_reset_of_a_vm_this_host_does_not_own() -> None:
    store, clock, hv, mon = await rig(own="h2")
    await run_for(mon, clock, 30)
    assert hv.resets == [] and await store.get(K.MONITORING + "web") is None


async def test_io_keeps_the_monitor_from_a_reset() -> None:
    store, clock, hv, mon = await rig()
    for _ in range(30):
        hv.io += 1
        await run_for(mon, clock, 1)
    assert hv.resets == []


# -- service -------------------------------------------------------------------------------
async def test_service_sets_the_cluster_and_a_vms_own_settings() -> None:
    store = MemoryStore(now=lambda: 0.0)
    assert (await SM.get_monitoring(store))["enabled"] is False
    out = await SM.set_monitoring(store, {"preset": "medium", "max_resets": 5})
    assert (out["interval_s"], out["max_resets"], out["revision"] > 0) == (60.0, 5, True)
    with pytest.raises(Invalid):
        await SM.set_monitoring(store, {"preset": "fast"})
    await store.put(K.VMS + "web", VMSpec(name="web").to_json())
    m = await SM.set_vm_monitoring(store, "web", MonitoringSpec(preset="high"))
    assert m["settings"]["interval_s"] == 30.0 and m["own"]["preset"] == "high" and m["resets"] == []
    await store.put(K.MONITORING + "web", {"resets": [10.0, 20.0], "last": {"time": 20.0, "reason": "x"}})
    m = await SM.vm_monitoring(store, "web", now=100.0)
    assert (m["resets_in_window"], m["last_reset"]["reason"]) == (2, "x")
    m = await SM.set_vm_monitoring(store, "web", None)
    assert m["own"] is None and m["settings"]["preset"] == "medium"
    with pytest.raises(Invalid):
        await SM.set_vm_monitoring(store, "web", MonitoringSpec(max_resets=-2))


# -- the guest's channel and the counters --------------------------------------------------
def test_heartbeat_line_carries_the_application_counter() -> None:
    line = "hb 12 3456 -1 6d73c3ce-23d8-47af-84e0-51e9bc3031e9"
    assert Heartbeat.parse(line, 1.0).app == -1
    assert Heartbeat.parse(line + " app 7", 1.0).app == 7
    assert Heartbeat.parse(line + " app x", 1.0) is None


def test_io_counters_parse(tmp_path) -> None:
    assert block_bytes([{"stats": {"rd_bytes": 5, "wr_bytes": 7}}, {"stats": {"rd_bytes": 1}}]) == 13
    text = ("Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n"
            "    lo: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n vt1n0: 10 1 0 0 0 0 0 0 20 1 0 0 0 0 0 0\n")
    assert proc_net_dev(text) == {"lo": 300, "vt1n0": 30}
    (tmp_path / "dev").write_text(text)
    stats = tmp_path / "sys" / "vt2n0" / "statistics"
    stats.mkdir(parents=True)
    (stats / "rx_bytes").write_text("4\n")
    (stats / "tx_bytes").write_text("6\n")
    assert nic_bytes(["vt1n0", "vt2n0", "gone"], tmp_path / "dev", tmp_path / "sys") == 40


# -- properties ----------------------------------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["high", "medium", "low"]), st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1,
                                                           max_size=400), st.integers(1, 50))
def test_never_more_resets_than_the_window_allows_and_never_with_io(preset: str, steps: list, step_s: int) -> None:
    """Step by step, the guest heartbeats or not and does I/O or not; every reset decided
    is taken. No window ever holds more than max_resets, and no reset follows I/O within
    the interval or a heartbeat within it."""
    s = VM.PRESETS[preset]
    now, booted, last_hb, io_total = 0.0, 0.0, 0.0, 0
    io: list[tuple[float, int]] = []
    resets: list[float] = []
    last_io = 0.0
    for hb, busy in steps:
        now += step_s
        if hb:
            last_hb = now
        if busy:
            io_total, last_io = io_total + 1, now
        io.append((now, io_total))
        v = VM.decide(VM.GuestFacts(uptime_s=now - booted, hb_seen=True, hb_age_s=now - max(last_hb, booted),
                                    io=tuple(io), resets=tuple(resets), now=now), s)
        if isinstance(v, VM.Reset):
            assert now - max(last_hb, booted) >= s.interval_s and now - last_io >= s.interval_s
            assert now - booted >= s.min_uptime_s
            resets.append(now)
            booted, io = now, []
            assert VM.resets_in_window(resets, now, s.window_s) <= s.max_resets
