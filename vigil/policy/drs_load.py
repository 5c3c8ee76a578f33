"""The DRS load model: what each VM demands (measured CPU and memory, or its spec when
nothing was measured yet), what each host can give, and the imbalance as one number.

A host's load is the mean of its CPU and memory utilisation (demand over capacity). The
imbalance is Proxmox's: the coefficient of variation of the hosts' loads divided by
sqrt(N-1), which puts it between 0 (every host equally loaded) and 1 (all the load on
one host), whatever the cluster's size.

The room a VM needs (admission, ``placement.fits``) stays its spec; the demand here only
says where it is best placed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from vigil.model import HostInfo, VMSpec

# The CPU a VM is taken to use before anything was measured, per vCPU (cores).
UNMEASURED_CPU = 0.5


@dataclass(frozen=True)
class Demand:
    cpu: float = 0.0  # cores in use
    memory_mb: float = 0.0  # memory actually used

    def plus(self, d: "Demand") -> "Demand":
        return Demand(self.cpu + d.cpu, self.memory_mb + d.memory_mb)

    def minus(self, d: "Demand") -> "Demand":
        return Demand(self.cpu - d.cpu, self.memory_mb - d.memory_mb)


def measured(loads: Mapping[str, Mapping[str, Any]]) -> dict[str, Demand]:
    """Per VM, its smoothed demand from the hosts' ``load/<host>`` records (the newest
    record wins when a VM just moved and two hosts name it)."""
    out: dict[str, tuple[float, Demand]] = {}
    for rec in loads.values():
        t = float(rec.get("time", 0.0) or 0.0)
        for vm, v in (rec.get("vms") or {}).items():
            try:
                d = Demand(float(v.get("cpu", 0.0)), float(v.get("memory_mb", 0.0)))
            except (TypeError, ValueError, AttributeError):
                continue
            if vm not in out or out[vm][0] <= t:
                out[vm] = (t, d)
    return {vm: d for vm, (_, d) in out.items()}


def demand(spec: VMSpec, seen: Mapping[str, Demand]) -> Demand:
    """A VM's demand: as measured, else what its spec suggests."""
    d = seen.get(spec.name)
    return d if d is not None else Demand(spec.vcpus * UNMEASURED_CPU, float(spec.memory_mb))


def score(d: Demand, info: HostInfo) -> float:
    """A host's load: the mean of its CPU and memory utilisation (0 idle, 1 full)."""
    return (d.cpu / max(info.cpus, 1) + d.memory_mb / max(info.memory_mb, 1)) / 2.0


def imbalance_of(scores: Iterable[float]) -> float:
    """Coefficient of variation / sqrt(N-1), in 0..1."""
    xs = list(scores)
    n = len(xs)
    if n < 2:
        return 0.0
    mean = sum(xs) / n
    if mean <= 0:
        return 0.0
    var = max(0.0, sum(x * x for x in xs) / n - mean * mean)
    return min(1.0, math.sqrt(var) / mean / math.sqrt(n - 1))


