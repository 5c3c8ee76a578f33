"""Guest-to-guest throughput and latency on the lab's VM network.

Two lab guests, ``va`` on host1 and ``vb`` on host2, each with a NIC on the VM network
(host bridge -> lab VM bridge -> other host's bridge). Inside the guests (busybox, driven
through the guest's opt-in shell port, ``vigil.shell=`` in vigil/hypervisor/guest/init):

- throughput: ``dd if=/dev/zero | nc PEER PORT`` into a ``nc -l -e`` sink on the peer that
  counts the bytes and times them (/proc/uptime, 10 ms steps), both directions, median
  of ``--runs``;
- latency: ``ping`` from inside one guest to the other, both directions (round-trip
  min/avg/max as busybox ping prints them).

Run as root, no lab up, inside the lab queue lock:
``flock /run/vigil-lab-queue.lock .venv/bin/python bench/vmnet.py [--mib 32] [--runs 3] [--json]``
(about 2 minutes). ``--compare BEFORE.json AFTER.json`` prints the after/before ratios of
two saved runs without a lab.

The guests run under whatever accelerator the lab found (TCG here): their vCPUs, not the
network path, may bound the figures; the path's cost shows in the difference between runs.

Measured here (2026-12-01, TCG, 2 cores shared with other work, 128-256 MiB guests, 32 MiB
streams x 3, 30 pings; load average 3.3-8.7 during the runs):

    direction   MiB/s before  after  ratio   ping avg before  after  ratio
    va->vb               2.5    3.5  1.43x           4.83 ms  2.45 ms  0.51x
    vb->va               1.1    3.2  2.88x           3.81 ms  2.45 ms  0.64x

Before: each frame crossed the agent (QEMU's ``-netdev stream`` socket, Python, a tap);
after: the NIC is a tap on the host's bridge (no vhost-net: TCG, and no /dev/vhost-net
here). Worst ping before 15-18 ms, after 4-6 ms. The TCG guests' own copying bounds the
streams now (busybox dd | nc at one vCPU).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

from vigil import service
from vigil.lab import observe
from vigil.lab.guestshell import guest_sh as _sh
from vigil.lab.guestshell import with_shell
from vigil.lab.lab import Lab, LabConfig
from vigil.lab.net import vm_address
from vigil.lab.scenario import lab_vm_spec, wait_cluster_ready

MiB = 1 << 20
SINK_PORT = 5001
GUESTS = {"va": ("host1", 21), "vb": ("host2", 22)}
SINK = ("#!/bin/sh\nread a _ </proc/uptime; n=$(wc -c); read b _ </proc/uptime; "
        "echo \"$n $a $b\" >/tmp/sink.out\n")
PING_RE = re.compile(r"round-trip min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms")
LOSS_RE = re.compile(r"(\d+) packets transmitted, (\d+) packets received")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ip_of(vm: str) -> str:
    return vm_address(GUESTS[vm][1]).split("/")[0]


def guest_sh(vm: str, script: str, timeout: float = 120.0) -> str:
    return _sh(ip_of(vm), script, timeout=timeout)


def throughput(src: str, dst: str, mib: int) -> float:
    """Bytes/s of one TCP stream from guest ``src`` to guest ``dst``."""
    guest_sh(dst, f"rm -f /tmp/sink.out; printf '%s' '{SINK}' >/tmp/sink; chmod +x /tmp/sink; "
                  f"(nc -l -p {SINK_PORT} -e /tmp/sink </dev/null >/dev/null 2>&1 &)")
    time.sleep(0.5)
    guest_sh(src, f"dd if=/dev/zero bs=65536 count={mib * 16} 2>/dev/null | nc {ip_of(dst)} {SINK_PORT}",
             timeout=600)
    for _ in range(100):
        out = guest_sh(dst, "cat /tmp/sink.out 2>/dev/null").split()
        if len(out) == 3:
            n, a, b = int(out[0]), float(out[1]), float(out[2])
            if n != mib * MiB:
                raise RuntimeError(f"{dst} received {n} bytes of {mib * MiB}")
            return n / max(b - a, 0.01)
        time.sleep(0.2)
    raise RuntimeError(f"{dst}: no sink result")


def ping(src: str, dst: str, count: int) -> dict:
    out = guest_sh(src, f"ping -c {count} -i 0.2 {ip_of(dst)}", timeout=count + 60)
    m, loss = PING_RE.search(out), LOSS_RE.search(out)
    if not m or not loss:
        raise RuntimeError(f"ping {src} -> {dst}: {out[-300:]!r}")
    return {"min_ms": float(m.group(1)), "avg_ms": float(m.group(2)), "max_ms": float(m.group(3)),
            "sent": int(loss.group(1)), "received": int(loss.group(2))}


def measure(mib: int, runs: int, pings: int) -> dict:
    out: dict = {"mib": mib, "runs": runs, "load_before": os.getloadavg()[0]}
    for src, dst in (("va", "vb"), ("vb", "va")):
        d = f"{src}->{dst}"
        ping(src, dst, 3)  # ARP, caches
        rates = []
        for i in range(runs):
            rates.append(throughput(src, dst, mib))
            log(f"  {d}: {rates[-1] / MiB:.1f} MiB/s")
        p = ping(src, dst, pings)
        log(f"  {d}: ping avg {p['avg_ms']} ms (min {p['min_ms']}, max {p['max_ms']}), "
            f"{p['received']}/{p['sent']}")
        out[d] = {"mib_s": [r / MiB for r in rates], "mib_s_median": statistics.median(rates) / MiB, "ping": p}
    out["load_after"] = os.getloadavg()[0]
    return out


def run_lab(args: argparse.Namespace) -> dict:
    lab = Lab(progress=log)
    lab.up(LabConfig(hosts=2, datastores=1, memory_mb=1024, reboot_delay_s=60.0))
    try:
        wait_cluster_ready(2, timeout=120)
        for vm, (host, n) in GUESTS.items():
            spec = with_shell(lab_vm_spec(vm, ip=vm_address(n), memory_mb=256))
            observe.call(lambda s: service.create_vm(s, spec, host))
        observe.wait_for("guests running", lambda: observe.running_vms_ok(list(GUESTS)), 180)
        for vm in GUESTS:
            guest_sh(vm, "true")
        time.sleep(3)
        res = measure(args.mib, args.runs, args.pings)
        res["label"] = args.label
        return res
    finally:
        lab.down()


def table(res: dict) -> str:
    lines = [f"guest-to-guest on the lab VM network ({res.get('label') or 'this tree'}), "
             f"{res['mib']} MiB streams x {res['runs']}, load {res['load_before']:.1f} -> {res['load_after']:.1f}",
             f"{'direction':<12}{'MiB/s (median)':>16}{'runs':>24}{'ping avg/min/max ms':>26}"]
    for d in ("va->vb", "vb->va"):
        r = res[d]
        p = r["ping"]
        runs = " ".join(f"{x:.1f}" for x in r["mib_s"])
        rtt = f"{p['avg_ms']:.2f}/{p['min_ms']:.2f}/{p['max_ms']:.2f}"
        lines.append(f"{d:<12}{r['mib_s_median']:>16.1f}{runs:>24}{rtt:>26}")
    return "\n".join(lines)


def compare(before: dict, after: dict) -> str:
    lines = [f"{'direction':<12}{'MiB/s before':>14}{'after':>9}{'ratio':>8}"
             f"{'ping avg before':>17}{'after':>9}{'ratio':>8}"]
    for d in ("va->vb", "vb->va"):
        b, a = before[d], after[d]
        lines.append(f"{d:<12}{b['mib_s_median']:>14.1f}{a['mib_s_median']:>9.1f}"
                     f"{a['mib_s_median'] / b['mib_s_median']:>7.2f}x"
                     f"{b['ping']['avg_ms']:>14.2f} ms{a['ping']['avg_ms']:>6.2f} ms"
                     f"{a['ping']['avg_ms'] / b['ping']['avg_ms']:>7.2f}x")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=32, help="MiB per stream")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pings", type=int, default=30)
    ap.add_argument("--label", default="")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="two saved --json runs")
    args = ap.parse_args()
    if args.compare:
        before, after = (json.load(open(p)) for p in args.compare)
        print(table(before) + "\n\n" + table(after) + "\n\nafter/before\n" + compare(before, after))
        return 0
    res = run_lab(args)
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
