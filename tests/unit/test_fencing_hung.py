"""vigil.policy.fencing's early path: a host whose lease is alive but whose datastore
heartbeat is silent past its device's hung_after_s is fenced at once; a confirmed fence
revokes its lease and restarts its VMs; a failed one falls back to the lease and watchdog."""
from __future__ import annotations

from dataclasses import replace

import pytest

from vigil.config.toml_file import ConfigError, parse_toml
from vigil.fencing.device import FenceDevice
from vigil.model import Assignment, HostInfo, HostState, VMSpec
from vigil.policy.fencing import HUNG_AFTER_S, FenceHost, decide, fence_over, hung_after, storm, trusted
from vigil.policy.hoststate import classify_host
from vigil.policy.plan import AssignVM, SetHostState, plan
from vigil.policy.view import ClusterView, FenceStatus, HostView, Timing, VMView

T = Timing(lease_ttl=3, hb_grace=2.5, watchdog=5.0)  # bound: 6.5 s of silence
BMC = {"kind": "redfish", "address": "10.0.1.2", "user": "vigil", "password_file": "/etc/vigil/bmc"}
NOW = 100.0


def host(name: str, *, alive: bool = True, hb: float | None = 0.2, ping: bool | None = None, bmc: dict | None = None,
         fence: FenceStatus | None = None, prev: HostState = HostState.RUNNING, maintenance: bool = False) -> HostView:
    info = HostInfo(name=name, address="10.0.0." + name[-1], memory_mb=4096, cpus=2, datastores=("ds1",),
                    fencing=dict(bmc) if bmc else {})
    return HostView(name=name, info=info, alive=alive, hb_age=hb, lease=7 if alive else 0, ping=ping,
                    fence=fence, prev_state=prev, maintenance=maintenance)


def view(*hosts: HostView) -> ClusterView:
    spec = VMSpec(name="web", memory_mb=256)
    vms = {"web": VMView(spec=spec, assignment=Assignment(host="host2", gen=1), assign_rev=5, owner="host2",
                         status=None)}
    return ClusterView(now=NOW, hosts={h.name: h for h in hosts}, vms=vms, timing=T)


def classified(v: ClusterView) -> dict:
    return {n: classify_host(h, v.timing) for n, h in v.hosts.items()}


def cluster(h2: HostView) -> ClusterView:
    return view(host("host1"), h2, host("host3"))


SILENT = dict(alive=True, hb=1.6, ping=True)  # lease alive, heartbeat silent past 1.5 s, answers ping


def test_lease_alive_and_heartbeat_silent_past_hung_after_is_fenced_at_once():
    v = cluster(host("host2", bmc=BMC, **SILENT))
    assert classified(v)["host2"][0] is HostState.RUNNING  # as the host table has it: lease alive
    fences, states = decide(v, classified(v))
    assert [f.host for f in fences] == ["host2"]
    state, why = states["host2"]
    assert state is HostState.FENCING
    assert "lease alive, datastore heartbeat silent 1.6s (past 1.5s), host answers ping" in why
    acts = plan(v)
    assert any(isinstance(a, FenceHost) for a in acts)
    assert not any(isinstance(a, AssignVM) for a in acts)  # its VM waits for the confirmation


def test_a_heartbeat_that_resumes_before_hung_after_is_no_fence():
    for hb in (0.2, 1.0, HUNG_AFTER_S - 0.01):
        v = cluster(host("host2", bmc=BMC, alive=True, hb=hb, ping=True))
        fences, states = decide(v, classified(v))
        assert fences == [] and states["host2"][0] is HostState.RUNNING
        assert not any(isinstance(a, (FenceHost, AssignVM)) for a in plan(v))


def test_hosts_without_a_bmc_or_with_hung_after_0_wait_for_their_lease():
    for bmc in (None, dict(BMC, hung_after_s=0)):
        v = cluster(host("host2", bmc=bmc, **SILENT))
        fences, states = decide(v, classified(v))
        assert fences == [] and states["host2"][0] is HostState.RUNNING


def test_hung_after_is_the_devices_own():
    assert hung_after(BMC) == HUNG_AFTER_S
    assert hung_after(dict(BMC, hung_after_s=2.2)) == 2.2
    assert hung_after(dict(BMC, hung_after_s=0)) == float("inf")
    v = cluster(host("host2", bmc=dict(BMC, hung_after_s=2.2), **SILENT))
    assert decide(v, classified(v))[0] == []
    v = cluster(host("host2", bmc=dict(BMC, hung_after_s=2.2), alive=True, hb=2.3, ping=True))
    assert [f.host for f in decide(v, classified(v))[0]] == ["host2"]