class Balance:
    """The hosts' loads with their sum and sum of squares, so that the imbalance after a
    move is found in constant time (500 hosts, 20 000 VMs: a round weighs many moves)."""

    def __init__(self, infos: Mapping[str, HostInfo], per_host: Mapping[str, Demand]) -> None:
        self.infos = dict(infos)
        self.demand = {h: per_host.get(h, Demand()) for h in self.infos}
        self.scores = {h: score(self.demand[h], i) for h, i in self.infos.items()}
        self.n = len(self.scores)
        self.total = sum(self.scores.values())
        self.squares = sum(x * x for x in self.scores.values())

    def _imbalance(self, total: float, squares: float) -> float:
        if self.n < 2 or total <= 0:
            return 0.0
        mean = total / self.n
        var = max(0.0, squares / self.n - mean * mean)
        return min(1.0, math.sqrt(var) / mean / math.sqrt(self.n - 1))

    def imbalance(self) -> float:
        return self._imbalance(self.total, self.squares)

    def _moved(self, src: str, dst: str, d: Demand) -> tuple[float, float, float, float]:
        s_new = score(self.demand[src].minus(d), self.infos[src])
        t_new = score(self.demand[dst].plus(d), self.infos[dst])
        s_old, t_old = self.scores[src], self.scores[dst]
        total = self.total - s_old - t_old + s_new + t_new
        squares = self.squares - s_old * s_old - t_old * t_old + s_new * s_new + t_new * t_new
        return s_new, t_new, total, squares

    def after(self, src: str, dst: str, d: Demand) -> float:
        """The imbalance if a VM demanding ``d`` moved from ``src`` to ``dst``."""
        _, _, total, squares = self._moved(src, dst, d)
        return self._imbalance(total, squares)

    def spread_gain(self, src: str, dst: str, d: Demand) -> float:
        """How much the move lowers the hosts' summed squared deviation from their mean
        load: what one move brings in host-load units, whatever the cluster's size."""
        _, _, total, squares = self._moved(src, dst, d)
        return (self.squares - self.total ** 2 / self.n) - (squares - total ** 2 / self.n)

    def best_move(self, src: str, dsts: list[str], vms: list[tuple[str, float, float, float]],
                  allowed: Callable[[str, str], bool]) -> tuple[float, str, str] | None:
        """The move of one of ``vms`` (name, CPU, memory, least spread gain it must bring)
        from ``src`` to one of ``dsts`` that leaves the lowest imbalance, among those
        ``allowed``: (imbalance after, vm, dst). The arithmetic of ``after`` and
        ``spread_gain`` inlined: a round on a big cluster weighs many thousand moves."""
        n, total, squares = self.n, self.total, self.squares
        if n < 2 or total <= 0:
            return None
        cur_spread = squares - total * total / n
        cur_mean = total / n
        cur_cv2 = (squares / n - cur_mean * cur_mean) / (cur_mean * cur_mean)
        si = self.infos[src]
        s_old, s_cpu, s_mem = self.scores[src], max(si.cpus, 1), max(si.memory_mb, 1)
        best: tuple[float, int, str, str] | None = None
        for dst in dsts:
            ti = self.infos[dst]
            t_old, t_cpu, t_mem = self.scores[dst], max(ti.cpus, 1), max(ti.memory_mb, 1)
            base_t = total - s_old - t_old
            base_q = squares - s_old * s_old - t_old * t_old
            for vm, cpu, mem, need in vms:
                s_new = s_old - (cpu / s_cpu + mem / s_mem) / 2.0
                t_new = t_old + (cpu / t_cpu + mem / t_mem) / 2.0
                tot = base_t + s_new + t_new
                sq = base_q + s_new * s_new + t_new * t_new
                if tot <= 0 or cur_spread - (sq - tot * tot / n) < need:
                    continue
                mean = tot / n
                cv2 = (sq / n - mean * mean) / (mean * mean)
                if cv2 >= cur_cv2 - 1e-12:
                    continue
                if best is not None and (cv2, mem, vm, dst) >= best[:1] + (best[1], best[2], best[3]):
                    continue
                if allowed(vm, dst):
                    best = (cv2, int(mem), vm, dst)
        if best is None:
            return None
        imb = min(1.0, math.sqrt(max(best[0], 0.0)) / math.sqrt(n - 1))
        return imb, best[2], best[3]

    def move(self, src: str, dst: str, d: Demand) -> None:
        s_new, t_new, self.total, self.squares = self._moved(src, dst, d)
        self.demand[src] = self.demand[src].minus(d)
        self.demand[dst] = self.demand[dst].plus(d)
        self.scores[src], self.scores[dst] = s_new, t_new


class Preference:
    """Initial placement on the DRS load model (power-on, create, HA restart): among the
    hosts with room, the one least loaded once the VM is on it, so that it lands where
    the next round does not move it. ``add`` counts a VM placed in this same cycle."""

    def __init__(self, infos: Mapping[str, HostInfo], per_host: Mapping[str, Demand],
                 seen: Mapping[str, Demand]) -> None:
        self.infos, self.seen = infos, seen
        self.per_host = dict(per_host)

    def __call__(self, host: str, spec: VMSpec) -> float:
        info = self.infos.get(host)
        if info is None:
            return math.inf
        return score(self.per_host.get(host, Demand()).plus(demand(spec, self.seen)), info)

    def add(self, host: str, spec: VMSpec) -> None:
        self.per_host[host] = self.per_host.get(host, Demand()).plus(demand(spec, self.seen))
