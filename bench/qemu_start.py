"""QEMU's own start on this machine (no lab): the part of a failover's "restart issued ->
QEMU started" that is QEMU's, with the start boost (vigil.hypervisor.start_boost) on and off.

Rounds of ``--parallel`` starts at once (a failed host's VMs restart side by side), the
two settings taking turns so that both see the same load: the median start (spawn ->
QEMU up), the median of its first process's part (spawn -> pidfile), and, per start, where
the time went (vigil.hypervisor.start_timing: per QEMU thread, CPU time run and time
waited for a CPU). The lab guest image, TCG or KVM as the machine allows; every QEMU is
killed by pid after its round. The figures move with the machine's load: it is printed.

Run as root: `.venv/bin/python bench/qemu_start.py` (about a minute; --verbose for each start).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

from vigil.hypervisor import qemu as Q
from vigil.hypervisor import start_boost, start_timing
from vigil.hypervisor.guest_image import build_guest_image
from vigil.lab.standalone import Standalone, probe_accel, standalone, unavailable


async def one_round(rig: Standalone, tag: str, parallel: int) -> list[tuple[float, dict[str, object]]]:
    async def one(i: int) -> tuple[float, dict[str, object]]:
        spec = rig.spec(name=f"{tag}-{i}", disk=f"{tag}-{i}/disk0.qcow2", extra="")
        paths = rig.paths(spec.name)
        paths.dir.mkdir(parents=True, exist_ok=True)
        await Q.ensure_disks(spec, rig.ds)  # made beforehand: a restart finds its disk there
        timing: dict[str, object] = {}
        t = time.monotonic()
        await rig.start_pid(spec, paths, timing=timing)
        return time.monotonic() - t, timing

    try:
        return await asyncio.gather(*(one(i) for i in range(parallel)))
    finally:
        await asyncio.sleep(0.5)  # their guests begin to boot, as after a failover
        rig.kill()


async def run(rounds: int, parallel: int, boost: int, verbose: bool) -> int:
    image = build_guest_image(progress=lambda m: None)
    settings = {f"boost nice {boost}": boost, "no boost": 0}
    starts: dict[str, list[float]] = {k: [] for k in settings}
    firsts: dict[str, list[float]] = {k: [] for k in settings}
    loads = []
    async with standalone(image, probe_accel(image), prefix="vigil-qemu-start-") as rig:
        for r in range(rounds):
            for name, nice in settings.items():
                start_boost.START_NICE = nice
                for wall, timing in await one_round(rig, f"r{r}{'b' if nice else 'n'}", parallel):
                    starts[name].append(wall)
                    if isinstance(timing.get("pidfile"), float):
                        firsts[name].append(timing["pidfile"])  # type: ignore[arg-type]
                    if verbose:
                        print(f"{name}: {wall:.3f}s: {start_timing.describe(timing)}", file=sys.stderr)
                loads.append(os.getloadavg()[0])
    print(f"QEMU start, {rounds} rounds of {parallel} at once, load average (1 min) "
          f"{min(loads):.1f}-{max(loads):.1f}:")
    for name in settings:
        print(f"  {name:<14} start median {statistics.median(starts[name]):.3f}s"
              f"  (spawn -> pidfile {statistics.median(firsts[name]):.3f}s)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=3, help="starts at once (default 3, the failover bench's VMs)")
    ap.add_argument("--boost", type=int, default=start_boost.START_NICE, help="the boost's nice (default %(default)s)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if (why := unavailable()) is not None:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    return asyncio.run(run(args.rounds, args.parallel, args.boost, args.verbose))


if __name__ == "__main__":
    sys.exit(main())
