"""DRS, one round as a pure function: the cluster view and what the controller remembers
in, recommended live migrations and the reason out.

A round first fixes what a broken rule demands (mandatory, at every threshold), then, when
the imbalance (vigil.policy.drs_load) has stayed above what the threshold tolerates for
``hold_rounds`` rounds, picks moves greedily: each the one that lowers the imbalance most,
worth its memory copy, keeping room, rules and maintenance mode, until the imbalance is
tolerated less the threshold's margin (a hysteresis band: once balanced, noise must push the
imbalance up by the margin before anything moves again), or ``max_moves`` are in flight. A VM moved within
``cooldown_s`` is not moved again (no ping-pong); FT VMs are never migrated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from vigil.model import HostState
from vigil.policy.commitments import commitments
from vigil.policy.drs_load import Balance, Demand, demand, measured
from vigil.policy.drs_rules import broken_rules, host_rule_conflict, unmovable
from vigil.policy.drs_settings import DrsSettings
from vigil.policy.hoststate import classify_host
from vigil.policy.placement import Load, fits, rule_conflict
from vigil.policy.view import ClusterView

# How many of the most loaded hosts give, and of the least loaded take, per step: a
# greedy step looks at these pairs only (a round on 500 hosts stays well under a second).
SOURCES, TARGETS = 3, 4
# A disk kept on two datastores (its quorum reopened on the destination) costs this much more.
REPLICATED_COST = 1.5
TASK_REASON = "drs"  # the reason field of the migration tasks DRS starts


@dataclass(frozen=True)
class Move:
    vm: str
    src: str
    dst: str
    mandatory: bool
    reason: str
    imbalance_after: float  # the cluster's imbalance once this move and the ones before it are made
    memory_mb: int  # to copy

    @property
    def id(self) -> str:
        return f"{self.vm}:{self.src}:{self.dst}"


@dataclass(frozen=True)
class Memory:
    """What the controller carries from one round to the next."""

    rounds_over: int = 0  # consecutive rounds the imbalance was above the tolerated one


@dataclass(frozen=True)
class Round:
    moves: tuple[Move, ...]
    reason: str
    imbalance: float
    imbalance_after: float
    memory: Memory
    tolerated: float
    held: Mapping[str, str] = field(default_factory=dict)  # VM -> why DRS leaves it where it is


class _Planner:
    """One round's working state: room (spec) and demand (measured) per host."""

    def __init__(self, view: ClusterView, settings: DrsSettings, recent: Mapping[str, float]) -> None:
        self.view, self.settings = view, settings
        states = {n: classify_host(h, view.timing)[0] for n, h in view.hosts.items()}
        self.running = {n: h.info for n, h in view.hosts.items()
                        if states[n] is HostState.RUNNING and h.info is not None and not h.maintenance}
        self.load, self.where = commitments(view, states)
        self.seen = measured(view.loads)
        self.dem: dict[str, Demand] = {}
        per_host: dict[str, Demand] = {}
        moving = {t.vm for t in view.tasks}
        self.held: dict[str, str] = {}
        self.movable: dict[str, list[str]] = {h: [] for h in self.running}
        for name, v in view.vms.items():  # one pass: 20 000 VMs on a big cluster
            h = self.where.get(name)
            if v.spec.power != "on" or h not in self.running:
                continue
            d = self.seen.get(name)
            self.dem[name] = d = d if d is not None else demand(v.spec, self.seen)
            ph = per_host.get(h)
            per_host[h] = d if ph is None else Demand(ph.cpu + d.cpu, ph.memory_mb + d.memory_mb)
            why = unmovable(v, view, moving)
            if why is not None:
                self.held[name] = why
            else:
                self.movable[h].append(name)  # type: ignore[index]
        self.balance = Balance(self.running, per_host)
        self.cooling = {vm for vm, age in recent.items() if age < settings.cooldown_s}
        self.moved: set[str] = set()
        # per movable VM not cooling down, once a step looks at its host: (name, CPU, memory,
        # the least spread gain its copy asks)
        self._weighed: dict[str, tuple[str, float, float, float]] = {}

    def allowed(self, vm: str, dst: str) -> str | None:
        """None when ``vm`` may go to ``dst`` now, else why not."""
        spec = self.view.vms[vm].spec
        if dst == self.where.get(vm):
            return "already there"
        why = fits(spec, self.running[dst], self.load.get(dst, Load()))
        if why:
            return why
        # (rule_conflict never looks at the VM's own entry)
        return rule_conflict(vm, dst, self.view.rules, self.where) or host_rule_conflict(self.view, vm, dst)

    def weighed(self, vm: str) -> tuple[str, float, float, float]:
        w = self._weighed.get(vm)
        if w is None:
            d = self.dem[vm]
            w = self._weighed[vm] = (vm, d.cpu, d.memory_mb, self.settings.gain_per_gib * self.cost_gib(vm))
        return w

    def cost_gib(self, vm: str) -> float:
        spec = self.view.vms[vm].spec
        return spec.memory_mb / 1024.0 * (REPLICATED_COST if spec.replicated else 1.0)

    def make(self, vm: str, dst: str, mandatory: bool, why: str) -> Move:
        src, spec = self.where[vm], self.view.vms[vm].spec
        self.balance.move(src, dst, self.dem[vm])
        self.load[src] = Load(self.load[src].memory_mb - spec.memory_mb, self.load[src].vcpus - spec.vcpus)
        self.load[dst] = self.load.get(dst, Load()).plus(spec)
        self.where[vm] = dst
        self.movable[src].remove(vm)
        self.moved.add(vm)
        return Move(vm, src, dst, mandatory, why, round(self.balance.imbalance(), 4), spec.memory_mb)

    def mandatory(self) -> tuple[list[Move], list[str]]:
        """Moves that mend broken rules, and what could not be mended."""
        out: list[Move] = []
        stuck: list[str] = []
        for name, host in sorted(self.where.items()):
            if host in self.running and (why := host_rule_conflict(self.view, name, host)):
                self._fix(name, sorted(self.running), f"{why} forbids {host}", out, stuck)
        for rule, extra in broken_rules(self.view.rules, self.where):
            for vm in extra:
                if vm not in self.dem:
                    continue
                if rule.kind == "affinity":
                    group = [self.where[o] for o in rule.vms if o != vm and o in self.where]
                    targets = [max(sorted(set(group)), key=group.count)]
                else:
                    targets = sorted(self.running)
                self._fix(vm, targets, f"{rule.kind} rule {rule.name} broken", out, stuck)
        return out, stuck

    def _fix(self, vm: str, targets: list[str], why: str, out: list[Move], stuck: list[str]) -> None:
        if vm not in self.movable.get(self.where.get(vm, ""), []):
            stuck.append(f"{vm}: {why}, but {self.held.get(vm, 'it cannot move now')}")
            return
        src = self.where[vm]
        fit = [(self.balance.after(src, t, self.dem[vm]), t) for t in targets
               if t in self.running and self.allowed(vm, t) is None]
        if not fit:
            stuck.append(f"{vm}: {why}, and no host can take it")
            return
        after, dst = min(fit)
        out.append(self.make(vm, dst, True, f"mandatory: {why}; {dst} keeps the rules"))

    def best_step(self) -> tuple[float, str, str] | None:
        """The load move that lowers the imbalance most, worth its copy: (after, vm, dst),
        from one of the most loaded hosts to one of the least loaded."""
        b = self.balance
        order = sorted(b.scores, key=lambda h: (b.scores[h], h))
        best: tuple[float, str, str] | None = None
        for src in reversed(order[-SOURCES:]):
            vms = [self.weighed(vm) for vm in self.movable[src] if vm not in self.cooling]
            dsts = [d for d in order[:TARGETS] if d != src and b.scores[d] < b.scores[src]]
            if not vms or not dsts:
                continue
            step = b.best_move(src, dsts, vms, lambda vm, dst: self.allowed(vm, dst) is None)
            if step is not None and (best is None or step < best):
                best = step
        return best


