"""How fast the simulator runs: random failure scenarios, simulated failures per second.

    .venv/bin/python bench/sim.py [--runs 40] [--seed 1] [--jobs 1]

Each run is a random cluster (6-8 hosts, 8-16 VMs, a fifth with FT, some
disks on two datastores) with a random fault every 0.5-3 virtual
seconds for 100 s (power loss, hang, isolation, agent crash, partition, datastore loss, each undone
later), the real controller deciding. Prints failures per real second, the virtual-to-
real time ratio, and what the runs' final checks found (two running copies must be 0).

Figures (40 runs, seed 1: 2 192 failures, 199 starts refused by a disk lock, no two
running copies; 2-core machine shared, so CPU time varies with the load far more than
with the code: the same code gave 59 failures per CPU second at load 8.3 and 104 at 4.6).
2026-12-01, the code before / after that day's cuts to the controller's round and the
in-memory store, run in turns: 73, 104, 104 / 112, 110, 109 failures per CPU second at
load 2.8-5.9 (medians 104 / 110).
Later that day, the simulator's own machinery made cheaper with every run's log unchanged
(vigil.sim.clock's loop with cheaper handles, a change stamp per key collection for the
reconcile reads, fewer copies): instructions counted by valgrind (cachegrind, the first
2 runs, imports subtracted, load-independent) 4 727 M before / 3 724 M after (-21 %);
failures per CPU second, run in turns: 91, 84, 105, 129, 96, 114 / 99, 115, 146, 137,
118, 132 at load 2.7-7.2 (medians 100 / 125; per real second 29-129 / 42-144).
Later still, the product's decisions and the simulated hosts asked for less with every log
unchanged (fencing's step skipped without BMCs, the unset orchestration settings read
once, no view copy for empty ready marks, fewer per-round objects and lookups in
reconcile and leadership, the hosts' clocks bound to the world's): instructions
(cachegrind as above, imports 2 461 M subtracted) 3 725 M before / 3 400 M after (-8.7 %);
failures per CPU second, run in turns at load 5.3-7.2: 129, 112, 129, 119, 136, 104, 83,
129 / 116, 134, 154, 149, 126, 110, 128, 130 (medians 124 / 129; the machine's load
moved the figures more than the code did; the first four "after" runs were of the code
before its last two cuts, the clock and the reachability test). Where the CPU goes now
(line_profiler, 3 runs): the controller's cycle 38 % (plan 11, build_view 8, typed state
8), reconcile 14 %; the rest is spread thin over the hosts' loops and asyncio.
Where the CPU went before that (py-spy): the controller's cycle about 38 % (plan 15, build_view
7, typed state 5), reconcile about 15 %, leadership checks 9 %, asyncio's Task and
future work per wakeup about 12 %. The hosts' loops wake on the agents' schedule; fewer
wakeups would be the next lever, but most timers share their instant with others and the
heap's order among those depends on every timer in it: removing or merging any wakeup
reorders them, and 86 golden logs change when that order is merely made FIFO.
2026-12-02, three more cuts with every log unchanged (a sleep's future and timer made in one
loop call, handles without an __init__ frame; the simulated store's reachability asked
inline; the controller's view parts that follow from the typed state alone made once per
state): instructions (cachegrind as above, imports 2 457 M / 2 463 M subtracted) 3 412 M
before / 3 322 M after (-2.6 %); failures per CPU second, 40 runs, run in turns at load
3.1-4.7: 113, 102, 106 / 112, 101, 100 (the machine's load again moved the figures more
than the code did). A cut of a third is not in sight this way: one sleep and wakeup costs
about 21 k instructions (some 13 k of them per run, a sixth of the whole), a controller
cycle about 1 M, spread over the typed state, the view and the plan with no part above a
tenth of it.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vigil.sim import clock as vclock  # noqa: E402
from vigil.sim.scenario import Run, Scenario  # noqa: E402

FAULTS = ("power-off", "hang", "isolate", "agent-kill", "partition", "datastore-loss")


def random_scenario(rnd: random.Random, i: int) -> Scenario:
    n = rnd.randint(6, 8)
    hosts = [{"name": f"host{h + 1}", "memory": 8192, "datastores": ["ds1", "ds2"]} for h in range(n)]
    vms = [{"name": f"vm{v + 1}", "memory": rnd.choice((256, 512, 1024)),
            "priority": rnd.choice(("high", "medium", "low")),
            "isolation": rnd.choice(("power-off", "shutdown", "leave-powered-on")),
            "disks": [rnd.choice(("ds1", "ds2", "ds1+ds2"))], "on": f"host{rnd.randint(1, n)}",
            "ft": rnd.random() < 0.2}
           for v in range(rnd.randint(8, 16))]
    actions, t = [], 5.0
    while t < 100.0:
        f = rnd.choice(FAULTS)
        h = f"host{rnd.randint(1, n)}"
        a: dict = {"at": round(t, 2), "fault": f, "for": round(rnd.uniform(2.0, 12.0), 2)}
        if f == "partition":
            a["groups"] = [[x["name"] for x in hosts if x["name"] != h], [h]]
        else:
            a["host"] = h
        if f == "datastore-loss":
            a["datastore"] = rnd.choice(("ds1", "ds2"))
        actions.append(a)
        t += rnd.uniform(0.5, 3.0)
    return Scenario(name=f"random{i}", hosts=hosts, vms=vms, actions=actions, duration=140.0,
                    expect={"lock_refusals": True})


def one_run(job: tuple[int, Scenario]) -> dict[str, float]:
    """One random scenario run to its end: what main() sums (in a worker with --jobs)."""
    i, sc = job
    c0 = time.process_time()
    r = Run(sc, i)
    vclock.run(r.clock, r.main())
    problems = r.final()
    return {"faults": len(sc.actions), "virtual": sc.duration, "copies": len(r.world.violations),
            "crashes": len(r.world.crashes), "refusals": len(r.world.lock_refusals),
            "live_holder": sum(1 for x in r.world.lock_refusals if "agent is running" in x),
            "unfinished": sum(1 for p in problems if "should run once" in p),
            "cpu": time.process_time() - c0,
            "lines": [f"  run {i}: {x}" for x in r.world.lock_refusals + r.world.violations + problems]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1,
                    help="worker processes running the runs side by side (0: one per CPU)")
    ap.add_argument("--verbose", action="store_true", help="print each run's refusals and problems")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    work = [(i, random_scenario(rnd, i)) for i in range(args.runs)]  # the same runs for any --jobs
    jobs = args.jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(one_run, work))
    else:
        results = [one_run(w) for w in work]
    real = time.perf_counter() - t0
    total = {k: sum(r[k] for r in results) for k in results[0] if k != "lines"} if results else {}
    faults, virtual, cpu = total.get("faults", 0), total.get("virtual", 0), total.get("cpu", 0) or 1e-9
    if args.verbose:
        for r in results:
            for line in r["lines"]:
                print(line)
    print(f"{args.runs} runs, {faults:.0f} simulated failures, {virtual:.0f} virtual s in {real:.2f} real s"
          f" ({jobs} process{'es' if jobs > 1 else ''})")
    print(f"  {faults / real:.0f} simulated failures per second, virtual/real time {virtual / real:.0f}x")
    print(f"  {faults / cpu:.0f} simulated failures per CPU second ({cpu:.2f} CPU s in the runs; the machine is shared: "
          f"load {os.getloadavg()[0]:.1f})")
    print(f"  two running copies: {total.get('copies', 0)}; starts refused by a disk lock: {total.get('refusals', 0)}; "
          f"VMs not running at the end: {total.get('unfinished', 0)}")
    print(f"  refusals where the lock holder's agent was running (not hung or dead): {total.get('live_holder', 0)}; "
          f"simulated processes crashed: {total.get('crashes', 0)}")
    return 1 if total.get("copies") or total.get("crashes") else 0


if __name__ == "__main__":
    sys.exit(main())
