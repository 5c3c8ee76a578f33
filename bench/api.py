"""The REST API's speed on the lab with 1 000 VMs defined (powered off: no QEMU; a few
real ones run for the migrations), through the lab's own `vigil api` servers over HTTPS.

- GET /api/v1/vms and GET /api/v1/vms/{name}: latency p50/p99 of sequential requests, and
  requests per second with 4 clients at once;
- POST /api/v1/vms/{name}/migrate: from the call until its task is accepted (202), for
  real live migrations of running lab VMs (each waited for before the next);
- change to screen: from a write to etcd (a VM's power, through the service layer in this
  process, straight to etcd) to the `event` on the API's live stream (/api/v1/stream),
  which is what the dashboard reacts to.

Goals (the control-plane issue): GET /vms p99 under 100 ms for 1 000 VMs; change to screen
under 500 ms. Figures vary with the machine's load (2 cores, the lab's 3 etcd members, 3
agents and 3 API servers on it): the output says how loaded it was.

Run as root: `.venv/bin/python bench/api.py` (about 3 minutes; --vms N, --json).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from vigil import service
from vigil.lab import api_servers, observe
from vigil.lab.lab import Lab, LabConfig
from vigil.lab.scenario import create_lab_vms, wait_cluster_ready
from vigil.model import DiskSpec, VMSpec
from vigil.store.etcd import Store


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def client(api: dict[str, Any], url: str) -> httpx.Client:
    return httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=api["ca"]), timeout=30,
                        headers={"Authorization": f"Bearer {api['token']}"})


def define(n: int) -> None:
    """n powered-off VMs, written through the service layer (what POST /vms does), in batches."""
    async def go(store: Store) -> None:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await service.create_vm(store, VMSpec(name=f"b{i:04d}", memory_mb=128, power="off", disks=(
                    DiskSpec(name="disk0", datastore="ds1", path=f"b{i:04d}/disk0.qcow2"),)))
        await asyncio.gather(*(one(i) for i in range(n)))
    observe.call(go)


def latencies(c: httpx.Client, path: str, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        r = c.get(path.format(i=i % 1000))
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def throughput(api: dict[str, Any], path: str, seconds: float, clients: int = 4) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def worker(k: int) -> None:
        with client(api, api["urls"][k % len(api["urls"])]) as c:
            i = 0
            while time.monotonic() < stop:
                c.get(path.format(i=i % 1000)).raise_for_status()
                counts[k] += 1
                i += 1
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return sum(counts) / seconds


def migrations(c: httpx.Client, names: list[str], rounds: int) -> list[float]:
    where = {v["name"]: v["owner"] for v in c.get("/api/v1/vms").json() if v["name"] in names}
    hosts = ["host1", "host2", "host3"]
    out = []
    for k in range(rounds):
        vm = names[k % len(names)]
        to = hosts[(hosts.index(where[vm]) + 1) % 3]
        t = time.perf_counter()
        r = c.post(f"/api/v1/vms/{vm}/migrate", json={"to": to})
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 202, r.text
        tid = r.json()["id"]
        deadline = time.monotonic() + 120
        while c.get(f"/api/v1/tasks/{tid}").json()["state"] not in ("done", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"migration of {vm} did not end")
            time.sleep(0.2)
        where[vm] = to
    return out


def change_to_stream(api: dict[str, Any], samples: int) -> list[float]:
    """ms from a write to etcd to its event on the stream."""
    got: dict[str, float] = {}
    ready = threading.Event()

    def listen() -> None:
        with client(api, api["urls"][0]) as c, c.stream("GET", "/api/v1/stream", params={"kind": "vm-power"},
                                                          timeout=None) as r:
            name = ""
            for line in r.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                    if name == "hello":
                        ready.set()
                elif line.startswith("data:") and name == "event":
                    e = json.loads(line[5:])
                    got.setdefault(f"{e['vm']}:{e['kind']}", time.time())
                    if len(got) >= samples:
                        return
    th = threading.Thread(target=listen, daemon=True)
    th.start()
    ready.wait(30)
    sent: dict[str, float] = {}
    for i in range(samples):
        vm, power = f"b{i:04d}", "on" if i % 2 == 0 else "off"
        key = f"{vm}:vm-power-{power}"
        if power == "off":
            observe.call(lambda s, vm=vm: service.set_power(s, vm, "on"))  # so that "off" is a change
            time.sleep(0.05)
            got.pop(f"{vm}:vm-power-on", None)
        sent[key] = time.time()
        observe.call(lambda s, vm=vm, power=power: service.set_power(s, vm, power))
        time.sleep(0.1)
    th.join(30)
    return [(got[k] - t) * 1000 for k, t in sent.items() if k in got]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    lab = Lab(progress=lambda m: print(f"> {m}", file=sys.stderr))
    lab.up(LabConfig(hosts=3, datastores=1))
    try:
        wait_cluster_ready(3, timeout=120)
        running = ["r1", "r2", "r3"]
        create_lab_vms(running, hosts=["host1", "host2", "host3"], stagger_s=0.3)
        observe.wait_for("the running VMs", lambda: observe.running_vms_ok(running), 180)
        t = time.monotonic()
        define(args.vms)
        define_s = time.monotonic() - t
        api = api_servers.read()
        with client(api, api["urls"][0]) as c:
            assert len(c.get("/api/v1/vms").json()) == args.vms + len(running)
            latencies(c, "/api/v1/vms", 5)  # warm up
            res: dict[str, Any] = {
                "vms": args.vms, "define_s": define_s,
                "get_vms_ms": latencies(c, "/api/v1/vms", args.requests),
                "get_vm_ms": latencies(c, "/api/v1/vms/b{i:04d}", args.requests),
                "get_vms_rps": throughput(api, "/api/v1/vms", 10), "get_vm_rps": throughput(api, "/api/v1/vms/b{i:04d}", 10),
                "migrate_accept_ms": migrations(c, running, 6),
                "change_to_stream_ms": change_to_stream(api, 40),
            }
    finally:
        lab.down()
    res["load"] = [load0, os.getloadavg()[0]]
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"REST API on the lab, {args.vms} VMs defined (+3 running), {time.strftime('%Y-%m-%d %H:%M')}; "
          f"load {load0:.1f} at start / {res['load'][1]:.1f} at end; 2 cpus; defined in {define_s:.1f} s")
    print(f"{'':34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s (4 clients)':>18}  goal")
    rows = [("GET /vms", res["get_vms_ms"], res["get_vms_rps"], "p99 < 100 ms"),
            ("GET /vms/{name}", res["get_vm_ms"], res["get_vm_rps"], ""),
            ("POST /vms/{name}/migrate -> 202", res["migrate_accept_ms"], None, ""),
            ("etcd change -> stream event", res["change_to_stream_ms"], None, "< 500 ms")]
    for name, xs, rps, goal in rows:
        print(f"{name:34} {statistics.median(xs):8.1f} {pct(xs, 99):8.1f} {max(xs):8.1f} "
              f"{(f'{rps:.0f}' if rps else '-'):>18}  {goal}")
    p99 = pct(res["get_vms_ms"], 99)
    print(f"GET /vms p99 {p99:.0f} ms = {p99 / 100:.2f} x the 100 ms goal; change to stream p99 "
          f"{pct(res['change_to_stream_ms'], 99):.0f} ms = {pct(res['change_to_stream_ms'], 99) / 500:.2f} x the 500 ms goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
