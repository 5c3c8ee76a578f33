"""Restart orchestration: which restarts of a failure wave wait, and for what.

Two kinds of waits, both vSphere HA's:

- restart priority tiers: a VM restarted after a host failure waits until the VMs of
  higher tiers restarted in the same wave are ready;
- depends-on rules (``Rule.kind == "depends-on"``): the rule's VMs wait until every VM
  they depend on is ready.

"Ready" is a condition per VM, else per priority tier, else for the cluster
(``settings/orchestration``): ``allocated`` (its host chosen: the plan's own decision),
``powered-on`` (its QEMU runs there), ``guest`` (its guest heartbeat seen), ``app`` (its
application heartbeat seen: the VM status's optional ``app`` field; absent means not
seen). Then an extra delay, and a timeout after which the waiting VM starts anyway.

The default keeps what vigil did before: ready when allocated, no delay, so a whole wave
is placed in one cycle in priority order. The default timeout is 60 s, not vSphere's
600 s (sized for minutes-long boots): a vigil restart is issued 2.5-4.5 s after a power
cut and the lab guest heartbeats about 6 s after that on an idle machine (bench/failover),
14-16 s on a loaded one (tests/integration/test_orchestration_lab.py, load 8 on 2 cores);
a full distribution under KVM reaches its heartbeat agent in 10-30 s. A minute covers
those with room to spare, while a VM that never becomes ready holds those behind it for
one minute, not ten.

Only restarts from disk wait: an FT failover (the secondary's guest runs on), a new VM
placed, or a start retried do not.

A VM that waits for room (no host can run it) holds back the VMs that depend on it, but
not the lower tiers: they may fit where it does not, and holding them would not make
room for it. The controller keeps, from cycle to cycle, since when each wait began and
since when each VM has been ready (``ClusterView.holds`` and ``ready_since``); a new
leader starts both afresh, so a wait is at most one timeout longer across a leader loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from vigil.model import READY_CONDITIONS, RESTART_PRIORITIES, HostState, Rule, SpecError, VMSpec
from vigil.policy.plan_actions import Waiting
from vigil.policy.restart_order import priority_rank, restart_order
from vigil.policy.view import ClusterView, VMView

SETTING = "orchestration"  # settings/orchestration
DEFAULT_READY = "allocated"
DEFAULT_DELAY_S = 0.0
DEFAULT_TIMEOUT_S = 60.0
MAX_S = 3600.0
# an assignment made by a failure wave (Assignment.reason is the AssignVM kind)
WAVE_REASONS = ("restart", "ft-failover")

CONDITION_TEXT = {"allocated": "its host allocated", "powered-on": "powered on", "guest": "guest heartbeat seen",
                  "app": "application heartbeat seen"}


@dataclass(frozen=True)
class ReadyPolicy:
    condition: str = DEFAULT_READY
    delay_s: float = DEFAULT_DELAY_S
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class Settings:
    default: ReadyPolicy = ReadyPolicy()
    tiers: Mapping[str, ReadyPolicy] = field(default_factory=dict)  # restart priority -> its own


def _policy(raw: Mapping[str, Any], base: ReadyPolicy, where: str) -> ReadyPolicy:
    unknown = set(raw) - {"ready", "delay_s", "timeout_s"}
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    cond = raw.get("ready", base.condition)
    if cond not in READY_CONDITIONS:
        raise SpecError(f"{where}: ready must be one of {', '.join(READY_CONDITIONS)}")
    vals = []
    for k, d in (("delay_s", base.delay_s), ("timeout_s", base.timeout_s)):
        x = raw.get(k, d)
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= MAX_S:
            raise SpecError(f"{where}: {k} must be a number of seconds between 0 and {MAX_S:.0f}")
        vals.append(float(x))
    return ReadyPolicy(cond, vals[0], vals[1])


def validate_settings(raw: Mapping[str, Any]) -> Settings:
    """The ``settings/orchestration`` object read strictly (the service refuses it with the
    message): ``{"ready", "delay_s", "timeout_s", "tiers": {priority: {same fields}}}``."""
    if not isinstance(raw, Mapping):
        raise SpecError("orchestration: an object")
    base = _policy({k: v for k, v in raw.items() if k != "tiers"}, ReadyPolicy(), "orchestration")
    tiers_raw = raw.get("tiers", {}) or {}
    if not isinstance(tiers_raw, Mapping):
        raise SpecError("orchestration: tiers is an object of priority: {ready, delay_s, timeout_s}")
    tiers = {}
    for prio, t in tiers_raw.items():
        if prio not in RESTART_PRIORITIES[:-1]:
            raise SpecError(f"orchestration: no restart priority {prio!r} (one of "
                            f"{', '.join(RESTART_PRIORITIES[:-1])})")
        if not isinstance(t, Mapping):
            raise SpecError(f"orchestration: tier {prio} is an object")
        tiers[prio] = _policy(t, base, f"orchestration tier {prio}")
    return Settings(base, tiers)


def settings_to_json(s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"ready": s.default.condition, "delay_s": s.default.delay_s, "timeout_s": s.default.timeout_s}
    if s.tiers:
        out["tiers"] = {p: {"ready": t.condition, "delay_s": t.delay_s, "timeout_s": t.timeout_s}
                        for p, t in s.tiers.items()}
    return out


_UNSET = validate_settings({})  # the reading of no object, made once (Settings are frozen)


def read_settings(raw: Mapping[str, Any] | None) -> Settings:
    """The controller's reading: a stored object it cannot read counts as never set (the
    service validated it when written; defaults are the behaviour of old). No object
    (most clusters; a cycle asks twice) is read once."""
    if not raw:
        return _UNSET
    try:
        return validate_settings(raw)
    except SpecError:
        return Settings(ReadyPolicy(), {})


def policy_for(spec: VMSpec, s: Settings) -> ReadyPolicy:
    """The VM's own fields over its tier's over the cluster's."""
    base = s.tiers.get(spec.restart_priority, s.default)
    return ReadyPolicy(spec.ready or base.condition,
                       base.delay_s if spec.ready_delay_s is None else float(spec.ready_delay_s),
                       base.timeout_s if spec.ready_timeout_s is None else float(spec.ready_timeout_s))


