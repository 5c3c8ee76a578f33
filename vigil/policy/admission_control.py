"""Admission control: how much room a cluster keeps free so that its VMs can be restarted
after host failures, and whether a user's action (power on, create, resize, FT on,
maintenance) keeps that room. HA restarts are never subject to it (vSphere's rule: once a
host failed, restarting its VMs is the point of the reserve).

One policy per cluster, the ``settings/admission`` object:

- ``slots``: host failures to tolerate, counted in slots. A slot is the largest memory and
  the largest vCPU count of any powered-on VM (or the configured override); a host holds
  as many slots as both fit; the ``failures`` hosts with the most slots are held back.
  (vSphere's CPU slot is in MHz, 32 by default; vigil counts vCPUs, as placement does.)
- ``percentage``: that share of the cluster's memory and vCPUs stays free; by default each
  derived from ``failures`` (the largest hosts' share), else as configured.
- ``failover-hosts``: the named hosts carry nothing in normal operation; HA restarts try
  them first. The other hosts must hold every powered-on VM.
- ``off`` (the default: a cluster that never set a policy admits as before).

Everything here is pure: the service passes a ``ClusterView`` and the change it is asked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from vigil.model import HostState, SpecError, VMSpec
from vigil.policy.placement import VCPU_OVERCOMMIT, Load
from vigil.policy.view import ClusterView

SETTING = "admission"  # the settings/<name> key
POLICIES = ("off", "slots", "percentage", "failover-hosts")
# a cluster without a powered-on VM still has a slot size: the smallest VM a user creates
# by default (VMSpec's default memory, one vCPU)
EMPTY_SLOT = (128, 1)


@dataclass(frozen=True)
class AdmissionSetting:
    policy: str = "off"
    failures: int = 1  # host failures to tolerate (slots; percentage when not given)
    cpu_percent: int | None = None  # percentage: reserved share of vCPUs (None: from failures)
    memory_percent: int | None = None  # percentage: reserved share of memory (None: from failures)
    hosts: tuple[str, ...] = ()  # failover-hosts: the dedicated failover hosts
    slot_memory_mb: int | None = None  # slots: override of the slot's memory
    slot_vcpus: int | None = None  # slots: override of the slot's vCPUs

    def validate(self, known_hosts: frozenset[str] | None = None) -> None:
        """Refuse a setting that cannot mean anything (SpecError, with what to change)."""
        if self.policy not in POLICIES:
            raise SpecError(f"admission policy must be one of {', '.join(POLICIES)} (got {self.policy!r})")
        if not isinstance(self.failures, int) or not 0 <= self.failures <= 64:
            raise SpecError(f"failures to tolerate must be between 0 and 64 (got {self.failures})")
        for what, pct in (("cpu", self.cpu_percent), ("memory", self.memory_percent)):
            if pct is not None and (not isinstance(pct, int) or not 0 <= pct <= 100):
                raise SpecError(f"{what} percentage must be between 0 and 100 (got {pct})")
        for what, v in (("slot memory", self.slot_memory_mb), ("slot vCPUs", self.slot_vcpus)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise SpecError(f"{what} must be a positive whole number (got {v})")
        if self.policy == "failover-hosts":
            if not self.hosts:
                raise SpecError("the failover-hosts policy needs at least one host (--hosts a,b)")
            if len(set(self.hosts)) != len(self.hosts):
                raise SpecError("a failover host is named twice")
            unknown = sorted(set(self.hosts) - known_hosts) if known_hosts is not None else []
            if unknown:
                raise SpecError(f"unknown failover host {', '.join(unknown)} "
                                f"(known: {', '.join(sorted(known_hosts or ())) or 'none'})")
            if known_hosts is not None and not known_hosts - set(self.hosts):
                raise SpecError("every host would be a failover host: nothing could run")
        elif self.hosts:
            raise SpecError("failover hosts are only for the failover-hosts policy")

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "failures": self.failures, "cpu_percent": self.cpu_percent,
                "memory_percent": self.memory_percent, "hosts": list(self.hosts),
                "slot_memory_mb": self.slot_memory_mb, "slot_vcpus": self.slot_vcpus}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "AdmissionSetting":
        """The stored object as a setting (SpecError on an unknown field or a wrong type)."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise SpecError(f"unknown admission field {', '.join(unknown)}")
        hosts = d.get("hosts") or ()
        if isinstance(hosts, str) or not all(isinstance(h, str) for h in hosts):
            raise SpecError("hosts must be a list of host names")
        return cls(policy=d.get("policy", "off"), failures=d.get("failures", 1), cpu_percent=d.get("cpu_percent"),
                   memory_percent=d.get("memory_percent"), hosts=tuple(hosts),
                   slot_memory_mb=d.get("slot_memory_mb"), slot_vcpus=d.get("slot_vcpus"))


