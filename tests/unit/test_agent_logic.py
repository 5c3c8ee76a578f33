"""Agent-side pure pieces: isolation rule, datastore heartbeat files and tracker, specs."""
from __future__ import annotations

import pytest

from vigil.env import dsheartbeat as dshb
from vigil.model import HbRecord
from vigil.policy.heartbeats import CLOCK_SKEW_S, HbTracker
from vigil.policy.isolation import is_isolated, isolation_action
from vigil.config import AgentConfig
from vigil.model import DiskSpec, SpecError, VMSpec


def test_isolated_only_when_lease_lost_and_nothing_answers():
    assert is_isolated(True, False, False)
    assert not is_isolated(True, True, False)   # a peer answers: partitioned
    assert not is_isolated(True, False, True)   # the isolation address answers
    assert not is_isolated(False, False, False)  # the lease is fine


def test_isolation_action_follows_the_vm_spec():
    for resp in ("leave-powered-on", "power-off", "shutdown"):
        assert isolation_action(VMSpec(name="a", isolation_response=resp)) == resp
    assert isolation_action(None) == "leave-powered-on"  # adopted, spec unknown yet: touch nothing


def test_heartbeat_files_roundtrip_and_reachability(tmp_path):
    ds = tmp_path / "ds1"
    ds.mkdir()
    assert not dshb.reachable("ds1", str(ds))  # an empty mountpoint is not the datastore
    (ds / dshb.MARKER).write_text("ds1\n")
    assert dshb.reachable("ds1", str(ds)) and not dshb.reachable("ds2", str(ds))
    rec = HbRecord(host="h1", counter=5, boot="b", isolated=True, vms=("a", "b"))
    assert dshb.write(str(ds), rec)
    assert dshb.read_all(str(ds)) == {"h1": rec}


def test_tracker_measures_silence_on_its_own_clock():
    t = HbTracker(started=100.0)
    assert t.age("h1", 101.0) == 1.0  # never seen: silent since we started watching, at most
    rec = lambda c: HbRecord(host="h1", counter=c, boot="b", isolated=False, vms=())  # noqa: E731
    t.observe(102.0, [rec(1000)])
    t.observe(103.0, [rec(1000)])
    assert t.age("h1", 104.0) == 2.0
    t.observe(105.0, [rec(900), rec(1500)])  # two datastores: the freshest counts
    assert t.age("h1", 105.5) == 0.5
    # the writer's clock can only make a silence look longer, never shorter
    assert t.age("h1", 105.5, wall=1.5 + 10 + CLOCK_SKEW_S) == pytest.approx(10.0)
    assert t.age("h1", 105.5, wall=1.6) == 0.5


def test_a_new_controller_keeps_the_watchers_memory_only_if_it_has_no_gap():
    rec = lambda c: HbRecord(host="h1", counter=c, boot="b", isolated=False, vms=())  # noqa: E731
    watcher = HbTracker(started=100.0)
    watcher.observe(101.0, [rec(1000)])
    watcher.observe(103.5, [rec(1000)])  # the old leader's host went silent at 101
    carried = watcher.handed_over(104.0, max_gap=1.0)
    assert carried.age("h1", 104.0) == 3.0  # no need to watch for the grace time again
    carried.observe(104.2, [rec(1000)])
    assert watcher.age("h1", 104.0) == 3.0  # a copy: the watcher's memory is its own
    # a watcher that stopped looking (it led, then lost the lead) knows nothing recent:
    # its memory would make a host that heartbeats meanwhile look silent
    fresh = watcher.handed_over(110.0, max_gap=1.0)
    assert fresh.age("h1", 110.0) == 0.0 and fresh.started == 110.0
    assert HbTracker(started=100.0).handed_over(100.5, max_gap=1.0).started == 100.5  # never observed


@pytest.mark.parametrize("bad,msg", [
    (dict(memory_mb=0), "memory_mb"),
    (dict(vcpus=0), "vcpus"),
    (dict(restart_priority="urgent"), "restart_priority"),
    (dict(isolation_response="reboot"), "isolation_response"),
    (dict(disks=(DiskSpec("d", "ds1", "/abs.qcow2"),)), "relative path"),
    (dict(disks=(DiskSpec("d", "ds1", "a/../../x"),)), "relative path"),
    (dict(disks=(DiskSpec("d", "ds1", "a"), DiskSpec("d", "ds1", "b"))), "two disks"),
    (dict(name="Not OK"), "invalid VM name"),
])
def test_bad_specs_are_refused(bad, msg):
    with pytest.raises(SpecError, match=msg):
        VMSpec(**({"name": "a"} | bad)).validate()


def test_spec_json_roundtrip_and_unknown_fields():
    spec = VMSpec(name="a", disks=(DiskSpec("d0", "ds1", "a/d0.qcow2"),))
    assert VMSpec.from_json(spec.to_json()) == spec
    with pytest.raises(SpecError, match="unknown VM field"):
        VMSpec.from_json({"name": "a", "colour": "red"})


def test_agent_config_errors_are_clear(tmp_path):
    with pytest.raises(SpecError, match="cannot read agent config"):
        AgentConfig.load(tmp_path / "missing.json")
    (tmp_path / "c.json").write_text('{"host": "h1"}')
    with pytest.raises(SpecError, match="agent config"):
        AgentConfig.load(tmp_path / "c.json")


def test_the_agent_provides_the_host_context_its_helpers_see(tmp_path):
    """FT, disk and task helpers get only vigil.agent.context's surface; the Agent has all of it."""
    import inspect

    from vigil.agent.agent import Agent
    from vigil.agent.context import HostContext, MigrationHost
    from vigil.env.real import RealEnv

    cfg = AgentConfig(host="h1", address="10.0.0.1", etcd_endpoints=("10.0.0.1:2379",),
                      run_dir=str(tmp_path), datastores={})
    agent = Agent(cfg, env=RealEnv(), store=object())  # type: ignore[arg-type]
    for proto in (HostContext, MigrationHost):
        wanted = set(proto.__annotations__) | {n for n, v in vars(proto).items() if not n.startswith("_")
                                                and (inspect.isfunction(v) or isinstance(v, property))}
        missing = sorted(n for n in wanted if not hasattr(agent, n))
        assert not missing, f"{proto.__name__}: the Agent lacks {missing}"
