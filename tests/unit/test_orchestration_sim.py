"""The orchestration and VM-host rule promises through the simulator (the real controller
and agents' protocol, virtual time) over random clusters and fault sequences: no VM ever
starts or arrives on a host a "must" rule forbids, never two copies, and every protected
VM runs again by the end, once the hosts its rules allow are back (every fault here is
undone before the end)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.model import HostGroup, Rule
from vigil.policy.host_rules import allowed_hosts, resolve
from vigil.sim import clock as vclock
from vigil.sim.scenario import Run, Scenario

HOSTS = ["host1", "host2", "host3"]
KINDS = ["must-run-on", "should-run-on", "must-not-run-on", "should-not-run-on"]


@st.composite
def scenarios(draw) -> Scenario:
    groups = [{"name": f"g{i}", "hosts": draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=2, unique=True))}
              for i in range(draw(st.integers(1, 2)))]
    nvm = draw(st.integers(1, 4))
    names = [f"v{i}" for i in range(nvm)]
    prios = sorted((draw(st.sampled_from(["high", "medium", "low"])) for _ in names),
                   key=["high", "medium", "low"].index)
    rules: list[dict] = []
    for i in range(draw(st.integers(0, 3))):
        rules.append({"name": f"h{i}", "kind": draw(st.sampled_from(KINDS)), "group": draw(st.sampled_from(groups))["name"],
                      "vms": draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))})
    resolved = resolve([Rule(r["name"], r["kind"], tuple(r["vms"]), group=r["group"]) for r in rules],
                       {g["name"]: HostGroup(g["name"], tuple(g["hosts"])) for g in groups})
    # every VM has a host its must rules allow (all hosts are back by the end): else drop them
    if any(not allowed_hosts(n, HOSTS, resolved) for n in names):
        rules = [r for r in rules if not r["kind"].startswith("must-")]
        resolved = tuple(r for r in resolved if not r.must)
    for i in range(1, nvm):
        if draw(st.booleans()):
            rules.append({"name": f"d{i}", "kind": "depends-on", "vms": [names[i]],
                          "on": [names[draw(st.integers(0, i - 1))]]})
    vms = [{"name": n, "memory": 256, "priority": prios[i], "on": draw(st.sampled_from(sorted(allowed_hosts(n, HOSTS, resolved)))),
            "guest_up": draw(st.sampled_from([0.5, 2.0])) if draw(st.booleans()) else None}
           for i, n in enumerate(names)]
    vms = [{k: v for k, v in vm.items() if v is not None} for vm in vms]
    actions = []
    t = 6.0
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["power-off", "isolate", "partition", "hang"]))
        span = draw(st.sampled_from([4.0, 10.0]))
        h = draw(st.sampled_from(HOSTS))
        if kind == "partition":
            actions.append({"at": t, "fault": "partition", "groups": [[x for x in HOSTS if x != h], [h]], "for": span})
        else:
            actions.append({"at": t, "fault": kind, "host": h, "for": span})
        t += span + 15.0
    orch = {"ready": draw(st.sampled_from(["allocated", "powered-on", "guest", "app"])),
            "timeout_s": draw(st.sampled_from([3.0, 8.0]))}
    return Scenario(name="random", hosts=[{"name": h, "memory": 4096} for h in HOSTS], vms=vms, rules=rules,
                    hostgroups=groups, settings={"orchestration": orch}, actions=actions, duration=t + 30.0,
                    seed=draw(st.integers(0, 5)), sim={"boot_s": 2.0})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_must_rules_hold_and_every_vm_runs_again_through_the_simulator(sc: Scenario) -> None:
    r = Run(sc, sc.seed)
    vclock.run(r.clock, r.main())
    problems = r.final()
    assert not problems, (problems, sc, r.text())