def test_a_host_in_maintenance_is_not_a_suspect():
    v = cluster(host("host2", bmc=BMC, maintenance=True, **SILENT))
    assert decide(v, classified(v))[0] == []


def test_confirmed_fence_revokes_the_lease_and_restarts_at_once():
    fence = FenceStatus("confirmed", NOW - 0.3, "redfish 10.0.1.2: power off, state off")
    v = cluster(host("host2", bmc=BMC, fence=fence, prev=HostState.FENCING, alive=True, hb=1.9, ping=True))
    acts = plan(v)
    st = next(a for a in acts if isinstance(a, SetHostState) and a.host == "host2")
    assert st.state is HostState.FAILED and st.lease == 7  # the controller revokes it
    assert "fenced through its BMC" in st.reason and "its lease is revoked" in st.reason
    restart = next(a for a in acts if isinstance(a, AssignVM))
    assert restart.kind == "restart" and restart.host != "host2"
    assert restart.expect_owner == "host2"  # its ownership key taken in the same transaction
    assert not any(isinstance(a, FenceHost) for a in acts)


def test_a_fenced_host_stays_failed_once_its_lease_is_gone():
    # revoked: lease gone, heartbeat silent less than hb_grace, which alone says partitioned
    fence = FenceStatus("confirmed", NOW - 0.6, "power off")
    v = cluster(host("host2", bmc=BMC, fence=fence, prev=HostState.FAILED, alive=False, hb=2.1, ping=False))
    assert classified(v)["host2"][0] is HostState.PARTITIONED
    _, states = decide(v, classified(v))
    assert states["host2"][0] is HostState.FAILED
    assert not any(isinstance(a, SetHostState) and a.host == "host2" for a in plan(v))


def test_a_confirmation_after_a_heartbeat_is_not_trusted():
    # the fence began 1.0 s ago, the heartbeat moved 0.4 s ago: the host ran meanwhile
    fence = FenceStatus("confirmed", NOW - 1.0, "power off")
    h2 = host("host2", bmc=BMC, fence=fence, prev=HostState.FENCING, alive=True, hb=0.4, ping=True)
    assert not trusted(h2, fence, NOW)
    assert trusted(replace(h2, hb_age=1.0), fence, NOW)
    v = cluster(h2)
    _, states = decide(v, classified(v))
    assert states["host2"][0] is HostState.FENCING and "not trusted" in states["host2"][1]
    assert not any(isinstance(a, AssignVM) for a in plan(v))


def test_pending_fence_of_a_host_that_came_back_is_seen_through():
    v = cluster(host("host2", bmc=BMC, fence=FenceStatus("pending", NOW - 0.2), alive=True, hb=0.3, ping=True,
                     prev=HostState.FENCING))
    fences, states = decide(v, classified(v))
    assert fences == [] and states["host2"][0] is HostState.FENCING


def test_failed_early_fence_falls_back_to_the_lease_and_the_watchdog_bound():
    failed = FenceStatus("failed", NOW - 5.0, "no confirmation within 5s")
    # lease alive still: its VMs stay
    v = cluster(host("host2", bmc=BMC, fence=failed, prev=HostState.FENCING, alive=True, hb=2.0, ping=True))
    _, states = decide(v, classified(v))
    assert states["host2"][0] is HostState.FENCING and "watchdog bound" in states["host2"][1]
    assert not any(isinstance(a, AssignVM) for a in plan(v))
    # lease expired, within the watchdog window: still waiting, and no second fence
    v = cluster(host("host2", bmc=BMC, fence=failed, prev=HostState.FENCING, alive=False, hb=4.0, ping=True))
    fences, states = decide(v, classified(v))
    assert fences == [] and states["host2"][0] is HostState.FENCING
    assert not any(isinstance(a, AssignVM) for a in plan(v))
    # past the bound: restarted
    v = cluster(host("host2", bmc=BMC, fence=failed, prev=HostState.FENCING, alive=False, hb=6.6, ping=True))
    assert any(isinstance(a, AssignVM) and a.kind == "restart" for a in plan(v))


def test_a_failed_fence_of_a_host_that_came_back_leaves_it_running():
    failed = FenceStatus("failed", NOW - 5.0, "connection timed out")
    v = cluster(host("host2", bmc=BMC, fence=failed, prev=HostState.FENCING, alive=True, hb=0.3, ping=True))
    _, states = decide(v, classified(v))
    assert states["host2"][0] is HostState.RUNNING


