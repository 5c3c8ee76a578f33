"""bench/idle.py without the lab: three real agents (no VMs) and a 3-member TLS etcd on
loopback, idle; CPU of each agent and member over a few windows.

No network namespaces, no datastore mounts, no QEMU, no lab lock: for comparing two
versions of the agent or the store quickly (``--code DIR``: run the agents from another
checkout of vigil, e.g. ``git archive <commit> | tar -x -C DIR``), one after the other
under the same load. The agents' host is the whole machine (as in the lab) and each has
its own member first; ports are free ones, data and logs under a temporary directory,
everything stopped by its pid at the end. Run as root (the agents' run dirs, etcd):
`.venv/bin/python bench/idle_loopback.py [--code DIR] [--repeat 3] [--seconds 30] [--json]`.

Figures (percent of one core; each run the median of 3 x 30 s windows; runs of the two
versions alternated, machine shared with other work):

| code | per host, median (worst host) | agents (3) | etcd (3) | load |
| --- | --- | --- | --- | --- |
| one LeaseKeepAlive stream per keepalive, load report every ~6 s | 2.13 (2.53), 2.70 (2.77), 2.30 (2.87) | 2.63, 3.13, 3.00 | 4.03, 4.93, 4.30 | 7.3, 5.7, 3.9 |
| one keepalive stream, host totals after 60 s | 2.07 (2.57), 2.33 (2.47), 2.23 (2.53) | 2.37, 2.27, 2.40 | 4.03, 4.70, 4.53 | 5.8, 4.9, 2.4 |
| each keepalive its own call again; etcd heartbeat 100 ms | 2.45 (2.60), 2.50 (2.65) | 2.75, 2.80 | 4.65, 4.60 | 6.9, 7.6 |
| same, etcd heartbeat 200 ms | 2.20 (2.20), 2.10 (2.25) | 2.65, 2.70 | 3.80, 3.85 | 7.1, 6.5 |
| heartbeat 200 ms, keepalive every TTL/6 (3 x 15 s) | 2.27 (2.60), 2.20 (2.27) | 2.87, 2.73 | 4.27, 3.60 | 5.1, 6.5 |
| same, keepalive every TTL/3 (an experiment, `--code`; not in vigil) | 1.87 (2.00), 1.93 (1.93) | 2.13, 2.13 | 3.53, 3.67 | 5.7, 7.0 |

The agents' saving shows through the noise (~0.2 % each); etcd's here is smaller than
the noise (its members cost ~1.3-1.6 % each with three idle agents, ~1.0-1.3 % bare).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vigil.bootstrap import etcd_member
from vigil.lab.etcd import endpoint_healthy, etcd_binary
from vigil.lab.localetcd import member_files
from vigil.lab.standalone import free_port

sys.path.insert(0, str(Path(__file__).parent))
from idle import GOAL_PER_HOST, cpu_seconds, etcd_requests  # noqa: E402

NAMES = ["m1", "m2", "m3"]


def start_etcd(root: Path) -> tuple[list[subprocess.Popen], list[str], object]:
    files, tls, _ = member_files(root)
    ports = {n: (free_port(), free_port()) for n in NAMES}
    cluster = ",".join(f"{n}=https://127.0.0.1:{ports[n][1]}" for n in NAMES)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    procs = []
    for n in NAMES:
        env = etcd_member.member_env(n, "127.0.0.1", {n: "127.0.0.1"}, files, str(root / n), "idle-loopback",
                                     client_port=ports[n][0], peer_port=ports[n][1])
        env |= {"ETCD_INITIAL_CLUSTER": cluster, "ETCD_LISTEN_CLIENT_URLS": f"https://127.0.0.1:{ports[n][0]}"}
        with open(root / f"{n}.log", "wb") as log:
            procs.append(subprocess.Popen([etcd_binary()], stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=clean | env))
    eps = [f"127.0.0.1:{ports[n][0]}" for n in NAMES]
    deadline = time.monotonic() + 30
    while not all(endpoint_healthy(e, 0.5, tls) for e in eps):
        if time.monotonic() > deadline:
            raise RuntimeError(f"etcd not healthy; see {root}/m*.log")
        time.sleep(0.2)
    return procs, eps, tls


def agent_config(root: Path, i: int, eps: list[str], tls: object) -> Path:
    name, d = f"p{i + 1}", root / f"p{i + 1}"
    (d / "run").mkdir(parents=True)
    peers = "\n".join(f'p{j + 1} = "127.0.0.1"' for j in range(len(NAMES)) if j != i)
    mine = [eps[i]] + [e for e in eps if e != eps[i]]
    cfg = d / "vigil.toml"
    cfg.write_text(f'''[host]
name = "{name}"
address = "127.0.0.{i + 1}"
memory_mb = 3840

[etcd]
endpoints = {json.dumps(mine)}
ca = "{tls.ca}"
cert = "{tls.cert}"
key = "{tls.key}"

[datastores]
ds1 = "{root / 'ds1'}"

[isolation]
addresses = ["127.0.0.1"]

[peers]
{peers}

[watchdog]
file = "{d / 'watchdog'}"

[paths]
run_dir = "{d / 'run'}"
''')
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", default="", help="a checkout of vigil to run the agents from (default: this one)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--settle", type=float, default=25.0, help="seconds before the first window")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vigil-idle-"))
    etcds: list[subprocess.Popen] = []
    agents: list[subprocess.Popen] = []
    try:
        etcds, eps, tls = start_etcd(root / "etcd")
        (root / "ds1").mkdir()
        env = dict(os.environ)
        if args.code:
            env["PYTHONPATH"] = args.code
        vigil_bin = str(Path(sys.executable).parent / "vigil")
        for i in range(len(NAMES)):
            cfg = agent_config(root, i, eps, tls)
            with open(cfg.parent / "agent.log", "wb") as log:
                agents.append(subprocess.Popen([vigil_bin, "agent", "--config", str(cfg)], stdin=subprocess.DEVNULL,
                                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd="/"))
        time.sleep(args.settle)
        runs = []
        for _ in range(args.repeat):
            before = [cpu_seconds(p.pid) for p in agents + etcds]
            r0, t0 = etcd_requests(eps, tls), time.monotonic()
            time.sleep(args.seconds)
            wall = time.monotonic() - t0
            r1 = etcd_requests(eps, tls)
            pct = [100.0 * (cpu_seconds(p.pid) - b) / wall for p, b in zip(agents + etcds, before)]
            a, e = pct[:len(NAMES)], pct[len(NAMES):]
            runs.append({"per_host_pct": [round(x + y, 2) for x, y in zip(a, e)], "agents_pct": round(sum(a), 2),
                         "etcd_pct": round(sum(e), 2), "load": round(os.getloadavg()[0], 2),
                         "etcd_requests_per_s": {k: round((v - r0.get(k, 0.0)) / wall, 2) for k, v in sorted(r1.items())
                                                 if v > r0.get(k, 0.0)}})
    finally:
        for p in agents:
            p.terminate()
        for p in agents:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for p in etcds:
            p.kill()
            p.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    med = statistics.median
    out = {"code": args.code or "this checkout", "worst_host_pct": med(max(r["per_host_pct"]) for r in runs),
           "per_host_pct": med(v for r in runs for v in r["per_host_pct"]),
           **{k: med(r[k] for r in runs) for k in ("agents_pct", "etcd_pct", "load")}, "runs": runs}
    if args.json:
        print(json.dumps(out))
        return 0
    for i, r in enumerate(runs):
        print(f"window {i + 1}: per host {r['per_host_pct']} % | agents {r['agents_pct']} etcd {r['etcd_pct']} % "
              f"| load {r['load']}")
        print(f"  etcd requests/s: {', '.join(f'{k} {v}' for k, v in r['etcd_requests_per_s'].items())}")
    print(f"median: worst host {out['worst_host_pct']:.2f} %, a host {out['per_host_pct']:.2f} % "
          f"(goal {GOAL_PER_HOST} %), agents {out['agents_pct']} %, etcd {out['etcd_pct']} %, load {out['load']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
