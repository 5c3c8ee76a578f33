"""The retry schedule, the failover-host hook of placement and what-if, on plain views."""
from __future__ import annotations

from dataclasses import replace

from vigil.model import Assignment, DiskSpec, HostInfo, VMSpec, VMStatus
from vigil.policy.plan import AssignVM, NotRestarted, Waiting, plan
from vigil.policy.retry_schedule import DEFAULT_DELAYS, RetrySchedule, retry_schedule
from vigil.policy.view import ClusterView, HostView, Retry, VMView
from vigil.policy.whatif import what_if
from vigil.policy.plan import backoff


def host(name: str, mem: int = 1024) -> HostView:
    return HostView(name=name, info=HostInfo(name=name, address="10.0.0.1", memory_mb=mem, cpus=2,
                                             datastores=("ds1",)), alive=True, hb_age=0.2)


def vm(name: str, on: str | None, mem: int = 256, prio: str = "medium", status: VMStatus | None = None,
       retries: int = 0) -> VMView:
    spec = VMSpec(name=name, memory_mb=mem, restart_priority=prio,
                  disks=(DiskSpec(name="disk0", datastore="ds1", path=f"{name}/d.qcow2"),))
    return VMView(spec=spec, assignment=Assignment(host=on, gen=1, retries=retries) if on else None,
                  assign_rev=5 if on else 0, owner=on if status is None or status.state == "running" else None,
                  status=status)


def view(hosts, vms, settings=None, retries=None, now: float = 100.0) -> ClusterView:
    return ClusterView(now=now, hosts={h.name: h for h in hosts}, vms={v.spec.name: v for v in vms},
                       settings=settings or {}, retries=retries or {})


def test_default_schedule_is_the_old_backoff() -> None:
    s = RetrySchedule()
    for n in range(1, 12):
        assert s.after(n, 10.0, "h") == backoff(n, 10.0, 2.0, 60.0, "h")
    assert not s.exhausted(1000) and s.delays == DEFAULT_DELAYS
    assert retry_schedule({"retries": {"delays": "bad"}}) == RetrySchedule()
    v = RetrySchedule(delays=(120.0, 240.0, 480.0, 960.0), max_attempts=5)  # vSphere's
    assert [v.delay(n) for n in range(1, 7)] == [120, 240, 480, 960, 960, 960] and v.exhausted(5)


FAILED = VMStatus(host="h1", state="failed", message="boom")


def test_a_retry_writes_its_count_and_a_new_leader_carries_it_on() -> None:
    sched = {"retries": {"delays": [5.0], "max_attempts": 3}}
    acts = plan(view([host("h1"), host("h2")], [vm("a", "h1", status=FAILED, retries=1)], sched))
    a = next(x for x in acts if isinstance(x, AssignVM))
    assert a.kind == "retry" and a.retry == Retry(2, 105.0, "h2")
    acts = plan(view([host("h1"), host("h2")], [vm("a", "h1", status=FAILED, retries=3)], sched))
    assert [x.reason for x in acts if isinstance(x, NotRestarted)] == [
        "start failed on h1: boom; gave up after 3 restart attempts (the retry schedule's maximum)"]


FO = {"admission": {"policy": "failover-hosts", "hosts": ["h3"]}}


def test_failover_hosts_get_no_new_vm_but_take_restarts_first() -> None:
    hosts = [host("h1"), host("h2"), host("h3", mem=4096)]
    acts = plan(view(hosts, [vm("new", None)], FO))
    assert [(x.vm, x.host) for x in acts if isinstance(x, AssignVM)] == [("new", "h1")]
    dead = replace(hosts[1], alive=False, hb_age=100.0, ping=False)
    acts = plan(view([hosts[0], dead, hosts[2]], [vm("a", "h2"), vm("b", "h2")], FO))
    got = [(x.vm, x.host, x.reason) for x in acts if isinstance(x, AssignVM)]
    assert got == [("a", "h3", "host h2 failed; h3: failover host, most free memory"),
                   ("b", "h3", "host h2 failed; h3: failover host, most free memory")]


def test_only_failover_hosts_with_room_means_the_vm_waits() -> None:
    acts = plan(view([host("h1", mem=128), host("h3", mem=4096)], [vm("new", None)], FO))
    assert [x.reason for x in acts if isinstance(x, Waiting)] == ["no host can run it: h1: 128 MiB free, needs 256"]


def test_what_if_changes_nothing_and_lists_the_order() -> None:
    v = view([host("h1"), host("h2", mem=512)],
             [vm("a", "h1", prio="low"), vm("b", "h1", prio="highest"), vm("c", "h1", mem=512), vm("d", "h2")])
    w = what_if(v, ["h1"])
    assert [(r.order, r.vm, r.host) for r in w.restarts] == [(1, "b", "h2")]
    assert [x.vm for x in w.left] == ["a", "c"]
    assert w.affected == ("a", "b", "c")
    assert what_if(v, ["h9"]).affected == ()
    assert all(h.alive for h in v.hosts.values())  # the view it was given is untouched