def app_seen(status: Any) -> bool:
    """The application heartbeat, an optional field of the VM status: absent is not seen."""
    app = getattr(status, "app", None)
    return app is True or app == "ok"


def is_ready(v: VMView, condition: str, host_running: bool) -> bool:
    """Whether ``v`` meets ``condition`` as observed (its assignment's host running)."""
    a, st = v.assignment, v.status
    if a is None or not a.host or not host_running:
        return False
    if condition == "allocated":
        return True
    if st is None or st.state != "running" or st.host != a.host:
        return False
    if condition == "guest":
        return st.guest == "ok"
    if condition == "app":
        return app_seen(st)
    return True


def ready_marks(view: ClusterView, prev: Mapping[str, tuple[int, float]]) -> dict[str, tuple[int, float]]:
    """For the controller, each cycle: since when (view.now's clock) each VM has met its
    ready condition, for its current assignment generation (a host's alive lease stands
    for "running" here; the plan checks the host state itself)."""
    s = read_settings(view.settings.get(SETTING))
    out: dict[str, tuple[int, float]] = {}
    if not (s.default.delay_s > 0 or any(t.delay_s > 0 for t in s.tiers.values())
            or any(v.spec.ready_delay_s for v in view.vms.values())):
        return out  # only an extra delay needs to know since when
    for name, v in view.vms.items():
        a = v.assignment
        if a is None or v.spec.power != "on":
            continue
        h = view.hosts.get(a.host)
        if is_ready(v, policy_for(v.spec, s).condition, h is not None and h.alive):
            old = prev.get(name)
            out[name] = old if old is not None and old[0] == a.gen else (a.gen, view.now)
    return out


def dependencies(rules: Iterable[Rule]) -> dict[str, set[str]]:
    """VM -> the VMs it depends on (its depends-on rules together)."""
    deps: dict[str, set[str]] = {}
    for r in rules:
        if r.kind == "depends-on":
            for vm in r.vms:
                deps.setdefault(vm, set()).update(r.on)
    return deps


def depth(deps: Mapping[str, set[str]]) -> dict[str, int]:
    """How many dependency steps lie under each VM (0: depends on nothing); a cycle (the
    service refuses them) is cut where it closes."""
    out: dict[str, int] = {}

    def walk(vm: str, path: frozenset[str]) -> int:
        if vm in out:
            return out[vm]
        d = 1 + max((walk(p, path | {vm}) for p in deps.get(vm, ()) if p not in path), default=-1)
        out[vm] = d
        return d

    for vm in deps:
        walk(vm, frozenset())
    return out


def order(vms: Iterable[VMView], rules: Sequence[Rule]) -> list[VMView]:
    """Restart priority first, then the VMs depended on before those that depend on them,
    then by name (with no depends-on rule: restart_order's order)."""
    deps = dependencies(rules)
    if not deps:
        return restart_order(list(vms))
    d = depth(deps)
    return sorted(vms, key=lambda v: (priority_rank(v.spec.restart_priority), d.get(v.spec.name, 0), v.spec.name))


def dependency_problems(rules: Sequence[Rule], specs: Mapping[str, VMSpec]) -> list[str]:
    """Why a set of depends-on rules is refused: a cycle, or a VM depending on one of lower
    restart priority (it would wait behind the tier it outranks)."""
    deps = dependencies(rules)
    out = []
    for vm, ps in sorted(deps.items()):
        for p in sorted(ps):
            a, b = specs.get(vm), specs.get(p)
            if a and b and priority_rank(a.restart_priority) < priority_rank(b.restart_priority):
                out.append(f"{vm} ({a.restart_priority}) cannot depend on {p} of lower restart priority "
                           f"({b.restart_priority})")
    seen: set[str] = set()
    for start in sorted(deps):
        stack = [(start, [start])]
        while stack:
            vm, path = stack.pop()
            for p in sorted(deps.get(vm, ())):
                if p == start:
                    cyc = " -> ".join(path + [p])
                    if start not in seen:
                        out.append(f"dependency cycle: {cyc}")
                        seen.update(path)
                elif p not in path:
                    stack.append((p, path + [p]))
    return out


