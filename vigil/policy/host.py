"""The host side of one reconcile, as pure functions: etcd's word and the host's own
observations in, one action (with its reason) per VM out.

What etcd says of each VM (spec, assignment, owner) and what this host knows of it (a
QEMU it runs, one it is starting, a standby it took for an FT failover, its crashes) go
in as frozen values; the agent carries the actions out: the ownership claim is its
guarded transaction, and a start happens only once that claim succeeded (DESIGN.md,
"Never two running copies of a VM": a host runs a VM only while it holds its key).

Each VM's branch ends in exactly one outcome, like Patroni's HA cycle. The agent decides
one VM at a time, right before it acts on it: its actions await (a power-off waits for
the QEMU to go), and the host's state moves meanwhile. ``reconcile`` is the same
decision over the whole host at once, for tests and the simulator.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping, Union

from vigil.model import Assignment, VMSpec
from vigil.policy.crashes import Crashes, may_start


# -- inputs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostFacts:
    """This host, as it sees itself at the moment of the decision."""

    me: str
    lease_ok: bool
    isolated: bool


@dataclass(frozen=True)
class VMFacts:
    """etcd's word on one VM (``vms/``, ``assign/``, ``own/``); None where the key is absent."""

    spec: VMSpec | None = None
    assignment: Assignment | None = None
    owner: str | None = None


@dataclass(frozen=True)
class HereFacts:
    """What this host itself knows of one VM."""

    running: bool = False  # a QEMU of it is tracked here
    stopping: bool = False  # that QEMU is being powered off or shut down already
    starting: bool = False  # a start (or an FT promotion) of it is under way
    has_standby: bool = False  # the committed FT standby this host took for its failover
    crashes: Crashes | None = None  # its crashes here, for the generation they happened in
    driving: bool = False  # a task of it (its outgoing live migration) is still driven here


# -- actions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TakeStandby:
    """An FT failover hands the VM to this host: keep the committed standby before the FT
    roles are synced (which would quit it with the secondary role)."""

    vm: str
    reason: str


@dataclass(frozen=True)
class PowerOff:
    """Stop the QEMU now. ``report``: write its status (not when another host runs the VM:
    the status is that host's); ``release``: give up the ownership key afterwards."""

    vm: str
    reason: str  # also the event's and status's wording
    report: bool = False
    release: bool = False


@dataclass(frozen=True)
class Shutdown:
    """ACPI shutdown in the background, power off after the spec's timeout, then release."""

    vm: str
    reason: str


@dataclass(frozen=True)
class Claim:
    """A QEMU runs here for this VM but nobody owns it (an agent restart, a lease renewed
    too late): take the ownership key again, if the assignment is unchanged."""

    vm: str
    reason: str


@dataclass(frozen=True)
class ReportRunning:
    vm: str
    reason: str


@dataclass(frozen=True)
class Start:
    """Run the VM here for assignment ``gen``: first claim its ownership key when
    ``claim`` (and start only if that transaction succeeds); from the standby taken for an
    FT failover when ``from_standby``, else from its disks."""

    vm: str
    gen: int
    claim: bool
    from_standby: bool
    reason: str


@dataclass(frozen=True)
class Wait:
    """Nothing to do for this VM now."""

    vm: str
    reason: str


HostAction = Union[TakeStandby, PowerOff, Shutdown, Claim, ReportRunning, Start, Wait]


# -- decisions -------------------------------------------------------------------------------
def is_mine(me: str, f: VMFacts) -> bool:
    """Assigned to this host, and meant to run."""
    return (f.assignment is not None and f.assignment.host == me
            and f.spec is not None and f.spec.power == "on")


def take_standby(me: str, vm: str, f: VMFacts, here: HereFacts) -> TakeStandby | None:
    """Before the FT roles are synced: keep the standby of a failover handed to us."""
    if (is_mine(me, f) and f.assignment is not None and f.assignment.reason == "ft-failover"
            and not here.running and not here.has_standby):
        return TakeStandby(vm, f"FT failover to {me}: its committed standby goes live here")
    return None