def test_suspects_count_towards_the_fencing_storm():
    v = view(host("host1"), host("host2", bmc=BMC, **SILENT), host("host3", bmc=BMC, **SILENT))
    c = classified(v)
    assert "2 of 3 hosts lost contact" in storm(v, c, frozenset({"host2", "host3"}))
    fences, states = decide(v, c)
    assert fences == []
    # suspects only, leases alive: left as they are, their VMs where they run
    assert states["host2"][0] is HostState.RUNNING and states["host3"][0] is HostState.RUNNING


def test_fence_over_needs_a_heartbeat_fresher_than_hung_after():
    assert not fence_over(host("host2", bmc=BMC, alive=True, hb=1.8), T)  # a suspect: not seen well
    assert fence_over(host("host2", bmc=BMC, alive=True, hb=0.3), T)
    assert fence_over(host("host2", alive=True, hb=1.8), T)  # no device: hb_grace as before
    assert not fence_over(host("host2", bmc=BMC, alive=False, hb=0.3), T)


def test_device_carries_hung_after_s():
    d = FenceDevice(kind="ipmi", address="10.0.1.2", user="u", password_file="/p", hung_after_s=2.0)
    assert FenceDevice.from_json(d.to_json()) == d
    assert FenceDevice.from_json({k: v for k, v in d.to_json().items() if k != "hung_after_s"}).hung_after_s == 1.5


def test_config_hung_after_s():
    base = ('[host]\nname = "h1"\naddress = "10.0.0.1"\n[etcd]\nendpoints = ["10.0.0.1:2379"]\n'
            '[paths]\nrun_dir = "/run/vigil"\n'
            '[fencing]\nkind = "ipmi"\naddress = "10.0.1.1"\nuser = "u"\npassword_file = "/etc/vigil/p"\n')
    assert parse_toml(base)["fencing_hung_after_s"] == 1.5
    assert parse_toml(base + "hung_after_s = 0\n")["fencing_hung_after_s"] == 0.0
    with pytest.raises(ConfigError, match="fencing.hung_after_s"):
        parse_toml(base + "hung_after_s = -1\n")


def test_a_stalled_datastore_is_a_storm_not_a_row_of_hung_hosts():
    # every heartbeat stopped within a write period: the first past 1.5 s, the others
    # half-way there (host1, without a BMC, counts too)
    v = view(host("host1", hb=0.8), host("host2", bmc=BMC, alive=True, hb=1.5, ping=True),
             host("host3", bmc=BMC, alive=True, hb=0.9, ping=True))
    fences, states = decide(v, classified(v))
    assert fences == [] and all(s is HostState.RUNNING for s, _ in states.values())
    # one late host next to a suspect is not more than half
    v = view(host("host1"), host("host2", bmc=BMC, **SILENT), host("host3", bmc=BMC, alive=True, hb=0.8), host("host4"))
    assert [f.host for f in decide(v, classified(v))[0]] == ["host2"]


def test_a_planned_agent_restart_is_not_fenced_and_waits_for_the_watchdog_bound_instead():
    """``systemctl restart vigil-agent``: the stopping agent marks its restart, so its
    silence meanwhile is neither a hung suspect nor, once its lease ran out, an agent-down
    host to fence; past the watchdog bound it is failed as it would be without a BMC."""
    from vigil.policy.fencing import restart_mark_ttl

    v = cluster(replace(host("host2", bmc=BMC, **SILENT), restarting=True))
    fences, states = decide(v, classified(v))
    assert fences == [] and states["host2"][0] is HostState.RUNNING
    down = cluster(replace(host("host2", bmc=BMC, alive=False, hb=4.0, ping=True), restarting=True))
    assert classified(down)["host2"][0] is HostState.AGENT_DOWN
    fences, states = decide(down, classified(down))
    assert fences == [] and states["host2"][0] is HostState.AGENT_DOWN
    gone = cluster(replace(host("host2", bmc=BMC, alive=False, hb=7.0, ping=True), restarting=True))
    assert classified(gone)["host2"][0] is HostState.FAILED  # past 6.5 s: the watchdog has reset it
    # the same silence without the mark is fenced; the mark outlives the bound by no more than a second
    assert [f.host for f in decide(cluster(host("host2", bmc=BMC, **SILENT)), classified(
        cluster(host("host2", bmc=BMC, **SILENT))))[0]] == ["host2"]
    assert restart_mark_ttl(T) == 7


def test_the_restart_mark_is_read_into_the_typed_state():
    from vigil.store import keys as K
    from vigil.store.etcd import Entry
    from vigil.store.state import cluster_state

    key = K.RESTARTING + "host2"
    st = cluster_state({key: Entry(key=key, value={"boot": "b", "pid": 1}, mod_revision=3, version=1, lease=42)})
    assert dict(st.restarting) == {"host2": 42}