@dataclass(frozen=True)
class Held(Waiting):
    """A restart held back by orchestration; ``since``: when this wait began (the controller
    hands it back as ``ClusterView.holds``, for the timeout)."""

    since: float = 0.0


class Gate:
    """One cycle's orchestration: the plan asks ``hold`` before placing a restart and
    tells ``placed`` / ``no_room`` what became of it."""

    def __init__(self, view: ClusterView, states: Mapping[str, HostState]) -> None:
        self.view, self.states = view, states
        self.settings = read_settings(view.settings.get(SETTING))
        self.deps = dependencies(view.rules)
        self.placed_now: set[str] = set()
        self.held: set[str] = set()
        self.no_room_now: set[str] = set()
        self.active = bool(self.deps) or self._paced()
        # VMs of earlier cycles of a wave, restarted onto a running host (see _in_wave)
        self.wave = {n for n, v in view.vms.items() if self.active and v.spec.power == "on" and v.assignment
                     and v.assignment.reason in WAVE_REASONS
                     and states.get(v.assignment.host) is HostState.RUNNING}

    def _paced(self) -> bool:
        """Whether any tier waits for anything (the default does not: allocated, no delay)."""
        pols = [self.settings.default, *self.settings.tiers.values()]
        pols += [policy_for(v.spec, self.settings) for v in self.view.vms.values()
                 if v.spec.ready or v.spec.ready_delay_s is not None]
        return any(p.condition != "allocated" or p.delay_s > 0 for p in pols)

    def policy(self, vm: str) -> ReadyPolicy:
        return policy_for(self.view.vms[vm].spec, self.settings)

    def released(self, vm: str) -> bool:
        """``vm`` is ready and past its delay (so it holds nobody back)."""
        v, pol, now = self.view.vms[vm], self.policy(vm), self.view.now
        if vm in self.placed_now:
            return pol.condition == "allocated" and pol.delay_s <= 0
        if vm in self.held or vm in self.no_room_now:
            return False
        a = v.assignment
        if not is_ready(v, pol.condition, a is not None and self.states.get(a.host) is HostState.RUNNING):
            return False
        if pol.delay_s <= 0:
            return True
        mark = self.view.ready_since.get(vm)
        return mark is not None and a is not None and mark[0] == a.gen and now - mark[1] >= pol.delay_s


    def _blockers(self, v: VMView) -> list[tuple[str, str]]:
        """(VM, why) of those ``v`` waits for."""
        out = []
        for p in sorted(self.deps.get(v.spec.name, ())):
            pv = self.view.vms.get(p)
            if pv is None or pv.spec.power != "on" or pv.spec.restart_priority == "disabled":
                continue
            if not self.released(p):
                out.append((p, "depends on"))
        rank = priority_rank(v.spec.restart_priority)
        # the lower tiers wait for the VMs of higher ones restarted now or in an earlier
        # cycle of the wave, and for those held themselves
        for name in sorted(self.wave | self.placed_now | self.held):
            u = self.view.vms[name]
            if (name != v.spec.name and priority_rank(u.spec.restart_priority) < rank
                    and not self.released(name) and all(b != name for b, _ in out)):
                out.append((name, "higher priority"))
        return out

    def hold(self, v: VMView) -> tuple[Held | None, str]:
        """(a Held action, "") to wait; (None, a note for the restart's reason) to go."""
        if not self.active:
            return None, ""
        now = self.view.now
        since = self.view.holds.get(v.spec.name, now)
        waiting, timed_out = [], []
        for b, why in self._blockers(v):
            pol = self.policy(b)
            (timed_out if now - since >= pol.timeout_s else waiting).append((b, why, pol))
        if not waiting:
            note = "; ".join(f"{b} not ready after {p.timeout_s:.0f}s: timeout" for b, _, p in timed_out)
            return None, note
        self.held.add(v.spec.name)
        parts = []
        for b, why, pol in waiting:
            cond = CONDITION_TEXT[pol.condition] + (f" + {pol.delay_s:.0f}s" if pol.delay_s > 0 else "")
            parts.append(f"{b} ({why}; ready: {cond}; timeout {pol.timeout_s:.0f}s)")
        shown = parts[:3] + ([f"{len(parts) - 3} more"] if len(parts) > 3 else [])
        return Held(v.spec.name, "restart waits for " + ", ".join(shown), since=since), ""

    def placed(self, vm: str) -> None:
        self.placed_now.add(vm)

    def no_room(self, vm: str) -> None:
        self.no_room_now.add(vm)