def stray_action(host: HostFacts, vm: str, f: VMFacts, here: HereFacts) -> HostAction:
    """A QEMU runs here for a VM not assigned here to run: stopped, deleted, or handed over."""
    a = f.assignment
    if here.stopping:
        return Wait(vm, "already stopping")
    if here.driving and a is not None and a.reason == "migrate" and a.host != host.me:
        # The destination took it over; this copy is paused since the switchover. Its QEMU
        # must outlive the driver's last query-migrate, which reads the final figures
        # (downtime): killed first, the driver lost its QMP connection and failed the
        # migration that had just succeeded. The driver ends at once; the next pass stops it.
        return Wait(vm, f"migrated to {a.host}: powered off once the migration's driver has read its last figures")
    if f.spec is not None and a is not None and a.host != host.me:
        if host.isolated or not host.lease_ok:
            return Wait(vm, f"assigned to {a.host}, but this host is cut off: its isolation response decides")
        why = {"migrate": f"migrated to {a.host}",
               "vmcp": "its host lost a datastore of the VM: restarted where the disks are reachable",
               "ft-failover": f"its FT secondary on {a.host} took over",
               }.get(a.reason, f"assigned to {a.host}: this copy must not run")
        return PowerOff(vm, why, report=False, release=True)
    if f.spec is None or f.spec.power == "off" or a is None:
        return Shutdown(vm, "powered off by request" if f.spec else "VM deleted")
    return Wait(vm, "assigned here")  # not reached for a VM that is_mine


def assigned_action(host: HostFacts, vm: str, f: VMFacts, here: HereFacts) -> HostAction:
    """A VM assigned to this host to run (``is_mine``)."""
    a = f.assignment
    assert a is not None
    if here.running:
        if f.owner is None:
            return Claim(vm, "runs here and nobody owns it: claim it again")
        if f.owner != host.me:
            return PowerOff(vm, f"owned by {f.owner}: this copy must not run", report=False)
        return ReportRunning(vm, "runs here, owned by this host")
    if here.starting:
        return Wait(vm, "its start is under way")
    if not may_start(a.gen, here.crashes):
        return Wait(vm, f"crashed {here.crashes.count if here.crashes else 0} times in gen {a.gen}: "
                        "the controller retries with a new generation")
    if f.owner not in (None, host.me):
        return Wait(vm, f"owned by {f.owner}: the old copy may still run, wait for it to let go")
    how = "from its committed FT standby" if here.has_standby else "from its disks"
    if f.owner == host.me:
        return Start(vm, a.gen, claim=False, from_standby=here.has_standby,
                     reason=f"assigned here (gen {a.gen}) and owned by this host: start {how}")
    return Start(vm, a.gen, claim=True, from_standby=here.has_standby,
                 reason=f"assigned here (gen {a.gen}): claim its ownership, then start {how}")


def vm_action(host: HostFacts, vm: str, f: VMFacts, here: HereFacts) -> HostAction | None:
    """The one reconcile outcome for one VM (None: neither assigned here nor running here)."""
    if is_mine(host.me, f):
        return assigned_action(host, vm, f, here)
    if here.running:
        return stray_action(host, vm, f, here)
    return None


# -- the whole host at once ---------------------------------------------------------------------
@dataclass(frozen=True)
class HostObservation:
    """One host's inputs to a whole reconcile."""

    host: HostFacts
    vms: Mapping[str, VMFacts] = field(default_factory=lambda: MappingProxyType({}))
    here: Mapping[str, HereFacts] = field(default_factory=lambda: MappingProxyType({}))


def reconcile(obs: HostObservation) -> tuple[HostAction, ...]:
    """Every action of one reconcile in the order the agent carries them out: standbys
    taken for FT failovers, then VMs that must stop here, then VMs assigned here."""
    me = obs.host.me
    nothing = HereFacts()
    names = sorted(set(obs.vms) | set(obs.here))
    facts = {n: obs.vms.get(n, VMFacts()) for n in names}
    here = {n: obs.here.get(n, nothing) for n in names}
    taken = tuple(t for n in names if (t := take_standby(me, n, facts[n], here[n])) is not None)
    strays = tuple(stray_action(obs.host, n, facts[n], here[n]) for n in names
                   if here[n].running and not is_mine(me, facts[n]))
    took = {t.vm for t in taken}  # assumed taken: the failover then starts from it
    assigned = tuple(
        assigned_action(obs.host, n, facts[n], replace(here[n], has_standby=n in took or here[n].has_standby))
        for n in names if is_mine(me, facts[n]))
    return taken + strays + assigned


# -- watching a running VM ------------------------------------------------------------------
def guest_went_silent(guest: str, last_hb: float, now: float, timeout_s: float) -> bool:
    """A guest that was heartbeating has been silent for the timeout (the agent then marks
    it lost, so this is true once per silence)."""
    return guest == "ok" and now - last_hb > timeout_s