def admission_setting(settings: Mapping[str, Mapping[str, Any]] | None) -> AdmissionSetting:
    """The cluster's setting as the controller reads it: one that does not parse is off
    (the service refused it on the way in; a hand-written key must not stop a loop)."""
    raw = (settings or {}).get(SETTING)
    if not raw:
        return AdmissionSetting()
    try:
        s = AdmissionSetting.from_json(raw)
        s.validate()
        return s
    except (SpecError, TypeError, ValueError):
        return AdmissionSetting()


def failover_hosts(view: ClusterView) -> frozenset[str]:
    """The dedicated failover hosts (empty unless that policy is on): placement leaves them
    empty in normal operation and tries them first for HA restarts."""
    s = admission_setting(view.settings)
    return frozenset(s.hosts) if s.policy == "failover-hosts" else frozenset()


# -- the figures ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """What a user's action would do to the reservations: VMs that would be powered on
    (a spec replaces the VM's present one: a resize), FT standbys added, hosts leaving."""

    what: str  # for the message: "powering on web"
    power_on: tuple[VMSpec, ...] = ()
    standby: tuple[VMSpec, ...] = ()
    leave: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Capacity:
    """The cluster as admission control counts it (``vigil cluster capacity``)."""

    policy: str
    failures: int  # what the policy asks to tolerate
    hosts: tuple[str, ...]  # the hosts counted (running, not in maintenance)
    memory_mb: int
    vcpus: int  # vCPU capacity (physical CPUs x overcommit)
    memory_used_mb: int  # reservations of powered-on VMs and FT standbys
    vcpus_used: int
    memory_reserved_mb: int = 0
    vcpus_reserved: int = 0
    memory_percent: int = 0  # percentage: the reserved shares (given or derived)
    cpu_percent: int = 0
    slot_memory_mb: int = 0
    slot_vcpus: int = 0
    slots: int = 0
    slots_used: int = 0
    slots_reserved: int = 0
    failover: tuple[str, ...] = ()  # failover-hosts: those running
    tolerates: int = 0  # host failures the cluster tolerates now
    ok: bool = True  # the policy holds
    detail: str = ""  # the figures in a sentence
    per_host: Mapping[str, int] = field(default_factory=dict)  # slots: slots per host

    @property
    def slots_free(self) -> int:
        return self.slots - self.slots_reserved - self.slots_used

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["hosts"], out["failover"], out["per_host"] = list(self.hosts), list(self.failover), dict(self.per_host)
        out["slots_free"] = self.slots_free
        return out


def _demand(view: ClusterView, change: Change | None) -> list[tuple[str, VMSpec]]:
    """(VM, spec) of every reservation: each powered-on VM once, each FT standby once more."""
    specs = {n: v.spec for n, v in view.vms.items() if v.spec.power == "on"}
    # an FT VM's standby reserves its room from the moment FT is on, placed or not yet
    standbys = [v.spec for _, v in sorted(view.vms.items()) if v.ft is not None and v.spec.power == "on"]
    if change is not None:
        for s in change.power_on:
            specs[s.name] = s
        standbys += list(change.standby)
    return sorted(specs.items()) + [(s.name + " (FT standby)", s) for s in standbys]


def _hosts(view: ClusterView, states: Mapping[str, HostState], leave: frozenset[str]) -> dict[str, tuple[int, int]]:
    """name -> (memory, vCPU capacity) of the hosts that count: running, staying."""
    return {h: (v.info.memory_mb, v.info.cpus * VCPU_OVERCOMMIT) for h, v in sorted(view.hosts.items())
            if v.info is not None and states.get(h) is HostState.RUNNING and h not in leave}


def _largest(values: list[int], n: int) -> int:
    return sum(sorted(values, reverse=True)[:n])


def capacity(view: ClusterView, setting: AdmissionSetting, states: Mapping[str, HostState],
             change: Change | None = None) -> Capacity:
    """The figures of ``setting`` on ``view`` (after ``change``, when given)."""
    hosts = _hosts(view, states, change.leave if change else frozenset())
    demand = _demand(view, change)
    mem, cpu = sum(m for m, _ in hosts.values()), sum(c for _, c in hosts.values())
    used = Load(sum(s.memory_mb for _, s in demand), sum(s.vcpus for _, s in demand))
    base = dict(policy=setting.policy, failures=setting.failures, hosts=tuple(hosts), memory_mb=mem, vcpus=cpu,
                memory_used_mb=used.memory_mb, vcpus_used=used.vcpus)
    n = len(hosts)
    if setting.policy == "slots":
        smem = setting.slot_memory_mb or max((s.memory_mb for _, s in demand), default=EMPTY_SLOT[0])
        scpu = setting.slot_vcpus or max((s.vcpus for _, s in demand), default=EMPTY_SLOT[1])
        per_host = {h: min(m // smem, c // scpu) for h, (m, c) in hosts.items()}
        total = sum(per_host.values())
        used_slots = sum(max(math.ceil(s.memory_mb / smem), math.ceil(s.vcpus / scpu)) for _, s in demand)
        reserved = _largest(list(per_host.values()), setting.failures)
        tol = max([k for k in range(n) if used_slots <= total - _largest(list(per_host.values()), k)], default=0)
        ok = used_slots <= total - reserved
        detail = (f"slot {smem} MiB / {scpu} vCPU{'s' if scpu != 1 else ''}; {total} slots on {n} running "
                  f"host{'s' if n != 1 else ''}, {reserved} reserved for {_failures(setting.failures)}, "
                  f"{used_slots} used, {total - reserved - used_slots} free")
        return Capacity(**base, slot_memory_mb=smem, slot_vcpus=scpu, slots=total, slots_used=used_slots,
                        slots_reserved=reserved, tolerates=tol, ok=ok, detail=detail, per_host=per_host)
    if setting.policy == "percentage":
        mems, cpus = [m for m, _ in hosts.values()], [c for _, c in hosts.values()]
        mpct = setting.memory_percent if setting.memory_percent is not None else _share(mems, setting.failures)
        cpct = setting.cpu_percent if setting.cpu_percent is not None else _share(cpus, setting.failures)
        # derived: exactly the largest hosts' room (the percentage shown is rounded)
        rmem = math.ceil(mem * mpct / 100) if setting.memory_percent is not None else _largest(mems, setting.failures)
        rcpu = math.ceil(cpu * cpct / 100) if setting.cpu_percent is not None else _largest(cpus, setting.failures)
        tol = max([k for k in range(n) if used.memory_mb <= mem - _largest(mems, k)
                   and used.vcpus <= cpu - _largest(cpus, k)], default=0)
        ok = used.memory_mb <= mem - rmem and used.vcpus <= cpu - rcpu
        detail = (f"memory {used.memory_mb} of {mem} MiB used ({_pct(used.memory_mb, mem)}), {mpct}% "
                  f"({rmem} MiB) reserved; vCPUs {used.vcpus} of {cpu} used ({_pct(used.vcpus, cpu)}), "
                  f"{cpct}% ({rcpu}) reserved")
        return Capacity(**base, memory_reserved_mb=rmem, vcpus_reserved=rcpu, memory_percent=mpct, cpu_percent=cpct,
                        tolerates=tol, ok=ok, detail=detail)
    if setting.policy == "failover-hosts":
        fo = {h: hosts[h] for h in setting.hosts if h in hosts}
        normal = {h: x for h, x in hosts.items() if h not in fo}
        nmem, ncpu = sum(m for m, _ in normal.values()), sum(c for _, c in normal.values())
        fmem, fcpu = sum(m for m, _ in fo.values()), sum(c for _, c in fo.values())
        # how many of the normal hosts, the busiest first, could fail with their VMs fitting
        # on the failover hosts (by totals: placement then finds the host)
        loads = _per_host_load(view, demand, normal)
        tol, m_acc, c_acc = 0, 0, 0
        for h in sorted(loads, key=lambda x: (-loads[x].memory_mb, -loads[x].vcpus, x)):
            m_acc, c_acc = m_acc + loads[h].memory_mb, c_acc + loads[h].vcpus
            if m_acc > fmem or c_acc > fcpu:
                break
            tol += 1
        tol = tol if fo and normal else 0
        ok = used.memory_mb <= nmem and used.vcpus <= ncpu and bool(normal)
        detail = (f"failover host{'s' if len(setting.hosts) != 1 else ''} {', '.join(setting.hosts)} "
                  f"({len(fo)} running: {fmem} MiB, {fcpu} vCPUs held back); the other hosts have {nmem} MiB "
                  f"and {ncpu} vCPUs, {used.memory_mb} MiB and {used.vcpus} vCPUs used")
        return Capacity(**{**base, "memory_mb": nmem, "vcpus": ncpu}, memory_reserved_mb=fmem, vcpus_reserved=fcpu,
                        failover=tuple(fo), tolerates=tol, ok=ok, detail=detail)
    mems, cpus = [m for m, _ in hosts.values()], [c for _, c in hosts.values()]
    tol = max([k for k in range(n) if used.memory_mb <= mem - _largest(mems, k)
               and used.vcpus <= cpu - _largest(cpus, k)], default=0)
    return Capacity(**base, tolerates=tol, detail=f"admission control off; {used.memory_mb} of {mem} MiB and "
                    f"{used.vcpus} of {cpu} vCPUs used")


def _per_host_load(view: ClusterView, demand: list[tuple[str, VMSpec]], hosts: Mapping[str, Any]) -> dict[str, Load]:
    """The reservations on each of ``hosts`` (where each VM is assigned or its standby is)."""
    out = {h: Load() for h in hosts}
    for name, spec in demand:
        v = view.vms.get(name.removesuffix(" (FT standby)"))
        if v is None:
            continue
        h = (v.ft.secondary if v.ft else None) if name.endswith("(FT standby)") else (
            v.assignment.host if v.assignment else None)
        if h in out:
            out[h] = out[h].plus(spec)
    return out


def _share(values: list[int], failures: int) -> int:
    """The percentage the ``failures`` largest of ``values`` make of their sum (rounded: the
    reserve itself is their exact room)."""
    total = sum(values)
    return min(100, round(100 * _largest(values, failures) / total)) if total else 100


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f}%" if b else "-"


def _failures(n: int) -> str:
    return f"{n} host failure{'s' if n != 1 else ''}"


def describe_setting(s: AdmissionSetting) -> str:
    """The policy in a few words, for messages."""
    if s.policy == "slots":
        return f"slots, {_failures(s.failures)} to tolerate"
    if s.policy == "percentage":
        parts = [f"{x}% {w} reserved" for w, x in (("memory", s.memory_percent), ("CPU", s.cpu_percent))
                 if x is not None]
        return "percentage, " + (", ".join(parts) if parts else f"derived from {_failures(s.failures)}")
    if s.policy == "failover-hosts":
        return f"failover hosts {', '.join(s.hosts)}"
    return "off"


def admit(view: ClusterView, setting: AdmissionSetting, states: Mapping[str, HostState],
          change: Change) -> tuple[bool, str]:
    """(True, the figures after) or (False, why not, in numbers) for a user's action."""
    if setting.policy == "off":
        return True, "admission control is off"
    after = capacity(view, setting, states, change)
    if after.ok:
        return True, after.detail
    head = f"admission control ({describe_setting(setting)}) refuses {change.what}"
    added = change.power_on + change.standby
    n = len(after.hosts)
    on = f"on {n} running host{'s' if n != 1 else ''}"
    if change.leave:
        gone = ", ".join(sorted(change.leave))
        if setting.policy == "slots":
            return False, (f"{head}: without {gone}, {after.slots} slots would remain {on}, "
                           f"{after.slots_reserved} reserved for {_failures(setting.failures)} and "
                           f"{after.slots_used} used: {-after.slots_free} short")
        return False, f"{head}: without {gone}, the reserve would not hold ({after.detail})"
    if setting.policy == "slots":
        need = sum(max(math.ceil(s.memory_mb / after.slot_memory_mb), math.ceil(s.vcpus / after.slot_vcpus))
                   for s in added)
        used = after.slots_used - need
        free = after.slots - after.slots_reserved - used
        return False, (f"{head}: it needs {need} slot{'s' if need != 1 else ''} of {after.slot_memory_mb} MiB / "
                       f"{after.slot_vcpus} vCPU{'s' if after.slot_vcpus != 1 else ''}; {max(0, free)} of "
                       f"{after.slots} {'is' if max(0, free) == 1 else 'are'} free ({after.slots_reserved} reserved "
                       f"for {_failures(setting.failures)}, {used} used, {on})")
    if setting.policy == "percentage":
        may_mem = after.memory_mb - after.memory_reserved_mb
        may_cpu = after.vcpus - after.vcpus_reserved
        return False, (f"{head}: VMs would reserve {after.memory_used_mb} of {after.memory_mb} MiB and "
                       f"{after.vcpus_used} of {after.vcpus} vCPUs {on}; at most {may_mem} MiB and {may_cpu} vCPUs "
                       f"may be ({after.memory_percent}% of memory and {after.cpu_percent}% of CPU kept for failover)")
    others = ", ".join(h for h in after.hosts if h not in after.failover) or "none"
    return False, (f"{head}: VMs would reserve {after.memory_used_mb} MiB and {after.vcpus_used} vCPUs; the "
                   f"running hosts other than the failover hosts ({others}) have {after.memory_mb} MiB and "
                   f"{after.vcpus} vCPUs")
