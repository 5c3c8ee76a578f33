"""VM and application monitoring (vSphere HA's): when to reset a guest that stopped.

A guest whose heartbeat has been silent for the failure interval *and* that did no disk
and no network I/O over that same interval is taken as hung, and reset. An application
that marked itself alive through the guest's heartbeat channel and then went silent for
the interval, while the guest's own heartbeat still comes, gets its VM reset too (I/O
does not save it: the application is gone, the guest may well be busy). No reset before the minimum uptime after a (re)start, and no
more than ``max_resets`` in any ``window_s`` (vSphere's presets, below).

A guest whose kernel panicked (QEMU's pvpanic device, QMP ``GUEST_PANICKED``; QEMU keeps
it stopped) is a failure at once: no failure interval to wait out, no minimum uptime (the
guest said so itself, nothing is left to boot), within the same reset limits. Where VM
monitoring does not watch the VM, its QEMU is ended and the host's crash restarts take it
(vigil.policy.crashes), as for any QEMU that exits.

The settings are ``settings/monitoring`` (the cluster's), over which a VM's spec may set
its own (``VMSpec.monitoring``). Everything here is pure: the agent that owns the VM
gathers the facts, counts the resets in etcd and carries the reset out.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from vigil.model import MONITORING_PRESETS, MonitoringSpec, SpecError

HOUR, DAY = 3600.0, 86400.0
FIELDS = ("interval_s", "max_resets", "window_s", "min_uptime_s")


@dataclass(frozen=True)
class MonitoringSettings:
    """The settings in force for one VM (or the cluster's, before a VM's own)."""

    preset: str = "off"
    interval_s: float = 60.0
    max_resets: int = 3  # 0: no limit
    window_s: float = DAY  # 0: no window (every reset counts, for ever)
    min_uptime_s: float = 240.0
    application: bool = True

    @property
    def enabled(self) -> bool:
        return self.preset != "off"

    def summary(self) -> str:
        if not self.enabled:
            return "off"
        limit = "no limit" if self.max_resets == 0 else (
            f"at most {self.max_resets} resets " + (f"in {span(self.window_s)}" if self.window_s else "in all"))
        app = ", application heartbeats too" if self.application else ""
        return (f"{self.preset}: reset after {self.interval_s:g}s without heartbeat nor I/O, {limit}, "
                f"not in the first {self.min_uptime_s:g}s after a start{app}")


# vSphere HA's VM monitoring sensitivities (failure interval, resets per window, minimum uptime).
PRESETS: Mapping[str, MonitoringSettings] = {
    "high": MonitoringSettings("high", 30.0, 3, HOUR, 120.0),
    "medium": MonitoringSettings("medium", 60.0, 3, DAY, 240.0),
    "low": MonitoringSettings("low", 120.0, 3, 7 * DAY, 480.0),
}
DEFAULT = MonitoringSettings()  # off, as in vSphere: an operator turns it on


def span(s: float) -> str:
    """3600 -> '1h', 604800 -> '7d': the window as people say it."""
    for unit, n in (("d", DAY), ("h", HOUR), ("min", 60.0)):
        if s >= n and s % n == 0:
            return f"{s / n:g}{unit}"
    return f"{s:g}s"


def _apply(base: MonitoringSettings, preset: str | None, values: Mapping[str, Any]) -> MonitoringSettings:
    """``preset`` (its values, or the base's for custom / none), then the explicit values."""
    s = base
    if preset is not None:
        s = replace(PRESETS.get(preset, base), preset=preset, application=base.application)
    picked = {k: values[k] for k in FIELDS if values.get(k) is not None}
    if values.get("application") is not None:
        picked["application"] = bool(values["application"])
    return replace(s, **picked)


def cluster_settings(raw: Mapping[str, Any] | None) -> MonitoringSettings:
    """The cluster's settings from the stored object (empty: the default, off). A stored
    object that does not validate counts as off (the service layer refuses such writes)."""
    try:
        return parse(raw or {})
    except SpecError:
        return DEFAULT


def parse(raw: Mapping[str, Any]) -> MonitoringSettings:
    """Validate a settings object (the cluster's) and resolve its preset; SpecError if bad."""
    unknown = set(raw) - {"preset", "application", *FIELDS}
    if unknown:
        raise SpecError(f"monitoring: unknown field(s) {', '.join(sorted(unknown))}")
    spec = MonitoringSpec(**{k: raw.get(k) for k in ("preset", "application", *FIELDS)})
    spec.validate("settings")
    preset = spec.preset or ("custom" if any(raw.get(k) is not None for k in FIELDS) else "off")
    return _apply(DEFAULT, preset, raw)


def normalized(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The object to store for a validated request: every value spelled out."""
    s = parse(raw)
    return {"preset": s.preset, "interval_s": s.interval_s, "max_resets": s.max_resets, "window_s": s.window_s,
            "min_uptime_s": s.min_uptime_s, "application": s.application}


def effective(cluster: MonitoringSettings, vm: MonitoringSpec | None) -> MonitoringSettings:
    """A VM's settings: the cluster's, over which its spec's own values win."""
    if vm is None:
        return cluster
    values = {k: getattr(vm, k) for k in (*FIELDS, "application")}
    preset = vm.preset
    if preset is None and any(values[k] is not None for k in FIELDS):
        preset = "custom"  # its own values: on, whatever the cluster's preset
    return _apply(cluster, preset, values)


# -- the decision ------------------------------------------------------------------------
@dataclass(frozen=True)
class GuestFacts:
    """One running VM, as the agent that owns it sees it at ``now``."""

    uptime_s: float  # since its QEMU started or was last reset
    hb_seen: bool  # this QEMU's guest sent a heartbeat once (a guest without one is not watched)
    hb_age_s: float  # since its last guest heartbeat (or the last reset, if later)
    app_age_s: float | None = None  # since its application heartbeat last moved; None: none runs
    io: Sequence[tuple[float, int]] = ()  # (time, disk + NIC bytes so far), oldest first
    resets: Sequence[float] = ()  # times of the resets monitoring made of it (etcd's count)
    now: float = 0.0
    panicked: bool = False  # its kernel panicked since its start or last reset (GUEST_PANICKED)


@dataclass(frozen=True)
class Reset:
    """Reset the VM (QMP ``system_reset``): ``cause`` is 'guest', 'application' or 'panic'."""

    reason: str
    cause: str


@dataclass(frozen=True)
class LimitReached:
    """It would be reset, but the resets allowed in the window are used up."""

    reason: str


@dataclass(frozen=True)
class Healthy:
    reason: str


@dataclass(frozen=True)
class EndQemu:
    """A panicked guest that VM monitoring does not watch: end its QEMU, so that the host's
    crash restarts take it (what a panic did before VM monitoring knew of panics)."""

    reason: str


Verdict = Reset | LimitReached | Healthy | EndQemu


def io_idle_for(io: Sequence[tuple[float, int]], now: float, interval_s: float) -> bool:
    """No I/O over the last ``interval_s``: a sample at least that old, and the counters
    unchanged since. Samples that do not reach back that far prove nothing (the agent just
    started watching): not idle."""
    start = now - interval_s
    base = None
    for t, total in io:
        if t <= start:
            base = total
        elif base is None:
            return False
        elif total != base:
            return False
    return base is not None and io[-1][1] == base


def resets_in_window(resets: Sequence[float], now: float, window_s: float) -> int:
    return len(resets) if window_s <= 0 else sum(1 for t in resets if now - t < window_s)


def decide(f: GuestFacts, s: MonitoringSettings) -> Verdict:
    """Reset, limit reached, or healthy (a panicked guest unwatched: end its QEMU), with
    the reason in words."""
    if not s.enabled:
        if f.panicked:
            return EndQemu("guest kernel panicked; VM monitoring off: its QEMU is ended and restarted as a crash")
        return Healthy("monitoring off")
    cause = ""
    if f.panicked:
        cause, why = "panic", "guest kernel panicked"
    elif f.uptime_s < s.min_uptime_s:
        return Healthy(f"up {f.uptime_s:.0f}s, under the minimum uptime {s.min_uptime_s:g}s")
    # the application's beats ride on the guest heartbeat: a silent channel says nothing of
    # the application, so a guest gone silent is judged as one (its I/O may save it)
    elif s.application and f.app_age_s is not None and f.app_age_s >= s.interval_s and f.hb_age_s < s.interval_s:
        cause, why = "application", f"no application heartbeat for {f.app_age_s:.0f}s"
    elif f.hb_seen and f.hb_age_s >= s.interval_s:
        if not io_idle_for(f.io, f.now, s.interval_s):
            return Healthy(f"no guest heartbeat for {f.hb_age_s:.0f}s, but disk or network I/O within "
                           f"{s.interval_s:g}s")
        cause, why = "guest", f"no guest heartbeat and no disk or network I/O for {s.interval_s:g}s"
    if not cause:
        return Healthy("heartbeating")
    done = resets_in_window(f.resets, f.now, s.window_s)
    if s.max_resets and done >= s.max_resets:
        within = f"in {span(s.window_s)}" if s.window_s else "in all"
        return LimitReached(f"{why}; not reset: {done} reset{'s' if done != 1 else ''} {within} already "
                            f"(at most {s.max_resets})")
    return Reset(f"{why} ({s.preset}: reset {done + 1} of {s.max_resets or 'unlimited'}"
                 + (f" in {span(s.window_s)})" if s.window_s and s.max_resets else ")"), cause)


__all__ = ["MonitoringSettings", "PRESETS", "MONITORING_PRESETS", "GuestFacts", "Reset", "LimitReached", "Healthy",
           "EndQemu",
           "decide", "effective", "cluster_settings", "parse", "normalized", "io_idle_for", "resets_in_window"]
