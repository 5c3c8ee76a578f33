"""vigil.policy.fencing: when a host is fenced, and what a fence (or its failure) changes."""
from __future__ import annotations

from vigil.model import Assignment, HostInfo, HostState, VMSpec
from vigil.policy.fencing import FenceHost, decide, storm
from vigil.policy.hoststate import classify_host
from vigil.policy.plan import AssignVM, SetHostState, plan
from vigil.policy.view import ClusterView, FenceStatus, HostView, Timing, VMView

T = Timing(lease_ttl=3, hb_grace=2.5, watchdog=5.0)  # bound: 6.5 s of silence
BMC = {"kind": "redfish", "address": "10.0.1.2", "user": "vigil", "password_file": "/etc/vigil/bmc"}


def host(name: str, *, alive: bool = True, hb: float | None = 0.2, ping: bool | None = None,
         bmc: bool = False, fence: FenceStatus | None = None, prev: HostState = HostState.RUNNING) -> HostView:
    info = HostInfo(name=name, address="10.0.0." + name[-1], memory_mb=4096, cpus=2, datastores=("ds1",),
                    fencing=dict(BMC) if bmc else {})
    return HostView(name=name, info=info, alive=alive, hb_age=hb, lease=7 if alive else 0, ping=ping,
                    fence=fence, prev_state=prev)


def view(*hosts: HostView, vm_on: str = "host2") -> ClusterView:
    spec = VMSpec(name="web", memory_mb=256)
    vms = {"web": VMView(spec=spec, assignment=Assignment(host=vm_on, gen=1), assign_rev=5, owner=None,
                         status=None)}
    return ClusterView(now=100.0, hosts={h.name: h for h in hosts}, vms=vms, timing=T)


def classified(v: ClusterView) -> dict:
    return {n: classify_host(h, v.timing) for n, h in v.hosts.items()}


HUNG = dict(alive=False, hb=3.0, ping=True)  # lease expired, heartbeat silent, answers ping
DEAD = dict(alive=True, hb=2.7, ping=False)  # silent and no ping (lease not yet expired)


def test_hung_host_with_a_bmc_is_fenced_and_its_vms_wait():
    v = view(host("host1"), host("host2", bmc=True, **HUNG), host("host3"))
    fences, states = decide(v, classified(v))
    assert [f.host for f in fences] == ["host2"] and fences[0].device["kind"] == "redfish"
    assert states["host2"][0] is HostState.FENCING
    acts = plan(v)
    assert any(isinstance(a, FenceHost) for a in acts)
    assert not any(isinstance(a, AssignVM) for a in acts)


def test_confirmed_fence_restarts_a_hung_hosts_vms_at_once():
    fence = FenceStatus("confirmed", 99.0, "ForceOff, PowerState Off")
    v = view(host("host1"), host("host2", bmc=True, fence=fence, prev=HostState.FENCING, **HUNG), host("host3"))
    acts = plan(v)
    assert SetHostState("host2", HostState.FAILED, "", 0) in [
        SetHostState(a.host, a.state, "", 0) for a in acts if isinstance(a, SetHostState)]
    restart = [a for a in acts if isinstance(a, AssignVM)]
    assert restart and restart[0].kind == "restart" and restart[0].host != "host2"
    assert "fenced through its BMC" in next(a.reason for a in acts if isinstance(a, SetHostState))
    assert not any(isinstance(a, FenceHost) for a in acts)  # once per episode


def test_pending_fence_is_not_asked_again():
    v = view(host("host1"), host("host2", bmc=True, fence=FenceStatus("pending", 99.5), **HUNG), host("host3"))
    fences, states = decide(v, classified(v))
    assert fences == [] and states["host2"][0] is HostState.FENCING


def test_silent_unpingable_host_with_a_bmc_waits_for_the_fence_not_only_the_ping():
    v = view(host("host1"), host("host2", bmc=True, **DEAD), host("host3"))
    fences, states = decide(v, classified(v))
    assert [f.host for f in fences] == ["host2"]
    assert states["host2"][0] is HostState.FENCING and "lease is revoked" not in states["host2"][1]
    assert not any(isinstance(a, AssignVM) for a in plan(v))


def test_failed_fence_waits_for_the_watchdog_bound_then_restarts():
    failed = FenceStatus("failed", 97.0, "connection timed out")
    before = view(host("host1"), host("host2", bmc=True, fence=failed, **DEAD), host("host3"))
    _, states = decide(before, classified(before))
    assert states["host2"][0] is HostState.FENCING and "watchdog bound" in states["host2"][1]
    assert not any(isinstance(a, AssignVM) for a in plan(before))
    after = view(host("host1"), host("host2", bmc=True, fence=failed, alive=False, hb=6.6, ping=False),
                 host("host3"))
    assert any(isinstance(a, AssignVM) and a.kind == "restart" for a in plan(after))


def test_pending_fence_past_the_bound_does_not_hold_the_vms():
    v = view(host("host1"), host("host2", bmc=True, fence=FenceStatus("pending", 90.0), alive=False, hb=7.0,
                                 ping=True), host("host3"))
    assert any(isinstance(a, AssignVM) and a.kind == "restart" for a in plan(v))


def test_no_fencing_storm_when_more_than_half_lost_contact():
    v = view(host("host1"), host("host2", bmc=True, **HUNG), host("host3", bmc=True, **HUNG))
    c = classified(v)
    assert "2 of 3 hosts lost contact" in storm(v, c)
    fences, states = decide(v, c)
    assert fences == []
    assert states["host2"][0] is HostState.FENCING and "no fencing storm" in states["host2"][1]
    assert not any(isinstance(a, AssignVM) for a in plan(v))


def test_half_is_not_more_than_half():
    v = view(host("host1"), host("host2", bmc=True, **HUNG), host("host3"), host("host4", alive=False, hb=1.0))
    assert classified(v)["host4"][0] is HostState.PARTITIONED  # two of four lost: not more than half
    assert storm(v, classified(v)) == ""
    assert [f.host for f in decide(v, classified(v))[0]] == ["host2"]


def test_hosts_without_a_bmc_are_classified_as_before():
    v = view(host("host1"), host("host2", **DEAD), host("host3"))
    fences, states = decide(v, classified(v))
    assert fences == [] and states == classified(v)
    assert any(isinstance(a, AssignVM) and a.kind == "restart" for a in plan(v))


def test_partitioned_and_isolated_hosts_are_not_fenced():
    v = view(host("host1"), host("host2", bmc=True, alive=False, hb=0.3), host("host3"))
    assert classified(v)["host2"][0] is HostState.PARTITIONED
    assert decide(v, classified(v))[0] == []
