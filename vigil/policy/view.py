"""The immutable snapshot the pure decision functions work on.

The controller builds one ``ClusterView`` per cycle from etcd, the datastore heartbeat
files and ping; nothing in ``vigil.policy`` reads a clock or does I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from vigil.model import Assignment, HostInfo, HostState, Rule, Task, VMSpec, VMStatus


@dataclass(frozen=True)
class Timing:
    """How long each signal may be silent before it means something (seconds)."""

    lease_ttl: float = 3.0
    # a datastore heartbeat counter that has not advanced for this long has stopped
    hb_grace: float = 3.0
    # the host's watchdog resets it at most this long after its agent last ran
    watchdog: float = 5.0
    # margin on top of the watchdog before a silent host is taken as reset
    watchdog_margin: float = 1.5
    retry_base: float = 2.0
    retry_max: float = 60.0

    @property
    def fenced_after(self) -> float:
        """Datastore heartbeat silence after which a host's watchdog has surely fired."""
        return self.watchdog + self.watchdog_margin


@dataclass(frozen=True)
class FenceStatus:
    """This controller's fence of a host, since the host was last seen well: "pending"
    (asked of its BMC), "confirmed" (the BMC reports it off) or "failed" (no answer, a
    refusal, or no confirmation in time)."""

    state: str
    since: float  # now's clock: when the fence began
    detail: str = ""


@dataclass(frozen=True)
class HostView:
    name: str
    info: HostInfo | None
    alive: bool  # its lease key exists
    hb_age: float | None  # seconds since its datastore heartbeat last advanced; None: never seen
    lease: int = 0  # the lease its keys are bound to, when alive
    hb_isolated: bool = False  # the isolation flag in its heartbeat file
    hb_vms: frozenset[str] = frozenset()  # VMs it says it runs, from its heartbeat file
    ping: bool | None = None  # answered ping; None: not probed
    prev_state: HostState = HostState.UNKNOWN
    maintenance: bool = False  # the user put it in maintenance mode
    fence: FenceStatus | None = None  # this controller's fence of it (vigil.policy.fencing)
    restarting: bool = False  # its agent stopped cleanly to start again (a planned restart)


@dataclass(frozen=True)
class FtView:
    """A VM's Fault Tolerance, from ``ft/``, ``ftack/`` and ``ftstat/``."""

    secondary: str | None
    epoch: int
    ack_seq: int = -1  # newest checkpoint the current secondary holds for this epoch; -1 none
    valid_from: int | None = None  # oldest checkpoint the primary allows to run (this epoch)
    rev: int = 0  # mod_revision of the ft key
    stat_rev: int = 0  # mod_revision of the primary's ftstat key (0: absent): a failover expects it unchanged

    @property
    def can_fail_over(self) -> bool:
        """The secondary holds a checkpoint no newer output has gone past."""
        return self.secondary is not None and self.valid_from is not None and self.ack_seq >= self.valid_from


@dataclass(frozen=True)
class VMView:
    spec: VMSpec
    assignment: Assignment | None
    assign_rev: int  # mod_revision of the assignment key, 0 when absent
    owner: str | None  # holder of the leased ownership key
    status: VMStatus | None
    ft: FtView | None = None  # None: FT off
    # replicated disks: the diskstate/<vm> value and its mod_revision (0: absent). The
    # spec above is already without the stale copies it names (VMSpec.without_stale).
    diskstate: Mapping[str, Any] = field(default_factory=dict)
    diskstate_rev: int = 0


@dataclass(frozen=True)
class Retry:
    attempts: int
    not_before: float
    last_host: str = ""


@dataclass(frozen=True)
class ClusterView:
    now: float
    hosts: Mapping[str, HostView]
    vms: Mapping[str, VMView]
    timing: Timing = Timing()
    retries: Mapping[str, Retry] = field(default_factory=lambda: MappingProxyType({}))
    rules: tuple[Rule, ...] = ()
    tasks: tuple[Task, ...] = ()  # migrations and disk moves not finished yet
    # FT VMs waiting for their secondary's host: until when (see plan.FT_SECONDARY_WAIT_S)
    ft_waits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # (host, datastore) -> since when (now's clock) the host reports reaching it, as the
    # controller saw it; absent: for as long as anyone can tell
    reach_since: Mapping[tuple[str, str], float] = field(default_factory=lambda: MappingProxyType({}))
    # load/<host>: each agent's smoothed measurements, raw (vigil.policy.drs_load reads them)
    loads: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    # settings/drs, raw (vigil.policy.drs_settings): initial placement uses the DRS load model when on
    drs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # settings/<name>: the cluster policies' raw objects (each policy module reads its own)
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    # restart orchestration (vigil.policy.orchestration), as the controller kept it: since
    # when each held restart has waited, and (generation, since when) each VM is ready
    holds: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    ready_since: Mapping[str, tuple[int, float]] = field(default_factory=lambda: MappingProxyType({}))
