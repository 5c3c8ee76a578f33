"""How long a 3-member etcd goes without a raft leader when its leader stops dead, and what
an idle member costs, for the member settings vigil ships (vigil.bootstrap.etcd_member)
or others given on the command line; no lab, no lab lock.

Each trial starts a fresh TLS cluster on loopback (bench/idle_loopback.py's), waits for
its first leader, SIGSTOPs it (a power cut as its peers see it: no reset, no goodbye) and
reads from the other members' own logs when one of them became leader; that is when
writes (and lease keepalives) go through again. Between trials, with ``--idle``, each
member's CPU over that many seconds. Run as root:
`.venv/bin/python bench/etcd_election.py [--trials 20] [--idle 10] [ETCD_HEARTBEAT_INTERVAL=100 ...]`.

Figures (2-core machine shared with other work, load 4.4-7.0; 40 trials each, in blocks of
10 alternated; idle: a bare member, no client, median of the blocks):

| heartbeat / election (ms) | leaderless after the leader stops: mean, median, p90, max (s) | idle member |
| --- | --- | --- |
| 100 / 1000 (etcd's defaults) | 1.23, 1.12, 1.76, 2.76 | 1.03 - 1.20 % |
| 200 / 1000 | 1.26, 1.17, 1.69, 2.65 | 0.93 - 1.13 % |

The means differ by less than their noise (~0.07 s standard error). By raft's rules (a
follower campaigns once its randomized timeout, uniform in [election, 2 x election) in
whole ticks, has passed since it last heard the leader; pre-vote; the other follower
grants once it too has been silent for the election timeout), a Monte Carlo of two
followers gives means of 1.24 s (100 ms) and 1.14 s (200 ms), p99 1.83 and 1.72 s:
fewer, longer ticks end the wait no later, because the leader's last heartbeat before it
stopped is on average half a tick older. What a sparser heartbeat gives up is tolerance
of a leader that only stalls: a follower may campaign after ~0.6-0.8 s of a stalled leader
(~0.8-0.9 s with 100 ms).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from idle import cpu_seconds  # noqa: E402
import idle_loopback  # noqa: E402

BECAME = re.compile(r'"ts":"([^"]+)".*"msg":"(\w+) became leader at term (\d+)"')


def leaders(log: Path) -> list[tuple[float, str, int]]:
    """(wall time, member id, term) of each 'became leader' in a member's log."""
    out = []
    for m in BECAME.finditer(log.read_text(errors="replace")):
        ts = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
        out.append((ts, m.group(2), int(m.group(3))))
    return out


def trial(overrides: dict[str, str], idle_s: float) -> dict[str, float | None]:
    root = Path(tempfile.mkdtemp(prefix="vigil-election-"))
    orig = idle_loopback.etcd_member.member_env
    idle_loopback.etcd_member.member_env = lambda *a, **k: orig(*a, **k) | overrides
    procs = []
    try:
        procs, _, _ = idle_loopback.start_etcd(root)
        logs = [root / f"{n}.log" for n in idle_loopback.NAMES]
        deadline = time.monotonic() + 20
        while not any(leaders(p) for p in logs):
            if time.monotonic() > deadline:
                raise RuntimeError("no first leader")
            time.sleep(0.1)
        time.sleep(1.0)  # past the first heartbeats
        idle = None
        if idle_s > 0:
            before = [cpu_seconds(p.pid) for p in procs]
            t0 = time.monotonic()
            time.sleep(idle_s)
            idle = sum(cpu_seconds(p.pid) - b for p, b in zip(procs, before)) / (time.monotonic() - t0) / 3 * 100
        first = [i for i, p in enumerate(logs) if leaders(p)]
        victim = max(first, key=lambda i: leaders(logs[i])[-1][2])
        term = leaders(logs[victim])[-1][2]
        os.kill(procs[victim].pid, signal.SIGSTOP)
        stopped = time.time()
        others = [p for i, p in enumerate(logs) if i != victim]
        deadline = time.monotonic() + 15
        gap = None
        while gap is None and time.monotonic() < deadline:
            time.sleep(0.05)
            new = [t for p in others for t, _, tm in leaders(p) if tm > term]
            if new:
                gap = min(new) - stopped
        return {"leaderless_s": gap, "idle_member_pct": idle}
    finally:
        idle_loopback.etcd_member.member_env = orig
        for p in procs:
            p.kill()
            p.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--idle", type=float, default=0.0, help="seconds of idle CPU measured in each trial (0: none)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("settings", nargs="*", help="ETCD_NAME=VALUE overriding vigil's member settings")
    args = ap.parse_args()
    overrides = dict(s.split("=", 1) for s in args.settings)
    runs = [trial(overrides, args.idle) for _ in range(args.trials)]
    gaps = sorted(r["leaderless_s"] for r in runs if r["leaderless_s"] is not None)
    idle = [r["idle_member_pct"] for r in runs if r["idle_member_pct"] is not None]
    out = {"settings": overrides, "trials": len(runs), "elected": len(gaps),
           "leaderless_median_s": round(statistics.median(gaps), 3) if gaps else None,
           "leaderless_p90_s": round(gaps[int(0.9 * (len(gaps) - 1))], 3) if gaps else None,
           "leaderless_max_s": round(gaps[-1], 3) if gaps else None,
           "leaderless_mean_s": round(statistics.mean(gaps), 3) if gaps else None,
           "idle_member_pct": round(statistics.median(idle), 2) if idle else None,
           "load": round(os.getloadavg()[0], 2)}
    if args.json:
        print(json.dumps(out | {"gaps": [round(g, 3) for g in gaps]}))
    else:
        print(f"settings {overrides or 'as shipped'}: {out['elected']}/{out['trials']} trials elected a new leader; "
              f"leaderless median {out['leaderless_median_s']} s, mean {out['leaderless_mean_s']} s, "
              f"p90 {out['leaderless_p90_s']} s, max {out['leaderless_max_s']} s; idle member "
              f"{out['idle_member_pct']} %; load {out['load']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