def drs_round(view: ClusterView, settings: DrsSettings, memory: Memory = Memory(),
              recent: Mapping[str, float] | None = None) -> Round:
    """One DRS round. ``recent``: seconds since each VM last moved (its cool-down)."""
    p = _Planner(view, settings, recent or {})
    before = p.balance.imbalance()
    tol = settings.tolerated(len(p.running))
    in_flight = sum(1 for t in view.tasks if t.kind == "migrate" and t.reason == TASK_REASON)
    budget = settings.max_moves - in_flight

    def done(moves: list[Move], why: str, mem: Memory) -> Round:
        return Round(tuple(moves), why, round(before, 4), round(p.balance.imbalance(), 4), mem, tol, p.held)

    if budget <= 0:
        return done([], f"{in_flight} DRS migrations in flight (at most {settings.max_moves})", memory)
    fixes, stuck = p.mandatory()
    fixes = fixes[:budget]
    budget -= len(fixes)
    notes = [f"{len(fixes)} mandatory move(s)"] if fixes else []
    notes += [f"cannot mend {s}" for s in stuck]
    now = p.balance.imbalance()
    if not settings.balances:
        return done(fixes, "; ".join(notes + [f"imbalance {now:.3f}; threshold 1: mandatory moves only"]), Memory())
    if now <= tol:
        return done(fixes, "; ".join(notes + [f"imbalance {now:.3f} within {tol:.3f}: balanced"]), Memory())
    over = Memory(memory.rounds_over + 1)
    if over.rounds_over < settings.hold_rounds:
        return done(fixes, "; ".join(notes + [f"imbalance {now:.3f} above {tol:.3f} for {over.rounds_over} of "
                                              f"{settings.hold_rounds} rounds: waiting"]), over)
    if budget <= 0:
        return done(fixes, "; ".join(notes + ["no room for more moves in flight"]), over)
    start = now
    aim = tol * (1.0 - settings.margin)
    moves: list[Move] = []
    while len(moves) < budget and p.balance.imbalance() > aim:
        step = p.best_step()
        if step is None:
            break
        after, vm, dst = step
        src = p.where[vm]
        s, t = p.balance.scores[src], p.balance.scores[dst]
        moves.append(p.make(vm, dst, False, f"balance: imbalance {p.balance.imbalance():.3f} -> {after:.3f} "
                                            f"({src} {s:.0%} loaded, {dst} {t:.0%})"))
    if not moves:
        return done(fixes, "; ".join(notes + [f"imbalance {now:.3f} above {tol:.3f}, but no move lowers it "
                                              "enough to be worth its memory copy"]), over)
    notes.append(f"{len(moves)} load move(s): imbalance {start:.3f} -> {p.balance.imbalance():.3f} "
                 f"(tolerated {tol:.3f}, aiming at {aim:.3f})")
    return done(fixes + moves, "; ".join(notes), over)
